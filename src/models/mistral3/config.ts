import { InputError } from "../../util/errors.ts";

/**
 * The `config.json` of a Mistral3ForConditionalGeneration checkpoint, with Hugging Face's snake_case
 * field names and the defaults transformers applies when a field is absent
 * (transformers/models/{mistral3,ministral3,mistral,pixtral}/configuration_*.py).
 * Reference: ../../../../shared/reference/ministral3.md §1.
 */

export type TextModelType = "ministral3" | "mistral";

/** Rotary embedding of the decoder after standardisation (v5 `rope_parameters` or v4 `rope_scaling` + `rope_theta`). */
export type TextRope =
  | { rope_type: "default"; rope_theta: number }
  | {
      rope_type: "yarn";
      rope_theta: number;
      factor: number;
      original_max_position_embeddings: number;
      beta_fast: number;
      beta_slow: number;
      /** null when absent: transformers then uses get_mscale(factor) (≈1.277 for 16), not 1. */
      mscale: number | null;
      mscale_all_dim: number | null;
      /** Explicit override of the cos/sin multiplier. */
      attention_factor: number | null;
      truncate: boolean;
      /** Ministral 3's query temperature (§1.3); null means no scaling (plain mistral). */
      llama_4_scaling_beta: number | null;
    };

export interface TextConfig {
  model_type: TextModelType;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  hidden_act: "silu";
  max_position_embeddings: number;
  rms_norm_eps: number;
  rope: TextRope;
  sliding_window: number | null;
  bos_token_id: number;
  eos_token_id: number;
  pad_token_id: number | null;
}

export type VisionAct = "silu" | "gelu";

export interface VisionConfig {
  model_type: "pixtral";
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  /** Always hidden_size / num_attention_heads (PixtralVisionConfig recomputes it). */
  head_dim: number;
  num_channels: number;
  image_size: number;
  patch_size: number;
  hidden_act: VisionAct;
  rope_theta: number;
}

/** Only per-tensor fp8 (`weight_block_size: null`) is supported; see ministral3.md §5.3. */
export interface QuantizationConfig {
  quant_method: "fp8";
  activation_scheme: string;
  modules_to_not_convert: string[];
}

export interface Mistral3Config {
  model_type: "mistral3";
  text_config: TextConfig;
  vision_config: VisionConfig;
  image_token_index: number;
  projector_hidden_act: "gelu";
  multimodal_projector_bias: boolean;
  spatial_merge_size: number;
  vision_feature_layer: number;
  /** Top-level flag; only matters when the checkpoint has no lm_head (§5.4). */
  tie_word_embeddings: boolean;
  quantization_config: QuantizationConfig | null;
}

type Json = Record<string, unknown>;

