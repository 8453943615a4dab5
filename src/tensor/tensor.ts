import type { Backend } from "./backend.ts";
import { BYTES_PER_ELEMENT, type DType } from "./dtype.ts";
import { TensorError } from "./errors.ts";

/**
 * A contiguous, row-major block of elements owned by one backend. There are no strides: reshape is
 * free, anything else that moves elements is a backend op. Memory is released explicitly with
 * free() (or by the Scope that created it), never by the garbage collector.
 */
export class Tensor {
  private freed = false;

  constructor(
    readonly backend: Backend,
    /** Backend-specific storage handle (a typed array on CPU, a device pointer record on CUDA). */
    readonly storage: unknown,
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** fp8_e4m3 only: real value = stored value × scale (HF `weight_scale_inv`). 1 otherwise. */
    readonly scale = 1,
  ) {}

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get byteLength(): number {
    return this.size * BYTES_PER_ELEMENT[this.dtype];
  }

  get isFreed(): boolean {
    return this.freed;
  }

  /** Same storage, new shape; -1 stands for the one dimension inferred from the size. */
  reshape(shape: readonly number[]): Tensor {
    const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
    const resolved = shape.map((d) => (d === -1 ? this.size / known : d));
    if (resolved.reduce((a, b) => a * b, 1) !== this.size || !resolved.every(Number.isInteger)) {
      throw new TensorError("reshape", `cannot view ${this.size} elements as [${shape.join(",")}]`, {
        shapes: [this.shape],
      });
    }
    return new Tensor(this.backend, this.storage, resolved, this.dtype, this.scale);
  }

  /** Releases the storage. Views made by reshape share it and become invalid too. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.backend.release(this);
  }
}
