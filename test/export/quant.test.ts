import assert from "node:assert/strict";
import { test } from "node:test";
import {
  dequantizeQ4_K,
  dequantizeQ6_K,
  dequantizeQ8_0,
  f16ToF32,
  f32ToF16,
  quantizeQ4_K,
  quantizeQ6_K,
  quantizeQ8_0,
  scaleMinK4,
} from "../../src/export/gguf/quant.ts";
import { Rng } from "../../src/util/rng.ts";

function gaussian(n: number, seed: number, std = 0.05): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = std * Math.sqrt(-2 * Math.log(Math.max(rng.next(), 1e-12))) * Math.cos(2 * Math.PI * rng.next());
  return out;
}

function relRmse(x: Float32Array, y: Float32Array): number {
  let se = 0;
  let sx = 0;
  for (let i = 0; i < x.length; i++) {
    se += (x[i]! - y[i]!) ** 2;
    sx += x[i]! ** 2;
  }
  return Math.sqrt(se / sx);
}

test("f16: round to nearest even, subnormals, overflow and NaN", () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [-2.5, 0xc100],
    [65504, 0x7bff],
    [65520, 0x7c00], // halfway to the next binade: rounds to even = infinity
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // exactly half of it: ties to even (0)
    [3 * 2 ** -25, 0x0002], // 1.5 subnormal steps: ties to even (2)
    [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10: even (1)
    [1 + 3 * 2 ** -11, 0x3c02], // tie between 1+2^-10 and 1+2^-9: even
    [6.103515625e-5, 0x0400], // smallest normal
    [Infinity, 0x7c00],
    [-0, 0x8000],
  ];
  for (const [v, bits] of cases) assert.equal(f32ToF16(v), bits, `f16(${v})`);
  assert.equal(f32ToF16(Number.NaN) & 0x7c00, 0x7c00);
  assert.ok(f32ToF16(Number.NaN) & 0x3ff, "NaN stays NaN");
  for (const bits of [0x0001, 0x03ff, 0x0400, 0x3c00, 0x7bff, 0xc100, 0x8001]) assert.equal(f32ToF16(f16ToF32(bits)), bits, `round trip ${bits.toString(16)}`);
});

test("Q8_0: a hand-computed block (d from the f32 max, f16-stored; roundf is half away from zero)", () => {
  const x = new Float32Array(32);
  x[0] = 1.27; // the max: q = 127
  x[1] = -1.27;
  x[2] = 0.635; // 63.5 → 64 (away from zero)
  x[3] = -0.635; // → -64
  x[4] = 0.004; // 0.4 → 0
  x[5] = 0.3;
  const q = quantizeQ8_0(x);
  assert.equal(q.length, 34);
  // d = 1.27/127 = 0.01 → f16 0x211f (0.01000213623046875)
  assert.equal(q[0]! | (q[1]! << 8), 0x211f);
  const qs = new Int8Array(q.buffer, 2, 32);
  assert.deepEqual(Array.from(qs.slice(0, 6)), [127, -127, 64, -64, 0, 30]);
  assert.ok(qs.slice(6).every((v) => v === 0));
  const y = dequantizeQ8_0(q, 32);
  assert.ok(Math.abs(y[0]! - 127 * 0.01000213623046875) < 1e-7);
});

test("Q8_0 round trip: every value within 0.56·d of its block's step d", () => {
  const x = gaussian(32 * 512, 1);
  const y = dequantizeQ8_0(quantizeQ8_0(x), x.length);
  for (let b = 0; b < 512; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
    const d = amax / 127;
    for (let j = 0; j < 32; j++) assert.ok(Math.abs(x[b * 32 + j]! - y[b * 32 + j]!) <= 0.56 * d + 1e-9, `block ${b} value ${j}`);
  }
  assert.ok(relRmse(x, y) < 0.006);
});

test("Q4_K: a hand-computed super-block (exact levels, 6-bit scales packed as ggml packs them)", () => {
  // Every sub-block holds k·0.125 for k = l mod 16: min 0, the least-squares scale is exactly 0.125.
  const x = Float32Array.from({ length: 256 }, (_, i) => (i % 16) * 0.125);
  const q = quantizeQ4_K(x);
  assert.equal(q.length, 144);
  // d = max_scale/63 = 0.125/63 → f16 0x1810 (0.001983642578125); dmin = 0 (no sub-block has a min)
  assert.equal(q[0]! | (q[1]! << 8), 0x1810);
  assert.equal(q[2]! | (q[3]! << 8), 0x0000);
  // scale 63 for all 8 sub-blocks, min 0: bytes 0-3 carry sub-blocks 0-3 (63) plus the high bits
  // of 4-7 (63 >> 4 = 3, in bits 6-7), bytes 4-7 the mins of 0-3 (0), bytes 8-11 the low nibbles
  // of sub-blocks 4-7 (scale 15 | min 0 << 4).
  assert.deepEqual(Array.from(q.slice(4, 16)), [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x0f, 0x0f, 0x0f, 0x0f]);
  for (let j = 0; j < 8; j++) assert.deepEqual(Array.from(scaleMinK4(j, q, 4)), [63, 0]);
  // qs: byte l of each 32-byte group holds sub-block 2g's level l in the low nibble and sub-block
  // 2g+1's in the high nibble; both are l mod 16.
  for (let g = 0; g < 4; g++) {
    for (let l = 0; l < 32; l++) assert.equal(q[16 + 32 * g + l], (l % 16) | ((l % 16) << 4), `group ${g} byte ${l}`);
  }
  const y = dequantizeQ4_K(q, 256);
  const step = 63 * 0.001983642578125;
  for (let i = 0; i < 256; i++) assert.ok(Math.abs(y[i]! - (i % 16) * step) < 1e-6);
});

