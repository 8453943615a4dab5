/** Dropout's counter-based mask and AdamW's update rule. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { dropoutHash, fmix32 } from "../../src/backends/cpu/dropout.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { randomF32, rng } from "./reference.ts";

const backend = createCpuBackend();

/** The header's hash written independently with BigInt, as a CUDA port would read it. */
function hashBig(seed: number, index: number): number {
  const M = (1n << 32n) - 1n;
  const fmix = (h: bigint): bigint => {
    h ^= h >> 16n;
    h = (h * 0x85ebca6bn) & M;
    h ^= h >> 13n;
    h = (h * 0xc2b2ae35n) & M;
    h ^= h >> 16n;
    return h;
  };
  return Number(fmix((fmix(BigInt(seed)) + BigInt(index) * 0x9e3779b9n) & M));
}

test("the dropout hash is the documented formula (checked with 64-bit integer arithmetic)", () => {
  assert.equal(fmix32(0), 0);
  for (const [seed, index] of [
    [0, 0],
    [1, 0],
    [42, 12345],
    [0xffffffff, 0xfffffffe],
    [123456789, 2 ** 31],
  ] as const) {
    assert.equal(dropoutHash(seed, index), hashBig(seed, index), `seed ${seed} index ${index}`);
  }
});

test("dropout keeps exactly the elements whose hash/2³² ≥ p, scaled by f32(1/(1−p))", () => {
  const n = 20000;
  const p = 0.3;
  const seed = 1234;
  const x = randomF32(rng(1), n, 0.5, 1.5);
  const y = backend.read(backend.dropout(backend.upload(x, [n], "f32"), p, seed));
  const keepScale = Math.fround(1 / (1 - p));
  let kept = 0;
  for (let i = 0; i < n; i++) {
    const keep = hashBig(seed, i) / 2 ** 32 >= p;
    assert.equal(y[i], keep ? Math.fround(x[i]! * keepScale) : 0, `element ${i}`);
    if (keep) kept++;
  }
  // Binomial(n, 0.7): 5 standard deviations is about 324.
  assert.ok(Math.abs(kept - n * (1 - p)) < 5 * Math.sqrt(n * p * (1 - p)), `kept ${kept}`);
});

test("dropout is reproducible per seed and its backward applies the same mask", () => {
  const n = 1000;
  const x = backend.upload(randomF32(rng(2), n, 0.5, 1.5), [n], "f32");
  const a = backend.read(backend.dropout(x, 0.5, 7));
  const b = backend.read(backend.dropout(x, 0.5, 7));
  const c = backend.read(backend.dropout(x, 0.5, 8));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const ones = backend.upload(new Float32Array(n).fill(1), [n], "f32");
  const d = backend.read(backend.dropoutBackward(ones, 0.5, 7));
  for (let i = 0; i < n; i++) assert.equal(d[i] === 0, a[i] === 0);
  assert.throws(() => backend.dropout(x, 1, 7), /probability/);
  assert.throws(() => backend.dropout(x, 0.1, -1), /seed/);
});

/** torch.optim.AdamW's update in plain f64, step by step. */
function adamwRef(p: number[], grads: number[][], hp: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number }): number[] {
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  grads.forEach((g, stepIndex) => {
    const t = stepIndex + 1;
    for (let i = 0; i < p.length; i++) {
      p[i]! *= 1 - hp.lr * hp.weightDecay;
      m[i] = hp.beta1 * m[i]! + (1 - hp.beta1) * g[i]!;
      v[i] = hp.beta2 * v[i]! + (1 - hp.beta2) * g[i]! ** 2;
      const mHat = m[i]! / (1 - hp.beta1 ** t);
      const vHat = v[i]! / (1 - hp.beta2 ** t);
      p[i]! -= (hp.lr * mHat) / (Math.sqrt(vHat) + hp.eps);
    }
  });
  return p;
}

test("adamw follows torch.optim.AdamW over several steps (decoupled decay, bias correction)", () => {
  const random = rng(3);
  const n = 13;
  const hp = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
  const p0 = randomF32(random, n);
  const grads = Array.from({ length: 5 }, () => Array.from(randomF32(random, n)));
  const param = backend.upload(p0, [n], "f32");
  const m = backend.zeros([n], "f32");
  const v = backend.zeros([n], "f32");
  grads.forEach((g, i) => backend.adamw(param, backend.upload(Float32Array.from(g), [n], "f32"), m, v, { ...hp, step: i + 1 }));
  const expected = adamwRef(Array.from(p0), grads, hp);
  // f32 state rounding over 5 steps: relative error of the update ~1e-6 of lr.
  const actual = backend.read(param);
  for (let i = 0; i < n; i++) assert.ok(Math.abs(actual[i]! - expected[i]!) < 1e-6, `param ${i}: ${actual[i]} vs ${expected[i]}`);
  // The first step moves each weight by lr·sign(g) (|g| ≫ eps), after decay.
  const p = backend.upload(Float32Array.of(1, 1), [2], "f32");
  backend.adamw(p, backend.upload(Float32Array.of(0.5, -2), [2], "f32"), backend.zeros([2], "f32"), backend.zeros([2], "f32"), { ...hp, step: 1 });
  const first = backend.read(p);
  assert.ok(Math.abs(first[0]! - (0.999 - 0.01)) < 1e-6);
  assert.ok(Math.abs(first[1]! - (0.999 + 0.01)) < 1e-6);
});
