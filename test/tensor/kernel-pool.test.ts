/** The threaded wasm kernels give bit-identical results to the single-threaded ones. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { createKernelPool } from "../../src/backends/cpu/kernel-pool.ts";
import type { KernelKind } from "../../src/backends/cpu/wasm-matmul.ts";
import { matmulRef, randomF32, rng } from "./reference.ts";

/** Runs one kernel call on a fresh pool of `threads` threads; a is [rows, k], the tile as the kind wants it. */
function runJob(threads: string, kind: KernelKind, a: Float32Array, tile: Float32Array, rows: number, k: number, cols: number): Float32Array {
  const saved = process.env["SPLINT_CPU_THREADS"];
  process.env["SPLINT_CPU_THREADS"] = threads;
  try {
    const pool = createKernelPool();
    const tileAt = a.length;
    const outAt = tileAt + tile.length;
    const mem = pool.view(outAt + rows * cols);
    mem.set(a, 0);
    mem.set(tile, tileAt);
    pool.run(kind, 0, tileAt * 4, outAt * 4, rows, k, cols, cols, k);
    return mem.slice(outAt, outAt + rows * cols);
  } finally {
    if (saved === undefined) delete process.env["SPLINT_CPU_THREADS"];
    else process.env["SPLINT_CPU_THREADS"] = saved;
  }
}

test("splitting rows across worker threads changes no bit of either kernel's result", () => {
  const random = rng(31);
  // 2·10⁶ multiply-adds: above the threshold where the pool hands work to threads.
  const [rows, k, cols] = [60, 1024, 32];
  const a = randomF32(random, rows * k);
  const tile = randomF32(random, cols * k);
  for (const kind of ["tn", "nn"] as const) {
    const single = runJob("1", kind, a, tile, rows, k, cols);
    const threaded = runJob("3", kind, a, tile, rows, k, cols);
    assert.deepEqual(threaded, single, kind);
    // tn reads the tile as [cols, k] (Bᵀ), nn as [k, cols].
    const expected = matmulRef(a, tile, rows, k, cols, false, kind === "tn");
    for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(single[i]! - expected[i]!) < 1e-3, `${kind} element ${i}`);
  }
});

test("SPLINT_CPU_THREADS must be a positive integer", () => {
  process.env["SPLINT_CPU_THREADS"] = "zero";
  try {
    assert.throws(() => createKernelPool(), /SPLINT_CPU_THREADS/);
  } finally {
    delete process.env["SPLINT_CPU_THREADS"];
  }
});
