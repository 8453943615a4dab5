/**
 * What splint's benchmarks (train-step.ts, eval-throughput.ts) run: the Ministral 3 configurations
 * of ministral3.md §1 as config.json objects, the tutorial's micro-batch with random token ids and
 * pixels, the tutorial's LoRA and AdamW settings, and random bf16 weights built in memory.
 */
import type { LoraSettings } from "../src/lora/adapter.ts";
import type { Mistral3Config } from "../src/models/mistral3/config.ts";
import { IGNORE_INDEX, type Mistral3Inputs } from "../src/models/mistral3/model.ts";
import { expectedWeights, planWeights, type WeightSpec } from "../src/models/mistral3/weights.ts";
import type { Backend } from "../src/tensor/backend.ts";
import { f32ArrayToBf16 } from "../src/tensor/bf16.ts";
import { f32ArrayToFp8E4m3, FP8_E4M3_MAX } from "../src/tensor/fp8.ts";
import type { Tensor } from "../src/tensor/tensor.ts";
import { TUTORIAL_DEFAULTS } from "../src/train/config.ts";
import { loraTargetsOf } from "../src/train/memory-inputs.ts";
import { estimateMemory, type MemoryEstimate } from "../src/train/memory-plan.ts";
import { Rng } from "../src/util/rng.ts";
import { loraSettingsFor } from "../src/train/run.ts";

export const SIZES = ["tiny", "small", "3b", "8b", "14b"] as const;
export type Size = (typeof SIZES)[number];

/**
 * ministral3.md §1: text dimensions per size; the vision tower is the same 0.4B Pixtral for all.
 * tiny and small are scaled-down shapes of the same architecture for CPU runs.
 */
const TEXT_DIMS: Record<Size, { hidden: number; layers: number; intermediate: number; heads: number; kvHeads: number; headDim: number; vocab: number; theta: number; tied: boolean }> = {
  tiny: { hidden: 64, layers: 2, intermediate: 128, heads: 4, kvHeads: 2, headDim: 16, vocab: 2048, theta: 1e6, tied: false },
  small: { hidden: 512, layers: 8, intermediate: 1536, heads: 8, kvHeads: 4, headDim: 64, vocab: 32768, theta: 1e6, tied: false },
  "3b": { hidden: 3072, layers: 26, intermediate: 9216, heads: 32, kvHeads: 8, headDim: 128, vocab: 131072, theta: 1e6, tied: true },
  "8b": { hidden: 4096, layers: 34, intermediate: 14336, heads: 32, kvHeads: 8, headDim: 128, vocab: 131072, theta: 1e6, tied: false },
  "14b": { hidden: 5120, layers: 40, intermediate: 16384, heads: 32, kvHeads: 8, headDim: 128, vocab: 131072, theta: 1e9, tied: false },
};

const PIXTRAL = { hidden: 1024, intermediate: 4096, layers: 24, heads: 16, headDim: 64 };
const VISION_DIMS: Record<Size, typeof PIXTRAL> = {
  tiny: { hidden: 64, intermediate: 128, layers: 2, heads: 4, headDim: 16 },
  small: { hidden: 256, intermediate: 1024, layers: 4, heads: 8, headDim: 32 },
  "3b": PIXTRAL,
  "8b": PIXTRAL,
  "14b": PIXTRAL,
};

/** config.json of Mistral3ForConditionalGeneration for a size, as transformers 5 writes it. */
export function hfConfig(size: Size): Record<string, unknown> {
  const d = TEXT_DIMS[size];
  const v = VISION_DIMS[size];
  return {
    architectures: ["Mistral3ForConditionalGeneration"],
    model_type: "mistral3",
    image_token_index: 10,
    multimodal_projector_bias: false,
    projector_hidden_act: "gelu",
    spatial_merge_size: 2,
    vision_feature_layer: -1,
    tie_word_embeddings: d.tied,
    text_config: {
      model_type: "ministral3",
      hidden_size: d.hidden,
      intermediate_size: d.intermediate,
      num_hidden_layers: d.layers,
      num_attention_heads: d.heads,
      num_key_value_heads: d.kvHeads,
      head_dim: d.headDim,
      vocab_size: d.vocab,
      rms_norm_eps: 1e-5,
      hidden_act: "silu",
      max_position_embeddings: 262144,
      sliding_window: null,
      bos_token_id: 1,
      eos_token_id: 2,
      pad_token_id: 11,
      attention_dropout: 0.0,
      tie_word_embeddings: d.tied,
      rope_parameters: {
        rope_type: "yarn",
        type: "yarn",
        rope_theta: d.theta,
        factor: 16.0,
        original_max_position_embeddings: 16384,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale: 1.0,
        mscale_all_dim: 1.0,
        llama_4_scaling_beta: 0.1,
      },
    },
    vision_config: {
      model_type: "pixtral",
      hidden_size: v.hidden,
      intermediate_size: v.intermediate,
      num_hidden_layers: v.layers,
      num_attention_heads: v.heads,
      head_dim: v.headDim,
      num_channels: 3,
      image_size: 1540,
      patch_size: 14,
      hidden_act: "silu",
      attention_dropout: 0.0,
      rope_parameters: { rope_theta: 10000.0, rope_type: "default" },
      rope_theta: 10000.0,
    },
  };
}

