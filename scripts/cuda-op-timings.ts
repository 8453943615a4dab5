/**
 * Times the CUDA backend's heaviest primitives at 14B-like sizes (random inputs, warm-up, median of
 * repeated runs between device synchronisations) and writes op-timings.md into the output folder: a
 * baseline for the speed work that follows, not a benchmark of training.
 *
 *   node --import tsx scripts/cuda-op-timings.ts [--out DIR] [--lora-up-only]
 *
 * --lora-up-only: only the section on LoRA's products with B (rank-r kernels against cuBLASLt).
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type CudaBackend, createCudaBackend } from "../src/backends/cuda/index.ts";
import type { LoraDropout, Moments8bit, Quantized8 } from "../src/tensor/backend.ts";
import { dequantizeBlockwise, packCodes, quantizeBlockwise, SIGNED_MAP, UNSIGNED_MAP } from "../src/tensor/blockwise8.ts";
import type { DType } from "../src/tensor/dtype.ts";
import type { Tensor } from "../src/tensor/tensor.ts";
import { medianOpMs } from "../bench/op-time.ts";

interface Timing {
  op: string;
  ms: number;
  rate: string;
}

function random(b: CudaBackend, shape: readonly number[], dtype: DType, seed: number): Tensor {
  const n = shape.reduce((x, y) => x * y, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 31 - 1;
  }
  return b.upload(data, shape, dtype);
}

/** Kernel launches and host syncs of one run of body (profile counters before and after). */
function countOf(b: CudaBackend, body: () => Tensor[]): string {
  b.synchronize();
  const before = b.profile.counters();
  for (const t of body()) t.free();
  const after = b.profile.counters();
  return `${after.launches - before.launches} launches, ${after.syncs - before.syncs} syncs, ${after.uploads - before.uploads} uploads`;
}

/**
 * GPU microseconds per run of body, the median over `batches` of stream events around `reps` runs queued behind `ballast`
 * (large products that keep the GPU busy while the host queues the runs, so launch overhead and
 * FFI calls do not count, as in a training step where the host runs ahead). hostBound: queuing
 * took longer than the ballast ran, so the GPU may have idled between runs and µs is an upper bound.
 */
function gpuMicros(b: CudaBackend, ballast: () => void, body: () => Tensor[], reps = 20, batches = 3): { us: number; hostBound: boolean } {
  for (const t of body()) t.free(); // warm-up: cuBLASLt plans, allocator blocks
  const samples: number[] = [];
  let hostBound = false;
  for (let batch = 0; batch < batches; batch++) {
    b.synchronize();
    b.profile.read(); // drop earlier marks
    b.profile.mark();
    ballast();
    b.profile.mark();
    const queueStart = performance.now();
    for (let i = 0; i < reps; i++) for (const t of body()) t.free();
    const queueMs = performance.now() - queueStart;
    b.profile.mark();
    const [ballastMs, runsMs] = b.profile.read();
    samples.push((runsMs! * 1000) / reps);
    hostBound ||= queueMs > ballastMs!;
  }
  samples.sort((x, y) => x - y);
  return { us: samples[Math.floor(samples.length / 2)]!, hostBound };
}

/**
 * A LoRA module's products with B at the 14B shapes (r = 16, α = 2, bf16 operands and outputs as
 * the bf16 tier runs them): lora.cu's rank-r kernels (Backend.loraUp, loraUpBackward) against the
 * cuBLASLt products Graph.loraLinear ran before them (createGraph's loraUpOps: false). Decoder:
 * 1440 tokens into k/v (1024), q (4096), o and down (5120), gate and up (16384); vision tower: 4232
 * patches into q/k/v/o and down (1024), gate and up (4096). GB/s counts each tensor once (y written;
 * dy read, du and dB written; u and B read), so both paths are rated on the same bytes.
 */
