/**
 * Shape and argument checks shared by every backend, so the CPU and CUDA backends reject the same
 * inputs with the same messages.
 */
import type { AttentionDims } from "./backend.ts";
import { TensorError } from "./errors.ts";
import type { Tensor } from "./tensor.ts";

/** [rows, cols] of a tensor treated as a matrix of its last dimension. */
export function rowsCols(t: Tensor): [number, number] {
  const cols = t.shape.length === 0 ? 1 : t.shape[t.shape.length - 1]!;
  return [cols === 0 ? 0 : t.size / cols, cols];
}

export function requireSameSize(op: string, a: Tensor, b: Tensor): void {
  if (a.size !== b.size) throw new TensorError(op, "operands differ in size", { shapes: [a.shape, b.shape] });
}

/** The m×k · k×n sizes of `a·b` after transposes; checks the inner dimensions and `accumulate`. */
export function matmulDims(a: Tensor, b: Tensor, opts: { transA?: boolean; transB?: boolean; accumulate?: Tensor }): { m: number; k: number; n: number } {
  const { transA = false, transB = false, accumulate } = opts;
  const [aRows, aCols] = rowsCols(a);
  const [bRows, bCols] = rowsCols(b);
  const [m, k] = transA ? [aCols, aRows] : [aRows, aCols];
  const [kb, n] = transB ? [bCols, bRows] : [bRows, bCols];
  if (k !== kb) {
    throw new TensorError("matmul", `inner dimensions differ (${k} vs ${kb}, transA=${transA}, transB=${transB})`, {
      shapes: [a.shape, b.shape],
      dtypes: [a.dtype, b.dtype],
    });
  }
  if (accumulate && (accumulate.size !== m * n || (accumulate.dtype !== "f32" && accumulate.dtype !== "bf16"))) {
    throw new TensorError("matmul", `accumulate must be f32 or bf16 [${m}, ${n}]`, { shapes: [accumulate.shape], dtypes: [accumulate.dtype] });
  }
  return { m, k, n };
}

/** Sizes of attention operands q [B, T, Hq, D], k and v [B, S, Hkv, D]; Hq must be a multiple of Hkv. */
export function attentionDims(op: string, q: Tensor, k: Tensor, v: Tensor): AttentionDims {
  const shapes = [q.shape, k.shape, v.shape];
  if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4) {
    throw new TensorError(op, "expected q [B, T, Hq, D] and k, v [B, S, Hkv, D]", { shapes });
  }
  const [b, t, hq, d] = q.shape as [number, number, number, number];
  const [kb, s, hkv, kd] = k.shape as [number, number, number, number];
  if (kb !== b || kd !== d || !v.shape.every((x, i) => x === k.shape[i]) || hkv === 0 || hq % hkv !== 0) {
    throw new TensorError(op, "k and v must be [B, S, Hkv, D] with Hq a multiple of Hkv", { shapes });
  }
  return { b, t, s, hq, hkv, d };
}
