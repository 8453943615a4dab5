/**
 * CPU attention throughput: `node --import tsx bench/cpu-attention.ts`. A Pixtral-like image
 * (1024 patches, 16 heads of 64, one segment) and a GQA decoder prefill (512 tokens, 32/8 heads
 * of 128, causal).
 *
 * Measured on the 2-core AMD EPYC dev VM (2026-11-28), forward / backward:
 *   one query row at a time in plain TypeScript   2660 / 6084 ms and 1294 / 2948 ms (≈1.6 GFLOP/s)
 *   64-row query blocks on the wasm matmul kernel  569 /  810 ms and  236 /  372 ms
 */
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import type { AttentionMask } from "../src/tensor/backend.ts";

const backend = createCpuBackend();
const random = (n: number): Float32Array => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);

const cases: { label: string; t: number; hq: number; hkv: number; d: number; mask: AttentionMask; visibleFraction: number }[] = [
  { label: "segments T=S=1024 Hq=Hkv=16 D=64", t: 1024, hq: 16, hkv: 16, d: 64, mask: { kind: "segments", lengths: [1024] }, visibleFraction: 1 },
  { label: "causal T=S=512 Hq=32 Hkv=8 D=128", t: 512, hq: 32, hkv: 8, d: 128, mask: { kind: "causal", queryOffset: 0 }, visibleFraction: 0.5 },
];
for (const { label, t, hq, hkv, d, mask, visibleFraction } of cases) {
  const q = backend.upload(random(t * hq * d), [1, t, hq, d], "f32");
  const kv = backend.upload(random(t * hkv * d), [1, t, hkv, d], "f32");
  let start = performance.now();
  const { out, lse } = backend.attention(q, kv, kv, mask, 1 / Math.sqrt(d));
  const forward = performance.now() - start;
  start = performance.now();
  backend.attentionBackward(q, kv, kv, out, lse, out, mask, 1 / Math.sqrt(d));
  const backward = performance.now() - start;
  const flops = 4 * t * t * hq * d * visibleFraction;
  console.log(`${label.padEnd(36)} forward ${forward.toFixed(0).padStart(6)} ms (${(flops / forward / 1e6).toFixed(2)} GFLOP/s)  backward ${backward.toFixed(0).padStart(6)} ms`);
}