function loraUpTimings(b: CudaBackend, ballast: () => void): string {
  const r = 16;
  const alpha = 2;
  const lines = [
    "| shape | product | path | GPU µs | GB/s | cuBLASLt ÷ kernel |",
    "| --- | --- | --- | ---: | ---: | ---: |",
  ];
  const shapes: [string, number, number][] = [
    ["decoder k/v", 1440, 1024],
    ["decoder q", 1440, 4096],
    ["decoder o/down", 1440, 5120],
    ["decoder gate/up", 1440, 16384],
    ["vision q/k/v/o/down", 4232, 1024],
    ["vision gate/up", 4232, 4096],
  ];
  const row = (shape: string, product: string, path: string, t: { us: number; hostBound: boolean }, bytes: number, baseline?: number): string =>
    `| ${shape} | ${product} | ${path} | ${t.us.toFixed(1)}${t.hostBound ? " (host-bound)" : ""} | ${(bytes / t.us / 1e3).toFixed(0)} | ${baseline === undefined ? "" : `${(baseline / t.us).toFixed(2)}×`} |`;
  for (const [label, n, m] of shapes) {
    const shape = `${label} [${n},${m}] r=${r}`;
    const u = random(b, [n, r], "bf16", 30);
    const bw = random(b, [m, r], "bf16", 31);
    const dy = random(b, [n, m], "bf16", 32);
    const upBytes = n * m * 2 + (n + m) * r * 2;
    const backBytes = n * m * 2 + n * r * 2 + m * r * 4 + (n + m) * r * 2;
    const upBlas = gpuMicros(b, ballast, () => [b.matmul(u, bw, { transB: true, alpha, outDtype: "bf16" })]);
    const upKernel = gpuMicros(b, ballast, () => [b.loraUp(u, bw, { alpha, outDtype: "bf16" })]);
    const backBlas = gpuMicros(b, ballast, () => [b.matmul(dy, bw, { alpha, outDtype: "bf16" }), b.matmul(dy, u, { transA: true, alpha })]);
    const backKernel = gpuMicros(b, ballast, () => {
      const { du, db } = b.loraUpBackward(dy, bw, u, { alpha, duDtype: "bf16" });
      return [du, db];
    });
    lines.push(
      row(shape, "y = α·u·Bᵀ (bf16)", "cuBLASLt matmul", upBlas, upBytes),
      row(shape, "y = α·u·Bᵀ (bf16)", "loraUp (lora_up)", upKernel, upBytes, upBlas.us),
      row(shape, "du = α·dy·B (bf16), dB = α·dyᵀ·u", "cuBLASLt, two matmuls", backBlas, backBytes),
      row(shape, "du = α·dy·B (bf16), dB = α·dyᵀ·u", "loraUpBackward (lora_up_backward)", backKernel, backBytes, backBlas.us),
    );
    if (m === 5120) {
      // f32 outputs (the kernels' other dtype; the tier writes bf16): y's bytes double.
      const f32Bytes = upBytes + n * m * 2;
      const upBlasF32 = gpuMicros(b, ballast, () => [b.matmul(u, bw, { transB: true, alpha })]);
      const upKernelF32 = gpuMicros(b, ballast, () => [b.loraUp(u, bw, { alpha })]);
      lines.push(
        row(shape, "y = α·u·Bᵀ (f32)", "cuBLASLt matmul", upBlasF32, f32Bytes),
        row(shape, "y = α·u·Bᵀ (f32)", "loraUp (lora_up)", upKernelF32, f32Bytes, upBlasF32.us),
      );
    }
    for (const t of [u, bw, dy]) t.free();
  }
  return lines.join("\n");
}

/**
 * The optimizer step of a 14B LoRA run (r = 16 on q/k/v/o/gate/up/down, 350 pairs = 700 tensors):
 * clip_grad_norm_ and AdamW as the trainer ran them per tensor, against the multi-tensor calls;
 * the same for the 8-bit moments (the per-tensor path dequantised and quantised on the host).
 */
