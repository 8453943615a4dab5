/**
 * Elementwise arithmetic on equally sized tensors (no broadcasting). Backward passes are these ops
 * again: d(a+b) passes dout to both, d(a·b) is (dout·b, dout·a), d(s·x) is s·dout.
 */
import type { Tensor } from "../../tensor/tensor.ts";
import { requireSameSize } from "../../tensor/checks.ts";
import { type CpuAllocator, f32Of, valuesF32 } from "./storage.ts";

export function add(alloc: CpuAllocator, a: Tensor, b: Tensor): Tensor {
  requireSameSize("add", a, b);
  const x = valuesF32(a, "add");
  const y = valuesF32(b, "add");
  const out = new Float32Array(x.length);
  for (let i = 0; i < out.length; i++) out[i] = x[i]! + y[i]!;
  return alloc.fromF32(out, a.shape);
}

/** a += alpha·b, with a f32. */
export function addInPlace(a: Tensor, b: Tensor, alpha = 1): void {
  requireSameSize("addInPlace", a, b);
  const x = f32Of(a, "addInPlace");
  const y = valuesF32(b, "addInPlace");
  if (alpha === 1) for (let i = 0; i < x.length; i++) x[i] = x[i]! + y[i]!;
  else for (let i = 0; i < x.length; i++) x[i] = x[i]! + alpha * y[i]!;
}

export function mul(alloc: CpuAllocator, a: Tensor, b: Tensor): Tensor {
  requireSameSize("mul", a, b);
  const x = valuesF32(a, "mul");
  const y = valuesF32(b, "mul");
  const out = new Float32Array(x.length);
  for (let i = 0; i < out.length; i++) out[i] = x[i]! * y[i]!;
  return alloc.fromF32(out, a.shape);
}

export function scale(alloc: CpuAllocator, x: Tensor, s: number): Tensor {
  const v = valuesF32(x, "scale");
  const out = new Float32Array(v.length);
  for (let i = 0; i < out.length; i++) out[i] = v[i]! * s;
  return alloc.fromF32(out, x.shape);
}

export function scaleInPlace(x: Tensor, s: number): void {
  const v = f32Of(x, "scaleInPlace");
  for (let i = 0; i < v.length; i++) v[i] = v[i]! * s;
}

/** Σ x² as [1] f32, summed in f64. */
export function sumSquares(alloc: CpuAllocator, x: Tensor): Tensor {
  const v = valuesF32(x, "sumSquares");
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  return alloc.fromF32(Float32Array.of(s), [1]);
}
