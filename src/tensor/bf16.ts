/**
 * bfloat16 <-> float32. bf16 is the top half of an f32; narrowing rounds to nearest, ties to even
 * (as torch's `Tensor.to(torch.bfloat16)` and CUDA's __float2bfloat16_rn do), and keeps NaN a NaN.
 */

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Raw bf16 bits → value. */
export function bf16ToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

/** Value → raw bf16 bits, round-to-nearest-even; NaN becomes a quiet NaN of the same sign. */
export function f32ToBf16(value: number): number {
  f32Scratch[0] = value;
  return f32BitsToBf16(u32Scratch[0]!);
}

function f32BitsToBf16(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x0040) & 0xffff;
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

/** Widens a whole array (or part of one, into `out` at `outOffset`). */
export function bf16ArrayToF32(
  src: Uint16Array,
  out: Float32Array = new Float32Array(src.length),
  srcOffset = 0,
  count = src.length - srcOffset,
  outOffset = 0,
): Float32Array {
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < count; i++) outBits[outOffset + i] = src[srcOffset + i]! << 16;
  return out;
}

/** Rounds values[offset, offset + count) to their nearest bf16 (ties to even), kept as f32. */
export function roundToBf16InPlace(values: Float32Array, offset = 0, count = values.length - offset): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = offset; i < offset + count; i++) bits[i] = f32BitsToBf16(bits[i]!) << 16;
}

/** Narrows a whole array with round-to-nearest-even. */
export function f32ArrayToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16(bits[i]!);
  return out;
}
