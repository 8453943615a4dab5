/**
 * CPU matmul throughput: `node --import tsx bench/cpu-matmul.ts` (SPLINT_CPU_THREADS=1 or 2 to
 * compare thread counts). Shapes are a linear layer (x·Wᵀ) and its two backward products with
 * f32, bf16 and fp8 weights, then larger layers.
 *
 * Measured on the 2-core AMD EPYC dev VM (2026-11-28), GFLOP/s:
 *   plain TypeScript, f64 accumulation, 1×4 block    4.2   (first version)
 *   plain TypeScript, 2×4 register block             5.4
 *   wasm SIMD f32x4, 2×4 block, 1 thread             47–52 (x·Wᵀ, 256×1024×1024)
 *   wasm SIMD, 2 threads                             58–64 on that shape; 87–91 vs 53 on
 *                                                    512×2048×2048 and 1024×1024×8192 (≈1.7×);
 *                                                    no gain at 64 rows (B tile packing is serial)
 *   dx = dy·W (B not transposed): packing B by transposition into the tn kernel took 1.4× the
 *   time of y = x·Wᵀ; the nn kernel (B rows copied as is) takes 1.2× (interleaved runs, 1 thread)
 * so the wasm kernels and the worker pool stay. (The VM is shared with other jobs: expect ±30%.)
 */
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import type { DType } from "../src/tensor/dtype.ts";

const backend = createCpuBackend();
const random = (n: number): Float32Array => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);

function bench(label: string, m: number, k: number, n: number, run: () => void): void {
  run();
  const reps = 3;
  const start = performance.now();
  for (let i = 0; i < reps; i++) run();
  const seconds = (performance.now() - start) / 1000 / reps;
  console.log(`${label.padEnd(48)} ${(seconds * 1000).toFixed(1).padStart(8)} ms ${((2 * m * k * n) / seconds / 1e9).toFixed(2).padStart(6)} GFLOP/s`);
}

console.log(`SPLINT_CPU_THREADS=${process.env["SPLINT_CPU_THREADS"] ?? "(default: all cores)"}`);
const [m, k, n] = [256, 1024, 1024];
const x = backend.upload(random(m * k), [m, k], "f32");
const dy = backend.upload(random(m * n), [m, n], "f32");
for (const dtype of ["f32", "bf16", "fp8_e4m3"] as DType[]) {
  const w = backend.upload(random(n * k), [n, k], dtype, dtype === "fp8_e4m3" ? 1 / 448 : 1);
  bench(`y = x·Wᵀ   [${m},${k}]·[${n},${k}]ᵀ ${dtype}`, m, k, n, () => backend.matmul(x, w, { transB: true }).free());
  bench(`dx = dy·W  [${m},${n}]·[${n},${k}] ${dtype}`, m, n, k, () => backend.matmul(dy, w).free());
}
bench(`dW = dyᵀ·x [${n},${m}]ᵀ·[${m},${k}] f32`, n, m, k, () => backend.matmul(dy, x, { transA: true }).free());
for (const [rows, inner, cols] of [
  [64, 4096, 4096],
  [512, 2048, 2048],
  [1024, 1024, 8192],
] as const) {
  const a = backend.upload(random(rows * inner), [rows, inner], "f32");
  const w = backend.upload(random(cols * inner), [cols, inner], "bf16");
  bench(`y = x·Wᵀ   [${rows},${inner}]·[${cols},${inner}]ᵀ bf16`, rows, inner, cols, () => backend.matmul(a, w, { transB: true }).free());
}
