/**
 * CUDA backend against the CPU backend, primitive by primitive (cases in parity-cases.ts), plus
 * the allocator's steady state and the error paths. Skipped when the library or a GPU is absent.
 * SPLINT_PARITY_SEED fixes the seed; otherwise each run draws fresh inputs and logs its seed.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { createCudaBackend } from "../../src/backends/cuda/index.ts";
import { SplintError } from "../../src/util/errors.ts";
import { cudaUnderTest } from "./cuda-under-test.ts";
import { parityCases, runCase } from "./parity-cases.ts";

const { cuda, skip } = cudaUnderTest();
const seed = process.env.SPLINT_PARITY_SEED ? Number(process.env.SPLINT_PARITY_SEED) : Math.floor(Math.random() * 2 ** 31);

describe("cuda backend parity with the cpu backend", { skip }, () => {
  const cpu = createCpuBackend();
  after(() => cuda?.dispose());

  test(`seed ${seed}`, () => {
    assert.ok(Number.isInteger(seed));
  });

  for (const c of parityCases()) {
    test(c.name, () => {
      const result = runCase(c, cuda!, cpu, seed);
      if (result.error) assert.fail(`${c.name} threw:\n${result.error}`);
      for (const cmp of result.comparisons) {
        assert.equal(
          cmp.violations,
          0,
          `${c.name} / ${cmp.output}: ${cmp.violations} of ${cmp.count} elements outside atol ${c.tolerance.atol} + rtol ${c.tolerance.rtol} (max abs ${cmp.maxAbs}, max rel ${cmp.maxRel}, seed ${seed})`,
        );
      }
    });
  }

  test("a repeated step never calls cudaMalloc again (caching allocator)", () => {
    const b = cuda!;
    const step = (): void => {
      const x = b.upload(new Float32Array(64 * 96).fill(0.5), [64, 96], "f32");
      const w = b.upload(new Float32Array(128 * 96).fill(0.25), [128, 96], "bf16");
      const y = b.matmul(x, w, { transB: true });
      const gamma = b.upload(new Float32Array(128).fill(1), [128], "f32");
      const { y: n, rstd } = b.rmsNorm(y, gamma, 1e-5);
      const total = b.sumSquares(n);
      b.read(total);
      for (const t of [x, w, y, gamma, n, rstd, total]) t.free();
    };
    step();
    const before = b.allocatorStats();
    for (let i = 0; i < 5; i++) step();
    const afterStats = b.allocatorStats();
    assert.equal(afterStats.mallocs, before.mallocs);
    assert.ok(afterStats.peak >= afterStats.live);
  });

  test("live bytes follow allocations and frees", () => {
    const b = cuda!;
    const start = b.memory().live;
    const t = b.empty([1000, 250], "bf16");
    assert.equal(b.memory().live - start, 500_000);
    t.free();
    t.free(); // idempotent
    assert.equal(b.memory().live, start);
  });

  test("after dispose, ops throw a SplintError and freeing a tensor is harmless", () => {
    const second = createCudaBackend();
    const t = second.upload(Float32Array.of(1, 2, 3), [3], "f32");
    second.dispose();
    assert.throws(() => second.read(t), /disposed/);
    assert.throws(() => second.zeros([2], "f32"), SplintError);
    t.free();
    second.dispose();
  });

  test("errors surface as SplintErrors with the op, never a crash", () => {
    const b = cuda!;
    const a = b.zeros([3, 4], "f32");
    const w = b.zeros([5, 6], "f32");
    assert.throws(() => b.matmul(a, w), SplintError);
    const logits = b.zeros([2, 10], "f32");
    const labels = b.upload(Int32Array.of(3, 12), [2], "i32");
    const { loss } = b.crossEntropy(logits, labels, -100);
    assert.throws(() => b.read(loss), /label/);
    const rows = b.gatherRows(a, b.upload(Int32Array.of(0, 7), [2], "i32"));
    assert.throws(() => b.read(rows), /index/);
    // The backend stays usable after a flagged error.
    assert.deepEqual(Array.from(b.read(b.zeros([2], "f32"))), [0, 0]);
  });
});
