/**
 * Device storage for the CUDA backend: each tensor holds a CudaStorage (address and byte size)
 * from the library's caching allocator. Views made by Tensor.reshape share the storage object, so
 * release is idempotent across them.
 */
import type { Backend } from "../../tensor/backend.ts";
import { BYTES_PER_ELEMENT, type DType } from "../../tensor/dtype.ts";
import { TensorError } from "../../tensor/errors.ts";
import { Tensor } from "../../tensor/tensor.ts";
import { CudaError } from "./errors.ts";
import { type CtxHandle, check, DTYPE_CODE, FLAG_INDEX, FLAG_LABEL, type SplintCudaLib } from "./ffi.ts";

export class CudaStorage {
  freed = false;
  constructor(
    readonly ptr: number,
    readonly bytes: number,
  ) {}
}

export class CudaMemory {
  private readonly out64 = new BigUint64Array(1);
  /** Set by dispose(): the context is gone, so no call may reach the library with it again. */
  private disposed = false;

  constructor(
    readonly lib: SplintCudaLib,
    readonly ctx: CtxHandle,
    private readonly backend: Backend,
  ) {}

  allocate(shape: readonly number[], dtype: DType, scale = 1): Tensor {
    this.requireOpen("allocate");
    const size = shape.reduce((a, b) => a * b, 1);
    if (!Number.isInteger(size) || size < 0) {
      throw new TensorError("allocate", "shape must be non-negative integers", { shapes: [shape] });
    }
    const bytes = size * BYTES_PER_ELEMENT[dtype];
    check(this.lib, this.lib.alloc(this.ctx, bytes, this.out64), "alloc");
    return new Tensor(this.backend, new CudaStorage(Number(this.out64[0]!), bytes), [...shape], dtype, dtype === "fp8_e4m3" ? scale : 1);
  }

  /** The device address of a live tensor. */
  ptr(t: Tensor, op: string): number {
    this.requireOpen(op);
    const storage = t.storage;
    if (!(storage instanceof CudaStorage)) {
      throw new TensorError(op, `tensor lives on the ${t.backend.name} backend, not cuda`, { shapes: [t.shape], dtypes: [t.dtype] });
    }
    if (storage.freed || t.isFreed) throw new TensorError(op, "tensor was already freed", { shapes: [t.shape], dtypes: [t.dtype] });
    return storage.ptr;
  }

  /** Idempotent; after dispose() the memory is already gone with the context, so it only marks. */
  release(t: Tensor): void {
    const storage = t.storage as CudaStorage;
    if (storage.freed) return;
    storage.freed = true;
    if (!this.disposed) check(this.lib, this.lib.free(this.ctx, storage.ptr), "free");
  }

  /** Destroys the context (all device memory with it). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    check(this.lib, this.lib.destroy(this.ctx), "dispose");
  }

  requireOpen(op: string): void {
    if (this.disposed) throw new CudaError(op, "the CUDA backend was disposed", "create a new backend with createCudaBackend()");
  }

  upload(t: Tensor, data: ArrayBufferView): void {
    check(this.lib, this.lib.upload(this.ctx, this.ptr(t, "upload"), data, data.byteLength), "upload");
  }

  /**
   * Copies the raw bits back (synchronous) and surfaces any device-side error flag; the flags come
   * back in the same host wait as the data.
   */
  download<T extends Float32Array | Uint16Array | Uint8Array | Int32Array>(t: Tensor, into: T): T {
    const flags = new Int32Array(1);
    check(this.lib, this.lib.download(this.ctx, into, this.ptr(t, "read"), into.byteLength, flags), "read");
    throwFlags(flags[0]!);
    return into;
  }

  /**
   * Index and label checks the kernels cannot throw from: they raise flags that the next host
   * read turns into an error, as the CPU backend would have thrown at the call.
   */
  checkFlags(): void {
    this.requireOpen("read");
    const flags = new Int32Array(1);
    check(this.lib, this.lib.check_flags(this.ctx, flags), "check_flags");
    throwFlags(flags[0]!);
  }

  stats(): { live: number; peak: number; reserved: number; mallocs: number } {
    this.requireOpen("memory");
    const live = new BigUint64Array(1);
    const peak = new BigUint64Array(1);
    const reserved = new BigUint64Array(1);
    const mallocs = new BigUint64Array(1);
    check(this.lib, this.lib.memory_stats(this.ctx, live, peak, reserved, mallocs), "memory");
    return { live: Number(live[0]!), peak: Number(peak[0]!), reserved: Number(reserved[0]!), mallocs: Number(mallocs[0]!) };
  }
}

export function dtypeCode(t: Tensor): number {
  return DTYPE_CODE[t.dtype];
}

export function requireDtype(op: string, t: Tensor, allowed: readonly DType[]): void {
  if (!allowed.includes(t.dtype)) {
    throw new TensorError(op, `expected ${allowed.join(" or ")}`, { shapes: [t.shape], dtypes: [t.dtype] });
  }
}

export function requireFloat(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype === "i32") throw new TensorError(op, "expected a float tensor", { shapes: [t.shape], dtypes: [t.dtype] });
}

function throwFlags(flags: number): void {
  if (flags & FLAG_LABEL) {
    throw new TensorError("crossEntropy", "a label is outside the vocabulary", { hint: "labels must be token ids or the ignore index" });
  }
  if (flags & FLAG_INDEX) throw new TensorError("gather/scatter", "an index was out of range");
}
