/**
 * The fused LoRA ops of the CPU backend (Backend.loraDown, loraGradA, loraDx, loraDxAccumulate, loraUp,
 * loraUpBackward): bit-equal to the dropout + matmul sequences they stand for, and close to direct
 * f64 formulas with the dropout hash written out, for both precisions, with and without a mask, f32
 * and bf16 dx (and y, du).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { dropoutHash } from "../../src/backends/cpu/dropout.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import type { LoraDropout, MatmulPrecision } from "../../src/tensor/backend.ts";
import { bf16ToF32, f32ToBf16 } from "../../src/tensor/bf16.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, matmulRef, randomF32, rng } from "../tensor/reference.ts";

const b = createCpuBackend();
const [n, k, r] = [7, 37, 5];

/** keep(i)·1/(1−p) as dropout.ts defines it, or 1 without a mask. */
function maskValue(opts: LoraDropout, i: number): number {
  if (opts.seed === null || opts.dropout === 0) return 1;
  return dropoutHash(opts.seed, i) >= Math.ceil(opts.dropout * 2 ** 32) ? Math.fround(1 / (1 - opts.dropout)) : 0;
}

function inputs(seed: number) {
  const random = rng(seed);
  return { x: randomF32(random, n * k), a: randomF32(random, r * k), du: randomF32(random, n * r), dx: randomF32(random, n * k) };
}

for (const precision of ["f32", "bf16"] as MatmulPrecision[]) {
  for (const seed of [null, 3]) {
    const opts: LoraDropout = { dropout: 0.3, seed, precision };
    const label = `precision ${precision}, seed ${seed}`;

    test(`loraDown, loraGradA, loraDxAccumulate equal dropout + matmul (${label})`, () => {
      const v = inputs(1);
      const x = b.upload(v.x, [n, k], "f32");
      const a = b.upload(v.a, [r, k], "bf16");
      const du = b.upload(v.du, [n, r], "f32");
      const narrow = precision === "bf16";
      const xl = narrow ? b.cast(x, "bf16") : x;
      const xd = seed === null ? xl : b.dropout(xl, 0.3, seed, narrow ? "bf16" : "f32");
      assert.deepEqual(b.read(b.loraDown(x, a, opts)), b.read(b.matmul(xd, a, { transB: true, precision })));
      assert.deepEqual(b.read(b.loraDown(x, a, { ...opts, outDtype: "bf16" })), b.read(b.matmul(xd, a, { transB: true, precision, outDtype: "bf16" })));
      assert.deepEqual(b.read(b.loraGradA(du, x, opts)), b.read(b.matmul(du, xd, { transA: true, precision })));
      const dx = b.upload(v.dx, [n, k], "f32");
      const expected = b.upload(v.dx, [n, k], "f32");
      const dxd = b.matmul(du, a, { precision });
      b.addInPlace(expected, seed === null ? dxd : b.dropoutBackward(dxd, 0.3, seed));
      b.loraDxAccumulate(dx, du, a, opts);
      assert.deepEqual(b.read(dx), b.read(expected));
      // loraDx: the same term alone, in a new f32 tensor.
      const fresh = b.loraDx(du, a, opts);
      assert.equal(fresh.dtype, "f32");
      assert.deepEqual(fresh.shape, [n, k]);
      assert.deepEqual(b.read(fresh), b.read(seed === null ? dxd : b.dropoutBackward(dxd, 0.3, seed)));
    });

    test(`the fused LoRA ops against direct formulas (${label})`, () => {
      const v = inputs(2);
      const round = (t: Float32Array): Float32Array => (precision === "bf16" ? t.map((y) => bf16ToF32(f32ToBf16(y))) : t);
      const ar = round(new Float32Array(b.read(b.upload(v.a, [r, k], "bf16"))));
      const dur = round(v.du);
      // The dropped x as the products read it: x, then its masked value, each rounded under bf16.
      const xd = round(round(v.x).map((y, i) => Math.fround(y * maskValue(opts, i))));
      const a = b.upload(v.a, [r, k], "bf16");
      const du = b.upload(v.du, [n, r], "f32");
      const x = b.upload(v.x, [n, k], "f32");
      const u = new Float64Array(n * r);
      const da = new Float64Array(r * k);
      const dxRef = new Float64Array(n * k);
      for (let t = 0; t < n; t++) {
        for (let j = 0; j < r; j++) for (let c = 0; c < k; c++) u[t * r + j]! += xd[t * k + c]! * ar[j * k + c]!;
        for (let j = 0; j < r; j++) for (let c = 0; c < k; c++) da[j * k + c]! += dur[t * r + j]! * xd[t * k + c]!;
        for (let c = 0; c < k; c++) {
          let sum = 0;
          for (let j = 0; j < r; j++) sum += dur[t * r + j]! * ar[j * k + c]!;
          dxRef[t * k + c] = v.dx[t * k + c]! + sum * maskValue(opts, t * k + c);
        }
      }
      assertClose(b.read(b.loraDown(x, a, opts)), u, 1e-5, "u");
      assertClose(b.read(b.loraGradA(du, x, opts)), da, 1e-5, "dA");
      const dx = b.upload(v.dx, [n, k], "f32");
      b.loraDxAccumulate(dx, du, a, opts);
      assertClose(b.read(dx), dxRef, 1e-5, "dx f32");
      // bf16 dx: the bf16 value widened, the same sum, rounded once.
      const dxb = b.upload(v.dx, [n, k], "bf16");
      const widened = new Float32Array(b.read(dxb));
      b.loraDxAccumulate(dxb, du, a, opts);
      const f32Sum = b.upload(widened, [n, k], "f32");
      b.loraDxAccumulate(f32Sum, du, a, opts);
      assert.deepEqual(b.read(dxb), b.read(b.cast(f32Sum, "bf16")));
    });
  }
}

