/**
 * Model hyper-parameters as GGUF keys: `mistral3.*` for the text model (read by llama.cpp's
 * llama_model_mistral3::load_arch_hparams and the generic loader) and `clip.*` for the mmproj
 * (tools/mtmd/clip.cpp, PROJECTOR_TYPE_PIXTRAL). Key names are gguf-py's constants.py.
 *
 * Rotary settings: YaRN is written as llama.cpp's converter writes Ministral 3
 * (conversion/mistral3.py): scaling type, factor, original context, beta fast/slow, and
 * `yarn_log_multiplier` = mscale_all_dim. llama.cpp then sets its attention factor to
 * get_mscale(factor, mscale = 1) / get_mscale(factor, mscale_all_dim), the same ratio
 * transformers uses (1.0 for Ministral 3; with mscale_all_dim 0 it is 1 + 0.1·ln factor). The
 * llama-4 query scale 1 + β·ln(1 + ⌊pos / original_max_position_embeddings⌋) is
 * `attention.temperature_scale` = β; llama.cpp takes the floor's divisor from the original
 * context length, as transformers does.
 */
import type { Mistral3Config } from "../../models/mistral3/config.ts";
import { InputError } from "../../util/errors.ts";
import { f32, str, u32, bool, type GgufMetadata } from "./format.ts";

const ARCH = "mistral3";

export function textHparams(config: Mistral3Config, configFile: string): GgufMetadata {
  const t = config.text_config;
  if (t.sliding_window !== null) {
    throw new InputError(configFile, `text_config.sliding_window ${t.sliding_window}: llama.cpp's mistral3 architecture has no sliding-window attention`);
  }
  const kv: [string, ReturnType<typeof u32>][] = [
    [`${ARCH}.vocab_size`, u32(t.vocab_size)],
    [`${ARCH}.context_length`, u32(t.max_position_embeddings)],
    [`${ARCH}.embedding_length`, u32(t.hidden_size)],
    [`${ARCH}.feed_forward_length`, u32(t.intermediate_size)],
    [`${ARCH}.block_count`, u32(t.num_hidden_layers)],
    [`${ARCH}.attention.head_count`, u32(t.num_attention_heads)],
    [`${ARCH}.attention.head_count_kv`, u32(t.num_key_value_heads)],
    [`${ARCH}.attention.key_length`, u32(t.head_dim)],
    [`${ARCH}.attention.value_length`, u32(t.head_dim)],
    [`${ARCH}.attention.layer_norm_rms_epsilon`, f32(t.rms_norm_eps)],
    [`${ARCH}.rope.dimension_count`, u32(t.head_dim)],
    [`${ARCH}.rope.freq_base`, f32(t.rope.rope_theta)],
  ];
  const rope = t.rope;
  if (rope.rope_type === "yarn") {
    if (rope.attention_factor !== null) {
      throw new InputError(configFile, "text_config.rope_parameters.attention_factor is set; llama.cpp derives the YaRN attention factor from mscale_all_dim and has no key for an override");
    }
    if (rope.mscale !== null && rope.mscale !== 1) {
      throw new InputError(configFile, `text_config.rope_parameters.mscale ${rope.mscale}: llama.cpp assumes mscale 1`);
    }
    if (!rope.truncate) {
      throw new InputError(configFile, "text_config.rope_parameters.truncate false: llama.cpp always rounds the YaRN correction range to whole dimensions");
    }
    if (rope.mscale === null && rope.mscale_all_dim !== null && rope.mscale_all_dim !== 0) {
      throw new InputError(configFile, "text_config.rope_parameters has mscale_all_dim without mscale; transformers and llama.cpp disagree on that case");
    }
    kv.push(
      [`${ARCH}.rope.scaling.type`, str("yarn")],
      [`${ARCH}.rope.scaling.factor`, f32(rope.factor)],
      [`${ARCH}.rope.scaling.original_context_length`, u32(rope.original_max_position_embeddings)],
      [`${ARCH}.rope.scaling.yarn_beta_fast`, f32(rope.beta_fast)],
      [`${ARCH}.rope.scaling.yarn_beta_slow`, f32(rope.beta_slow)],
      [`${ARCH}.rope.scaling.yarn_log_multiplier`, f32(rope.mscale_all_dim ?? 0)],
    );
    if (rope.llama_4_scaling_beta !== null && rope.llama_4_scaling_beta !== 0) {
      kv.push([`${ARCH}.attention.temperature_scale`, f32(rope.llama_4_scaling_beta)]);
    }
  }
  return kv;
}

/** CLIP's defaults, which PixtralImageProcessor also uses. */
const DEFAULT_MEAN = [0.48145466, 0.4578275, 0.40821073];
const DEFAULT_STD = [0.26862954, 0.26130258, 0.27577711];

export interface ImageNormalization {
  readonly mean: readonly number[];
  readonly std: readonly number[];
}

export function clipHparams(config: Mistral3Config, configFile: string, norm: ImageNormalization): GgufMetadata {
  const v = config.vision_config;
  if (config.vision_feature_layer !== -1 && config.vision_feature_layer !== v.num_hidden_layers) {
    throw new InputError(configFile, `vision_feature_layer ${config.vision_feature_layer}: llama.cpp's pixtral projector takes the last layer's output`);
  }
  return [
    ["clip.has_vision_encoder", bool(true)],
    ["clip.projector_type", str("pixtral")],
    ["clip.vision.projection_dim", u32(config.text_config.hidden_size)],
    ["clip.vision.image_size", u32(v.image_size)],
    ["clip.vision.patch_size", u32(v.patch_size)],
    ["clip.vision.embedding_length", u32(v.hidden_size)],
    ["clip.vision.feed_forward_length", u32(v.intermediate_size)],
    ["clip.vision.block_count", u32(v.num_hidden_layers)],
    ["clip.vision.attention.head_count", u32(v.num_attention_heads)],
    // PixtralRMSNorm's eps is fixed at 1e-5 in transformers.
    ["clip.vision.attention.layer_norm_epsilon", f32(1e-5)],
    ["clip.vision.image_mean", { type: "f32[]", value: norm.mean }],
    ["clip.vision.image_std", { type: "f32[]", value: norm.std }],
    [v.hidden_act === "silu" ? "clip.use_silu" : "clip.use_gelu", bool(true)],
    ["clip.vision.spatial_merge_size", u32(config.spatial_merge_size)],
  ];
}

/** image_mean / image_std from processor_config.json or preprocessor_config.json, else CLIP's. */
export function imageNormalization(raw: Record<string, unknown> | undefined, file: string): ImageNormalization {
  const proc = (raw?.image_processor as Record<string, unknown> | undefined) ?? raw;
  const pick = (field: "image_mean" | "image_std", fallback: number[]): number[] => {
    const value = proc?.[field];
    if (value === undefined) return fallback;
    if (!Array.isArray(value) || value.length !== 3 || !value.every((x) => typeof x === "number" && Number.isFinite(x))) {
      throw new InputError(file, `${field} is ${JSON.stringify(value)}, expected three numbers`);
    }
    return value as number[];
  };
  return { mean: pick("image_mean", DEFAULT_MEAN), std: pick("image_std", DEFAULT_STD) };
}