function optimizerStepTimings(b: CudaBackend): Timing[] {
  const rows: Timing[] = [];
  const gbs = (bytes: number, ms: number): string => `${(bytes / ms / 1e6).toFixed(0)} GB/s`;
  const shapes: number[][] = [];
  for (let j = 0; j < 350; j++) {
    const module = j % 7; // q, k, v, o, gate, up, down
    shapes.push(module === 6 ? [16, 14336] : [16, 5120], module === 4 || module === 5 ? [14336, 16] : [5120, 16]);
  }
  const elements = shapes.reduce((a, s) => a + s[0]! * s[1]!, 0);
  const params = shapes.map((s, i) => random(b, s, "f32", 100 + i));
  const grads = shapes.map((s, i) => random(b, s, "f32", 2000 + i));
  for (const g of grads) b.scaleInPlace(g, 1e-3);
  const ms = params.map((p) => b.zeros(p.shape, "f32"));
  const vs = params.map((p) => b.zeros(p.shape, "f32"));
  const hp = { lr: 2e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1 };
  const maxNorm = 0.3;
  // Read and written per element: param, m, v (r+w), grad (r; twice on the per-tensor path with clipping).
  const f32Bytes = elements * 4 * 7;
  const label = `${shapes.length} LoRA tensors, ${(elements / 1e6).toFixed(1)} M elements`;

  const perTensor = (): Tensor[] => {
    const total = b.zeros([1], "f32");
    for (const g of grads) {
      const sq = b.sumSquares(g);
      b.addInPlace(total, sq);
      sq.free();
    }
    const coef = maxNorm / (Math.sqrt(b.read(total)[0]!) + 1e-6);
    total.free();
    const scaled = grads.map((g) => b.copy(g));
    if (coef < 1) for (const g of scaled) b.scaleInPlace(g, coef);
    params.forEach((p, i) => b.adamw(p, scaled[i]!, ms[i]!, vs[i]!, hp));
    return scaled;
  };
  const fused = (): Tensor[] => {
    const sumSquares = b.sumSquaresMany(grads);
    b.adamwMany(params, grads, ms, vs, hp, { sumSquares, maxNorm });
    return [sumSquares];
  };
  // The per-tensor body copies the gradients (it clips in place) so both leave grads as they were.
  const perMs = medianOpMs(b, perTensor);
  rows.push({ op: `clip + AdamW per tensor (+ grad copies), ${label}: ${countOf(b, perTensor)}`, ms: perMs, rate: gbs(f32Bytes, perMs) });
  const fusedMs = medianOpMs(b, fused);
  rows.push({ op: `sumSquaresMany + adamwMany (clip folded), ${label}: ${countOf(b, fused)}`, ms: fusedMs, rate: gbs(f32Bytes, fusedMs) });

  const quantized = (p: Tensor, map: Float32Array): Quantized8 => {
    const q = quantizeBlockwise(new Float32Array(p.size), map);
    return { codes: b.upload(packCodes(q.codes), [Math.ceil(p.size / 4)], "i32"), absmax: b.upload(q.absmax, [q.absmax.length], "f32") };
  };
  const moments: Moments8bit[] = params.map((p) => ({ m: quantized(p, SIGNED_MAP), v: quantized(p, UNSIGNED_MAP) }));
  const fused8 = (): Tensor[] => {
    const sumSquares = b.sumSquaresMany(grads);
    b.adamw8bitMany(params, grads, moments, hp, { sumSquares, maxNorm });
    return [sumSquares];
  };
  // Param r+w, grad r, codes r+w (1 byte each), absmaxes negligible.
  const bytes8 = elements * (4 * 3 + 4);
  const fused8Ms = medianOpMs(b, fused8);
  rows.push({ op: `sumSquaresMany + adamw8bitMany (clip folded), ${label}: ${countOf(b, fused8)}`, ms: fused8Ms, rate: gbs(bytes8, fused8Ms) });
  // Before: each tensor's moments dequantised on the host, uploaded, stepped, read back and quantised.
  const host = params.map((p) => ({ m: quantizeBlockwise(new Float32Array(p.size), SIGNED_MAP), v: quantizeBlockwise(new Float32Array(p.size), UNSIGNED_MAP) }));
  const hostPath = (): Tensor[] => {
    params.forEach((p, i) => {
      const m = b.upload(dequantizeBlockwise(host[i]!.m, SIGNED_MAP), p.shape, "f32");
      const v = b.upload(dequantizeBlockwise(host[i]!.v, UNSIGNED_MAP), p.shape, "f32");
      b.adamw(p, grads[i]!, m, v, hp);
      host[i] = { m: quantizeBlockwise(b.read(m) as Float32Array, SIGNED_MAP), v: quantizeBlockwise(b.read(v) as Float32Array, UNSIGNED_MAP) };
      m.free();
      v.free();
    });
    return [];
  };
  const hostMs = medianOpMs(b, hostPath, 3);
  rows.push({ op: `AdamW8bit per tensor through the host (before), ${label}, no clip: ${countOf(b, hostPath)}`, ms: hostMs, rate: gbs(bytes8, hostMs) });

  for (const t of [...params, ...grads, ...ms, ...vs, ...moments.flatMap((q) => [q.m.codes, q.m.absmax, q.v.codes, q.v.absmax])]) t.free();
  return rows;
}

