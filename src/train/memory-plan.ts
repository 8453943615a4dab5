/**
 * The memory planner: what one training micro-batch needs on the CUDA backend, estimated from the
 * config before a single weight is read, so `splint train` can say whether the run fits the card
 * (and pick recomputation or a smaller micro-batch) instead of dying in cudaMalloc halfway through
 * loading or at the first backward pass.
 *
 * The model counts what splint itself allocates (all through the context's caching allocator, so
 * the total is comparable with `allocatorStats().peak`, bench/train-step.ts's "peak"):
 *
 *   weights      every resident tensor at its resident dtype (fp8 1 byte, bf16 2, f32 4);
 *   lora         the adapter (f32 A and B), its gradient accumulators (f32, one per tensor) and, with
 *                precision "bf16", the bf16 copies of A and B the products read, kept for the run
 *                and refreshed after each step (LoraBf16Copies);
 *   optimizer    AdamW's f32 moments m and v on the device (adamw_8bit keeps them on the host and
 *                uploads one tensor's at a time: the largest tensor's pair);
 *   activations  see `activationBytes`: products write f32, and with precision "bf16" the norms,
 *                RoPE and SwiGLU write bf16 (layerBytesPerRow); the tape keeps every op output of a
 *                recorded region until the region's backward has run, and with recomputation a
 *                layer's region is its checkpoint body, replayed one layer at a time;
 *   workspace    fp8 only: the CUDA matmul widens an fp8 weight to bf16 (f32 with precision "f32")
 *                in a scratch block for the length of one product (native/cuda/src/matmul.cu), so at
 *                most one widened weight is live at a time: the largest. Released blocks stay in the
 *                allocator's cache, one per size class; the card estimate counts those too (the
 *                allocator empties its cache and retries before a cudaMalloc fails, so this is margin).
 *
 *   transient    CUDA_TRANSIENT_FRACTION of the activations: a margin for what the CUDA kernels
 *                allocate around them (the model without it matches the one H200 measurement).
 *
 * On top of that, outside the allocator's count: cuBLASLt's 32 MiB workspace and the CUDA context
 * itself (driver, module images), CONTEXT_RESERVE_BYTES, plus the allocator's size-class rounding
 * (exact for the weights, ROUNDING_SLACK of the rest). `cardBytes` is what the card must hold.
 */
import type { Mistral3Config, TextConfig, VisionConfig } from "../models/mistral3/config.ts";
import type { DType } from "../tensor/dtype.ts";

const F32 = 4;
const GIB = 2 ** 30;

/** cuBLASLt workspace allocated once per context (kWorkspaceBytes in native/cuda/src/matmul.cu). */
export const CUBLAS_WORKSPACE_BYTES = 32 * 2 ** 20;
/**
 * The CUDA context (driver state, kernel images, cuBLASLt handle), which the allocator does not
 * count: typically 0.3–0.6 GiB on recent drivers (not measured by splint); 0.75 GiB is kept.
 */
export const CONTEXT_RESERVE_BYTES = 0.75 * GIB;
/** The caching allocator rounds blocks above 1 MiB up to 1/8 of a power of two: at most 12.5%, 6% typical (weights are rounded exactly). */
export const ROUNDING_SLACK = 0.06;
/**
 * A margin for what the CUDA backend allocates around the modelled activations (bf16 copies of f32
 * operands for the autocast products and flash attention, kernel scratch), as a fraction of them.
 * Without it the model already errs high on the H200 measurements of the 14B BF16 benchmark step
 * (bench/results/2026-12-03-nvidia-h200-d7b1f32: 29.48 GiB measured with recomputation, 29.67
 * modelled; 52.42 GiB without, 54.11 modelled); on the CPU backend by up to 20%
 * (test/train/memory-plan.test.ts checks both).
 */
export const CUDA_TRANSIENT_FRACTION = 0.05;

