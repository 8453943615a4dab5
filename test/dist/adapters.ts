import assert from "node:assert/strict";
import { join } from "node:path";
import { openSafetensors, toFloat32 } from "../../src/io/safetensors.ts";

/** The largest |Δ| between two adapters' tensors (same keys required). */
export async function adapterDifference(a: string, b: string): Promise<number> {
  const [x, y] = await Promise.all([openSafetensors(join(a, "adapter_model.safetensors")), openSafetensors(join(b, "adapter_model.safetensors"))]);
  try {
    assert.deepEqual(x.keys().sort(), y.keys().sort());
    let worst = 0;
    for (const key of x.keys()) {
      const [p, q] = [toFloat32(await x.read(key)), toFloat32(await y.read(key))];
      for (let i = 0; i < p.length; i++) worst = Math.max(worst, Math.abs(p[i]! - q[i]!));
    }
    return worst;
  } finally {
    await Promise.all([x.close(), y.close()]);
  }
}
