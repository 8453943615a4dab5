/**
 * CPU storage: one typed array per tensor (Float32Array f32, Uint16Array bf16 bits, Uint8Array fp8
 * bits, Int32Array i32), plus the allocator every kernel uses so memory() sees each allocation.
 */
import { bf16ArrayToF32, f32ArrayToBf16 } from "../../tensor/bf16.ts";
import type { Backend } from "../../tensor/backend.ts";
import type { DType } from "../../tensor/dtype.ts";
import { TensorError } from "../../tensor/errors.ts";
import { fp8E4m3ArrayToF32 } from "../../tensor/fp8.ts";
import { Tensor } from "../../tensor/tensor.ts";

export type CpuStorage = Float32Array | Uint16Array | Uint8Array | Int32Array;

/** Creates tensors on the CPU backend and keeps the live/peak byte counts. */
export class CpuAllocator {
  private readonly live = new Set<CpuStorage>();
  private liveBytes = 0;
  private peakBytes = 0;

  constructor(private readonly backend: Backend) {}

  /** Wraps storage that this allocator now owns. */
  adopt(storage: CpuStorage, shape: readonly number[], dtype: DType, scale = 1): Tensor {
    if (!this.live.has(storage)) {
      this.live.add(storage);
      this.liveBytes += storage.byteLength;
      this.peakBytes = Math.max(this.peakBytes, this.liveBytes);
    }
    return new Tensor(this.backend, storage, [...shape], dtype, scale);
  }

  /** Zero-filled (typed arrays start zeroed, so "empty" and "zeros" cost the same on CPU). */
  allocate(shape: readonly number[], dtype: DType, scale = 1): Tensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (!Number.isInteger(size) || size < 0) {
      throw new TensorError("allocate", "shape must be non-negative integers", { shapes: [shape] });
    }
    return this.adopt(newStorage(dtype, size), shape, dtype, scale);
  }

  /** f32 tensor holding `values` (taken over, not copied). */
  fromF32(values: Float32Array, shape: readonly number[]): Tensor {
    return this.adopt(values, shape, "f32");
  }

  release(t: Tensor): void {
    const storage = t.storage as CpuStorage;
    if (this.live.delete(storage)) this.liveBytes -= storage.byteLength;
  }

  memory(): { live: number; peak: number } {
    return { live: this.liveBytes, peak: this.peakBytes };
  }
}

export function newStorage(dtype: DType, size: number): CpuStorage {
  switch (dtype) {
    case "f32":
      return new Float32Array(size);
    case "bf16":
      return new Uint16Array(size);
    case "fp8_e4m3":
      return new Uint8Array(size);
    case "i32":
      return new Int32Array(size);
  }
}

export function storageOf(t: Tensor): CpuStorage {
  if (t.isFreed) throw new TensorError("access", "tensor was already freed", { shapes: [t.shape], dtypes: [t.dtype] });
  return t.storage as CpuStorage;
}

/** The f32 array of an f32 tensor (shared, not copied). */
export function f32Of(t: Tensor, op: string): Float32Array {
  if (t.dtype !== "f32") throw new TensorError(op, "expected an f32 tensor", { shapes: [t.shape], dtypes: [t.dtype] });
  return storageOf(t) as Float32Array;
}

export function i32Of(t: Tensor, op: string): Int32Array {
  if (t.dtype !== "i32") throw new TensorError(op, "expected an i32 tensor", { shapes: [t.shape], dtypes: [t.dtype] });
  return storageOf(t) as Int32Array;
}

/**
 * The values of a float tensor as f32: the storage itself for f32 (read-only by convention), a
 * widened copy for bf16/fp8. Kernels whose operand may be a large frozen weight use
 * readRowsF32 instead, so a whole matrix is never widened at once.
 */
export function valuesF32(t: Tensor, op: string): Float32Array {
  const storage = storageOf(t);
  switch (t.dtype) {
    case "f32":
      return storage as Float32Array;
    case "bf16":
      return bf16ArrayToF32(storage as Uint16Array);
    case "fp8_e4m3":
      return fp8E4m3ArrayToF32(storage as Uint8Array, t.scale);
    case "i32":
      throw new TensorError(op, "expected a float tensor", { shapes: [t.shape], dtypes: [t.dtype] });
  }
}

/** Widens elements [start, start+count) of a float tensor into out[outOffset…]. */
export function readRangeF32(t: Tensor, start: number, count: number, out: Float32Array, outOffset = 0): void {
  const storage = storageOf(t);
  switch (t.dtype) {
    case "f32":
      out.set((storage as Float32Array).subarray(start, start + count), outOffset);
      return;
    case "bf16":
      bf16ArrayToF32(storage as Uint16Array, out, start, count, outOffset);
      return;
    case "fp8_e4m3":
      fp8E4m3ArrayToF32(storage as Uint8Array, t.scale, out, start, count, outOffset);
      return;
    case "i32":
      throw new TensorError("read", "expected a float tensor", { shapes: [t.shape], dtypes: [t.dtype] });
  }
}

/** Stores f32 results as `dtype` (f32 taken over as is, bf16 rounded to nearest even). */
export function fromF32As(alloc: CpuAllocator, values: Float32Array, shape: readonly number[], dtype: DType, op: string): Tensor {
  if (dtype === "f32") return alloc.fromF32(values, shape);
  if (dtype === "bf16") return alloc.adopt(f32ArrayToBf16(values), shape, "bf16");
  throw new TensorError(op, `cannot produce ${dtype} output`, { dtypes: [dtype], hint: "outputs are f32 or bf16" });
}

