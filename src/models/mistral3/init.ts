import { copyFile, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeSafetensors, type TensorToWrite } from "../../io/safetensors.ts";
import { Rng } from "../../util/rng.ts";
import { writeDirAtomic, writeFileAtomic } from "../../util/atomic.ts";
import { InputError } from "../../util/errors.ts";
import { parseMistral3Config } from "./config.ts";
import { expectedWeights } from "./weights.ts";

/**
 * A random-weight Mistral3ForConditionalGeneration checkpoint in the Hugging Face layout
 * (config.json, model.safetensors, generation_config.json, tokenizer and processor files), small
 * enough to fine-tune on a laptop CPU in a minute: the embedded demo's model. It knows nothing;
 * whatever it gets right after training, it learned.
 *
 * The tokenizer is the committed tiny Tekken-layout tokenizer (assets/tiny-tokenizer), so the
 * vocabulary has its 1,500 ids and Mistral's special-token numbering.
 */

export interface TinyPreset {
  readonly vision: { hidden: number; intermediate: number; layers: number; heads: number };
  readonly text: { hidden: number; intermediate: number; layers: number; heads: number; kvHeads: number; headDim: number };
  /** The processor's longest_edge: images are resized to at most this, then up to multiples of 28. */
  readonly imageEdge: number;
}

export const PRESETS: Readonly<Record<string, TinyPreset>> = {
  tiny: {
    vision: { hidden: 64, intermediate: 128, layers: 2, heads: 2 },
    text: { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, headDim: 16 },
    imageEdge: 112,
  },
};

const ASSETS = fileURLToPath(new URL("../../../assets/tiny-tokenizer/", import.meta.url));
const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"];

export interface InitResult {
  readonly dir: string;
  readonly preset: string;
  readonly parameters: number;
  readonly seed: number;
}

export interface InitOptions {
  readonly preset: string;
  readonly seed: number;
  /**
   * Whether an existing non-empty folder may be replaced (atomically, once the new one is
   * complete): never by default, so `model init OUT` cannot delete a folder whose name was reused;
   * "model-folder" (`--force`) only when it holds a config.json, i.e. is a model; "any" for a
   * folder the caller owns (a recipe's run folder).
   */
  readonly replace?: "model-folder" | "any";
}

export async function initTinyModel(dir: string, opts: InitOptions): Promise<InitResult> {
  const existing = await stat(dir).catch(() => null);
  if (existing && !existing.isDirectory()) throw new InputError(dir, "exists and is a file; the model is written as a folder", "pass another output folder");
  if (existing && opts.replace !== "any" && (await readdir(dir)).length > 0) {
    if (!opts.replace) throw new InputError(dir, "already exists and is not empty; refusing to replace it", "pass a new folder, or --force to replace a model folder");
    if (!(await stat(join(dir, "config.json")).catch(() => null))) {
      throw new InputError(dir, "is not a model folder (no config.json); refusing to replace it even with --force", "pass a new folder");
    }
  }
  const preset = PRESETS[opts.preset];
  if (!preset) throw new InputError("--preset", `unknown preset ${JSON.stringify(opts.preset)}`, `presets: ${Object.keys(PRESETS).join(", ")}`);
  if (!Number.isSafeInteger(opts.seed) || opts.seed < 0) throw new InputError("--seed", `must be a non-negative integer, got ${opts.seed}`);
  const vocab = await tokenizerVocabSize();
  const rawConfig = configJson(preset, vocab);
  const config = parseMistral3Config(rawConfig, "preset");
  const rng = new Rng(opts.seed);
  const tensors: TensorToWrite[] = expectedWeights(config).map((spec) => {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (spec.shape.length === 1) data.fill(1); // RMSNorm weights
    else {
      const std = initStd(spec.name, spec.shape);
      for (let i = 0; i < size; i++) data[i] = std * gaussian(rng);
    }
    return { name: spec.name, dtype: "F32", shape: spec.shape, data };
  });
  await writeDirAtomic(dir, async (tmp) => {
    await writeFileAtomic(join(tmp, "config.json"), `${JSON.stringify(rawConfig, null, 2)}\n`);
    await writeSafetensors(join(tmp, "model.safetensors"), tensors, { format: "pt" });
    await writeFileAtomic(join(tmp, "generation_config.json"), `${JSON.stringify({ bos_token_id: 1, eos_token_id: 2, pad_token_id: 11 }, null, 2)}\n`);
    await writeFileAtomic(join(tmp, "processor_config.json"), `${JSON.stringify(processorJson(preset), null, 2)}\n`);
    for (const file of TOKENIZER_FILES) await copyFile(join(ASSETS, file), join(tmp, file));
  });
  return { dir, preset: opts.preset, parameters: tensors.reduce((n, t) => n + t.data.byteLength / 4, 0), seed: opts.seed };
}

