// A tiny-model run trained from an FP8 checkpoint tracks the same run from its BF16-dequantized
// copy (issue 13; test/train/fp8-curve.ts). The two differ only in the bf16 rounding of the 14 fp8
// linears' dequantized weights (≤ 2^-9 relative each): on the CPU backend the losses differ by at
// most 2.3e-3 over 20 steps (3e-4 relative), the gradient norms by 1e-3 relative. Bounds: 5e-3
// absolute per step, 1e-2 relative for the gradient norm. scripts/gpu-check runs it on CUDA too.
import assert from "node:assert/strict";
import { test } from "node:test";
import { referenceBackend } from "../helpers/reference.ts";
import { fp8Curves } from "./fp8-curve.ts";

test("20 steps from the FP8 tiny checkpoint track its BF16-dequantized copy within 5e-3 per step", async () => {
  const { fp8, bf16 } = await fp8Curves(referenceBackend());
  assert.equal(fp8.length, 20);
  assert.equal(bf16.length, 20);
  for (let i = 0; i < 20; i++) {
    const a = fp8[i]!;
    const b = bf16[i]!;
    assert.ok(Math.abs(a.loss - b.loss) <= 5e-3, `step ${i + 1}: loss ${a.loss} vs ${b.loss}`);
    assert.ok(Math.abs(a.grad_norm - b.grad_norm) <= 1e-2 * b.grad_norm, `step ${i + 1}: grad_norm ${a.grad_norm} vs ${b.grad_norm}`);
    assert.equal(a.lr, b.lr);
  }
  // Both really train (the comparison is not between two flat lines).
  assert.ok(fp8[19]!.loss < fp8[0]!.loss - 1, `${fp8[0]!.loss} → ${fp8[19]!.loss}`);
  // And they are two runs: the dequantization's rounding is visible.
  assert.ok(fp8.some((s, i) => s.loss !== bf16[i]!.loss));
});