test("the fused LoRA ops reject what dropout and matmul reject", () => {
  const x = b.upload(new Float32Array(n * k), [n, k], "f32");
  const a = b.upload(new Float32Array(r * k), [r, k], "f32");
  assert.throws(() => b.loraDown(x, a, { dropout: 1, seed: 1 }), /dropout probability/);
  assert.throws(() => b.loraDown(x, a, { dropout: 0.1, seed: -1 }), /seed/);
  assert.throws(() => b.loraDown(x, b.upload(new Float32Array(r * 3), [r, 3], "f32"), { dropout: 0, seed: null }), /a must be/);
  assert.throws(() => b.loraGradA(b.upload(new Float32Array(3 * r), [3, r], "f32"), x, { dropout: 0, seed: null }), /du must be/);
  assert.throws(() => b.loraDxAccumulate(b.upload(new Int32Array(n * k), [n, k], "i32"), b.upload(new Float32Array(n * r), [n, r], "f32"), a, { dropout: 0, seed: null }), /dx must be/);
  assert.throws(() => b.loraDx(b.upload(new Float32Array(3 * r), [3, r], "f32"), a, { dropout: 0.1, seed: 2 ** 32 }), /seed/);
});

// loraUp and loraUpBackward: y [N, m] = α·u·Bᵀ, du [N, r] = α·dy·B, dB [m, r] = α·dyᵀ·u, with the
// tape's shapes (u and dy with a leading batch dimension) and an m that fills no SIMD lane group.
const [batch, tokens, m, rank, alpha] = [2, 5, 13, 6, 1.75];
const rows = batch * tokens;
const bf16Round = (t: Float32Array): Float32Array => t.map((y) => bf16ToF32(f32ToBf16(y)));

for (const dtype of ["f32", "bf16"] as const) {
  test(`loraUp and loraUpBackward equal the matmul products they stand for (${dtype} operands)`, () => {
    const random = rng(4);
    const u = b.upload(randomF32(random, rows * rank), [batch, tokens, rank], dtype);
    const bw = b.upload(randomF32(random, m * rank), [m, rank], dtype);
    const dy = b.upload(randomF32(random, rows * m), [batch, tokens, m], dtype);
    // The products' operands: bf16 as they are, f32 ones rounded once.
    const low = (t: Tensor): Tensor => (t.dtype === "bf16" ? t : b.cast(t, "bf16"));
    const [ul, bl, dyl] = [low(u), low(bw), low(dy)];
    for (const outDtype of ["f32", "bf16"] as const) {
      const y = b.loraUp(u, bw, { alpha, outDtype });
      assert.deepEqual(y.shape, [batch, tokens, m]);
      assert.equal(y.dtype, outDtype);
      assert.deepEqual(b.read(y), b.read(b.matmul(ul, bl, { transB: true, alpha, outDtype })));
      const { du, db } = b.loraUpBackward(dy, bw, u, { alpha, duDtype: outDtype });
      assert.deepEqual(du.shape, [batch, tokens, rank]);
      assert.equal(du.dtype, outDtype);
      assert.deepEqual(db.shape, [m, rank]);
      assert.equal(db.dtype, "f32");
      assert.deepEqual(b.read(du), b.read(b.matmul(dyl, bl, { alpha, outDtype })));
      assert.deepEqual(b.read(db), b.read(b.matmul(dyl, ul, { transA: true, alpha })));
    }
    // Without alpha the products are unscaled.
    assert.deepEqual(b.read(b.loraUp(u, bw, {})), b.read(b.matmul(ul, bl, { transB: true })));
  });
}

test("loraUp and loraUpBackward against direct formulas on the bf16-rounded operands", () => {
  const random = rng(5);
  const [u, bw, dy] = [randomF32(random, rows * rank), randomF32(random, m * rank), randomF32(random, rows * m)];
  const [ur, br, dyr] = [bf16Round(u), bf16Round(bw), bf16Round(dy)];
  const ut = b.upload(u, [rows, rank], "f32");
  const bt = b.upload(bw, [m, rank], "f32");
  const dyt = b.upload(dy, [rows, m], "f32");
  // f32 sums of exact bf16 products over ≤ 13 terms of |x| ≤ 1: within a few f32 ulps of the f64 sums.
  assertClose(b.read(b.loraUp(ut, bt, { alpha })), matmulRef(ur, br, rows, rank, m, false, true, alpha), 1e-5, "y");
  const { du, db } = b.loraUpBackward(dyt, bt, ut, { alpha });
  assertClose(b.read(du), matmulRef(dyr, br, rows, m, rank, false, false, alpha), 1e-5, "du");
  assertClose(b.read(db), matmulRef(dyr, ur, m, rows, rank, true, false, alpha), 1e-5, "dB");
});

test("loraUp and loraUpBackward reject operands whose shapes do not meet", () => {
  const u = b.upload(new Float32Array(rows * rank), [rows, rank], "f32");
  const bw = b.upload(new Float32Array(m * rank), [m, rank], "f32");
  const dy = b.upload(new Float32Array(rows * m), [rows, m], "f32");
  assert.throws(() => b.loraUp(u, b.upload(new Float32Array(m * 3), [m, 3], "f32"), {}), /b must be/);
  assert.throws(() => b.loraUpBackward(b.upload(new Float32Array(rows * 4), [rows, 4], "f32"), bw, u, {}), /u must be/);
  assert.throws(() => b.loraUpBackward(dy, bw, b.upload(new Float32Array(3 * rank), [3, rank], "f32"), {}), /u must be/);
  assert.throws(() => b.loraUpBackward(dy, b.upload(new Float32Array(m * 2), [m, 2], "f32"), u, {}), /u must be/);
});
