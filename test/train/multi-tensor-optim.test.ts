/**
 * The multi-tensor optimiser primitives of the CPU backend (the reference the CUDA kernels are
 * held to in test/cuda/parity-cases.ts) against the per-tensor composites they replace: bit for
 * bit, including the clipping coefficient folded into the step.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { clipCoefficient } from "../../src/backends/cpu/optim.ts";
import type { AdamwHyper, Moments8bit } from "../../src/tensor/backend.ts";
import { dequantizeBlockwise, packCodes, quantizeBlockwise, SIGNED_MAP, UNSIGNED_MAP, unpackCodes } from "../../src/tensor/blockwise8.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { Rng } from "../../src/util/rng.ts";

const backend = createCpuBackend();
// LoRA-like shapes (A [r, in], B [out, r]) and a few odd sizes, one under a 256-block.
const SHAPES: number[][] = [[16, 320], [320, 16], [8, 1031], [3, 77], [4096 + 5]];
const hp = (step: number): AdamwHyper => ({ lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step });

function randomTensors(seed: number, scale: number): Tensor[] {
  const rng = new Rng(seed);
  return SHAPES.map((shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return backend.upload(Float32Array.from({ length: n }, () => (rng.next() - 0.5) * scale), shape, "f32");
  });
}

const copies = (ts: readonly Tensor[]): Tensor[] => ts.map((t) => backend.copy(t));
const f32 = (t: Tensor): Float32Array => backend.read(t) as Float32Array;

/** What the trainer did before sumSquaresMany: Σx² per tensor added into a zero [1] tensor. */
function composedSumSquares(xs: readonly Tensor[]): number {
  const total = backend.zeros([1], "f32");
  for (const x of xs) {
    const sq = backend.sumSquares(x);
    backend.addInPlace(total, sq);
    sq.free();
  }
  return f32(total)[0]!;
}

test("sumSquaresMany is sumSquares per tensor added into a [1] tensor, bit for bit", () => {
  for (const seed of [1, 2, 3]) {
    const xs = randomTensors(seed, 10 ** (seed - 2));
    assert.equal(f32(backend.sumSquaresMany(xs))[0], composedSumSquares(xs));
  }
  assert.equal(f32(backend.sumSquaresMany([]))[0], 0);
});

test("narrowMany rounds each f32 tensor into its bf16 copy as cast does, bit for bit, and names a bad row", () => {
  const srcs = randomTensors(4, 1e3);
  const dsts = srcs.map((t) => backend.zeros(t.shape, "bf16"));
  backend.narrowMany(srcs, dsts);
  srcs.forEach((src, i) => assert.deepEqual(backend.readRaw(dsts[i]!), backend.readRaw(backend.cast(src, "bf16"))));
  assert.throws(() => backend.narrowMany(srcs, dsts.slice(1)), /narrowMany: needs lists of one length/);
  assert.throws(() => backend.narrowMany([srcs[0]!], [backend.zeros(srcs[0]!.shape, "f32")]), /narrowMany: destination 0 must be bf16 of 5120 elements/);
  assert.throws(() => backend.narrowMany([srcs[0]!], [backend.zeros([7], "bf16")]), /destination 0 must be bf16/);
});

test("addMany is addInPlace per tensor, bit for bit, and names a bad row", () => {
  const sums = randomTensors(5, 10);
  const expected = copies(sums);
  const added = randomTensors(6, 1e-3);
  expected.forEach((e, i) => backend.addInPlace(e, added[i]!));
  backend.addMany(sums, added);
  sums.forEach((s, i) => assert.deepEqual(f32(s), f32(expected[i]!)));
  assert.throws(() => backend.addMany(sums, added.slice(1)), /addMany: needs lists of one length/);
  assert.throws(() => backend.addMany([sums[0]!], [added[2]!]), /addMany: row 0: sizes differ/);
  assert.throws(() => backend.addMany([sums[0]!], [backend.zeros(sums[0]!.shape, "bf16")]), /expected an f32 tensor/);
});

test("clipCoefficient is clip_grad_norm_'s f32 coefficient: (1 / (norm + 1e-6)) · max_norm, at most 1", () => {
  const f = Math.fround;
  // ‖g‖² = 4 → norm 2, max_norm 0.3: f32(f32(1 / f32(2 + 1e-6)) · 0.3), just under 0.15.
  const c = clipCoefficient(4, 0.3);
  assert.equal(c, f(f(1 / f(2 + f(1e-6))) * f(0.3)));
  assert.ok(c < 0.15 && c > 0.1499);
  assert.equal(clipCoefficient(0.01, 0.3), 1);
  assert.equal(clipCoefficient(0, 0.3), 1);
});

