import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { loadOptimizerState, saveOptimizerState } from "../../src/train/checkpoint.ts";
import { AdamW, AdamW8bit, BLOCK_8BIT, dequantizeBlockwise, dynamicMap, quantizeBlockwise, type Optimizer, type Parameter } from "../../src/train/optimizer.ts";
import { Rng } from "../../src/util/rng.ts";

const backend = createCpuBackend();
const SETTINGS = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

test("the dynamic maps: 256 sorted codes with 0 and 1; signed spans [-1, 1], unsigned [0, 1]", () => {
  for (const signed of [true, false]) {
    const map = dynamicMap(signed);
    assert.equal(map.length, 256);
    assert.ok(map.every((x, i) => i === 0 || x > map[i - 1]!), "strictly increasing");
    assert.ok(map.includes(0) && map[255] === 1);
    assert.ok(signed ? map[0]! < -0.99 : map[0] === 0);
    // Codes reach down six decades below the block maximum.
    assert.ok(map.some((x) => x > 0 && x < 1e-5));
  }
});

test("block-wise quantisation keeps ~2 significant digits in the top decade of each block, zeros exact", () => {
  const rng = new Rng(3);
  const values = Float32Array.from({ length: 3 * BLOCK_8BIT + 17 }, (_, i) => (i % 7 === 0 ? 0 : (rng.next() - 0.5) * 10 ** -(i % 4)));
  const map = dynamicMap(true);
  const q = quantizeBlockwise(values, map);
  assert.equal(q.absmax.length, 4);
  const back = dequantizeBlockwise(q, map);
  for (let i = 0; i < values.length; i++) {
    const max = q.absmax[Math.floor(i / BLOCK_8BIT)]!;
    if (values[i] === 0) assert.equal(back[i], 0);
    else if (Math.abs(values[i]!) >= 0.1 * max) assert.ok(Math.abs(back[i]! - values[i]!) <= 0.08 * Math.abs(values[i]!), `${values[i]} → ${back[i]}`);
  }
});

function params(size: number, seed: number): Parameter[] {
  const rng = new Rng(seed);
  return [0, 1].map((k) => ({ name: `p${k}`, value: backend.upload(Float32Array.from({ length: size }, () => rng.next() - 0.5), [size / 8, 8], "f32") }));
}

function run(optimizer: Optimizer, ps: Parameter[], from: number, to: number): void {
  for (let s = from; s < to; s++) {
    const rng = new Rng(100 + s);
    const grads = ps.map((p) => backend.upload(Float32Array.from({ length: p.value.size }, () => (rng.next() - 0.5) * 10 ** -(s % 3)), p.value.shape, "f32"));
    optimizer.step(grads, 1e-2);
    for (const g of grads) g.free();
  }
}

test("AdamW8bit follows fp32 AdamW closely on large tensors and resumes bit for bit from its exported state", () => {
  const size = 8192;
  const exact = params(size, 1);
  const eight = params(size, 1);
  const fp32 = new AdamW(backend, exact, SETTINGS);
  const q8 = new AdamW8bit(backend, eight, SETTINGS);
  run(fp32, exact, 0, 10);
  run(q8, eight, 0, 10);
  const state = q8.exportState();
  assert.ok(state.tensors.some((t) => t.dtype === "U8" && t.name === "p0.exp_avg.codes"));
  let worst = 0;
  exact.forEach((p, i) => {
    const a = backend.read(p.value);
    const b = backend.read(eight[i]!.value);
    for (let j = 0; j < a.length; j++) worst = Math.max(worst, Math.abs(a[j]! - b[j]!));
  });
  assert.ok(worst > 0 && worst < 0.01, `8-bit vs fp32 max |Δ| after 10 steps of lr 1e-2: ${worst}`);

  // Continue 5 more steps in place, or from the exported state in a fresh optimizer: same bytes.
  const copy = eight.map((p) => ({ name: p.name, value: backend.upload(Float32Array.from(backend.read(p.value) as Float32Array), p.value.shape, "f32") }));
  run(q8, eight, 10, 15);
  const resumed = new AdamW8bit(backend, copy, SETTINGS);
  const saved = new Map(state.tensors.map((t) => [t.name, t.data]));
  resumed.importState(state.step, (name) => saved.get(name)!);
  run(resumed, copy, 10, 15);
  eight.forEach((p, i) => assert.deepEqual(backend.read(copy[i]!.value), backend.read(p.value)));
});

test("tensors under 4096 elements keep fp32 moments in AdamW8bit (bitsandbytes' min_8bit_size): same updates as AdamW", () => {
  const a = params(1024, 2);
  const b = params(1024, 2);
  run(new AdamW(backend, a, SETTINGS), a, 0, 5);
  const q8 = new AdamW8bit(backend, b, SETTINGS);
  run(q8, b, 0, 5);
  a.forEach((p, i) => assert.deepEqual(backend.read(b[i]!.value), backend.read(p.value)));
  assert.ok(q8.exportState().tensors.every((t) => t.dtype === "F32"));
});

test("8-bit states survive a checkpoint file (U8 codes, F32 absmaxes) exactly", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-opt-"));
  try {
    const ps = params(8192, 4);
    const q8 = new AdamW8bit(backend, ps, SETTINGS);
    run(q8, ps, 0, 3);
    await saveOptimizerState(dir, q8);
    const copy = ps.map((p) => ({ name: p.name, value: backend.upload(Float32Array.from(backend.read(p.value) as Float32Array), p.value.shape, "f32") }));
    const loaded = new AdamW8bit(backend, copy, SETTINGS);
    await loadOptimizerState(dir, loaded);
    assert.equal(loaded.stepCount, 3);
    run(q8, ps, 3, 6);
    run(loaded, copy, 3, 6);
    ps.forEach((p, i) => assert.deepEqual(backend.read(copy[i]!.value), backend.read(p.value)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
