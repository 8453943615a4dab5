import type { DType } from "./dtype.ts";
import type { Tensor } from "./tensor.ts";

/** How a product of an f32 and a 16- or 8-bit operand is computed (Backend.matmul). */
export type MatmulPrecision = "f32" | "bf16";

/**
 * The one interface every backend implements (CPU in TypeScript, CUDA in native/cuda). Model code
 * never calls it directly: it goes through the differentiable ops in ../autograd, which pair each
 * forward primitive here with its backward primitive.
 *
 * Conventions:
 * - All tensors are contiguous and row-major. "N" is a number of rows (tokens or patches), "C" a
 *   row width. Leading dimensions are flattened by the caller with Tensor.reshape.
 * - Float inputs may be f32, bf16 or fp8_e4m3 (fp8 only where a frozen weight is read); arithmetic
 *   is f32. Outputs are f32 unless `outDtype` says otherwise.
 * - Primitives never synchronise with the host except read() and the ops that return a number.
 * - Every primitive allocates its outputs; "InPlace" primitives write into their first argument.
 * - Layout ops (copy, slice, concat, gather, scatter, element permutations) move stored elements
 *   and keep the input's dtype (and fp8 scale); arithmetic ops return f32.
 * - Matmul accumulates in f32; reductions (norms, softmax, cross-entropy, Σx²) in at least f32.
 */
export interface Backend {
  readonly name: "cpu" | "cuda";

  // ---- memory ------------------------------------------------------------------------------
  /** Uninitialised storage. */
  empty(shape: readonly number[], dtype: DType): Tensor;
  zeros(shape: readonly number[], dtype: DType): Tensor;
  /**
   * Copies host data in. Float32Array for f32 (or to be narrowed to bf16), Uint16Array holding
   * raw bf16 bits, Uint8Array holding raw fp8 bits (with `scale`), Int32Array for i32.
   */
  upload(
    data: Float32Array | Uint16Array | Uint8Array | Int32Array,
    shape: readonly number[],
    dtype: DType,
    scale?: number,
  ): Tensor;
  /** Copies back to the host, widened: Float32Array for float dtypes (fp8 times its scale), Int32Array for i32. */
  read(t: Tensor): Float32Array | Int32Array;
  /** Raw stored bits on the host (bf16 as Uint16Array, fp8 as Uint8Array): for writing checkpoints exactly. */
  readRaw(t: Tensor): Float32Array | Uint16Array | Uint8Array | Int32Array;
  /** Frees the storage behind t (idempotent; views made by reshape share it). Called by Tensor.free. */
  release(t: Tensor): void;
  /** Bytes currently held by live tensors, and the high-water mark. */
  memory(): { live: number; peak: number };

  // ---- copies and layout -------------------------------------------------------------------
  cast(x: Tensor, dtype: DType): Tensor;
  copy(x: Tensor): Tensor;
  /** Rows [start, start+count) of x [N, C]. */
  sliceRows(x: Tensor, start: number, count: number): Tensor;
  /** Stacks [Ni, C] tensors into [ΣNi, C]. */
  concatRows(parts: readonly Tensor[]): Tensor;
  /** out[i] = x[index[i]] over rows: x [N, C], index i32 [M] → [M, C]. */
  gatherRows(x: Tensor, index: Tensor): Tensor;
  /** dst[index[i]] = src[i] over rows, in place: dst [N, C], index i32 [M], src [M, C]. */
  scatterRowsInPlace(dst: Tensor, index: Tensor, src: Tensor): void;
  /** dst[index[i]] += src[i] over rows, in place (indices may repeat). */
  scatterAddRowsInPlace(dst: Tensor, index: Tensor, src: Tensor): void;
  /** Element permutation: out.flat[i] = x.flat[index[i]], index i32 of out's size. */
  gatherElements(x: Tensor, index: Tensor, outShape: readonly number[]): Tensor;
  /** Inverse of gatherElements for a permutation: out.flat[index[i]] = x.flat[i]. */
  scatterElements(x: Tensor, index: Tensor, outShape: readonly number[]): Tensor;
  /**
   * Conv2d with kernel = stride = p, as im2col: pixels [3, H, W] (H, W multiples of p) → patches
   * [(H/p)·(W/p), 3·p·p], patches in row-major grid order, each row ordered (channel, ky, kx)
   * to match a conv weight [out, 3, p, p] flattened to [out, 3·p·p].
   */
  patchify(pixels: Tensor, patch: number): Tensor;