/** One tensor as it will sit on the device. */
export interface ResidentWeight {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** One linear layer the adapter trains. */
export interface LoraTarget {
  /** Module path (`model.language_model.layers.0.self_attn.q_proj`). */
  readonly path: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly r: number;
}

/** The shape of one micro-batch, per row, as the collator builds it (rows padded to seqLen). */
export interface MicroBatchShape {
  /** Examples per micro-batch (per_device_train_batch_size). */
  rows: number;
  /** Tokens per row after padding (the longest row of the micro-batch). */
  seqLen: number;
  /** Vision patches per row (Σ over its images of (H/patch)·(W/patch)). */
  patchesPerRow: number;
  /** Positions per row whose label the loss counts (the head runs only there). */
  scoredPerRow: number;
}

export interface PlanInputs {
  config: Mistral3Config;
  weights: readonly ResidentWeight[];
  lora: { targets: readonly LoraTarget[]; dropout: number };
  optimizer: "adamw_torch" | "adamw_8bit";
  micro: MicroBatchShape;
  /**
   * true: gradient checkpointing of every vision and decoder layer; "selective": every layer keeps
   * its products' outputs and drops its norms' and SwiGLU's (remade in the backward); false: all kept.
   */
  recompute: boolean | "selective";
  /** How the linears multiply (Backend.matmul precision): fp8 weights widen to bf16, or to f32. Default bf16. */
  precision?: "bf16" | "f32";
}

export interface MemoryEstimate {
  weights: number;
  /** Of `weights`, the fp8 linears (1 byte per element). */
  fp8Weights: number;
  /** The LoRA pairs, their gradient accumulators, and their bf16 copies (precision bf16). */
  lora: number;
  optimizer: number;
  activations: { total: number; saved: number; layer: number; other: number };
  /** CUDA_TRANSIENT_FRACTION of the activations. */
  transient: number;
  /** fp8 widening scratch: the largest widened weight (live during one product). */
  workspace: number;
  /** Widened blocks of the other size classes, cached by the allocator (counted in cardBytes only). */
  cachedScratch: number;
  /** What the caching allocator's high-water mark should reach. */
  allocatorBytes: number;
  /** allocatorBytes + rounding slack + cuBLASLt workspace + CUDA context: what the card must hold. */
  cardBytes: number;
}

/** The widths of one layer (text or vision), per row (token or patch). */
export interface LayerWidths {
  hidden: number;
  q: number;
  kv: number;
  intermediate: number;
  heads: number;
}

function elements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function dtypeBytes(dtype: DType): number {
  return dtype === "fp8_e4m3" ? 1 : dtype === "bf16" ? 2 : 4;
}

/** The size class of a block (Allocator::bucket in native/cuda/src/allocator.cu). */
export function allocatorBucket(bytes: number): number {
  const b = Math.max(1, bytes);
  if (b <= 2 ** 20) return Math.ceil(b / 512) * 512;
  const top = Math.floor(Math.log2(b - 1));
  const step = 2 ** top / 8;
  return Math.ceil(b / step) * step;
}

/**
 * Bytes per row that one layer's forward leaves on the tape (every op output of the body that a
 * backward reads; reshapes are views). Products write f32; with precision "bf16" the norms, RoPE and SwiGLU write bf16 (their
 * consumers' products round to bf16 anyway: LoraLinear.inputDtype). A LoRA linear (Graph.loraLinear)
 * leaves its output and x·Aᵀ (r; both bf16 with precision "bf16", as under autocast): the update is accumulated into the output by the matmul and
 * the dropout mask is recomputed from its seed. The body: norm (+ one f32 rstd a row), q/k/v, RoPE of
 * q and k, attention (its output, bf16 with precision "bf16", and one f32 log-sum-exp per head), o, the residual add, norm,
 * gate/up, SwiGLU, down, the residual add.
 */
export function layerBytesPerRow(w: LayerWidths, targeted: (name: string) => number | null, precision: "bf16" | "f32"): number {
  const narrow = precision === "bf16" ? 2 : F32;
  // A LoRA linear's output and u are bf16 in the bf16 tier (Graph.loraLinear); a plain one's f32.
  const lin = (name: string, outW: number): number => {
    const r = targeted(name);
    return r === null ? F32 * outW : narrow * (outW + r);
  };
  // q and k feed only RoPE and o and down only a residual add, none of whose backward reads its
  // input: the layer's scope frees those outputs (Graph.scope) and keeps only their u.
  const freed = (name: string): number => {
    const r = targeted(name);
    return r === null ? 0 : narrow * r;
  };
  const { hidden: D, q, kv, intermediate: I } = w;
  return (
    narrow * D + F32 + // input norm + rstd
    freed("q") + narrow * q + // q's u and its rope
    freed("k") + narrow * kv +
    lin("v", kv) +
    narrow * q + F32 * w.heads + // attention output (bf16 in the fast tier, as SDPA's) and log-sum-exp
    freed("o") + F32 * D + // o's u and the residual add
    narrow * D + F32 + // post norm
    lin("gate", I) + lin("up", I) + narrow * I + // swiglu
    freed("down") + F32 * D
  );
}

/**
 * What selective recomputation drops of one layer's forward, per row: the outputs of its two norms
 * and, with a SwiGLU MLP, of the SwiGLU (each written as narrow as the products that read it).
 */
export function evictedBytesPerRow(w: LayerWidths, precision: "bf16" | "f32", swiglu = true): number {
  const narrow = precision === "bf16" ? 2 : F32;
  return narrow * (2 * w.hidden + (swiglu ? w.intermediate : 0));
}

/**
 * Backward of one replayed layer, beyond what its forward left: the gradients of the body's
 * intermediates live only until the op that consumed them has run backward, so at most a few of
 * the widest are alive at once (the gate/up pair of the MLP and the incoming gradient: 3·I + 2·D
 * per row), plus the bf16 copies the products' backward reads — measured on the CPU backend
 * (test/train/memory-plan.test.ts). The pair is f32 unless SwiGLU's backward writes it in bf16:
 * with precision "bf16", when both gate and up are LoRA linears (narrow gradients, the Graph's
 * backward) and the MLP is SwiGLU (`swiglu`: false for a GELU vision tower).
 */

export function layerBackwardBytesPerRow(w: LayerWidths, targeted: (name: string) => number | null, precision: "bf16" | "f32", swiglu = true): number {
  const narrowPair = precision === "bf16" && swiglu && targeted("gate") !== null && targeted("up") !== null;
  return (narrowPair ? 2 : F32) * 2 * w.intermediate + F32 * (w.intermediate + 2 * w.hidden);
}

function textWidths(t: TextConfig): LayerWidths {
  return { hidden: t.hidden_size, q: t.num_attention_heads * t.head_dim, kv: t.num_key_value_heads * t.head_dim, intermediate: t.intermediate_size, heads: t.num_attention_heads };
}

function visionWidths(v: VisionConfig): LayerWidths {
  const width = v.num_attention_heads * v.head_dim;
  return { hidden: v.hidden_size, q: width, kv: width, intermediate: v.intermediate_size, heads: v.num_attention_heads };
}

/** r of a targeted linear of one decoder (or vision) layer, looked up by its short name. */
function rankLookup(targets: readonly LoraTarget[], prefix: RegExp): (name: string) => number | null {
  const ranks = new Map<string, number>();
  for (const t of targets) {
    if (!prefix.test(t.path)) continue;
    const name = t.path.slice(t.path.lastIndexOf(".") + 1).replace(/_proj$/, "");
    ranks.set(name, Math.max(ranks.get(name) ?? 0, t.r));
  }
  return (name) => ranks.get(name) ?? null;
}

/**
 * Activation bytes of one micro-batch at the step's high-water mark. Everything the forward pass
 * records stays owned by the graph until the step ends (`saved`: the layer outputs, the only thing
 * a checkpointed layer keeps; plus, in `other`, the tensors around the layers: cropped pixels,
 * patches, patch conv, ln_pre, vision rope tables, the projector, the gathered embeddings and the
 * scattered image features, the decoder rope tables, the final norm, the scored rows and their
 * logits). On top of that the backward pass peaks either in the head (dlogits [scored, V] and the
 * head's input gradient) or while a layer is replayed (`layer`: its recorded body, its backward, and
 * the residual stream's gradient, twice); without recomputation every layer's body is recorded.
 */
export function activationBytes(inputs: PlanInputs): MemoryEstimate["activations"] {
  const { config, micro, recompute, lora } = inputs;
  const t = config.text_config;
  const v = config.vision_config;
  const tokens = micro.rows * micro.seqLen;
  const patches = micro.rows * micro.patchesPerRow;
  const merged = patches / config.spatial_merge_size ** 2;
  const scored = micro.rows * micro.scoredPerRow;
  const tw = textWidths(t);
  const vw = visionWidths(v);
  const precision = inputs.precision ?? "bf16";
  const textRanks = rankLookup(lora.targets, /^model\.language_model\.layers\./);
  const visionRanks = rankLookup(lora.targets, /^model\.vision_tower\.transformer\.layers\./);
  const textLayer = layerBytesPerRow(tw, textRanks, precision);
  const visionLayer = layerBytesPerRow(vw, visionRanks, precision);
  const textReplay = tokens * (textLayer + layerBackwardBytesPerRow(tw, textRanks, precision) + 2 * F32 * t.hidden_size);
  const visionReplay = patches * (visionLayer + layerBackwardBytesPerRow(vw, visionRanks, precision, v.hidden_act === "silu") + 2 * F32 * v.hidden_size);

  const saved = F32 * (t.num_hidden_layers * tokens * t.hidden_size + v.num_hidden_layers * patches * v.hidden_size);
  // Selective: the tape keeps each layer less its dropped outputs, and the backward holds at most
  // one layer's of them again (they are remade one at a time and dropped after their last reader).
  const textEvicted = recompute === "selective" ? evictedBytesPerRow(tw, precision) : 0;
  const visionEvicted = recompute === "selective" ? evictedBytesPerRow(vw, precision, v.hidden_act === "silu") : 0;
  const layerBytes =
    recompute === true
      ? Math.max(textReplay, visionReplay)
      : t.num_hidden_layers * tokens * (textLayer - textEvicted) +
        v.num_hidden_layers * patches * (visionLayer - visionEvicted) +
        Math.max(textReplay - tokens * (textLayer - textEvicted), visionReplay - patches * (visionLayer - visionEvicted));

  const patchIn = v.num_channels * v.patch_size ** 2;
  const m2 = config.spatial_merge_size ** 2;
  const visionOther = F32 * (patches * (2 * patchIn + 2 * v.hidden_size + v.head_dim) + patches * v.hidden_size + merged * (v.hidden_size * m2 + v.hidden_size + 3 * t.hidden_size));
  const textOther = F32 * (tokens * (3 * t.hidden_size + 2 * t.head_dim) + scored * (t.hidden_size + t.vocab_size));
  const headBackward = F32 * (scored * (t.vocab_size + t.hidden_size) + tokens * t.hidden_size);
  const layer = Math.max(layerBytes, headBackward);
  const other = visionOther + textOther;
  return { total: saved + layer + other, saved, layer, other };
}

export function estimateMemory(inputs: PlanInputs): MemoryEstimate {
  let weights = 0;
  let roundedWeights = 0;
  let fp8Weights = 0;
  const fp8Sizes = new Set<number>();
  for (const w of inputs.weights) {
    const bytes = elements(w.shape) * dtypeBytes(w.dtype);
    weights += bytes;
    roundedWeights += allocatorBucket(bytes);
    if (w.dtype === "fp8_e4m3") {
      fp8Weights += bytes;
      fp8Sizes.add(allocatorBucket(elements(w.shape) * (inputs.precision === "f32" ? 4 : 2)));
    }
  }
  const loraSizes = inputs.lora.targets.flatMap((t) => [t.r * t.inFeatures, t.outFeatures * t.r]);
  const loraElements = loraSizes.reduce((a, b) => a + b, 0);
  // The pair, its gradient accumulator, and (bf16 products) the pass's bf16 copies of the pair.
  const lora = 2 * loraElements * F32 + ((inputs.precision ?? "bf16") === "bf16" ? 2 * loraElements : 0);
  const optimizer = inputs.optimizer === "adamw_torch" ? 2 * loraElements * F32 : 2 * Math.max(0, ...loraSizes) * F32;
  const activations = activationBytes(inputs);
  const transient = CUDA_TRANSIENT_FRACTION * activations.total;
  const workspace = Math.max(0, ...fp8Sizes);
  const cachedScratch = [...fp8Sizes].reduce((a, b) => a + b, 0) - workspace;
  const rest = lora + optimizer + activations.total + transient + workspace;
  const allocatorBytes = weights + rest;
  const cardBytes = roundedWeights + cachedScratch + rest * (1 + ROUNDING_SLACK) + CUBLAS_WORKSPACE_BYTES + CONTEXT_RESERVE_BYTES;
  return { weights, fp8Weights, lora, optimizer, activations, transient, workspace, cachedScratch, allocatorBytes, cardBytes };
}

/** The settings the planner may change, and why it changed them. */
export interface PlannedSetting {
  gradient_checkpointing: boolean | "selective";
  per_device_train_batch_size: number;
  gradient_accumulation_steps: number;
}

/** The setting as configured: gradient_checkpointing "auto" leaves recomputation to the planner. */
export type ConfiguredSetting = Omit<PlannedSetting, "gradient_checkpointing"> & { gradient_checkpointing: boolean | "auto" | "selective" };

export interface MemoryDecision {
  /** The card's memory (bytes), or null when unknown (nothing is checked then). */
  deviceBytes: number | null;
  /** Where deviceBytes came from: the device, or the --gpu-memory override. */
  deviceSource: string;
  fits: boolean;
  setting: PlannedSetting;
  /** What differs from the configured setting, in words (empty when nothing changed). */
  changes: string[];
  estimate: MemoryEstimate;
  /** Every setting tried, in order, with its card estimate. */
  tried: { setting: PlannedSetting; cardBytes: number }[];
}

/**
 * Picks the first setting that fits `deviceBytes`: the configured one (with gradient_checkpointing
 * "auto", first without recomputation, the fastest, then selective, then full); then with more
 * recomputation (the same arithmetic, only slower: selective, then full); then, when `mayShrink`, halving the micro-batch while doubling
 * gradient accumulation (the same examples per optimizer step; the step's loss becomes the mean over
 * more, smaller micro-batches, as the tutorial's rule defines it). `shapeFor(rows)` gives the
 * micro-batch shape at a smaller row count. When nothing fits, the decision holds the smallest
 * estimate with fits = false.
 */
export function chooseSetting(
  base: Omit<PlanInputs, "micro" | "recompute">,
  configured: ConfiguredSetting,
  shapeFor: (rows: number) => MicroBatchShape,
  device: { bytes: number | null; source: string },
  mayShrink: boolean,
): MemoryDecision {
  const candidates: PlannedSetting[] = [];
  const configuredRecompute = configured.gradient_checkpointing;
  if (configuredRecompute === false || configuredRecompute === "auto") candidates.push({ ...configured, gradient_checkpointing: false });
  if (configuredRecompute !== true) candidates.push({ ...configured, gradient_checkpointing: "selective" });
  candidates.push({ ...configured, gradient_checkpointing: true });
  if (mayShrink) {
    let rows = configured.per_device_train_batch_size;
    let accumulation = configured.gradient_accumulation_steps;
    while (rows > 1 && rows % 2 === 0) {
      rows /= 2;
      accumulation *= 2;
      candidates.push({ gradient_checkpointing: true, per_device_train_batch_size: rows, gradient_accumulation_steps: accumulation });
    }
  }
  const tried: MemoryDecision["tried"] = [];
  let last: { setting: PlannedSetting; estimate: MemoryEstimate } | null = null;
  for (const setting of candidates) {
    const estimate = estimateMemory({ ...base, micro: shapeFor(setting.per_device_train_batch_size), recompute: setting.gradient_checkpointing });
    tried.push({ setting, cardBytes: estimate.cardBytes });
    last = { setting, estimate };
    if (device.bytes === null || estimate.cardBytes <= device.bytes) {
      return { deviceBytes: device.bytes, deviceSource: device.source, fits: true, setting, changes: describeChanges(configured, setting), estimate, tried };
    }
  }
  return { deviceBytes: device.bytes, deviceSource: device.source, fits: false, setting: last!.setting, changes: describeChanges(configured, last!.setting), estimate: last!.estimate, tried };
}

function describeChanges(from: ConfiguredSetting, to: PlannedSetting): string[] {
  const out: string[] = [];
  if (from.gradient_checkpointing === "auto") {
    const why =
      to.gradient_checkpointing === true
        ? "the activations of every layer do not fit: recomputed"
        : to.gradient_checkpointing === "selective"
          ? "every activation does not fit; the products' outputs do: norms and SwiGLU remade in the backward"
          : "the activations fit: kept, the fastest setting";
    out.push(`gradient_checkpointing auto → ${to.gradient_checkpointing} (${why})`);
  } else if (from.gradient_checkpointing !== to.gradient_checkpointing) {
    out.push(`gradient_checkpointing ${from.gradient_checkpointing} → ${to.gradient_checkpointing}`);
  }
  if (from.per_device_train_batch_size !== to.per_device_train_batch_size) {
    out.push(
      `per_device_train_batch_size ${from.per_device_train_batch_size} → ${to.per_device_train_batch_size}, gradient_accumulation_steps ${from.gradient_accumulation_steps} → ${to.gradient_accumulation_steps} (the same examples per optimizer step)`,
    );
  }
  return out;
}

export function gib(bytes: number): string {
  return `${(bytes / GIB).toFixed(2)} GiB`;
}

/** The estimate as log lines (what `splint train` prints). */
export function formatDecision(d: MemoryDecision): string[] {
  const e = d.estimate;
  const s = d.setting;
  const lines = [
    `memory plan (${d.deviceBytes === null ? "device memory unknown" : `${gib(d.deviceBytes)} from ${d.deviceSource}`}): ` +
      `weights ${gib(e.weights)}${e.fp8Weights > 0 ? ` (${gib(e.fp8Weights)} fp8)` : ""}, LoRA with grads and bf16 copies ${gib(e.lora)}, optimizer ${gib(e.optimizer)}, ` +
      `activations ${gib(e.activations.total)} (saved ${gib(e.activations.saved)}, layer ${gib(e.activations.layer)}, rest ${gib(e.activations.other)}), ` +
      `CUDA transients ${gib(e.transient)}, fp8 scratch ${gib(e.workspace)}; allocator peak ≈ ${gib(e.allocatorBytes)}, card ≈ ${gib(e.cardBytes)}`,
    `memory plan setting: gradient_checkpointing ${s.gradient_checkpointing}, micro-batch ${s.per_device_train_batch_size} × ${s.gradient_accumulation_steps} accumulation steps` +
      (d.changes.length > 0 ? ` (changed to fit: ${d.changes.join("; ")})` : ""),
  ];
  return lines;
}

/** Why a run cannot fit, with every setting tried (the message `splint train` refuses with). */
export function refusal(d: MemoryDecision): string {
  const tried = d.tried.map((t) => `checkpointing ${t.setting.gradient_checkpointing}, micro-batch ${t.setting.per_device_train_batch_size}: ${gib(t.cardBytes)}`).join("; ");
  return `needs about ${gib(d.estimate.cardBytes)} of GPU memory even at its smallest setting, the card has ${gib(d.deviceBytes ?? 0)} (${d.deviceSource}); tried ${tried}`;
}

/**
 * The card's memory from the CUDA backend's device description ("NVIDIA H200, sm_90, 139.8 GiB",
 * splint_cuda_device_name: totalGlobalMem to 0.1 GiB), or null when the text carries none.
 */
export function deviceMemoryFromName(device: string): number | null {
  const m = /,\s*([0-9]+(?:\.[0-9]+)?)\s*GiB\s*$/.exec(device);
  return m ? Number(m[1]) * GIB : null;
}
