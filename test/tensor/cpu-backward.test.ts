/**
 * Every backward primitive of the CPU backend against central differences of the f64 reference
 * formula (reference.ts). With dout = r, the backward output is ∂(Σ r·f(x))/∂x. Tolerance 1e-4
 * relative to the largest gradient (f32 kernels vs f64 differences), unless stated.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { attentionCases } from "./attention-cases.ts";
import { assertGradClose, attentionRef, crossEntropyRef, dot, geluRef, numericGrad, randomF32, rmsNormRef, rng, ropeRef, siluRef } from "./reference.ts";

const backend = createCpuBackend();
const up = (x: Float32Array, shape: number[], dtype: "f32" | "bf16" = "f32") => backend.upload(x, shape, dtype);

test("swigluBackward", () => {
  const random = rng(21);
  const [g, u, r] = [randomF32(random, 13, -3, 3), randomF32(random, 13, -3, 3), randomF32(random, 13)];
  const { dgate, dup } = backend.swigluBackward(up(g, [13]), up(u, [13]), up(r, [13]));
  const f = ([gg, uu]: Float64Array[]) => dot(r, Array.from(gg!, (x, i) => siluRef(x) * uu![i]!));
  assertGradClose(backend.read(dgate), numericGrad(f, [g, u], 0), "gate");
  assertGradClose(backend.read(dup), numericGrad(f, [g, u], 1), "up");
});

test("geluBackward", () => {
  const random = rng(22);
  const [x, r] = [randomF32(random, 13, -3, 3), randomF32(random, 13)];
  const f = ([xx]: Float64Array[]) => dot(r, Array.from(xx!, geluRef));
  assertGradClose(backend.read(backend.geluBackward(up(x, [13]), up(r, [13]))), numericGrad(f, [x], 0), "gelu");
});

test("dropoutBackward", () => {
  const random = rng(23);
  const [x, r] = [randomF32(random, 13, 0.5, 1.5), randomF32(random, 13)];
  const mask = Array.from(backend.read(backend.dropout(up(x, [13]), 0.4, 99)), (y, i) => y / x[i]!);
  const f = ([xx]: Float64Array[]) => dot(r, Array.from(xx!, (v, i) => v * mask[i]!));
  // The mask factor is the f32 quotient y/x, accurate to ~1e-7.
  assertGradClose(backend.read(backend.dropoutBackward(up(r, [13]), 0.4, 99)), numericGrad(f, [x], 0), "dropout");
});

test("rmsNormBackward (dx and dweight) on an odd width", () => {
  const random = rng(24);
  const [n, c] = [7, 13];
  const [x, w, r] = [randomF32(random, n * c, -2, 2), randomF32(random, c), randomF32(random, n * c)];
  const { rstd } = backend.rmsNorm(up(x, [n, c]), up(w, [c]), 1e-5);
  const { dx, dweight } = backend.rmsNormBackward(up(x, [n, c]), up(w, [c]), rstd, up(r, [n, c]));
  const f = ([xx, ww]: Float64Array[]) => dot(r, rmsNormRef(xx!, ww!, n, c, 1e-5));
  assertGradClose(backend.read(dx), numericGrad(f, [x, w], 0), "x");
  assertGradClose(backend.read(dweight!), numericGrad(f, [x, w], 1), "weight");
  const frozen = backend.rmsNormBackward(up(x, [n, c]), up(w, [c]), rstd, up(r, [n, c]), false);
  assert.equal(frozen.dweight, null, "a frozen weight gets no gradient");
  assert.deepEqual(backend.read(frozen.dx), backend.read(dx));
  // Into a gradient summed so far: dx added to it in f32, and that tensor returned.
  const prior = randomF32(random, n * c);
  const sum = up(prior, [n, c]);
  const into = backend.rmsNormBackward(up(x, [n, c]), up(w, [c]), rstd, up(r, [n, c]), false, sum);
  assert.equal(into.dx, sum);
  const fresh = backend.read(dx);
  assert.deepEqual(backend.read(sum), Float32Array.from(prior, (p, i) => p + fresh[i]!));
  assert.throws(() => backend.rmsNormBackward(up(x, [n, c]), up(w, [c]), rstd, up(r, [n, c]), false, up(prior, [n, c], "bf16")), /into must be f32 of x's size/);
});

test("rope backward (the inverse rotation)", () => {
  const random = rng(25);
  const [n, h, d] = [5, 3, 6];
  const [x, r] = [randomF32(random, n * h * d), randomF32(random, n * h * d)];
  const angles = randomF32(random, (n * d) / 2, -4, 4);
  const [cos, sin] = [Float32Array.from(angles, Math.cos), Float32Array.from(angles, Math.sin)];
  const dx = backend.rope(up(r, [n, h, d]), up(cos, [n, d / 2]), up(sin, [n, d / 2]), true);
  const f = ([xx]: Float64Array[]) => dot(r, ropeRef(xx!, cos, sin, n, h, d));
  assertGradClose(backend.read(dx), numericGrad(f, [x], 0), "rope");
});

test("attentionBackward (dq, dk, dv) for every mask kind, using the saved lse", () => {
  const random = rng(26);
  for (const { name, dims, mask, visible } of attentionCases(backend)) {
    const { b, t, s, hq, hkv, d } = dims;
    const q = randomF32(random, b * t * hq * d, -2, 2);
    const k = randomF32(random, b * s * hkv * d, -2, 2);
    const v = randomF32(random, b * s * hkv * d);
    const r = randomF32(random, b * t * hq * d);
    const scale = 1 / Math.sqrt(d);
    const [qt, kt, vt] = [up(q, [b, t, hq, d]), up(k, [b, s, hkv, d]), up(v, [b, s, hkv, d])];
    const { out, lse } = backend.attention(qt, kt, vt, mask, scale);
    const grads = backend.attentionBackward(qt, kt, vt, out, lse, up(r, [b, t, hq, d]), mask, scale);
    const f = ([qq, kk, vv]: Float64Array[]) => dot(r, attentionRef(qq!, kk!, vv!, dims, visible, scale));
    assertGradClose(backend.read(grads.dq), numericGrad(f, [q, k, v], 0), `${name}: q`);
    assertGradClose(backend.read(grads.dk), numericGrad(f, [q, k, v], 1), `${name}: k`);
    assertGradClose(backend.read(grads.dv), numericGrad(f, [q, k, v], 2), `${name}: v`);
  }
});

test("crossEntropy dlogits", () => {
  const random = rng(27);
  const [n, v] = [4, 7];
  const logits = randomF32(random, n * v, -3, 3);
  const labels = Int32Array.of(6, -100, 0, 3);
  const { dlogits } = backend.crossEntropy(up(logits, [n, v]), backend.upload(labels, [n], "i32"), -100, 1.5);
  const f = ([x]: Float64Array[]) => 1.5 * crossEntropyRef(x!, labels, v, -100);
  assertGradClose(backend.read(dlogits!), numericGrad(f, [logits], 0), "logits");
});