  // ---- matrix products ---------------------------------------------------------------------
  /**
   * out = alpha · op(a) · op(b) (+ accumulate, in place, when given), with op(x) = xᵀ when the
   * matching trans flag is set. a [M, K] (or [K, M]), b [K, N] (or [N, K]); b may be bf16 or fp8.
   * A linear layer y = x·Wᵀ is matmul(x, W, { transB: true }).
   * precision "bf16" (autocast): when one operand is bf16 or fp8 and the other f32, the f32 one is
   * rounded to bf16 first, so the product runs as bf16·bf16 with f32 accumulation (tensor cores on
   * a GPU), as PyTorch computes a bf16 model's linear layers. Default "f32": exact f32 products.
   * accumulate is f32 or bf16; a bf16 one gets bf16(accumulate + product), the sum in f32.
   */
  matmul(
    a: Tensor,
    b: Tensor,
    opts?: { transA?: boolean; transB?: boolean; alpha?: number; accumulate?: Tensor; outDtype?: DType; precision?: MatmulPrecision },
  ): Tensor;

  // ---- LoRA (the low-rank side of Graph.loraLinear) ----------------------------------------
  /**
   * u [N, r] = dropout(x)·Aᵀ for x [N, K], a [r, K]: the down projection of a LoRA module with its
   * input dropout fused in (the mask from (seed, flat index of x) as Backend.dropout computes it).
   * Equal to the composite in ./lora-composite.ts, which is the reference: with precision "bf16" x
   * is rounded to bf16, the dropped values are rounded to bf16 (dropout's outDtype "bf16") and the
   * product runs as matmul's autocast; "f32" is exact. outDtype "bf16" rounds u once.
   */
  loraDown(x: Tensor, a: Tensor, opts: LoraDropout & { outDtype?: DType }): Tensor;
  /** dA [r, K] f32 = duᵀ·dropout(x) for du [N, r], x [N, K]: the mask of loraDown recomputed. */
  loraGradA(du: Tensor, x: Tensor, opts: LoraDropout): Tensor;
  /**
   * dx [N, K] += dropoutBackward(du·A) for du [N, r], a [r, K], in place: dx f32, or bf16 (the f32
   * sum rounded once). The input gradient of loraDown added to the base product's.
   */
  loraDxAccumulate(dx: Tensor, du: Tensor, a: Tensor, opts: LoraDropout): void;
  /**
   * dx [N, K] f32 = dropoutBackward(du·A), new: loraDxAccumulate's term where x has no gradient
   * yet, so the base product can be added onto it (its epilogue reads dx instead of a second pass).
   */
  loraDx(du: Tensor, a: Tensor, opts: LoraDropout): Tensor;
  /**
   * y [N, m] = alpha·u·Bᵀ for u [N, r], b [m, r]: a LoRA module's up projection in the fast tier.
   * u and b are rounded to bf16 (where f32) and multiplied as bf16 with f32 accumulation; alpha
   * multiplies each f32 sum (default 1: the tape passes the module's scale), and outDtype "bf16" rounds y once. y is new and only written (the
   * base product is then added onto it). Equal to the composite in ./lora-composite.ts.
   */
  loraUp(u: Tensor, b: Tensor, opts: { alpha?: number; outDtype?: DType }): Tensor;
  /**
   * The gradients through loraUp for dy [N, m]: du [N, r] = alpha·dy·B and dB [m, r] f32 =
   * alpha·dyᵀ·u, with dy, b and u rounded to bf16 (where f32) as loraUp rounds its operands;
   * duDtype "bf16" rounds du once. The CUDA kernel reads dy once for both.
   */
  loraUpBackward(dy: Tensor, b: Tensor, u: Tensor, opts: { alpha?: number; duDtype?: DType }): { du: Tensor; db: Tensor };

  // ---- elementwise -------------------------------------------------------------------------
  add(a: Tensor, b: Tensor): Tensor;
  /** a += alpha · b */
  addInPlace(a: Tensor, b: Tensor, alpha?: number): void;
  mul(a: Tensor, b: Tensor): Tensor;
  scale(x: Tensor, s: number): Tensor;
  scaleInPlace(x: Tensor, s: number): void;
  /** silu(gate) · up; outDtype "bf16" rounds the f32 result (the input of a bf16 product). */
  swiglu(gate: Tensor, up: Tensor, outDtype?: DType): Tensor;
  /** outDtype "bf16" rounds both gradients once (for bf16 products that would round them). */
  swigluBackward(gate: Tensor, up: Tensor, dout: Tensor, outDtype?: DType): { dgate: Tensor; dup: Tensor };
  /** Exact (erf) GELU. */
  gelu(x: Tensor): Tensor;
  geluBackward(x: Tensor, dout: Tensor): Tensor;
  /**
   * Inverted dropout with a counter-based RNG: keep ↔ hash(seed, i)/2³² ≥ p; kept values ×
   * f32(1/(1-p)). The exact hash is specified in backends/cpu/dropout.ts; every backend matches it.
   * outDtype "bf16" stores the f32 result rounded to nearest even (the input of a bf16 product).
   */
  dropout(x: Tensor, p: number, seed: number, outDtype?: DType): Tensor;
  dropoutBackward(dout: Tensor, p: number, seed: number): Tensor;

