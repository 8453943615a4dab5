/**
 * bitsandbytes' block-wise 8-bit quantisation, as AdamW8bit keeps its moments: 256 values per
 * absmax block, each value the nearest code of a 256-entry dynamic map. The definition both
 * backends follow (the CPU backend loops over these functions; the CUDA kernel mirrors them bit
 * for bit) and the optimizer's checkpoint format.
 */

/**
 * bitsandbytes' dynamic (tree) quantisation map, `create_dynamic_map(signed, 7, 8)` (up to f32
 * rounding of the midpoints): 256 sorted
 * codes in [-1, 1] (signed) or [0, 1] whose spacing follows powers of ten, so values many orders of
 * magnitude below the block maximum keep a few significant digits.
 */
export function dynamicMap(signed: boolean): Float32Array {
  const data: number[] = [];
  const maxExponentBits = 7;
  const nonSignBits = 7;
  for (let i = 0; i < maxExponentBits; i++) {
    const fractionItems = signed ? 2 ** (i + nonSignBits - maxExponentBits) + 1 : 2 ** (i + nonSignBits - maxExponentBits + 1) + 1;
    const magnitude = 10 ** (-(maxExponentBits - 1) + i);
    for (let k = 0; k + 1 < fractionItems; k++) {
      // linspace(0.1, 1, fractionItems) midpoints, in f32 as torch computes them
      const step = Math.fround(0.9 / (fractionItems - 1));
      const lo = Math.fround(0.1 + step * k);
      const hi = Math.fround(0.1 + step * (k + 1));
      const mean = Math.fround(Math.fround(lo + hi) / 2);
      data.push(magnitude * mean);
      if (signed) data.push(-magnitude * mean);
    }
  }
  data.push(0, 1);
  return Float32Array.from(data.sort((a, b) => a - b));
}

/** The first moment's map (signed) and the second's (unsigned), 256 codes each. */
export const SIGNED_MAP = dynamicMap(true);
export const UNSIGNED_MAP = dynamicMap(false);

/** Elements per absmax block of the 8-bit states (bitsandbytes' blockwise optimizers use 256). */
export const BLOCK_8BIT = 256;

/** Block-wise 8-bit codes: each block scaled by its absmax, each value the nearest code of `map`. */
export interface Quantized {
  codes: Uint8Array;
  absmax: Float32Array;
}

export function quantizeBlockwise(values: Float32Array, map: Float32Array): Quantized {
  const q = { codes: new Uint8Array(values.length), absmax: new Float32Array(Math.ceil(values.length / BLOCK_8BIT)) };
  quantizeInto(values, map, q);
  return q;
}

/**
 * Quantises values into q's arrays (sized as quantizeBlockwise makes them). The block maximum is
 * taken with Math.max, so a NaN makes it NaN and the block's codes those of 0; each value is divided
 * by the maximum in f64 and compared with the f32 codes in f64 (the CUDA kernel does the same).
 */
export function quantizeInto(values: Float32Array, map: Float32Array, q: Quantized): void {
  const blocks = Math.ceil(values.length / BLOCK_8BIT);
  for (let b = 0; b < blocks; b++) {
    const end = Math.min(values.length, (b + 1) * BLOCK_8BIT);
    let max = 0;
    for (let i = b * BLOCK_8BIT; i < end; i++) max = Math.max(max, Math.abs(values[i]!));
    q.absmax[b] = max;
    for (let i = b * BLOCK_8BIT; i < end; i++) q.codes[i] = nearestCode(map, max > 0 ? values[i]! / max : 0);
  }
}

export function dequantizeBlockwise(q: Quantized, map: Float32Array): Float32Array {
  const out = new Float32Array(q.codes.length);
  for (let i = 0; i < out.length; i++) out[i] = map[q.codes[i]!]! * q.absmax[Math.floor(i / BLOCK_8BIT)]!;
  return out;
}

/** Index of the code closest to x (binary search over the sorted map; a tie goes to the lower code). */
export function nearestCode(map: Float32Array, x: number): number {
  let lo = 0;
  let hi = map.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (map[mid]! <= x) lo = mid;
    else hi = mid;
  }
  return x - map[lo]! <= map[hi]! - x ? lo : hi;
}

/**
 * How a backend stores n u8 codes without a u8 dtype: an i32 tensor of ceil(n/4) words whose bytes
 * (little-endian, as typed arrays and the GPU lay them out) are the codes in order, the tail zero.
 */
export function packedCodeWords(n: number): number {
  return Math.ceil(n / 4);
}

export function packCodes(codes: Uint8Array): Int32Array {
  const words = new Int32Array(packedCodeWords(codes.length));
  new Uint8Array(words.buffer).set(codes);
  return words;
}

export function unpackCodes(words: Int32Array, n: number): Uint8Array {
  return new Uint8Array(words.buffer, words.byteOffset, n).slice();
}
