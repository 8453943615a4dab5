/**
 * The fused LoRA ops of the Backend (loraDown, loraGradA, loraDx, loraDxAccumulate, loraUp,
 * loraUpBackward) written as the primitives they fuse: dropout, cast, matmul, dropoutBackward and
 * addInPlace. This is the CPU backend's implementation and the reference the CUDA kernels
 * (native/cuda/src/lora.cu) are checked against; the CUDA backend also falls back to it where its
 * kernels do not apply (the exact f32 tier, r > 64, fp8 operands). Graph.loraLinear computed exactly
 * these sequences before the ops existed, so CPU results are unchanged by the fusion.
 */
import type { Backend, LoraDropout } from "./backend.ts";
import type { DType } from "./dtype.ts";
import { TensorError } from "./errors.ts";
import type { Tensor } from "./tensor.ts";
import { rowsCols } from "./checks.ts";

/** Whether a mask applies: a seed is given and the probability is positive. */
export function loraMasked(opts: LoraDropout): boolean {
  return opts.seed !== null && opts.dropout > 0;
}

/** Rejects what Backend.dropout would reject (the probability is checked even without a seed). */
export function checkLoraDropout(op: string, opts: LoraDropout, elements: number): void {
  const { dropout, seed } = opts;
  if (!(dropout >= 0 && dropout < 1)) throw new TensorError(op, `dropout probability ${dropout} must be in [0, 1)`);
  if (seed === null) return;
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new TensorError(op, `seed ${seed} must be an integer in [0, 2^32)`);
  if (elements > 2 ** 32) throw new TensorError(op, "tensor too large for a 32-bit element counter");
}

/** n, k, r of x [N, K] (leading dimensions flattened) against a [r, K]. */
export function loraDims(op: string, x: Tensor, a: Tensor): { n: number; k: number; r: number } {
  const [n, k] = rowsCols(x);
  if (a.shape.length !== 2 || a.shape[1] !== k) {
    throw new TensorError(op, `a must be [r, ${k}] to match x's rows`, { shapes: [x.shape, a.shape] });
  }
  return { n, k, r: a.shape[0]! };
}

/** du [N, r] against x [N, K] (loraGradA) or a [r, K] (loraDx, loraDxAccumulate). */
export function checkLoraGrad(op: string, du: Tensor, n: number, r: number): void {
  const [rows, cols] = rowsCols(du);
  if (rows !== n || cols !== r) throw new TensorError(op, `du must be [${n}, ${r}]`, { shapes: [du.shape] });
}

/** t as a bf16 product reads it: an f32 operand rounded once to bf16. */
function bf16Rounded(b: Backend, t: Tensor): Tensor {
  return t.dtype === "f32" ? b.cast(t, "bf16") : t;
}

/** x as the product reads it: rounded once to bf16 under precision "bf16" (as autocast would). */
function narrowed(b: Backend, x: Tensor, opts: LoraDropout): Tensor {
  return opts.precision === "bf16" ? bf16Rounded(b, x) : x;
}

/** dropout(x), written as bf16 under precision "bf16" (the input of a bf16 product), else f32. */
function dropped(b: Backend, x: Tensor, opts: LoraDropout): Tensor {
  if (!loraMasked(opts)) return x;
  return b.dropout(x, opts.dropout, opts.seed!, opts.precision === "bf16" ? "bf16" : "f32");
}

/** u [N, r] = dropout(x)·Aᵀ. */
export function loraDownComposite(b: Backend, x: Tensor, a: Tensor, opts: LoraDropout & { outDtype?: DType }): Tensor {
  const { n, k } = loraDims("loraDown", x, a);
  checkLoraDropout("loraDown", opts, n * k);
  const xl = narrowed(b, x, opts);
  const xd = dropped(b, xl, opts);
  const u = b.matmul(xd, a, { transB: true, precision: opts.precision, outDtype: opts.outDtype });
  if (xd !== xl) xd.free();
  if (xl !== x) xl.free();
  return u;
}

/** dA [r, K] = duᵀ·dropout(x). */
export function loraGradAComposite(b: Backend, du: Tensor, x: Tensor, opts: LoraDropout): Tensor {
  const [n, k] = rowsCols(x);
  checkLoraGrad("loraGradA", du, n, rowsCols(du)[1]);
  checkLoraDropout("loraGradA", opts, n * k);
  const xl = narrowed(b, x, opts);
  const xd = dropped(b, xl, opts);
  const da = b.matmul(du, xd, { transA: true, precision: opts.precision });
  if (xd !== xl) xd.free();
  if (xl !== x) xl.free();
  return da;
}

