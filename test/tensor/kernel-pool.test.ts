/** The threaded wasm kernel gives bit-identical results to the single-threaded one. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createKernelPool } from "../../src/backends/cpu/kernel-pool.ts";
import { matmulRef, randomF32, rng } from "./reference.ts";

function runJob(threads: string, a: Float32Array, tile: Float32Array, m2: number, k4: number, nb4: number): Float32Array {
  const saved = process.env["SPLINT_CPU_THREADS"];
  process.env["SPLINT_CPU_THREADS"] = threads;
  try {
    const pool = createKernelPool();
    const tileAt = a.length;
    const outAt = tileAt + tile.length;
    const mem = pool.view(outAt + m2 * nb4);
    mem.set(a, 0);
    mem.set(tile, tileAt);
    pool.run(0, tileAt * 4, outAt * 4, m2, k4, nb4, nb4);
    return mem.slice(outAt, outAt + m2 * nb4);
  } finally {
    if (saved === undefined) delete process.env["SPLINT_CPU_THREADS"];
    else process.env["SPLINT_CPU_THREADS"] = saved;
  }
}

test("splitting rows across worker threads changes no bit of the result", () => {
  const random = rng(31);
  // 2·10⁶ multiply-adds: above the threshold where the pool hands work to threads.
  const [m2, k4, nb4] = [62, 1024, 32];
  const a = randomF32(random, m2 * k4);
  const tile = randomF32(random, nb4 * k4);
  const single = runJob("1", a, tile, m2, k4, nb4);
  const threaded = runJob("3", a, tile, m2, k4, nb4);
  assert.deepEqual(threaded, single);
  const expected = matmulRef(a, tile, m2, k4, nb4, false, true);
  for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(single[i]! - expected[i]!) < 1e-3, `element ${i}`);
});

test("SPLINT_CPU_THREADS must be a positive integer", () => {
  process.env["SPLINT_CPU_THREADS"] = "zero";
  try {
    assert.throws(() => createKernelPool(), /SPLINT_CPU_THREADS/);
  } finally {
    delete process.env["SPLINT_CPU_THREADS"];
  }
});