  // ---- normalisation and position ----------------------------------------------------------
  /**
   * y = w · x / sqrt(mean(x²) + eps) over rows of x [N, C]; rstd [N] f32 kept for backward.
   * outDtype "bf16" rounds y once (statistics stay f32).
   */
  rmsNorm(x: Tensor, weight: Tensor, eps: number, outDtype?: DType): { y: Tensor; rstd: Tensor };
  /** weightGrad false (a frozen norm weight) skips dweight, a pass over all rows: dweight is then null. */
  /**
   * `into` (f32, x's shape): dx is added to it in f32 and it is returned as dx — a gradient summed
   * so far (the residual stream's) takes the norm's share without a separate sum.
   */
  rmsNormBackward(x: Tensor, weight: Tensor, rstd: Tensor, dy: Tensor, weightGrad?: boolean, into?: Tensor): { dx: Tensor; dweight: Tensor | null };
  /**
   * Rotate-half RoPE on x [N, H, D] with per-row angle tables cos, sin [N, D/2] (f32):
   * y[i] = x[i]·cos - x[i+D/2]·sin, y[i+D/2] = x[i+D/2]·cos + x[i]·sin.
   * `inverse` rotates by the negative angle, which is the backward pass. outDtype "bf16" rounds y.
   */
  rope(x: Tensor, cos: Tensor, sin: Tensor, inverse?: boolean, outDtype?: DType): Tensor;

  // ---- attention ---------------------------------------------------------------------------
  /**
   * softmax(q·kᵀ·scale + mask)·v for q [B, T, Hq, D], k and v [B, S, Hkv, D] (Hq a multiple of
   * Hkv: grouped-query attention). Returns out [B, T, Hq, D] and the row log-sum-exp [B, Hq, T]
   * (f32) for the backward pass. Rows with no visible key give zeros and lse = −∞ (backward
   * skips them).
   * precision "bf16" (the fast tier, as autocast runs SDPA): q, k, v (and dout in the backward) are
   * rounded to bf16 and the products run on bf16 operands with f32 accumulation (tensor cores on
   * CUDA); the softmax statistics stay f32, and out is written in bf16 (as SDPA writes it for
   * bf16 operands; the backward's δ = rowsum(out·dout) then reads that out). "f32" (default) is
   * exact, out f32.
   */
  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: AttentionMask,
    scale: number,
    precision?: MatmulPrecision,
  ): { out: Tensor; lse: Tensor };
  attentionBackward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    dout: Tensor,
    mask: AttentionMask,
    scale: number,
    precision?: MatmulPrecision,
    options?: AttentionBackwardOptions,
  ): { dq: Tensor; dk: Tensor; dv: Tensor };

  // ---- loss and optimiser ------------------------------------------------------------------
  /**
   * Cross-entropy over rows of logits [N, V] with labels i32 [N] (ignoreIndex rows count for
   * nothing). loss [1] f32 is the SUM over counted rows; dlogits (when gradScale is given) is
   * gradScale · (softmax - onehot) on counted rows and 0 elsewhere.
   */
  crossEntropy(
    logits: Tensor,
    labels: Tensor,
    ignoreIndex: number,
    gradScale?: number,
  ): { loss: Tensor; dlogits?: Tensor };
  /** Σ x² as a [1] f32 tensor (for gradient norms). */
  sumSquares(x: Tensor): Tensor;
  /** One AdamW step (decoupled weight decay, bias-corrected) on f32 param/grad/m/v, in place. */
  adamw(
    param: Tensor,
    grad: Tensor,
    m: Tensor,
    v: Tensor,
    hp: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number },
  ): void;

  // ---- multi-tensor optimiser step ---------------------------------------------------------
  // One optimizer step over every LoRA tensor in a few launches instead of a few per tensor, with
  // no host sync: the gradient norm stays on the device, and clipping is applied as the gradients
  // are read. Lists are aligned by index; all tensors are f32 unless said otherwise.
  /**
   * Σ over xs of f32(Σ x²), each tensor's sum taken in f64 and rounded to f32, the tensors added
   * in f32 in list order: [1] f32, what sumSquares of each added into a zero [1] tensor gives.
   */
  sumSquaresMany(xs: readonly Tensor[]): Tensor;
  /**
   * adamw on every (params[i], grads[i], ms[i], vs[i]), in place, bit for bit as one call each;
   * with clip, each gradient is first multiplied in f32 by clipCoefficient (see GradClip), as
   * torch's clip_grad_norm_ scales gradients in place before the step. Grads are not modified.
   */
  adamwMany(params: readonly Tensor[], grads: readonly Tensor[], ms: readonly Tensor[], vs: readonly Tensor[], hp: AdamwHyper, clip?: GradClip): void;
  /**
   * The same step with block-wise 8-bit moments (tensor/blockwise8.ts): m on SIGNED_MAP, v on
   * UNSIGNED_MAP. Per element: dequantise (code's value · block absmax, f32), the adamw step in
   * f32, then each 256-block's new absmax and the nearest codes, all written back in place, bit for
   * bit as dequantizeBlockwise → adamw → quantizeBlockwise on the host.
   */
  adamw8bitMany(params: readonly Tensor[], grads: readonly Tensor[], moments: readonly Moments8bit[], hp: AdamwHyper, clip?: GradClip): void;
  /**
   * dsts[i] ← srcs[i] rounded to bf16 (nearest even, as cast), in place: srcs f32, dsts bf16 of the
   * same sizes. Keeps the bf16 copies that the fast tier's products read of f32 masters (LoRA A and
   * B) current after an optimizer step, in one launch instead of a cast per tensor per pass.
   */
  narrowMany(srcs: readonly Tensor[], dsts: readonly Tensor[]): void;
  /**
   * dsts[i] += srcs[i] in f32, in place (all f32, sizes pairwise equal): addInPlace over a list in
   * one launch, for summing a micro-batch's gradients into the step's accumulators.
   */
  addMany(dsts: readonly Tensor[], srcs: readonly Tensor[]): void;
}

