import type { CudaBackend } from "../src/backends/cuda/index.ts";
import type { Tensor } from "../src/tensor/tensor.ts";

/**
 * Median milliseconds of `reps` runs of `body`, each run timed between synchronisations, after one
 * warm-up run; every run's outputs are freed after it. For op benchmarks at real shapes
 * (bench/attention-ops.ts, scripts/cuda-op-timings.ts).
 */
export function medianOpMs(b: CudaBackend, body: () => Tensor[], reps = 10): number {
  for (const t of body()) t.free();
  b.synchronize();
  const samples: number[] = [];
  for (let i = 0; i < reps; i++) {
    const start = performance.now();
    const outs = body();
    b.synchronize();
    samples.push(performance.now() - start);
    for (const t of outs) t.free();
  }
  samples.sort((x, y) => x - y);
  return samples[Math.floor(samples.length / 2)]!;
}
