/**
 * FP8 on the CPU backend against a widened reference of the same weights (test/models/fp8-tiny.ts):
 * the forward logits and loss and every LoRA gradient through a checkpointed backward.
 *
 *   precision f32 against the f32 widening (fp8 · scale): bit-exact. The matmul widens fp8 tiles to
 *     exactly those f32 values, so any difference is a bug in the fp8 path, not rounding.
 *   precision bf16 (the training path) against transformers' dequantized bf16 model: the fp8 path
 *     multiplies by the exact fp8 · scale while the reference rounds each weight to bf16 (up to
 *     2^-9 relative per weight), so the two differ by that rounding carried through two layers of
 *     each tower, where activations are rounded to bf16 again at every product: ‖Δ‖/‖ref‖ ≤ 2e-2
 *     (measured 8.0e-3 on the logits, 1.3e-2 on the LoRA gradients, whose products also run in bf16), the loss within 1e-2 relative.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { Rng } from "../../src/util/rng.ts";
import { fp8TinyHost, fp8TinyStep } from "./fp8-tiny.ts";

function random(seed: number): (n: number) => Float32Array {
  const rng = new Rng(seed);
  return (n) => Float32Array.from({ length: n }, () => 2 * rng.next() - 1);
}

function normRel(got: Float32Array, ref: Float32Array): number {
  assert.equal(got.length, ref.length);
  let d = 0;
  let r = 0;
  for (let i = 0; i < ref.length; i++) {
    d += (got[i]! - ref[i]!) ** 2;
    r += ref[i]! ** 2;
  }
  return Math.sqrt(d / r);
}

const backend = createCpuBackend();
const host = fp8TinyHost(random(13));

test("fp8 weights hold fp8 · weight_scale_inv: the host model's fp8 tensors are e4m3 with amax/448 scales", () => {
  const fp8 = [...host.weights.values()].filter((w) => w.fp8);
  assert.equal(fp8.length, 14);
  for (const w of fp8) {
    const amax = w.values.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    assert.ok(Math.abs(amax / w.fp8!.scale - 448) < 448 * 2 ** -3, `amax ${amax} scale ${w.fp8!.scale}`);
  }
  assert.equal(host.lora.size, 28, "7 modules × 2 layers × 2 towers");
});

test("fp8 forward and LoRA gradients (precision f32) equal the f32-widened model's bit for bit", () => {
  const got = fp8TinyStep(backend, host, "fp8", "f32");
  const ref = fp8TinyStep(backend, host, "f32", "f32");
  assert.ok(Number.isFinite(ref.loss[0]!));
  assert.deepEqual(got.logits, ref.logits);
  assert.deepEqual(got.loss, ref.loss);
  assert.deepEqual(got.loraGrads, ref.loraGrads);
  assert.ok(ref.loraGrads.some((g) => g !== 0));
});

test("fp8 training path (precision bf16) tracks transformers' bf16-dequantized model within 2e-2 norm-wise", () => {
  const got = fp8TinyStep(backend, host, "fp8", "bf16");
  const ref = fp8TinyStep(backend, host, "bf16", "bf16");
  const logits = normRel(got.logits, ref.logits);
  const grads = normRel(got.loraGrads, ref.loraGrads);
  assert.ok(logits < 2e-2, `logits ‖Δ‖/‖ref‖ ${logits}`);
  assert.ok(grads < 2e-2, `LoRA gradients ‖Δ‖/‖ref‖ ${grads}`);
  assert.ok(Math.abs(got.loss[0]! - ref.loss[0]!) < 1e-2 * Math.abs(ref.loss[0]!), `loss ${got.loss[0]} vs ${ref.loss[0]}`);
  // Not trivially equal: the bf16 rounding of the weights is visible.
  assert.ok(logits > 0);
});