/** The hyper-parameters of one AdamW step (Backend.adamw's hp); step is 1 for the first. */
export interface AdamwHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

/**
 * Gradient clipping folded into the optimizer step: the coefficient is torch.nn.utils.
 * clip_grad_norm_'s, in f32 from the device value sumSquares [1] (sumSquaresMany of the grads):
 * norm = sqrt(sumSquares), coef = (1 / (norm + 1e-6)) · maxNorm (Python's `max_norm / t` is
 * t.reciprocal() * max_norm), clamped to at most 1.
 */
export interface GradClip {
  sumSquares: Tensor;
  maxNorm: number;
}

/**
 * One tensor's 8-bit moments: codes i32 [ceil(n/4)] holding the n u8 codes packed little-endian
 * (blockwise8.ts packCodes), absmax f32 [ceil(n/256)].
 */
export interface Quantized8 {
  codes: Tensor;
  absmax: Tensor;
}

export interface Moments8bit {
  m: Quantized8;
  v: Quantized8;
}

/**
 * The input dropout of a LoRA module (PEFT's lora_dropout) as the fused LoRA ops take it: no mask
 * when seed is null or dropout is 0. precision as Backend.matmul (default "f32").
 */
export interface LoraDropout {
  dropout: number;
  seed: number | null;
  precision?: MatmulPrecision;
}

/**
 * Which keys each query may see.
 * - causal: query t (absolute position queryOffset + t) sees keys s ≤ queryOffset + t; when
 *   keyValid (i32 [B, S], 1 = real token, 0 = padding) is given, padded keys are hidden too.
 * - segments: B = 1 and the sequence is cut into consecutive blocks of the given lengths (one per
 *   image); a query sees every key of its own block and none of the others (Pixtral).
 */
export type AttentionMask =
  | { kind: "causal"; queryOffset: number; keyValid?: Tensor }
  | { kind: "segments"; lengths: readonly number[] };

/** Options of Backend.attentionBackward. */
export interface AttentionBackwardOptions {
  /**
   * The CUDA fast tier (precision "bf16"): true runs two kernels without atomics, so the gradients
   * are bit-identical from run to run; false (the default) runs one fused kernel that adds dq up
   * with atomics, so dq may differ in its last bits between runs (dk and dv do not). The CPU
   * backend and the exact tier are always deterministic and ignore it.
   */
  deterministic?: boolean;
}

/** Sizes of attention operands q [B, T, Hq, D], k and v [B, S, Hkv, D]. */
export interface AttentionDims {
  b: number;
  t: number;
  s: number;
  hq: number;
  hkv: number;
  d: number;
}