function main(): void {
  const outIndex = process.argv.indexOf("--out");
  const outDir = outIndex >= 0 ? process.argv[outIndex + 1]! : (process.env.OUT ?? "out/gpu-check");
  const loraUpOnly = process.argv.includes("--lora-up-only");
  mkdirSync(outDir, { recursive: true });
  const b = createCudaBackend();
  const rows: Timing[] = [];
  const tflops = (flops: number, ms: number): string => `${(flops / ms / 1e9).toFixed(1)} TFLOP/s`;
  const gbs = (bytes: number, ms: number): string => `${(bytes / ms / 1e6).toFixed(0)} GB/s`;

  // Linear layers: 4096 tokens through a 5120 → 5120 projection.
  const [m, k, n] = [4096, 5120, 5120];
  const xb = random(b, [m, k], "bf16", 1);
  const xf = random(b, [m, k], "f32", 2);
  const w = random(b, [n, k], "bf16", 3);
  // ~3 ms of bf16 products (8 of the 4096×5120×5120 below) ahead of each batch loraUpTimings times.
  const ballast = (): void => {
    for (let i = 0; i < 8; i++) b.matmul(xb, w, { transB: true }).free();
  };
  const loraUpSection = (): string =>
    `## LoRA products with B\n\nGPU time per call from stream events around 20 calls queued behind ~3 ms of products, median of 3 such batches after a warm-up; "host-bound" marks a shape where the host queued a batch more slowly than the ballast ran.\n\n${loraUpTimings(b, ballast)}\n`;
  const write = (sections: string): void => {
    const stats = b.allocatorStats();
    b.dispose();
    const md = `# CUDA op timings (${b.device})\n\nRandom inputs. Allocator: peak ${(stats.peak / 2 ** 30).toFixed(2)} GiB live, ${stats.mallocs} cudaMalloc calls.\n\n${sections}`;
    const path = join(outDir, "op-timings.md");
    writeFileSync(`${path}.tmp`, md);
    renameSync(`${path}.tmp`, path);
    console.log(md);
  };
  if (loraUpOnly) {
    write(loraUpSection());
    return;
  }
  for (const [label, x, precision] of [
    ["bf16·bf16ᵀ", xb, "f32"],
    ["f32·bf16ᵀ (full f32)", xf, "f32"],
    ["f32·bf16ᵀ autocast (cast + bf16)", xf, "bf16"],
  ] as const) {
    const ms = medianOpMs(b, () => [b.matmul(x, w, { transB: true, precision })]);
    rows.push({ op: `matmul ${label} [${m},${k}]·[${n},${k}]ᵀ`, ms, rate: tflops(2 * m * n * k, ms) });
  }

  // Causal GQA attention at the decoder's shape (32 query heads, 8 kv heads, D = 128).
  const [T, Hq, Hkv, D] = [2048, 32, 8, 128];
  const q = random(b, [1, T, Hq, D], "bf16", 4);
  const kk = random(b, [1, T, Hkv, D], "bf16", 5);
  const v = random(b, [1, T, Hkv, D], "bf16", 6);
  const mask = { kind: "causal", queryOffset: 0 } as const;
  const scale = 1 / Math.sqrt(D);
  const causalFlops = 2 * 2 * Hq * D * ((T * (T + 1)) / 2);
  const fwdMs = medianOpMs(b, () => {
    const { out, lse } = b.attention(q, kk, v, mask, scale);
    return [out, lse];
  });
  rows.push({ op: `attention fwd causal T=${T} Hq=${Hq} Hkv=${Hkv} D=${D}`, ms: fwdMs, rate: tflops(causalFlops, fwdMs) });
  const { out, lse } = b.attention(q, kk, v, mask, scale);
  const dout = random(b, [1, T, Hq, D], "f32", 7);
  const bwdMs = medianOpMs(b, () => {
    const g = b.attentionBackward(q, kk, v, out, lse, dout, mask, scale);
    return [g.dq, g.dk, g.dv];
  });
  rows.push({ op: `attention bwd causal T=${T} Hq=${Hq} Hkv=${Hkv} D=${D}`, ms: bwdMs, rate: tflops(2.5 * causalFlops, bwdMs) });

  // The vision tower's attention: two 644×644 images (2116 patches each), 16 heads of 64, f32.
  const [P, Hv, Dv] = [2116, 16, 64];
  const vq = random(b, [1, 2 * P, Hv, Dv], "f32", 13);
  const vk = random(b, [1, 2 * P, Hv, Dv], "f32", 14);
  const vv = random(b, [1, 2 * P, Hv, Dv], "f32", 15);
  const blocks = { kind: "segments", lengths: [P, P] } as const;
  const visionFlops = 2 * 2 * Hv * Dv * 2 * P * P;
  const vScale = 1 / Math.sqrt(Dv);
  const vFwdMs = medianOpMs(b, () => {
    const r = b.attention(vq, vk, vv, blocks, vScale);
    return [r.out, r.lse];
  });
  rows.push({ op: `attention fwd 2 blocks of ${P} H=${Hv} D=${Dv}`, ms: vFwdMs, rate: tflops(visionFlops, vFwdMs) });
  const vOut = b.attention(vq, vk, vv, blocks, vScale);
  const vDout = random(b, [1, 2 * P, Hv, Dv], "f32", 16);
  const vBwdMs = medianOpMs(b, () => {
    const g = b.attentionBackward(vq, vk, vv, vOut.out, vOut.lse, vDout, blocks, vScale);
    return [g.dq, g.dk, g.dv];
  });
  rows.push({ op: `attention bwd 2 blocks of ${P} H=${Hv} D=${Dv}`, ms: vBwdMs, rate: tflops(2.5 * visionFlops, vBwdMs) });

  // Memory-bound ops at decoder width.
  const h = random(b, [4096, 5120], "f32", 8);
  const gamma = random(b, [5120], "bf16", 9);
  const normMs = medianOpMs(b, () => {
    const r = b.rmsNorm(h, gamma, 1e-5);
    return [r.y, r.rstd];
  });
  rows.push({ op: "rmsNorm f32 [4096, 5120]", ms: normMs, rate: gbs(2 * 4096 * 5120 * 4, normMs) });
  const gate = random(b, [4096, 14336], "f32", 10);
  const up = random(b, [4096, 14336], "f32", 11);
  const swigluMs = medianOpMs(b, () => [b.swiglu(gate, up)]);
  rows.push({ op: "swiglu f32 [4096, 14336]", ms: swigluMs, rate: gbs(3 * 4096 * 14336 * 4, swigluMs) });
  const logits = random(b, [512, 131072], "f32", 12);
  const labels = b.upload(Int32Array.from({ length: 512 }, (_, i) => (i * 7919) % 131072), [512], "i32");
  const ceMs = medianOpMs(b, () => {
    const r = b.crossEntropy(logits, labels, -100, 1 / 512);
    return [r.loss, r.dlogits!];
  });
  rows.push({ op: "crossEntropy+grad f32 [512, 131072]", ms: ceMs, rate: gbs(2 * 512 * 131072 * 4, ceMs) });

  // The LoRA side of a linear (r = 16, p = 0.05, bf16 tier) at the decoder's 1440 tokens × 5120 and
  // 16384 (down_proj's input) and the vision tower's 4232 patches × 1024 and 4096: lora.cu's fused
  // ops beside the composite they replace (dropout writing bf16 + cuBLASLt products +
  // dropoutBackward + add), and without dropout (p = 0: no mask hash per element), which tells what
  // the mask costs them.
  for (const [tokens, width] of [
    [1440, 5120],
    [1440, 16384],
    [4232, 1024],
    [4232, 4096],
  ] as const) {
    const r = 16;
    const mask = { dropout: 0.05, seed: 7, precision: "bf16" } as const;
    const lx = random(b, [tokens, width], "bf16", 20);
    const la = random(b, [r, width], "bf16", 21);
    const ldu = random(b, [tokens, r], "bf16", 22);
    const ldx = random(b, [tokens, width], "f32", 23);
    const shape = `[${tokens},${width}] r=${r}`;
    const xBytes = tokens * width * 2;
    // lora.cu's three fused ops with this dropout (p = 0: no mask hash per element).
    const fusedOps = (m: LoraDropout) => ({
      down: medianOpMs(b, () => [b.loraDown(lx, la, { ...m, outDtype: "bf16" })]),
      gradA: medianOpMs(b, () => [b.loraGradA(ldu, lx, m)]),
      dx: medianOpMs(b, () => {
        b.loraDxAccumulate(ldx, ldu, la, m);
        return [];
      }),
    });
    const fused = fusedOps(mask);
    const composite = {
      down: medianOpMs(b, () => {
        const xd = b.dropout(lx, mask.dropout, mask.seed, "bf16");
        const u = b.matmul(xd, la, { transB: true, precision: "bf16", outDtype: "bf16" });
        xd.free();
        return [u];
      }),
      gradA: medianOpMs(b, () => {
        const xd = b.dropout(lx, mask.dropout, mask.seed, "bf16");
        const da = b.matmul(ldu, xd, { transA: true, precision: "bf16" });
        xd.free();
        return [da];
      }),
      dx: medianOpMs(b, () => {
        const dxd = b.matmul(ldu, la, { precision: "bf16" });
        const dxLora = b.dropoutBackward(dxd, mask.dropout, mask.seed);
        dxd.free();
        b.addInPlace(ldx, dxLora);
        return [dxLora];
      }),
    };
    const unmasked = fusedOps({ ...mask, dropout: 0 });
    rows.push(
      { op: `loraDown (fused) ${shape}`, ms: fused.down, rate: gbs(xBytes, fused.down) },
      { op: `loraDown (fused, p = 0) ${shape}`, ms: unmasked.down, rate: gbs(xBytes, unmasked.down) },
      { op: `loraGradA (fused, p = 0) ${shape}`, ms: unmasked.gradA, rate: gbs(xBytes, unmasked.gradA) },
      { op: `loraDxAccumulate (fused, f32 dx, p = 0) ${shape}`, ms: unmasked.dx, rate: gbs(2 * tokens * width * 4, unmasked.dx) },
      { op: `loraDown composite (dropout + matmul) ${shape}`, ms: composite.down, rate: gbs(xBytes, composite.down) },
      { op: `loraGradA (fused) ${shape}`, ms: fused.gradA, rate: gbs(xBytes, fused.gradA) },
      { op: `loraGradA composite (dropout + matmul) ${shape}`, ms: composite.gradA, rate: gbs(xBytes, composite.gradA) },
      { op: `loraDxAccumulate (fused, f32 dx) ${shape}`, ms: fused.dx, rate: gbs(2 * tokens * width * 4, fused.dx) },
      { op: `loraDxAccumulate composite (matmul + dropoutBackward + add) ${shape}`, ms: composite.dx, rate: gbs(2 * tokens * width * 4, composite.dx) },
    );
    for (const t of [lx, la, ldu, ldx]) t.free();
  }
  rows.push(...optimizerStepTimings(b));
  const upSection = loraUpSection();

  const table = ["| op | median ms | rate |", "| --- | --- | --- |", ...rows.map((r) => `| ${r.op} | ${r.ms.toFixed(3)} | ${r.rate} |`)].join("\n");
  write(`Median of 10 runs after a warm-up, each between device synchronisations.\n\n${table}\n\n${upSection}`);
}

main();