/** Parses and validates a config.json object; `file` names it in errors. */
export function parseMistral3Config(raw: unknown, file = "config.json"): Mistral3Config {
  const top = asObject(raw, file, "the config");
  const read = reader(top, file, "");
  const modelType = read.string("model_type", "");
  if (modelType !== "mistral3") {
    throw new InputError(
      file,
      `unsupported model_type ${JSON.stringify(modelType)}: splint runs "mistral3" (Mistral3ForConditionalGeneration) checkpoints`,
      "point --model at a Ministral 3 / Mistral 3 vision-language checkpoint",
    );
  }
  const projectorAct = read.string("projector_hidden_act", "gelu");
  if (projectorAct !== "gelu") throw new InputError(file, `projector_hidden_act ${JSON.stringify(projectorAct)} is not supported (only "gelu")`);
  const featureLayer = top.vision_feature_layer ?? -1;
  if (typeof featureLayer !== "number" || !Number.isInteger(featureLayer)) {
    throw new InputError(file, `vision_feature_layer ${JSON.stringify(featureLayer)} is not supported (only a single layer index)`);
  }
  const vision = parseVisionConfig(top.vision_config === undefined ? {} : asObject(top.vision_config, file, "vision_config"), file);
  // hidden_states has num_hidden_layers + 1 entries (ln_pre output first).
  if (featureLayer > vision.num_hidden_layers || featureLayer < -vision.num_hidden_layers - 1) {
    throw new InputError(file, `vision_feature_layer ${featureLayer} is outside the ${vision.num_hidden_layers}-layer vision tower`);
  }
  const text = parseTextConfig(top.text_config === undefined ? {} : asObject(top.text_config, file, "text_config"), file);
  const imageToken = top.image_token_index ?? top.image_token_id ?? 10;
  if (typeof imageToken !== "number" || !Number.isInteger(imageToken) || imageToken < 0 || imageToken >= text.vocab_size) {
    throw new InputError(file, `image_token_index ${JSON.stringify(imageToken)} is not a token id below vocab_size ${text.vocab_size}`);
  }
  if (read.bool("multimodal_projector_bias", false)) {
    throw new InputError(file, "multimodal_projector_bias true is not supported (Ministral 3 and Mistral Small 3.x projectors have no biases)");
  }
  const merge = read.int("spatial_merge_size", 2);
  if (merge < 1) throw new InputError(file, `spatial_merge_size ${merge} must be at least 1`);
  return {
    model_type: "mistral3",
    text_config: text,
    vision_config: vision,
    image_token_index: imageToken,
    projector_hidden_act: "gelu",
    multimodal_projector_bias: false,
    spatial_merge_size: merge,
    vision_feature_layer: featureLayer,
    tie_word_embeddings: read.bool("tie_word_embeddings", true),
    quantization_config: parseQuantization(top.quantization_config, file),
  };
}

