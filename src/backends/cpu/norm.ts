/** RMSNorm (as HF MistralRMSNorm / PixtralRMSNorm, in f32): forward and backward. */
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { rowsCols } from "../../tensor/checks.ts";
import type { DType } from "../../tensor/dtype.ts";
import { type CpuAllocator, f32Of, fromF32As, valuesF32 } from "./storage.ts";

/** y = w · x · rstd, rstd = 1/sqrt(mean(x²) + eps) per row of x [N, C] (sums in f64). */
export function rmsNorm(alloc: CpuAllocator, x: Tensor, weight: Tensor, eps: number, outDtype: DType = "f32"): { y: Tensor; rstd: Tensor } {
  const [n, c] = rowsCols(x);
  if (weight.size !== c) throw new TensorError("rmsNorm", `weight must have ${c} elements`, { shapes: [x.shape, weight.shape] });
  const xv = valuesF32(x, "rmsNorm");
  const w = valuesF32(weight, "rmsNorm");
  const y = new Float32Array(n * c);
  const rstd = new Float32Array(n);
  for (let r = 0; r < n; r++) {
    const o = r * c;
    let ss = 0;
    for (let j = 0; j < c; j++) ss += xv[o + j]! * xv[o + j]!;
    // HF computes x·rsqrt(var+eps) in f32, then multiplies by the weight.
    const inv = Math.fround(1 / Math.sqrt(Math.fround(ss / c) + eps));
    rstd[r] = inv;
    for (let j = 0; j < c; j++) y[o + j] = w[j]! * Math.fround(xv[o + j]! * inv);
  }
  return { y: fromF32As(alloc, y, x.shape, outDtype, "rmsNorm"), rstd: alloc.fromF32(rstd, [n]) };
}

/**
 * With g = w·dy and x̂ = x·rstd: dx = rstd·(g − x̂·mean(g·x̂)), dweight = Σ_rows dy·x̂.
 */
export function rmsNormBackward(
  alloc: CpuAllocator,
  x: Tensor,
  weight: Tensor,
  rstd: Tensor,
  dy: Tensor,
  weightGrad = true,
  into?: Tensor,
): { dx: Tensor; dweight: Tensor | null } {
  const [n, c] = rowsCols(x);
  if (weight.size !== c || dy.size !== x.size || rstd.size !== n) {
    throw new TensorError("rmsNormBackward", "shapes do not match x [N, C]", { shapes: [x.shape, weight.shape, rstd.shape, dy.shape] });
  }
  if (into && (into.dtype !== "f32" || into.size !== x.size)) {
    throw new TensorError("rmsNormBackward", "into must be f32 of x's size", { shapes: [x.shape, into.shape], dtypes: [into.dtype] });
  }
  const xv = valuesF32(x, "rmsNormBackward");
  const w = valuesF32(weight, "rmsNormBackward");
  const r = f32Of(rstd, "rmsNormBackward");
  const d = valuesF32(dy, "rmsNormBackward");
  const dx = new Float32Array(n * c);
  const dw = new Float64Array(c);
  for (let row = 0; row < n; row++) {
    const o = row * c;
    const inv = r[row]!;
    let dot = 0;
    for (let j = 0; j < c; j++) {
      const xhat = xv[o + j]! * inv;
      dot += w[j]! * d[o + j]! * xhat;
      dw[j]! += d[o + j]! * xhat;
    }
    const meanDot = dot / c;
    for (let j = 0; j < c; j++) dx[o + j] = inv * (w[j]! * d[o + j]! - xv[o + j]! * inv * meanDot);
  }
  const dweight = weightGrad ? alloc.fromF32(Float32Array.from(dw), weight.shape) : null;
  if (into) {
    // The f32 dx added in f32, as the CUDA kernel adds it.
    const sum = f32Of(into, "rmsNormBackward");
    for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! + dx[i]!;
    return { dx: into, dweight };
  }
  return { dx: alloc.fromF32(dx, x.shape), dweight };
}
