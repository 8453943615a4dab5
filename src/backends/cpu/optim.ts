/**
 * AdamW as torch.optim.AdamW's single-tensor path (amsgrad off, maximize off) computes it on f32
 * tensors, each operation rounded to f32 in torch's order of evaluation:
 *   p ← p·(1 − lr·wd)                               param.mul_
 *   m ← m + (1 − β1)·(g − m)                        exp_avg.lerp_ (weight < 0.5 branch)
 *   v ← v·β2 + ((1 − β2)·g)·g                       exp_avg_sq.mul_(β2).addcmul_
 *   denom ← sqrt(v) / sqrt(1 − β2^t) + eps
 *   p ← p + ((−lr / (1 − β1^t))·m) / denom          param.addcdiv_
 * Host-side scalars (lr·wd, the bias corrections) are computed in f64 like Python floats, then
 * rounded to f32 as ATen does when it applies a Python scalar to an f32 tensor.
 */
import type { AdamwHyper, GradClip, Moments8bit } from "../../tensor/backend.ts";
import { BLOCK_8BIT, dequantizeBlockwise, packedCodeWords, quantizeInto, SIGNED_MAP, UNSIGNED_MAP } from "../../tensor/blockwise8.ts";
import { type AdamwScalars, adamwScalars } from "../../tensor/adamw-scalars.ts";
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { f32ArrayToBf16 } from "../../tensor/bf16.ts";
import { addInPlace } from "./elementwise.ts";
import { f32Of, i32Of, storageOf } from "./storage.ts";

export type { AdamwHyper };


/**
 * The elementwise step over host arrays, in place. gradScale (null: none) multiplies each gradient
 * in f32 first, as clip_grad_norm_'s in-place g.mul_(coef) would.
 */
function step(p: Float32Array, g: Float32Array, mv: Float32Array, vv: Float32Array, h: AdamwScalars, gradScale: number | null): void {
  const f = Math.fround;
  for (let i = 0; i < p.length; i++) {
    const gi = gradScale === null ? g[i]! : f(g[i]! * gradScale);
    const pi = f(p[i]! * h.decay);
    const mi = f(mv[i]! + f(h.oneMinusBeta1 * f(gi - mv[i]!)));
    const vi = f(f(vv[i]! * h.beta2) + f(f(h.oneMinusBeta2 * gi) * gi));
    const denom = f(f(f(Math.sqrt(vi)) / h.biasCorrection2Sqrt) + h.eps);
    mv[i] = mi;
    vv[i] = vi;
    p[i] = f(pi + f(f(h.negStepSize * mi) / denom));
  }
}

function requireSizes(op: string, size: number, tensors: readonly Tensor[]): void {
  if (tensors.some((t) => t.size !== size)) {
    throw new TensorError(op, "param, grad, m and v must have the same size", { shapes: tensors.map((t) => t.shape) });
  }
}

export function adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hp: AdamwHyper): void {
  const p = f32Of(param, "adamw");
  const g = f32Of(grad, "adamw");
  const mv = f32Of(m, "adamw");
  const vv = f32Of(v, "adamw");
  requireSizes("adamw", p.length, [grad, m, v]);
  step(p, g, mv, vv, adamwScalars("adamw", hp), null);
}

/**
 * torch.nn.utils.clip_grad_norm_'s coefficient in f32 from Σ g² (f32): (1 / (sqrt + 1e-6)) ·
 * maxNorm, at most 1. A NaN coefficient (a NaN norm) gives 1, where torch's clamp keeps NaN; the
 * trainer never steps on a non-finite norm, and the CUDA kernel computes the same expression.
 */
export function clipCoefficient(sumSquares: number, maxNorm: number): number {
  const f = Math.fround;
  const c = f(f(1 / f(f(Math.sqrt(f(sumSquares))) + f(1e-6))) * f(maxNorm));
  return c < 1 ? c : 1;
}

function gradScaleOf(op: string, clip: GradClip | undefined): number | null {
  if (!clip) return null;
  if (clip.sumSquares.size !== 1) throw new TensorError(op, "clip.sumSquares must be a [1] tensor", { shapes: [clip.sumSquares.shape] });
  return clipCoefficient(f32Of(clip.sumSquares, op)[0]!, clip.maxNorm);
}

