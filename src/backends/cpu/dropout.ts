/**
 * Inverted dropout with a counter-based RNG, so any backend reproduces the same mask from (seed,
 * element index) alone, in any order, with no state.
 *
 * THE EXACT FUNCTION (the CUDA kernel must match it bit for bit; all arithmetic is uint32 mod 2³²):
 *
 *   fmix32(h):  h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16
 *               (MurmurHash3's finaliser)
 *   hash(seed, i) = fmix32(fmix32(seed) + i * 0x9e3779b9)
 *   keep(i)   ⇔  hash(seed, i) ≥ threshold,  threshold = ceil(p · 2³²)   (a uint64 compare;
 *                equivalently hash/2³² ≥ p, computed exactly)
 *   y[i]      =  keep(i) ? x[i] · s : 0,   s = (float)(1 / (1 - p))   (the f64 quotient rounded to
 *                f32 once; the product x·s is an f32 multiply)
 *
 * i is the flat element index (0 ≤ i < 2³²) and seed an integer in [0, 2³²). fmix32 and the
 * multiplication by an odd constant are bijections, so different i never share a hash.
 */
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { DType } from "../../tensor/dtype.ts";
import { type CpuAllocator, fromF32As, valuesF32 } from "./storage.ts";

export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function dropoutHash(seed: number, index: number): number {
  return fmix32((fmix32(seed >>> 0) + Math.imul(index, 0x9e3779b9)) >>> 0);
}

function checkArgs(op: string, p: number, seed: number, size: number): void {
  if (!(p >= 0 && p < 1)) throw new TensorError(op, `dropout probability ${p} must be in [0, 1)`);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new TensorError(op, `seed ${seed} must be an integer in [0, 2^32)`);
  if (size > 2 ** 32) throw new TensorError(op, "tensor too large for a 32-bit element counter");
}

/** y = mask·x·s, where mask and s are defined in the header. */
function applyMask(values: Float32Array, p: number, seed: number): Float32Array {
  const threshold = Math.ceil(p * 2 ** 32);
  const keepScale = Math.fround(1 / (1 - p));
  const seedHash = fmix32(seed >>> 0);
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const h = fmix32((seedHash + Math.imul(i, 0x9e3779b9)) >>> 0);
    if (h >= threshold) out[i] = values[i]! * keepScale;
  }
  return out;
}

/** outDtype bf16 rounds the f32 product x·s once, to nearest even. */
export function dropout(alloc: CpuAllocator, x: Tensor, p: number, seed: number, outDtype: DType = "f32"): Tensor {
  checkArgs("dropout", p, seed, x.size);
  return fromF32As(alloc, applyMask(valuesF32(x, "dropout"), p, seed), x.shape, outDtype, "dropout");
}

/** The same mask and scale applied to the incoming gradient. */
export function dropoutBackward(alloc: CpuAllocator, dout: Tensor, p: number, seed: number): Tensor {
  checkArgs("dropoutBackward", p, seed, dout.size);
  return alloc.fromF32(applyMask(valuesF32(dout, "dropoutBackward"), p, seed), dout.shape);
}
