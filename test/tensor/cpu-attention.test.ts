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

test("precision bf16 is exact attention of q, k, v and dout rounded to bf16, out written in bf16, and differs from f32", () => {
  const random = rng(13);
  const mask = { kind: "causal", queryOffset: 0 } as const; // q [1, 9, 2, 6], k/v [1, 9, 1, 6]
  const q = randomF32(random, 9 * 2 * 6, -2, 2);
  const k = randomF32(random, 9 * 6, -2, 2);
  const v = randomF32(random, 9 * 6);
  const dout = randomF32(random, 9 * 2 * 6);
  const rounded = (x: Float32Array): Float32Array => Float32Array.from(backend.read(backend.cast(backend.upload(x, [x.length], "f32"), "bf16")));
  const up = (x: Float32Array, shape: number[]) => backend.upload(x, shape, "f32");
  const [qt, kt, vt] = [up(q, [1, 9, 2, 6]), up(k, [1, 9, 1, 6]), up(v, [1, 9, 1, 6])];
  const fast = backend.attention(qt, kt, vt, mask, 0.4, "bf16");
  assert.equal(fast.out.dtype, "bf16");
  const fastGrads = backend.attentionBackward(qt, kt, vt, fast.out, fast.lse, up(dout, [1, 9, 2, 6]), mask, 0.4, "bf16");
  // The exact tier on the rounded operands; its out rounded is the fast tier's, and the backward's
  // δ reads that rounded out.
  const [qr, kr, vr] = [up(rounded(q), [1, 9, 2, 6]), up(rounded(k), [1, 9, 1, 6]), up(rounded(v), [1, 9, 1, 6])];
  const exact = backend.attention(qr, kr, vr, mask, 0.4, "f32");
  assert.equal(exact.out.dtype, "f32");
  const outRounded = rounded(Float32Array.from(backend.read(exact.out)));
  assert.deepEqual(Array.from(backend.read(fast.out)), Array.from(outRounded));
  assert.deepEqual(Array.from(backend.read(fast.lse)), Array.from(backend.read(exact.lse)));
  const exactGrads = backend.attentionBackward(qr, kr, vr, up(outRounded, [1, 9, 2, 6]), exact.lse, up(rounded(dout), [1, 9, 2, 6]), mask, 0.4, "f32");
  for (const g of ["dq", "dk", "dv"] as const) assert.deepEqual(Array.from(backend.read(fastGrads[g])), Array.from(backend.read(exactGrads[g])), g);
  const f32 = backend.attention(qt, kt, vt, mask, 0.4, "f32");
  assert.notDeepEqual(Array.from(backend.read(fast.out)), Array.from(backend.read(f32.out)));
});