test("Q4_K dequantisation reads a hand-built block as ggml lays it out", () => {
  const block = new Uint8Array(144);
  block[0] = 0x00; // d = 1.0 (0x3c00)
  block[1] = 0x3c;
  block[2] = 0x00; // dmin = 0.5 (0x3800)
  block[3] = 0x38;
  // sub-block 0: scale 2, min 3; sub-block 1: scale 5, min 1; sub-block 4: scale 17 (high bits in byte 0), min 33
  block[4] = 2 | (1 << 6); // scale0 = 2, plus scale4's high bits (17 >> 4 = 1)
  block[5] = 5;
  block[8] = 3 | (2 << 6); // min0 = 3, plus min4's high bits (33 >> 4 = 2)
  block[9] = 1;
  block[12] = (17 & 0xf) | ((33 & 0xf) << 4);
  block[16] = 0x7a; // element 0: low nibble 10 (sub-block 0); element 32: high nibble 7 (sub-block 1)
  block[16 + 64] = 0x03; // element 128: sub-block 4, level 3
  const y = dequantizeQ4_K(block, 256);
  assert.equal(y[0], 1 * 2 * 10 - 0.5 * 3);
  assert.equal(y[32], 1 * 5 * 7 - 0.5 * 1);
  assert.equal(y[128], 1 * 17 * 3 - 0.5 * 33);
  assert.equal(y[1], -0.5 * 3); // level 0
});

test("Q4_K round trip: each value takes the nearest level its sub-block's scale and min allow", () => {
  const x = gaussian(256 * 64, 2);
  // a shifted block, so mins matter
  for (let i = 0; i < 256; i++) x[i] = x[i]! + 0.2;
  const q = quantizeQ4_K(x);
  const y = dequantizeQ4_K(q, x.length);
  const view = new DataView(q.buffer);
  for (let b = 0; b < 64; b++) {
    const d = f16ToF32(view.getUint16(b * 144, true));
    const dmin = f16ToF32(view.getUint16(b * 144 + 2, true));
    for (let j = 0; j < 8; j++) {
      const [sc, m] = scaleMinK4(j, q, b * 144 + 4);
      for (let l = 0; l < 32; l++) {
        const i = b * 256 + j * 32 + l;
        let best = Infinity;
        for (let level = 0; level < 16; level++) best = Math.min(best, Math.abs(x[i]! - (d * sc! * level - dmin * m!)));
        assert.ok(Math.abs(x[i]! - y[i]!) <= best + 1e-6, `block ${b} sub-block ${j} value ${l}`);
      }
    }
  }
  assert.ok(relRmse(x, y) < 0.08, `relative rmse ${relRmse(x, y)}`);
});

test("Q6_K: a constant block is exact (levels 0, scales -128, d = c/4096) and zeros stay zeros", () => {
  const q = quantizeQ6_K(new Float32Array(256).fill(1));
  assert.equal(q.length, 210);
  assert.ok(q.slice(0, 192).every((b) => b === 0), "ql and qh: level 0 (= -32 + 32)");
  assert.ok(new Int8Array(q.buffer, 192, 16).every((s) => s === -128));
  assert.equal(q[208]! | (q[209]! << 8), 0x0c00); // 2^-12
  assert.ok(dequantizeQ6_K(q, 256).every((v) => v === 1));
  assert.ok(quantizeQ6_K(new Float32Array(256)).every((b) => b === 0));
});

test("Q6_K dequantisation reads a hand-built block as ggml lays it out", () => {
  const block = new Uint8Array(210);
  block[0] = 0x21; // element 0 low bits 1, element 64 low bits 2
  block[32] = 0x50; // element 32 low bits 0, element 96 low bits 5
  block[128] = 0b11_10_01_00; // high bits: element 0 → 0, 32 → 1, 64 → 2, 96 → 3
  const scales = new Int8Array(block.buffer, 192, 16);
  scales.fill(1);
  scales[4] = -2; // elements 64…79
  block[208] = 0x00; // d = 1.0
  block[209] = 0x3c;
  const y = dequantizeQ6_K(block, 256);
  assert.equal(y[0], 1 - 32);
  assert.equal(y[32], 16 - 32);
  assert.equal(y[64], -2 * (2 + 32 - 32));
  assert.equal(y[96], 5 + 48 - 32);
});

test("Q6_K round trip on gaussian weights", () => {
  const x = gaussian(256 * 64, 3);
  const y = dequantizeQ6_K(quantizeQ6_K(x), x.length);
  assert.ok(relRmse(x, y) < 0.02, `relative rmse ${relRmse(x, y)}`);
});

test("row lengths that do not divide into blocks are refused", () => {
  assert.throws(() => quantizeQ8_0(new Float32Array(48)), /multiple of 32/);
  assert.throws(() => quantizeQ4_K(new Float32Array(96)), /multiple of 256/);
  assert.throws(() => quantizeQ6_K(new Float32Array(96)), /multiple of 256/);
});

test("the worker pool's bytes are encodeAs's bytes, whatever the thread count", async () => {
  const { createQuantPool } = await import("../../src/export/gguf/quant-pool.ts");
  const { encodeAs } = await import("../../src/export/gguf/quant.ts");
  const x = gaussian(256 * 1500, 4);
  const pool = createQuantPool(3);
  try {
    for (const type of ["Q4_K", "Q6_K", "Q8_0"] as const) {
      assert.deepEqual(await pool.encode(type, x), encodeAs(type, x), type);
    }
  } finally {
    await pool.close();
  }
});
