/** Attention forward against a naive full-matrix softmax, for every mask kind and GQA. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { attentionCases } from "./attention-cases.ts";
import { assertClose, attentionBackwardRef, attentionRef, randomF32, rng } from "./reference.ts";

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

test("attention over several query blocks (T, S > 64): forward and gradients against full-matrix formulas", () => {
  const random = rng(12);
  const keyValid = Int32Array.from({ length: 2 * 150 }, (_, i) => (i < 5 ? 0 : 1)); // batch 0: 5 padded keys
  const cases = [
    {
      name: "causal, offset 20, left padding",
      dims: { b: 2, t: 130, s: 150, hq: 4, hkv: 2, d: 8 },
      mask: { kind: "causal", queryOffset: 20, keyValid: backend.upload(keyValid, [2, 150], "i32") } as const,
      visible: (b: number, t: number, s: number) => s <= 20 + t && keyValid[b * 150 + s] === 1,
    },
    {
      name: "segments 70 + 3 + 77",
      dims: { b: 1, t: 150, s: 150, hq: 2, hkv: 1, d: 8 },
      mask: { kind: "segments", lengths: [70, 3, 77] } as const,
      visible: (_b: number, t: number, s: number) => {
        const seg = (i: number): number => (i < 70 ? 0 : i < 73 ? 1 : 2);
        return seg(t) === seg(s);
      },
    },
  ];
  for (const { name, dims, mask, visible } of cases) {
    const { b, t, s, hq, hkv, d } = dims;
    const q = randomF32(random, b * t * hq * d, -2, 2);
    const k = randomF32(random, b * s * hkv * d, -2, 2);
    const v = randomF32(random, b * s * hkv * d);
    const dout = randomF32(random, b * t * hq * d);
    const scale = 1 / Math.sqrt(d);
    const [qt, kt, vt] = [backend.upload(q, [b, t, hq, d], "f32"), backend.upload(k, [b, s, hkv, d], "f32"), backend.upload(v, [b, s, hkv, d], "f32")];
    const { out, lse } = backend.attention(qt, kt, vt, mask, scale);
    assertClose(backend.read(out), attentionRef(q, k, v, dims, visible, scale), 1e-5, `${name} forward`);
    const grads = backend.attentionBackward(qt, kt, vt, out, lse, backend.upload(dout, [b, t, hq, d], "f32"), mask, scale);
    const expected = attentionBackwardRef(q, k, v, dout, dims, visible, scale);
    // f32 products over ≤ 150 keys: 1e-5 absolute (the gradients are O(1)).
    assertClose(backend.read(grads.dq), expected.dq, 1e-5, `${name} dq`);
    assertClose(backend.read(grads.dk), expected.dk, 1e-5, `${name} dk`);
    assertClose(backend.read(grads.dv), expected.dv, 1e-5, `${name} dv`);
  }
});

test("precision bf16 is exact attention of q, k, v and dout rounded to bf16, and differs from f32", () => {
  const random = rng(13);
  const mask = { kind: "causal", queryOffset: 0 } as const; // q [1, 9, 2, 6], k/v [1, 9, 1, 6]
  const q = randomF32(random, 9 * 2 * 6, -2, 2);
  const k = randomF32(random, 9 * 6, -2, 2);
  const v = randomF32(random, 9 * 6);
  const dout = randomF32(random, 9 * 2 * 6);
  const rounded = (x: Float32Array): Float32Array => Float32Array.from(backend.read(backend.cast(backend.upload(x, [x.length], "f32"), "bf16")));
  const run = (qx: Float32Array, kx: Float32Array, vx: Float32Array, dx: Float32Array, precision: "f32" | "bf16") => {
    const [qt, kt, vt] = [backend.upload(qx, [1, 9, 2, 6], "f32"), backend.upload(kx, [1, 9, 1, 6], "f32"), backend.upload(vx, [1, 9, 1, 6], "f32")];
    const { out, lse } = backend.attention(qt, kt, vt, mask, 0.4, precision);
    const grads = backend.attentionBackward(qt, kt, vt, out, lse, backend.upload(dx, [1, 9, 2, 6], "f32"), mask, 0.4, precision);
    return [out, lse, grads.dq, grads.dk, grads.dv].map((x) => Array.from(backend.read(x)));
  };
  const fast = run(q, k, v, dout, "bf16");
  assert.deepEqual(fast, run(rounded(q), rounded(k), rounded(v), rounded(dout), "f32"));
  assert.notDeepEqual(fast[0], run(q, k, v, dout, "f32")[0]);
});
