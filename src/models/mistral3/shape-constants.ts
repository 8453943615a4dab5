import type { Backend } from "../../tensor/backend.ts";
import type { DType } from "../../tensor/dtype.ts";
import type { Tensor } from "../../tensor/tensor.ts";

/**
 * Device tensors that depend only on shapes — RoPE tables of an image grid or of default positions,
 * the projector's patch-merger permutation — built on the host and uploaded once per shape, then
 * reused by every pass with that shape (training and eval see one image size over and over). The
 * model owns them: freeMistral3 frees them. Bounded: past `capacity` keys the oldest is dropped.
 */
export class ShapeConstants {
  private readonly entries = new Map<string, Tensor>();

  constructor(private readonly capacity = 64) {}

  get(backend: Backend, key: string, build: () => { data: Float32Array | Int32Array; shape: readonly number[]; dtype: DType }): Tensor {
    const known = this.entries.get(key);
    if (known) return known;
    const { data, shape, dtype } = build();
    const t = backend.upload(data, shape, dtype);
    this.entries.delete(key);
    this.entries.set(key, t);
    if (this.entries.size > this.capacity) {
      const [oldestKey, oldest] = this.entries.entries().next().value as [string, Tensor];
      oldest.free();
      this.entries.delete(oldestKey);
    }
    return t;
  }

  /** Both halves of a table pair under one key. */
  pair(
    backend: Backend,
    key: string,
    build: () => { first: Float32Array; second: Float32Array; shape: readonly number[] },
  ): [Tensor, Tensor] {
    let built: { first: Float32Array; second: Float32Array; shape: readonly number[] } | null = null;
    const once = () => (built ??= build());
    const first = this.get(backend, `${key}/0`, () => ({ data: once().first, shape: once().shape, dtype: "f32" }));
    const second = this.get(backend, `${key}/1`, () => ({ data: once().second, shape: once().shape, dtype: "f32" }));
    return [first, second];
  }

  free(): void {
    for (const t of this.entries.values()) t.free();
    this.entries.clear();
  }
}
