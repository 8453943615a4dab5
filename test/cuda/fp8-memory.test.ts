/**
 * Frozen FP8 weights on the CUDA backend are never widened for more than one product at a time
 * (issue 13): the matmul widens an fp8 operand into a scratch block that is released when the
 * product is done (native/cuda/src/matmul.cu), so eight fp8 weights multiplied in turn raise the
 * allocator's high-water mark by one widened weight, not eight. Skipped without a GPU.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import type { MatmulPrecision } from "../../src/tensor/backend.ts";
import { cudaUnderTest } from "./cuda-under-test.ts";

const { cuda, skip } = cudaUnderTest();
const MiB = 2 ** 20;

describe("fp8 weights on cuda are widened one product at a time", { skip }, () => {
  after(() => cuda?.dispose());

  // The high-water mark cannot be reset, so each case starts above the previous one's peak: the f32
  // case (2048², widened 16 MiB, peak ≈ 48 MiB) before the bf16 one (4096²: 128 MiB of weights).
  for (const [precision, widenedBytes, n] of [
    ["f32", 4, 2048],
    ["bf16", 2, 4096],
  ] as [MatmulPrecision, number, number][]) {
    test(`eight ${n}×${n} fp8 weights, precision ${precision}: the peak rises by at most one ${precision} copy`, () => {
      const b = cuda!;
      const bytes = new Uint8Array(n * n);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 37) & 0x7e; // finite e4m3 codes (no NaN 0x7f)
      const weights = Array.from({ length: 8 }, (_, i) => b.upload(bytes, [n, n], "fp8_e4m3", 0.001 * (i + 1)));
      const x = b.upload(new Float32Array(4 * n).fill(0.5), [4, n], "f32");
      const base = b.allocatorStats();
      // The caching allocator's peak only grows: start from a mark at least the current live bytes.
      assert.ok(base.peak >= base.live);
      const peakBefore = base.peak;
      for (const w of weights) {
        const y = b.matmul(x, w, { transB: true, precision });
        b.read(y);
        y.free();
      }
      const stats = b.allocatorStats();
      const widened = n * n * widenedBytes;
      const rise = stats.peak - Math.max(peakBefore, base.live);
      assert.ok(rise <= widened + 1 * MiB, `peak rose ${(rise / MiB).toFixed(1)} MiB; one widened weight is ${widened / MiB} MiB, all eight ${(8 * widened) / MiB} MiB`);
      assert.equal(stats.live, base.live, "the scratch is released after each product");
      for (const w of weights) w.free();
      x.free();
    });
  }
});