function requireAligned(op: string, params: readonly Tensor[], ...lists: (readonly unknown[])[]): void {
  if (lists.some((l) => l.length !== params.length)) throw new TensorError(op, `needs lists of one length (${params.length} params, got ${lists.map((l) => l.length).join(", ")})`);
}

/** Σ over xs of f32(Σ x² in f64), added in f32 in order. */
export function sumSquaresMany(xs: readonly Tensor[]): Float32Array {
  let total = 0;
  for (const x of xs) {
    const v = f32Of(x, "sumSquaresMany");
    let s = 0;
    for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
    total = Math.fround(total + Math.fround(s));
  }
  return Float32Array.of(total);
}

export function adamwMany(params: readonly Tensor[], grads: readonly Tensor[], ms: readonly Tensor[], vs: readonly Tensor[], hp: AdamwHyper, clip?: GradClip): void {
  const op = "adamwMany";
  requireAligned(op, params, grads, ms, vs);
  const h = adamwScalars(op, hp);
  const scale = gradScaleOf(op, clip);
  params.forEach((param, i) => {
    requireSizes(op, param.size, [grads[i]!, ms[i]!, vs[i]!]);
    step(f32Of(param, op), f32Of(grads[i]!, op), f32Of(ms[i]!, op), f32Of(vs[i]!, op), h, scale);
  });
}

/** A tensor's codes as bytes (a view of the i32 storage) and its absmaxes, checked against n. */
function quantizedView(op: string, q: Moments8bit["m"], n: number): { codes: Uint8Array; absmax: Float32Array } {
  const words = i32Of(q.codes, op);
  const absmax = f32Of(q.absmax, op);
  if (words.length !== packedCodeWords(n) || absmax.length !== Math.ceil(n / BLOCK_8BIT)) {
    throw new TensorError(op, `8-bit moments of a ${n}-element tensor need ${packedCodeWords(n)} code words and ${Math.ceil(n / BLOCK_8BIT)} absmaxes`, { shapes: [q.codes.shape, q.absmax.shape] });
  }
  return { codes: new Uint8Array(words.buffer, words.byteOffset, n), absmax };
}

/** Dequantise, the f32 step, quantise again: the host composite the CUDA kernel fuses. */
export function adamw8bitMany(params: readonly Tensor[], grads: readonly Tensor[], moments: readonly Moments8bit[], hp: AdamwHyper, clip?: GradClip): void {
  const op = "adamw8bitMany";
  requireAligned(op, params, grads, moments);
  const h = adamwScalars(op, hp);
  const scale = gradScaleOf(op, clip);
  params.forEach((param, i) => {
    const n = param.size;
    requireSizes(op, n, [grads[i]!]);
    const qm = quantizedView(op, moments[i]!.m, n);
    const qv = quantizedView(op, moments[i]!.v, n);
    const m = dequantizeBlockwise(qm, SIGNED_MAP);
    const v = dequantizeBlockwise(qv, UNSIGNED_MAP);
    step(f32Of(param, op), f32Of(grads[i]!, op), m, v, h, scale);
    quantizeInto(m, SIGNED_MAP, qm);
    quantizeInto(v, UNSIGNED_MAP, qv);
  });
}

export function addMany(dsts: readonly Tensor[], srcs: readonly Tensor[]): void {
  const op = "addMany";
  requireAligned(op, dsts, srcs);
  dsts.forEach((dst, i) => {
    const src = srcs[i]!;
    if (src.size !== dst.size) throw new TensorError(op, `row ${i}: sizes differ`, { shapes: [dst.shape, src.shape] });
    f32Of(src, op); // the addend is f32 too, as on CUDA
    addInPlace(dst, src);
  });
}

export function narrowMany(srcs: readonly Tensor[], dsts: readonly Tensor[]): void {
  const op = "narrowMany";
  requireAligned(op, srcs, dsts);
  srcs.forEach((src, i) => {
    const dst = dsts[i]!;
    if (dst.dtype !== "bf16" || dst.size !== src.size) {
      throw new TensorError(op, `destination ${i} must be bf16 of ${src.size} elements`, { shapes: [src.shape, dst.shape], dtypes: [src.dtype, dst.dtype] });
    }
    f32ArrayToBf16(f32Of(src, op), storageOf(dst) as Uint16Array);
  });
}