function parseTextConfig(raw: Json, file: string): TextConfig {
  const read = reader(raw, file, "text_config.");
  const modelType = read.string("model_type", "mistral");
  if (modelType !== "ministral3" && modelType !== "mistral") {
    throw new InputError(file, `text_config.model_type ${JSON.stringify(modelType)} is not supported (expected "ministral3" or "mistral")`);
  }
  // Defaults of Ministral3Config and MistralConfig respectively.
  const isMinistral = modelType === "ministral3";
  const hidden = read.int("hidden_size", 4096);
  const heads = read.int("num_attention_heads", 32);
  const headDimRaw = raw.head_dim;
  const headDim =
    headDimRaw === undefined || headDimRaw === null ? (isMinistral ? 128 : Math.floor(hidden / heads)) : read.int("head_dim", 0);
  const kvHeads = read.int("num_key_value_heads", 8);
  if (heads % kvHeads !== 0) {
    throw new InputError(file, `text_config.num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  }
  if (headDim % 2 !== 0) throw new InputError(file, `text_config.head_dim ${headDim} must be even for rotary embeddings`);
  const act = read.string("hidden_act", "silu");
  if (act !== "silu") throw new InputError(file, `text_config.hidden_act ${JSON.stringify(act)} is not supported (only "silu")`);
  const maxPositions = read.int("max_position_embeddings", isMinistral ? 262144 : 131072);
  const slidingRaw = raw.sliding_window === undefined ? (isMinistral ? null : 4096) : raw.sliding_window;
  if (slidingRaw !== null && (typeof slidingRaw !== "number" || !Number.isInteger(slidingRaw) || slidingRaw <= 0)) {
    throw new InputError(file, `text_config.sliding_window ${JSON.stringify(slidingRaw)} is not null or a positive integer`);
  }
  const pad = raw.pad_token_id === undefined ? (isMinistral ? 11 : null) : raw.pad_token_id;
  if (pad !== null && (typeof pad !== "number" || !Number.isInteger(pad))) {
    throw new InputError(file, `text_config.pad_token_id ${JSON.stringify(pad)} is not an integer or null`);
  }
  return {
    model_type: modelType,
    vocab_size: read.int("vocab_size", isMinistral ? 131072 : 32000),
    hidden_size: hidden,
    intermediate_size: read.int("intermediate_size", 14336),
    num_hidden_layers: read.int("num_hidden_layers", isMinistral ? 34 : 32),
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    hidden_act: "silu",
    max_position_embeddings: maxPositions,
    rms_norm_eps: read.number("rms_norm_eps", isMinistral ? 1e-5 : 1e-6),
    rope: parseTextRope(raw, file, isMinistral, maxPositions),
    sliding_window: slidingRaw,
    bos_token_id: read.id("bos_token_id", 1),
    eos_token_id: firstId(raw.eos_token_id, 2, file, "text_config.eos_token_id"),
    pad_token_id: pad,
  };
}

const MINISTRAL3_DEFAULT_ROPE: Json = {
  rope_type: "yarn",
  rope_theta: 1e6,
  factor: 16,
  original_max_position_embeddings: 16384,
  beta_fast: 32,
  beta_slow: 1,
  mscale: 1,
  mscale_all_dim: 1,
  llama_4_scaling_beta: 0.1,
};

function parseTextRope(raw: Json, file: string, isMinistral: boolean, maxPositions: number): TextRope {
  const where = "text_config.rope_parameters";
  let params: Json;
  if (raw.rope_parameters !== undefined && raw.rope_parameters !== null) {
    params = { ...asObject(raw.rope_parameters, file, where) };
  } else if (raw.rope_scaling !== undefined && raw.rope_scaling !== null) {
    params = { ...asObject(raw.rope_scaling, file, "text_config.rope_scaling") };
  } else {
    params = isMinistral ? { ...MINISTRAL3_DEFAULT_ROPE } : { rope_type: "default" };
  }
  if (params.rope_theta === undefined) params.rope_theta = raw.rope_theta ?? (isMinistral ? 1e6 : 10000);
  const read = reader(params, file, `${where}.`);
  const ropeType = read.string("rope_type", typeof params.type === "string" ? params.type : "default");
  const theta = read.number("rope_theta", 0);
  if (!(theta > 1)) throw new InputError(file, `${where}.rope_theta ${theta} must be greater than 1`);
  if (ropeType === "default") return { rope_type: "default", rope_theta: theta };
  if (ropeType !== "yarn") {
    throw new InputError(file, `${where}.rope_type ${JSON.stringify(ropeType)} is not supported (only "default" and "yarn")`);
  }
  const original = read.int("original_max_position_embeddings", maxPositions);
  const factor = params.factor === undefined || params.factor === null ? maxPositions / original : read.number("factor", 1);
  return {
    rope_type: "yarn",
    rope_theta: theta,
    factor,
    original_max_position_embeddings: original,
    // transformers uses `get("beta_fast") or 32`, so 0 also falls back to the default.
    beta_fast: read.optionalNumber("beta_fast") || 32,
    beta_slow: read.optionalNumber("beta_slow") || 1,
    mscale: read.optionalNumber("mscale"),
    mscale_all_dim: read.optionalNumber("mscale_all_dim"),
    attention_factor: read.optionalNumber("attention_factor"),
    truncate: read.bool("truncate", true),
    llama_4_scaling_beta: read.optionalNumber("llama_4_scaling_beta"),
  };
}

function parseVisionConfig(raw: Json, file: string): VisionConfig {
  const read = reader(raw, file, "vision_config.");
  const modelType = read.string("model_type", "pixtral");
  if (modelType !== "pixtral") {
    throw new InputError(file, `vision_config.model_type ${JSON.stringify(modelType)} is not supported (only "pixtral")`);
  }
  // PixtralVisionConfig defaults.
  const hidden = read.int("hidden_size", 1024);
  const heads = read.int("num_attention_heads", 16);
  if (hidden % heads !== 0) throw new InputError(file, `vision_config.hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  const headDim = hidden / heads;
  if (headDim % 4 !== 0) throw new InputError(file, `vision head_dim ${headDim} must be a multiple of 4 for 2-D rotary embeddings`);
  const act = read.string("hidden_act", "gelu");
  if (act !== "silu" && act !== "gelu") {
    throw new InputError(file, `vision_config.hidden_act ${JSON.stringify(act)} is not supported (only "silu" and "gelu")`);
  }
  const rope = raw.rope_parameters === undefined || raw.rope_parameters === null ? {} : asObject(raw.rope_parameters, file, "vision_config.rope_parameters");
  const ropeType = rope.rope_type ?? "default";
  if (ropeType !== "default" && ropeType !== "axial") {
    throw new InputError(file, `vision_config.rope_parameters.rope_type ${JSON.stringify(ropeType)} is not supported (Pixtral uses 2-D axial RoPE)`);
  }
  const theta = rope.rope_theta ?? raw.rope_theta ?? 10000;
  if (typeof theta !== "number" || !(theta > 1)) throw new InputError(file, `vision rope_theta ${JSON.stringify(theta)} must be a number above 1`);
  return {
    model_type: "pixtral",
    hidden_size: hidden,
    intermediate_size: read.int("intermediate_size", 4096),
    num_hidden_layers: read.int("num_hidden_layers", 24),
    num_attention_heads: heads,
    head_dim: headDim,
    num_channels: read.int("num_channels", 3),
    image_size: read.int("image_size", 1024),
    patch_size: read.int("patch_size", 16),
    hidden_act: act,
    rope_theta: theta,
  };
}

function parseQuantization(raw: unknown, file: string): QuantizationConfig | null {
  if (raw === undefined || raw === null) return null;
  const q = asObject(raw, file, "quantization_config");
  const read = reader(q, file, "quantization_config.");
  const method = read.string("quant_method", "");
  if (method !== "fp8") {
    throw new InputError(file, `quantization_config.quant_method ${JSON.stringify(method)} is not supported (only per-tensor "fp8")`, "use the -BF16 checkpoint");
  }
  if (q.weight_block_size !== undefined && q.weight_block_size !== null) {
    throw new InputError(file, `quantization_config.weight_block_size ${JSON.stringify(q.weight_block_size)}: block-wise fp8 is not supported, only per-tensor scales`);
  }
  const skip = q.modules_to_not_convert ?? [];
  if (!Array.isArray(skip) || !skip.every((s) => typeof s === "string")) {
    throw new InputError(file, "quantization_config.modules_to_not_convert is not a list of strings");
  }
  return { quant_method: "fp8", activation_scheme: read.string("activation_scheme", "static"), modules_to_not_convert: skip as string[] };
}

function firstId(value: unknown, fallback: number, file: string, field: string): number {
  if (value === undefined || value === null) return fallback;
  const first = Array.isArray(value) ? value[0] : value;
  if (typeof first !== "number" || !Number.isInteger(first)) throw new InputError(file, `${field} ${JSON.stringify(value)} is not a token id`);
  return first;
}

function asObject(value: unknown, file: string, what: string): Json {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new InputError(file, `${what} is not a JSON object`);
  return value as Json;
}

/** Typed field access with defaults; every wrong type is an InputError naming the field. */
function reader(obj: Json, file: string, prefix: string) {
  const bad = (key: string, want: string): never => {
    throw new InputError(file, `${prefix}${key} is ${JSON.stringify(obj[key])}, expected ${want}`);
  };
  return {
    string(key: string, fallback: string): string {
      const v = obj[key];
      if (v === undefined || v === null) return fallback;
      return typeof v === "string" ? v : bad(key, "a string");
    },
    number(key: string, fallback: number): number {
      const v = obj[key];
      if (v === undefined || v === null) return fallback;
      return typeof v === "number" && Number.isFinite(v) ? v : bad(key, "a number");
    },
    optionalNumber(key: string): number | null {
      const v = obj[key];
      if (v === undefined || v === null) return null;
      return typeof v === "number" && Number.isFinite(v) ? v : bad(key, "a number");
    },
    int(key: string, fallback: number): number {
      const v = obj[key];
      if (v === undefined || v === null) return fallback;
      return typeof v === "number" && Number.isInteger(v) && v > 0 ? v : bad(key, "a positive integer");
    },
    id(key: string, fallback: number): number {
      const v = obj[key];
      if (v === undefined || v === null) return fallback;
      return typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : bad(key, "a token id");
    },
    bool(key: string, fallback: boolean): boolean {
      const v = obj[key];
      if (v === undefined || v === null) return fallback;
      return typeof v === "boolean" ? v : bad(key, "true or false");
    },
  };
}
