/**
 * float8 e4m3fn <-> float32 (the OCP "fn" variant used by HF FP8 checkpoints): 1 sign, 4 exponent
 * (bias 7), 3 mantissa bits; no infinities; 0x7f and 0xff are NaN; the largest finite value is 448;
 * subnormals are m·2⁻⁹. A tensor's real value is the decoded byte times its per-tensor scale.
 *
 * Encoding rounds to nearest, ties to even, and SATURATES out-of-range values (±inf included) to
 * ±448, as CUDA's `__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)` does. (torch's plain cast
 * gives NaN above 464 instead; quantisers divide by a scale chosen so that never happens.)
 */

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

export const FP8_E4M3_MAX = 448;

function decodeByte(byte: number): number {
  const sign = byte & 0x80 ? -1 : 1;
  const exponent = (byte >> 3) & 0xf;
  const mantissa = byte & 0x7;
  if (exponent === 0xf && mantissa === 0x7) return NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -9;
  return sign * (1 + mantissa / 8) * 2 ** (exponent - 7);
}

/** All 256 decoded values, indexed by the raw byte. */
export const FP8_E4M3_TABLE: Float32Array = Float32Array.from({ length: 256 }, (_, byte) => decodeByte(byte));

export function fp8E4m3ToF32(byte: number): number {
  return FP8_E4M3_TABLE[byte & 0xff]!;
}

/** Value → raw e4m3fn byte (round-to-nearest-even, saturating; NaN → 0x7f with the sign bit). */
export function f32ToFp8E4m3(value: number): number {
  f32Scratch[0] = value;
  let bits = u32Scratch[0]!;
  const sign = (bits >>> 24) & 0x80;
  bits &= 0x7fffffff;
  if (bits > 0x7f800000) return sign | 0x7f;
  // 464 = halfway between 448 and the (NaN) code above it; ties go to 448 (even mantissa).
  if (bits > 0x43e80000) return sign | 0x7e;
  if (bits < 121 << 23) {
    // Below the smallest normal (2⁻⁶): adding 2¹⁴ lines the subnormal step 2⁻⁹ up with the f32
    // unit in the last place, so the f32 addition itself rounds to nearest even. The exact sum
    // fits in a double, so Math.fround performs the only rounding.
    const magic = 2 ** 14;
    f32Scratch[0] = Math.fround(Math.abs(Math.fround(value)) + magic);
    return sign | (u32Scratch[0]! - (141 << 23));
  }
  const mantissaOdd = (bits >>> 20) & 1;
  bits = (bits + ((7 - 127) << 23) + 0x7ffff + mantissaOdd) >>> 0;
  return sign | ((bits >>> 20) & 0x7f);
}

/** Encodes value/scale for every element (the quantiser picks scale, e.g. max|x| / 448). */
export function f32ArrayToFp8E4m3(src: Float32Array, scale = 1, out: Uint8Array = new Uint8Array(src.length)): Uint8Array {
  for (let i = 0; i < src.length; i++) out[i] = f32ToFp8E4m3(src[i]! / scale);
  return out;
}

/** Decodes bytes times scale into f32 (or part of an array, into `out` at `outOffset`). */
export function fp8E4m3ArrayToF32(
  src: Uint8Array,
  scale = 1,
  out: Float32Array = new Float32Array(src.length),
  srcOffset = 0,
  count = src.length - srcOffset,
  outOffset = 0,
): Float32Array {
  for (let i = 0; i < count; i++) out[outOffset + i] = FP8_E4M3_TABLE[src[srcOffset + i]!]! * scale;
  return out;
}
