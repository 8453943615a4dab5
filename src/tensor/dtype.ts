/**
 * Element types the engine computes with. Storage follows the name: bf16 is 16-bit in memory and
 * widened to f32 for arithmetic; fp8_e4m3 holds frozen weights only and always travels with a
 * per-tensor scale (see Tensor.scale). Token ids and labels are i32 inside the engine; i64 exists
 * only at file boundaries (safetensors), where it is narrowed with a range check.
 */
export type DType = "f32" | "bf16" | "fp8_e4m3" | "i32";

export const BYTES_PER_ELEMENT: Readonly<Record<DType, number>> = {
  f32: 4,
  bf16: 2,
  fp8_e4m3: 1,
  i32: 4,
};

export function isFloat(dtype: DType): boolean {
  return dtype !== "i32";
}

/** The stored 16- and 8-bit float types: what an autocast product pairs an f32 operand with. */
export function isNarrowFloat(dtype: DType): boolean {
  return dtype === "bf16" || dtype === "fp8_e4m3";
}
