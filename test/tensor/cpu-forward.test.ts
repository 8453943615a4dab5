/** Forward CPU kernels against naive f64 formulas on seeded random inputs, including odd sizes. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { erf } from "../../src/backends/cpu/activations.ts";
import { bf16ToF32, f32ToBf16 } from "../../src/tensor/bf16.ts";
import { f32ToFp8E4m3, fp8E4m3ToF32 } from "../../src/tensor/fp8.ts";
import { assertClose, crossEntropyRef, erfRef, geluRef, matmulRef, randomF32, rmsNormRef, rng, ropeRef, siluRef } from "./reference.ts";

const backend = createCpuBackend();

// Dot products of K values in [-1, 1] accumulated in f32: rounding error grows at worst like
// K·2⁻²⁴·|partial sums| (|partial sums| ≲ √K); 1e-5 covers K ≤ 70 with a wide margin.
const MATMUL_TOL = 1e-5;

test("matmul matches the naive product for every transpose combination, alpha and odd sizes", () => {
  const random = rng(1);
  for (const [m, k, n] of [
    [7, 13, 5],
    [1, 1, 1],
    [13, 70, 9],
    [3, 4, 67],
    [5, 1030, 130], // several B tiles, K padded to a multiple of 4
    [300, 4100, 5], // several row blocks of A
  ] as const) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const a = randomF32(random, m * k);
        const b = randomF32(random, k * n);
        const at = backend.upload(a, transA ? [k, m] : [m, k], "f32");
        const bt = backend.upload(b, transB ? [n, k] : [k, n], "f32");
        const out = backend.matmul(at, bt, { transA, transB, alpha: 0.5 });
        assert.deepEqual(out.shape, [m, n]);
        const label = `m=${m} k=${k} n=${n} transA=${transA} transB=${transB}`;
        assertClose(backend.read(out), matmulRef(a, b, m, k, n, transA, transB, 0.5), k > 100 ? 1e-4 : MATMUL_TOL, label);
        [at, bt, out].forEach((t) => t.free());
      }
    }
  }
});

test("matmul keeps leading dimensions of a, accumulates in place, and narrows to bf16 on request", () => {
  const random = rng(2);
  const a = randomF32(random, 2 * 3 * 5);
  const w = randomF32(random, 7 * 5);
  const at = backend.upload(a, [2, 3, 5], "f32");
  const wt = backend.upload(w, [7, 5], "f32");
  const y = backend.matmul(at, wt, { transB: true });
  assert.deepEqual(y.shape, [2, 3, 7]);
  const expected = matmulRef(a, w, 6, 5, 7, false, true);
  assertClose(backend.read(y), expected, MATMUL_TOL, "batched linear");

  const acc = backend.upload(Float32Array.from({ length: 42 }, (_, i) => i), [6, 7], "f32");
  const returned = backend.matmul(at, wt, { transB: true, alpha: 2, accumulate: acc });
  assert.equal(returned, acc);
  assertClose(backend.read(acc), Array.from(expected, (v, i) => i + 2 * v), 1e-4, "accumulate");

  const narrow = backend.matmul(at, wt, { transB: true, outDtype: "bf16" });
  assert.equal(narrow.dtype, "bf16");
  const yv = backend.read(y);
  backend.read(narrow).forEach((v, i) => assert.equal(v, bf16ToF32(f32ToBf16(yv[i]!))));
});

test("matmul reads bf16 and fp8 weights exactly as their widened values", () => {
  const random = rng(3);
  const [m, k, n] = [5, 37, 11];
  const a = randomF32(random, m * k);
  const wF32 = randomF32(random, n * k);
  const wBits = Uint16Array.from(wF32, f32ToBf16);
  const scale = 0.01;
  const wBytes = Uint8Array.from(wF32, (v) => f32ToFp8E4m3(v / scale));
  const at = backend.upload(a, [m, k], "f32");
  for (const transB of [true, false]) {
    // For transB = false the same numbers are used as a [k, n] matrix.
    const shape = transB ? [n, k] : [k, n];
    const cases = [
      { t: backend.upload(wBits, shape, "bf16"), widened: Array.from(wBits, bf16ToF32) },
      { t: backend.upload(wBytes, shape, "fp8_e4m3", scale), widened: Array.from(wBytes, (b) => fp8E4m3ToF32(b) * scale) },
    ];
    for (const { t, widened } of cases) {
      const out = backend.matmul(at, t, { transB });
      assertClose(backend.read(out), matmulRef(a, widened, m, k, n, false, transB), MATMUL_TOL, `${t.dtype} transB=${transB}`);
    }
  }
});

test("upload, read and readRaw round-trip each dtype; cast narrows with RNE", () => {
  const values = Float32Array.of(1, -2.5, 1.00390625, 300);
  const bf = backend.upload(values, [4], "bf16");
  assert.deepEqual(Array.from(backend.readRaw(bf)), Array.from(values, f32ToBf16));
  const fp8 = backend.upload(values, [2, 2], "fp8_e4m3", 2);
  assert.equal(fp8.scale, 2);
  assert.deepEqual(Array.from(backend.read(fp8)), Array.from(values, (v) => fp8E4m3ToF32(f32ToFp8E4m3(v / 2)) * 2));
  const ids = backend.upload(Int32Array.of(3, -1), [2], "i32");
  assert.deepEqual(Array.from(backend.read(ids)), [3, -1]);
  const f = backend.upload(values, [4], "f32");
  assert.deepEqual(Array.from(backend.read(backend.cast(f, "bf16"))), Array.from(values, (v) => bf16ToF32(f32ToBf16(v))));
  assert.deepEqual(Array.from(backend.read(backend.cast(fp8, "f32"))), Array.from(backend.read(fp8)));
  assert.throws(() => backend.upload(values, [3], "f32"), /do not fill/);
});

test("layout ops move rows and elements as specified", () => {
  const x = backend.upload(Float32Array.from({ length: 12 }, (_, i) => i), [4, 3], "f32");
  assert.deepEqual(Array.from(backend.read(backend.sliceRows(x, 1, 2))), [3, 4, 5, 6, 7, 8]);
  const y = backend.upload(Float32Array.of(100, 101, 102), [1, 3], "f32");
  const cat = backend.concatRows([x, y]);
  assert.deepEqual(cat.shape, [5, 3]);
  assert.deepEqual(Array.from(backend.read(cat)).slice(9), [9, 10, 11, 100, 101, 102]);
  const index = backend.upload(Int32Array.of(3, 0, 3), [3], "i32");
  assert.deepEqual(Array.from(backend.read(backend.gatherRows(x, index))), [9, 10, 11, 0, 1, 2, 9, 10, 11]);
  const dst = backend.zeros([4, 3], "f32");
  const src = backend.upload(Float32Array.from({ length: 9 }, (_, i) => i + 1), [3, 3], "f32");
  backend.scatterAddRowsInPlace(dst, index, src);
  assert.deepEqual(Array.from(backend.read(dst)), [4, 5, 6, 0, 0, 0, 0, 0, 0, 8, 10, 12]);
  const two = backend.upload(Int32Array.of(2, 0), [2], "i32");
  backend.scatterRowsInPlace(dst, two, backend.sliceRows(src, 0, 2));
  assert.deepEqual(Array.from(backend.read(dst)), [4, 5, 6, 0, 0, 0, 1, 2, 3, 8, 10, 12]);
  // A transpose as an element permutation, and its inverse.
  const perm = backend.upload(Int32Array.from({ length: 12 }, (_, i) => (i % 4) * 3 + Math.floor(i / 4)), [12], "i32");
  const xt = backend.gatherElements(x, perm, [3, 4]);
  assert.deepEqual(Array.from(backend.read(xt)), [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]);
  assert.deepEqual(Array.from(backend.read(backend.scatterElements(xt, perm, [4, 3]))), Array.from(backend.read(x)));
  assert.throws(() => backend.gatherRows(x, backend.upload(Int32Array.of(4), [1], "i32")), /out of range/);
  // Layout ops keep the dtype.
  const bf = backend.upload(Float32Array.of(1, 2, 3, 4), [2, 2], "bf16");
  assert.equal(backend.sliceRows(bf, 1, 1).dtype, "bf16");
});

test("patchify lays patches out as a conv weight [out, C, p, p] expects", () => {
  const [c, h, w, p] = [3, 4, 6, 2];
  const pixels = Float32Array.from({ length: c * h * w }, (_, i) => i);
  const patches = backend.read(backend.patchify(backend.upload(pixels, [c, h, w], "f32"), p));
  const gw = w / p;
  for (let gy = 0; gy < h / p; gy++)
    for (let gx = 0; gx < gw; gx++)
      for (let ch = 0; ch < c; ch++)
        for (let ky = 0; ky < p; ky++)
          for (let kx = 0; kx < p; kx++) {
            const row = gy * gw + gx;
            const col = (ch * p + ky) * p + kx;
            assert.equal(patches[row * c * p * p + col], pixels[(ch * h + gy * p + ky) * w + gx * p + kx]);
          }
});

test("rmsNorm matches the formula on odd widths; rstd is 1/sqrt(mean(x²)+eps)", () => {
  const random = rng(4);
  for (const [n, c] of [
    [7, 13],
    [1, 64],
  ] as const) {
    const x = randomF32(random, n * c, -3, 3);
    const w = randomF32(random, c);
    const { y, rstd } = backend.rmsNorm(backend.upload(x, [n, c], "f32"), backend.upload(w, [c], "bf16"), 1e-5);
    const wBf16 = Array.from(w, (v) => bf16ToF32(f32ToBf16(v)));
    assertClose(backend.read(y), rmsNormRef(x, wBf16, n, c, 1e-5), 1e-5, "rmsNorm");
    const expectedRstd = Array.from({ length: n }, (_, r) => 1 / Math.sqrt(x.slice(r * c, (r + 1) * c).reduce((a, v) => a + v * v, 0) / c + 1e-5));
    assertClose(backend.read(rstd), expectedRstd, 1e-6, "rstd");
  }
});

test("rope rotates each (i, i+D/2) pair and the inverse undoes it", () => {
  const random = rng(5);
  const [n, h, d] = [7, 3, 10];
  const x = randomF32(random, n * h * d);
  const angles = randomF32(random, (n * d) / 2, -4, 4);
  const cos = Float32Array.from(angles, Math.cos);
  const sin = Float32Array.from(angles, Math.sin);
  const [ct, st] = [backend.upload(cos, [n, d / 2], "f32"), backend.upload(sin, [n, d / 2], "f32")];
  const y = backend.rope(backend.upload(x, [n, h, d], "f32"), ct, st);
  assertClose(backend.read(y), ropeRef(x, cos, sin, n, h, d), 1e-6, "rope");
  assertClose(backend.read(backend.rope(y, ct, st, true)), x, 1e-6, "inverse rope");
});

test("swiglu, gelu and the erf approximation match their formulas", () => {
  const random = rng(6);
  const g = randomF32(random, 13, -3, 3);
  const u = randomF32(random, 13, -3, 3);
  const s = backend.swiglu(backend.upload(g, [13], "f32"), backend.upload(u, [13], "f32"));
  assertClose(backend.read(s), Array.from(g, (x, i) => siluRef(x) * u[i]!), 1e-6, "swiglu");
  const ge = backend.gelu(backend.upload(g, [13], "f32"));
  assertClose(backend.read(ge), Array.from(g, geluRef), 1e-6, "gelu");
  for (let x = -3; x <= 3; x += 0.01) assert.ok(Math.abs(erf(x) - erfRef(x)) < 2e-7, `erf(${x})`);
});

test("elementwise ops and sumSquares", () => {
  const random = rng(8);
  const a = randomF32(random, 7);
  const b = randomF32(random, 7);
  const [at, bt] = [backend.upload(a, [7], "f32"), backend.upload(b, [7], "f32")];
  assertClose(backend.read(backend.add(at, bt)), Array.from(a, (v, i) => v + b[i]!), 1e-7, "add");
  assertClose(backend.read(backend.mul(at, bt)), Array.from(a, (v, i) => v * b[i]!), 1e-7, "mul");
  assertClose(backend.read(backend.scale(at, 3)), Array.from(a, (v) => 3 * v), 1e-7, "scale");
  const c = backend.copy(at);
  backend.addInPlace(c, bt, -2);
  assertClose(backend.read(c), Array.from(a, (v, i) => v - 2 * b[i]!), 1e-6, "addInPlace");
  backend.scaleInPlace(c, 0.5);
  assertClose(backend.read(c), Array.from(a, (v, i) => (v - 2 * b[i]!) / 2), 1e-6, "scaleInPlace");
  assertClose(backend.read(backend.sumSquares(at)), [a.reduce((s, v) => s + v * v, 0)], 1e-6, "sumSquares");
  assert.throws(() => backend.add(at, backend.zeros([6], "f32")), /differ in size/);
});

test("crossEntropy sums over counted rows and its gradient is gradScale·(softmax − onehot)", () => {
  const random = rng(9);
  const [n, v] = [5, 13];
  const logits = randomF32(random, n * v, -4, 4);
  const labels = Int32Array.of(3, -100, 12, 0, -100);
  const { loss, dlogits } = backend.crossEntropy(backend.upload(logits, [n, v], "f32"), backend.upload(labels, [n], "i32"), -100, 0.25);
  assertClose(backend.read(loss), [crossEntropyRef(logits, labels, v, -100)], 1e-5, "loss");
  const grad = backend.read(dlogits!);
  for (let r = 0; r < n; r++) {
    const row = Array.from(logits.slice(r * v, (r + 1) * v));
    const z = row.reduce((s, x) => s + Math.exp(x), 0);
    for (let j = 0; j < v; j++) {
      const expected = labels[r] === -100 ? 0 : 0.25 * (Math.exp(row[j]!) / z - (j === labels[r] ? 1 : 0));
      assert.ok(Math.abs(grad[r * v + j]! - expected) < 1e-7, `row ${r} col ${j}`);
    }
  }
  assert.throws(() => backend.crossEntropy(backend.upload(logits, [n, v], "f32"), backend.upload(Int32Array.of(0, 1, 2, 3, 13), [n], "i32"), -100), /outside the vocabulary/);
});

test("memory() counts live bytes and release is idempotent across reshape views", () => {
  const before = backend.memory().live;
  const t = backend.zeros([10, 10], "f32");
  assert.equal(backend.memory().live, before + 400);
  const view = t.reshape([100]);
  view.free();
  t.free();
  assert.equal(backend.memory().live, before);
  assert.ok(backend.memory().peak >= before + 400);
});

test("shape and dtype errors name the op and the shapes", () => {
  const a = backend.zeros([2, 3], "f32");
  assert.throws(() => backend.matmul(a, backend.zeros([4, 2], "f32")), /matmul: inner dimensions differ.*shapes=\[2,3\] \[4,2\]/);
  assert.throws(() => backend.matmul(a, a, { transB: true, accumulate: backend.zeros([3, 3], "f32") }), /accumulate must be f32 or bf16 \[2, 2\]/);
  assert.throws(() => backend.matmul(a, a, { transB: true, outDtype: "fp8_e4m3" }), /cannot produce fp8_e4m3 output/);
  assert.throws(() => backend.rmsNorm(a, backend.zeros([2], "f32"), 1e-5), /rmsNorm: weight must have 3 elements/);
  assert.throws(() => backend.rope(a, a, a), /rope: expected x \[N, H, D\]/);
  assert.throws(() => backend.addInPlace(backend.zeros([6], "bf16"), backend.zeros([6], "f32")), /expected an f32 tensor/);
  assert.throws(() => backend.concatRows([a, backend.zeros([1, 4], "f32")]), /concatRows: parts differ/);
  assert.throws(() => backend.patchify(backend.zeros([3, 5, 4], "f32"), 2), /multiples of 2/);
  const freed = backend.zeros([1], "f32");
  freed.free();
  assert.throws(() => backend.read(freed), /already freed/);
});