export interface Workload {
  batch: number;
  /** Resized image edge (multiple of 28); the tutorial's 640×640 images become 644×644. */
  imageSize: number;
  promptTokens: number;
  answerTokens: number;
}

export const TUTORIAL_WORKLOAD: Workload = { batch: 2, imageSize: 644, promptTokens: 160, answerTokens: 8 };

const IMG = 10;
const IMG_BREAK = 12;
const IMG_END = 13;

/** [IMG] rows separated by [IMG_BREAK], closed by [IMG_END] (the Pixtral processor's layout). */
export function imageTokenBlock(imageSize: number, patch: number, merge: number): number[] {
  const side = imageSize / (patch * merge);
  const out: number[] = [];
  for (let r = 0; r < side; r++) {
    for (let c = 0; c < side; c++) out.push(IMG);
    out.push(r === side - 1 ? IMG_END : IMG_BREAK);
  }
  return out;
}

/**
 * One micro-batch: per row `<s>[INST]` + image block + prompt text + `[/INST]` + answer ending in
 * `</s>`; labels only on the answer (completion-only loss). Text ids are random non-special ids.
 * promptOnly leaves the answer out (generation prompts).
 */
export function buildInputs(config: Mistral3Config, w: Workload, seed: number, promptOnly = false): Mistral3Inputs {
  const rng = new Rng(seed);
  const v = config.vision_config;
  const block = imageTokenBlock(w.imageSize, v.patch_size, config.spatial_merge_size);
  const textId = (): number => 1000 + rng.int(config.text_config.vocab_size - 1000);
  const rows: number[][] = [];
  const labelRows: number[][] = [];
  for (let b = 0; b < w.batch; b++) {
    const prompt = [1, 3, ...block, ...Array.from({ length: w.promptTokens - 3 }, textId), 4];
    const answer = promptOnly ? [] : [...Array.from({ length: w.answerTokens - 1 }, textId), 2];
    rows.push([...prompt, ...answer]);
    labelRows.push([...prompt.map(() => IGNORE_INDEX), ...answer]);
  }
  const pixels = new Float32Array(w.batch * 3 * w.imageSize * w.imageSize);
  for (let i = 0; i < pixels.length; i++) pixels[i] = 4 * rng.next() - 2;
  const sizes = new Int32Array(2 * w.batch).fill(w.imageSize);
  return {
    batch: w.batch,
    seqLen: rows[0]!.length,
    inputIds: Int32Array.from(rows.flat()),
    labels: Int32Array.from(labelRows.flat()),
    images: { pixelValues: pixels, shape: [w.batch, 3, w.imageSize, w.imageSize], imageSizes: sizes },
  };
}

export const LORA: LoraSettings = loraSettingsFor(TUTORIAL_DEFAULTS, null);

export const OPTIMIZER = { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };

/** How the benchmark's random weights are stored: all bf16, or the FP8 Instruct checkpoints' layout. */
export const WEIGHT_KINDS = ["bf16", "fp8"] as const;
export type WeightKind = (typeof WEIGHT_KINDS)[number];

/** |w| bound of the random weights (uniform, std 0.02). */
const WEIGHT_BOUND = 0.0346;

/**
 * Random weights without drawing billions of numbers: one pool of random values (|w| ≤ 0.035,
 * std 0.02), tiled to the largest tensor; every matrix is the start of that buffer (views at offset
 * 0 only: the FFI upload takes the view's buffer address). Norm weights are 1. No tensor is zero, so
 * no kernel runs on zeros.
 *
 * "fp8" lays the weights out as Mistral publishes the FP8 Instruct checkpoints (ministral3.md
 * §5.3): the 7 linears of every decoder layer as e4m3 with a 0-d f32 `weight_scale_inv` (amax/448,
 * a little different per tensor) and an `activation_scale`, under the checkpoint's legacy key
 * names, everything else bf16; the keys go through splint's loader plan (planWeights), so the
 * benchmark holds exactly what loading such a checkpoint would.
 */
