/**
 * CPU matmul throughput: `node --import tsx bench/cpu-matmul.ts`. Shapes are a linear layer
 * (x·Wᵀ) and its two backward products, with f32, bf16 and fp8 weights.
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
  console.log(`${label.padEnd(44)} ${(seconds * 1000).toFixed(1).padStart(8)} ms ${((2 * m * k * n) / seconds / 1e9).toFixed(2).padStart(6)} GFLOP/s`);
}

const [m, k, n] = [256, 1024, 1024];
const x = backend.upload(random(m * k), [m, k], "f32");
const dy = backend.upload(random(m * n), [m, n], "f32");
for (const dtype of ["f32", "bf16", "fp8_e4m3"] as DType[]) {
  const w = backend.upload(random(n * k), [n, k], dtype, dtype === "fp8_e4m3" ? 1 / 448 : 1);
  bench(`y = x·Wᵀ   [${m},${k}]·[${n},${k}]ᵀ ${dtype}`, m, k, n, () => backend.matmul(x, w, { transB: true }).free());
  bench(`dx = dy·W  [${m},${n}]·[${n},${k}] ${dtype}`, m, n, k, () => backend.matmul(dy, w).free());
}
const w = backend.upload(random(n * k), [n, k], "f32");
bench(`dW = dyᵀ·x [${n},${m}]ᵀ·[${m},${k}] f32`, n, m, k, () => backend.matmul(dy, x, { transA: true }).free());
void w;
