/** Attention forward against a naive full-matrix softmax, for every mask kind and GQA. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { attentionCases } from "./attention-cases.ts";
import { assertClose, attentionRef, randomF32, rng } from "./reference.ts";

const backend = createCpuBackend();

test("attention matches the naive softmax for causal+offset+padding, segments and GQA", () => {
  const random = rng(11);
  for (const { name, dims, mask, visible } of attentionCases(backend)) {
    const { b, t, s, hq, hkv, d } = dims;
    const q = randomF32(random, b * t * hq * d, -2, 2);
    const k = randomF32(random, b * s * hkv * d, -2, 2);
    const v = randomF32(random, b * s * hkv * d);
    const scale = 1 / Math.sqrt(d);
    const { out, lse } = backend.attention(
      backend.upload(q, [b, t, hq, d], "f32"),
      backend.upload(k, [b, s, hkv, d], "f32"),
      backend.upload(v, [b, s, hkv, d], "f32"),
      mask,
      scale,
    );
    assertClose(backend.read(out), attentionRef(q, k, v, dims, visible, scale), 1e-6, name);
    assert.deepEqual(lse.shape, [b, hq, t]);
    assert.ok(backend.read(lse).every(Number.isFinite), `${name}: every row sees a key`);
  }
});

test("a query row with no visible key gives zeros and lse = −∞", () => {
  const keyValid = backend.upload(Int32Array.of(0, 0, 1), [1, 3], "i32");
  const q = backend.upload(new Float32Array(3 * 2).fill(1), [1, 3, 1, 2], "f32");
  const kv = backend.upload(new Float32Array(3 * 2).fill(1), [1, 3, 1, 2], "f32");
  const { out, lse } = backend.attention(q, kv, kv, { kind: "causal", queryOffset: 0, keyValid }, 1);
  assert.deepEqual(Array.from(backend.read(out)), [0, 0, 0, 0, 1, 1]);
  assert.deepEqual(Array.from(backend.read(lse)).slice(0, 2), [-Infinity, -Infinity]);
});

test("attention rejects inconsistent shapes and masks", () => {
  const q = backend.zeros([1, 4, 3, 2], "f32");
  const k = backend.zeros([1, 4, 2, 2], "f32");
  assert.throws(() => backend.attention(q, k, k, { kind: "causal", queryOffset: 0 }, 1), /multiple of Hkv/);
  const k1 = backend.zeros([1, 4, 1, 2], "f32");
  assert.throws(() => backend.attention(q, k1, k1, { kind: "segments", lengths: [2, 1] }, 1), /segment/);
});