/** dx [N, K] f32 = dropoutBackward(du·A): loraDxAccumulate's term on its own, in a new tensor. */
export function loraDxComposite(b: Backend, du: Tensor, a: Tensor, opts: LoraDropout): Tensor {
  const [r, k] = rowsCols(a);
  const n = rowsCols(du)[0];
  checkLoraGrad("loraDx", du, n, r);
  checkLoraDropout("loraDx", opts, n * k);
  const dxd = b.matmul(du, a, { precision: opts.precision });
  if (!loraMasked(opts)) return dxd;
  const dx = b.dropoutBackward(dxd, opts.dropout, opts.seed!);
  dxd.free();
  return dx;
}

/**
 * dx [N, K] f32 += dropoutBackward(du·A), in place. A bf16 dx is the backend's to widen and round
 * back (it alone can write into a tensor's storage).
 */
export function loraDxAccumulateComposite(b: Backend, dx: Tensor, du: Tensor, a: Tensor, opts: LoraDropout): void {
  const [r, k] = rowsCols(a);
  const n = rowsCols(du)[0];
  checkLoraGrad("loraDxAccumulate", du, n, r);
  if (dx.dtype !== "f32" || dx.size !== n * k) {
    throw new TensorError("loraDxAccumulate", `dx must be [${n}, ${k}], f32 or bf16`, { shapes: [dx.shape], dtypes: [dx.dtype] });
  }
  checkLoraDropout("loraDxAccumulate", opts, n * k);
  if (!loraMasked(opts)) {
    b.matmul(du, a, { accumulate: dx, precision: opts.precision });
    return;
  }
  const dxd = b.matmul(du, a, { precision: opts.precision });
  const dxLora = b.dropoutBackward(dxd, opts.dropout, opts.seed!);
  dxd.free();
  b.addInPlace(dx, dxLora);
  dxLora.free();
}

/** n, m, r of u [N, r] (leading dimensions flattened) against b [m, r]. */
export function loraUpDims(op: string, u: Tensor, b: Tensor): { n: number; m: number; r: number } {
  const [n, r] = rowsCols(u);
  if (b.shape.length !== 2 || b.shape[1] !== r) {
    throw new TensorError(op, `b must be [m, ${r}] to match u's columns`, { shapes: [u.shape, b.shape] });
  }
  return { n, m: b.shape[0]!, r };
}

/** n, m, r of dy [N, m] and u [N, r] against b [m, r]. */
export function loraUpBackwardDims(op: string, dy: Tensor, b: Tensor, u: Tensor): { n: number; m: number; r: number } {
  const [n, m] = rowsCols(dy);
  const [rows, r] = rowsCols(u);
  if (rows !== n || b.shape.length !== 2 || b.shape[0] !== m || b.shape[1] !== r) {
    throw new TensorError(op, `u must be [${n}, r] and b [${m}, r] to match dy [${n}, ${m}]`, { shapes: [dy.shape, b.shape, u.shape] });
  }
  return { n, m, r };
}

/** y [N, m] = alpha·u·Bᵀ, u and B rounded to bf16. */
export function loraUpComposite(b: Backend, u: Tensor, bw: Tensor, opts: { alpha?: number; outDtype?: DType }): Tensor {
  loraUpDims("loraUp", u, bw);
  const [ul, bl] = [bf16Rounded(b, u), bf16Rounded(b, bw)];
  const y = b.matmul(ul, bl, { transB: true, alpha: opts.alpha, outDtype: opts.outDtype });
  if (ul !== u) ul.free();
  if (bl !== bw) bl.free();
  return y;
}

/** du [N, r] = alpha·dy·B and dB [m, r] f32 = alpha·dyᵀ·u, every operand rounded to bf16. */
export function loraUpBackwardComposite(
  b: Backend,
  dy: Tensor,
  bw: Tensor,
  u: Tensor,
  opts: { alpha?: number; duDtype?: DType },
): { du: Tensor; db: Tensor } {
  loraUpBackwardDims("loraUpBackward", dy, bw, u);
  const [dyl, bl, ul] = [bf16Rounded(b, dy), bf16Rounded(b, bw), bf16Rounded(b, u)];
  const du = b.matmul(dyl, bl, { alpha: opts.alpha, outDtype: opts.duDtype });
  const db = b.matmul(dyl, ul, { transA: true, alpha: opts.alpha });
  if (dyl !== dy) dyl.free();
  if (bl !== bw) bl.free();
  if (ul !== u) ul.free();
  return { du, db };
}