async function tokenizerVocabSize(): Promise<number> {
  const tokenizer = JSON.parse(await readFile(join(ASSETS, "tokenizer.json"), "utf8")) as { model: { vocab: Record<string, number> }; added_tokens?: { id: number }[] };
  const ids = [...Object.values(tokenizer.model.vocab), ...(tokenizer.added_tokens ?? []).map((t) => t.id)];
  return Math.max(...ids) + 1;
}

function configJson(p: TinyPreset, vocab: number): Record<string, unknown> {
  return {
    architectures: ["Mistral3ForConditionalGeneration"],
    model_type: "mistral3",
    dtype: "float32",
    image_token_index: 10,
    multimodal_projector_bias: false,
    projector_hidden_act: "gelu",
    spatial_merge_size: 2,
    vision_feature_layer: -1,
    tie_word_embeddings: false,
    text_config: {
      model_type: "ministral3",
      vocab_size: vocab,
      hidden_size: p.text.hidden,
      intermediate_size: p.text.intermediate,
      num_hidden_layers: p.text.layers,
      num_attention_heads: p.text.heads,
      num_key_value_heads: p.text.kvHeads,
      head_dim: p.text.headDim,
      hidden_act: "silu",
      max_position_embeddings: 4096,
      rms_norm_eps: 1e-5,
      rope_parameters: {
        rope_type: "yarn",
        type: "yarn",
        rope_theta: 1000000.0,
        factor: 16.0,
        original_max_position_embeddings: 256,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale: 1.0,
        mscale_all_dim: 1.0,
        llama_4_scaling_beta: 0.1,
      },
      sliding_window: null,
      tie_word_embeddings: false,
      bos_token_id: 1,
      eos_token_id: 2,
      pad_token_id: 11,
    },
    vision_config: {
      model_type: "pixtral",
      hidden_size: p.vision.hidden,
      intermediate_size: p.vision.intermediate,
      num_hidden_layers: p.vision.layers,
      num_attention_heads: p.vision.heads,
      head_dim: p.vision.hidden / p.vision.heads,
      num_channels: 3,
      image_size: p.imageEdge,
      patch_size: 14,
      hidden_act: "silu",
      rope_parameters: { rope_theta: 10000.0, rope_type: "axial" },
    },
  };
}

function processorJson(p: TinyPreset): Record<string, unknown> {
  return {
    processor_class: "PixtralProcessor",
    image_token: "[IMG]",
    image_break_token: "[IMG_BREAK]",
    image_end_token: "[IMG_END]",
    patch_size: 14,
    spatial_merge_size: 2,
    image_processor: {
      image_processor_type: "PixtralImageProcessor",
      do_convert_rgb: true,
      do_normalize: true,
      do_rescale: true,
      do_resize: true,
      image_mean: [0.48145466, 0.4578275, 0.40821073],
      image_std: [0.26862954, 0.26130258, 0.27577711],
      patch_size: { height: 14, width: 14 },
      resample: 3,
      rescale_factor: 1 / 255,
      size: { longest_edge: p.imageEdge },
    },
  };
}

/**
 * Standard deviation of a random weight. Linears get 1/√fan-in, so signals keep their scale
 * through the random network. Two departures make a random model trainable by LoRA alone (the
 * embeddings, norms and head stay frozen): token embeddings get 1/√hidden too, so in the
 * residual stream a token's own embedding does not drown out what attention brings from the
 * image; and the head gets 4/√hidden, so a hidden state aligned with one row can give that token
 * most of the probability (with 1/√hidden the best achievable was about one half over a 1,500-id
 * vocabulary, and the loss stalled).
 */
function initStd(name: string, shape: readonly number[]): number {
  const hidden = shape[shape.length - 1]!;
  if (name.endsWith("embed_tokens.weight")) return 1 / Math.sqrt(hidden);
  const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
  return (name === "lm_head.weight" ? 4 : 1) / Math.sqrt(fanIn);
}

/** Standard normal by Box–Muller. */
function gaussian(rng: Rng): number {
  const u = Math.max(rng.next(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}
