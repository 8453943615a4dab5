import type { AttentionMask, Backend, MatmulPrecision } from "../tensor/backend.ts";
import type { DType } from "../tensor/dtype.ts";
import type { Tensor } from "../tensor/tensor.ts";

/**
 * A value in a computation: a tensor, plus its gradient once backward() has run. Leaves made with
 * Graph.param(…, true) collect gradients; everything else is an intermediate the graph owns.
 */
export interface Var {
  readonly value: Tensor;
  readonly requiresGrad: boolean;
  /** Accumulated gradient (f32, same shape), set by Graph.backward on leaves that require it. */
  grad: Tensor | null;
}

/**
 * The differentiable ops model code is written against. Each op runs its forward primitive on the
 * backend now and, when the graph records, remembers what its backward primitive needs.
 *
 * Memory: every tensor an op allocates belongs to the graph. Without recording, scope() frees the
 * intermediates of its body as soon as it returns; with recording, they stay until dispose().
 * checkpoint() trades compute for memory: its body runs unrecorded and is re-run in backward.
 */
export interface Graph {
  readonly backend: Backend;
  /** True when ops remember what backward needs (training); false for inference. */
  readonly recording: boolean;

  /** A leaf. The graph does not own or free its tensor. */
  param(t: Tensor, requiresGrad: boolean): Var;
  /** A leaf that needs no gradient (inputs, masks, rope tables, frozen weights). */
  constant(t: Tensor): Var;

  /**
   * y = x·Wᵀ: x [N, in], w [out, in] (any float dtype; frozen weights may be bf16 or fp8). The
   * precision (Backend.matmul) applies to the forward product and to both gradient products.
   */
  linear(x: Var, w: Var, precision?: MatmulPrecision): Var;
  /**
   * PEFT's LoRA linear as one op: y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ with x [N, in], w [out, in]
   * (frozen), a [r, in], b [out, r]. The same function as linear + dropout + linear + linear +
   * scale + add, in fewer passes: the update is accumulated into the base product by the matmul
   * itself, and the backward needs no full-size copies; the dropout mask is recomputed from its
   * seed in the backward instead of being kept. `seed` null = no dropout. The precision applies to
   * every product: with "bf16", x is rounded once for the base and the LoRA products, the dropout
   * writes bf16, and A and B enter the products as bf16 copies while their f32 masters receive f32
   * gradients — PEFT's LoRA layers under autocast.
   */
  loraLinear(
    x: Var,
    w: Var,
    a: Var,
    b: Var,
    lora: {
      scale: number;
      dropout: number;
      seed: number | null;
      /** bf16 copies of a and b's current values for the products (made here when absent). */
      narrow?: { a: Tensor; b: Tensor };
    },
    precision?: MatmulPrecision,
  ): Var;
  /** Backend.matmul with gradients for both sides. */
  matmul(a: Var, b: Var, opts?: { transA?: boolean; transB?: boolean; alpha?: number }): Var;
  add(a: Var, b: Var): Var;
  mul(a: Var, b: Var): Var;
  scale(x: Var, s: number): Var;
  /** outDtype (here and in rmsNorm, rope): "bf16" stores the value rounded, for a bf16 product to read. */
  swiglu(gate: Var, up: Var, outDtype?: DType): Var;
  gelu(x: Var): Var;
  /** Inverted dropout; p = 0 returns x itself. The same seed gives the same mask. */
  dropout(x: Var, p: number, seed: number): Var;
  rmsNorm(x: Var, weight: Var, eps: number, outDtype?: DType): Var;
  /** Rotate-half RoPE on x [N, H, D]; cos and sin [N, D/2] are constants. */
  rope(x: Var, cos: Tensor, sin: Tensor, outDtype?: DType): Var;
  /** q [B, T, Hq, D], k/v [B, S, Hkv, D] → [B, T, Hq, D]; precision as Backend.attention. */
  attention(q: Var, k: Var, v: Var, mask: AttentionMask, scale: number, precision?: MatmulPrecision): Var;

  reshape(x: Var, shape: readonly number[]): Var;
  sliceRows(x: Var, start: number, count: number): Var;
  concatRows(parts: readonly Var[]): Var;
  gatherRows(x: Var, index: Tensor): Var;
  /** A copy of dst with rows index[i] replaced by src[i] (gradients flow to both). */
  scatterRows(dst: Var, index: Tensor, src: Var): Var;
  /** Element permutation (Backend.gatherElements); index must be a permutation of x's elements. */
  permute(x: Var, index: Tensor, outShape: readonly number[]): Var;
  /**
   * Cross-entropy, mean over rows whose label is not ignoreIndex (as torch's reduction="mean"); [1].
   * `counted`, the number of such rows when the caller knows it, saves reading the labels back.
   */
  crossEntropy(logits: Var, labels: Tensor, ignoreIndex: number, counted?: number): Var;

  /**
   * Runs body so that its intermediates are freed when it returns, except the returned values.
   * While recording, only the intermediates no recorded backward reads are freed (a LoRA output
   * that only feeds a residual add, a projection that only feeds RoPE), and nothing when body
   * recorded a checkpoint; with selective recomputation (createGraph's evictElementwise) the norms'
   * and SwiGLU's outputs go too, remade when a backward reads them. So a Var that leaves the scope
   * other than by its return value must not be read after it.
   */
  scope<T extends Var | readonly Var[]>(body: () => T): T;
  /**
   * Gradient checkpointing: runs body unrecorded now (keeping only inputs and output) and re-runs it
   * recorded during backward. Without recording it is a plain scope(). The body must be
   * deterministic (dropout seeds included); Vars it captures from outside also get gradients.
   */
  checkpoint(inputs: readonly Var[], body: (inputs: readonly Var[]) => Var): Var;

  /**
   * Back-propagates from a scalar ([1]) loss, with d loss = gradScale (default 1). A leaf whose
   * grad is already set (e.g. by an earlier micro-batch) has the new gradient added into it.
   */
  backward(loss: Var, gradScale?: number): void;
  /** Frees every tensor the graph allocated (leaf tensors and their .grad are left alone). */
  dispose(): void;
}