test("adamwMany is adamw per tensor, bit for bit; with clip, adamw on gradients scaled in place by the coefficient first", () => {
  for (const clipped of [false, true]) {
    const params = randomTensors(10, 1);
    const ref = copies(params);
    const [ms, vs, mr, vr] = [0, 1, 2, 3].map(() => params.map((p) => backend.zeros(p.shape, "f32")));
    for (let step = 1; step <= 3; step++) {
      const grads = randomTensors(20 + step, 0.2);
      const sumSquares = backend.sumSquaresMany(grads);
      const maxNorm = 0.3;
      backend.adamwMany(params, grads, ms!, vs!, hp(step), clipped ? { sumSquares, maxNorm } : undefined);
      const coef = clipCoefficient(f32(sumSquares)[0]!, maxNorm);
      if (clipped) assert.ok(coef < 1, `the case clips (coefficient ${coef})`);
      ref.forEach((p, i) => {
        const g = backend.copy(grads[i]!);
        if (clipped) backend.scaleInPlace(g, coef);
        backend.adamw(p, g, mr![i]!, vr![i]!, hp(step));
      });
    }
    params.forEach((p, i) => {
      assert.deepEqual(f32(p), f32(ref[i]!), `param ${i} (clip ${clipped})`);
      assert.deepEqual(f32(ms![i]!), f32(mr![i]!));
      assert.deepEqual(f32(vs![i]!), f32(vr![i]!));
    });
  }
});

test("packed codes round-trip through i32 words", () => {
  const codes = Uint8Array.from({ length: 1031 }, (_, i) => (i * 37) & 255);
  const words = packCodes(codes);
  assert.equal(words.length, 258);
  assert.deepEqual(unpackCodes(words, codes.length), codes);
});

test("adamw8bitMany is dequantise → adamw → quantise per tensor, bit for bit (with and without clip)", () => {
  for (const clipped of [false, true]) {
    const params = randomTensors(30, 1);
    const ref = copies(params);
    const zeros = (p: Tensor) => new Float32Array(p.size);
    // The host composite AdamW8bit ran before: its states as host arrays.
    const host = params.map((p) => ({ m: quantizeBlockwise(zeros(p), SIGNED_MAP), v: quantizeBlockwise(zeros(p), UNSIGNED_MAP) }));
    const device: Moments8bit[] = host.map((h) => ({
      m: { codes: backend.upload(packCodes(h.m.codes), [Math.ceil(h.m.codes.length / 4)], "i32"), absmax: backend.upload(h.m.absmax, [h.m.absmax.length], "f32") },
      v: { codes: backend.upload(packCodes(h.v.codes), [Math.ceil(h.v.codes.length / 4)], "i32"), absmax: backend.upload(h.v.absmax, [h.v.absmax.length], "f32") },
    }));
    for (let step = 1; step <= 4; step++) {
      const grads = randomTensors(40 + step, 10 ** -(step % 3));
      const sumSquares = backend.sumSquaresMany(grads);
      const clip = clipped ? { sumSquares, maxNorm: 0.05 } : undefined;
      backend.adamw8bitMany(params, grads, device, hp(step), clip);
      const coef = clipCoefficient(f32(sumSquares)[0]!, 0.05);
      ref.forEach((p, i) => {
        const g = backend.copy(grads[i]!);
        if (clipped) backend.scaleInPlace(g, coef);
        const m = backend.upload(dequantizeBlockwise(host[i]!.m, SIGNED_MAP), p.shape, "f32");
        const v = backend.upload(dequantizeBlockwise(host[i]!.v, UNSIGNED_MAP), p.shape, "f32");
        backend.adamw(p, g, m, v, hp(step));
        host[i] = { m: quantizeBlockwise(f32(m), SIGNED_MAP), v: quantizeBlockwise(f32(v), UNSIGNED_MAP) };
      });
    }
    params.forEach((p, i) => {
      assert.deepEqual(f32(p), f32(ref[i]!), `param ${i} (clip ${clipped})`);
      for (const k of ["m", "v"] as const) {
        assert.deepEqual(unpackCodes(backend.readRaw(device[i]![k].codes) as Int32Array, p.size), host[i]![k].codes, `${k} codes ${i}`);
        assert.deepEqual(f32(device[i]![k].absmax), host[i]![k].absmax, `${k} absmax ${i}`);
      }
    });
  }
});