export function randomWeights(backend: Backend, config: Mistral3Config, tied: boolean, seed: number, kind: WeightKind = "bf16"): Map<string, Tensor> {
  const rng = new Rng(seed);
  const specs = expectedWeights(config).filter((s) => !(tied && s.name === "lm_head.weight"));
  const POOL = 1 << 24;
  const poolF32 = new Float32Array(POOL);
  for (let i = 0; i < POOL; i++) poolF32[i] = (rng.next() * 2 - 1) * WEIGHT_BOUND;
  const largest = Math.max(...specs.map((s) => s.shape.reduce((a, b) => a * b, 1)));
  const tile = <T extends Uint16Array | Uint8Array>(pool: T, out: T): T => {
    for (let at = 0; at < out.length; at += POOL) out.set(pool.subarray(0, Math.min(POOL, out.length - at)), at);
    return out;
  };
  const host = tile(f32ArrayToBf16(poolF32), new Uint16Array(largest + POOL));
  const one = new Uint16Array(Math.max(...specs.filter((s) => s.shape.length === 1).map((s) => s.shape[0]!))).fill(0x3f80);
  const bf16 = (spec: WeightSpec): Tensor => {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    return backend.upload(spec.shape.length === 1 ? one.subarray(0, size) : host.subarray(0, size), spec.shape, "bf16");
  };
  const weights = new Map<string, Tensor>();
  if (kind === "bf16") {
    for (const spec of specs) weights.set(spec.name, bf16(spec));
    return weights;
  }

  const baseScale = WEIGHT_BOUND / FP8_E4M3_MAX;
  const bytes = tile(f32ArrayToFp8E4m3(poolF32, baseScale), new Uint8Array(largest + POOL));
  const layout = fp8CheckpointLayout(specs);
  const plan = planWeights(config, [...layout.keys()], (key) => layout.get(key)!, "the benchmark's FP8 layout");
  plan.tensors.forEach((planned, i) => {
    const spec = planned.spec;
    if (planned.scaleKey === undefined) {
      weights.set(spec.name, bf16(spec));
      return;
    }
    const size = spec.shape.reduce((a, b) => a * b, 1);
    weights.set(spec.name, backend.upload(bytes.subarray(0, size), spec.shape, "fp8_e4m3", Math.fround(baseScale * (1 + 0.01 * (i % 7)))));
  });
  return weights;
}

const LEGACY: readonly [string, string][] = [
  ["lm_head.", "language_model.lm_head."],
  ["model.language_model.", "language_model.model."],
  ["model.vision_tower.", "vision_tower."],
  ["model.multi_modal_projector.", "multi_modal_projector."],
];

/** True for the 7 linears of a decoder layer: the only tensors the FP8 checkpoints store in e4m3. */
export function isFp8Linear(name: string): boolean {
  return /^model\.language_model\.layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.weight$/.test(name);
}

/** Checkpoint keys (legacy prefixes, as transformers writes them) → dtype and shape, in the FP8 layout. */
export function fp8CheckpointLayout(specs: readonly WeightSpec[]): Map<string, { dtype: "BF16" | "F8_E4M3" | "F32"; shape: readonly number[] }> {
  const out = new Map<string, { dtype: "BF16" | "F8_E4M3" | "F32"; shape: readonly number[] }>();
  for (const spec of specs) {
    const [from, to] = LEGACY.find(([prefix]) => spec.name.startsWith(prefix))!;
    const key = to + spec.name.slice(from.length);
    if (!isFp8Linear(spec.name)) {
      out.set(key, { dtype: "BF16", shape: spec.shape });
      continue;
    }
    const module = key.slice(0, -".weight".length);
    out.set(key, { dtype: "F8_E4M3", shape: spec.shape });
    out.set(`${module}.weight_scale_inv`, { dtype: "F32", shape: [] });
    out.set(`${module}.activation_scale`, { dtype: "F32", shape: [] });
  }
  return out;
}

/**
 * The memory planner's estimate for one benchmark step (src/train/memory-plan.ts), to set beside the
 * measured peak: the loss (and the head) only on the answer positions, as the trainer runs it.
 */
export function plannedStepMemory(
  config: Mistral3Config,
  weights: ReadonlyMap<string, Tensor>,
  lora: LoraSettings,
  w: Workload,
  seqLen: number,
  precision: "bf16" | "f32",
  recompute: boolean | "selective",
): MemoryEstimate {
  return estimateMemory({
    config,
    weights: [...weights].map(([name, t]) => ({ name, shape: t.shape, dtype: t.dtype })),
    lora: { targets: loraTargetsOf(config, lora), dropout: lora.lora_dropout },
    optimizer: "adamw_torch",
    micro: { rows: w.batch, seqLen, patchesPerRow: (w.imageSize / config.vision_config.patch_size) ** 2, scoredPerRow: w.answerTokens },
    recompute,
    precision,
  });
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
