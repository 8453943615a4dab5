import { openSafetensors, toFloat32 } from "../../src/io/safetensors.ts";

/** Every tensor of a safetensors file, as f32, by name. */
export async function readF32Tensors(file: string): Promise<Map<string, Float32Array>> {
  const s = await openSafetensors(file);
  const out = new Map<string, Float32Array>();
  for (const k of s.keys()) out.set(k, toFloat32(await s.read(k)));
  await s.close();
  return out;
}

/** Largest |a - b| over the rows (positions) whose attention_mask is 1; padding rows are not meaningful. */
export function maxDiffOnTokens(a: Float32Array, b: Float32Array, mask: ArrayLike<number> | undefined, width: number): number {
  let worst = 0;
  for (let row = 0; row < a.length / width; row++) {
    if (mask && mask[row] === 0) continue;
    for (let j = row * width; j < (row + 1) * width; j++) worst = Math.max(worst, Math.abs(a[j]! - b[j]!));
  }
  return worst;
}
