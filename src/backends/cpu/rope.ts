/**
 * Rotate-half rotary embedding. The rotation by −θ is the inverse (and the transpose) of the
 * rotation by θ, so the backward pass is this same kernel with inverse = true.
 */
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { DType } from "../../tensor/dtype.ts";
import { type CpuAllocator, fromF32As, valuesF32 } from "./storage.ts";

/**
 * x [N, H, D], cos/sin [N, D/2]: y[i] = x[i]·cos − x[i+D/2]·sin, y[i+D/2] = x[i+D/2]·cos + x[i]·sin
 * (sin negated when inverse).
 */
export function rope(alloc: CpuAllocator, x: Tensor, cos: Tensor, sin: Tensor, inverse = false, outDtype: DType = "f32"): Tensor {
  const [n, h, d] = x.shape as [number, number, number];
  const half = d / 2;
  if (x.shape.length !== 3 || d % 2 !== 0 || cos.size !== n * half || sin.size !== n * half) {
    throw new TensorError("rope", "expected x [N, H, D] with even D and cos/sin [N, D/2]", { shapes: [x.shape, cos.shape, sin.shape] });
  }
  const xv = valuesF32(x, "rope");
  const c = valuesF32(cos, "rope");
  const s = valuesF32(sin, "rope");
  const sign = inverse ? -1 : 1;
  const out = new Float32Array(xv.length);
  for (let row = 0; row < n; row++) {
    const t = row * half;
    for (let head = 0; head < h; head++) {
      const o = (row * h + head) * d;
      for (let i = 0; i < half; i++) {
        const x1 = xv[o + i]!;
        const x2 = xv[o + i + half]!;
        const ci = c[t + i]!;
        const si = sign * s[t + i]!;
        out[o + i] = x1 * ci - x2 * si;
        out[o + i + half] = x2 * ci + x1 * si;
      }
    }
  }
  return fromF32As(alloc, out, x.shape, outDtype, "rope");
}
