/**
 * Attention op benchmark at every attention shape of the 14B tutorial micro-batch (and decode with
 * a KV cache), forward and backward, in TFLOP/s: splint's tensor-core kernels (precision bf16, with
 * bf16 and with f32 inputs; the backward fused, and with bf16 inputs also deterministic: two kernels
 * without atomics) and its exact f32 kernels, against torch SDPA with the flash backend
 * measured in the same GPU call (bench/reference/sdpa_attention.py, spawned here).
 *
 *   node --import tsx bench/attention-ops.ts [--out DIR] [--reps N] [--no-reference] [--only TEXT] [--quick]
 *
 * Writes attention-ops.json and attention-ops.md into DIR (default $OUT or out/attention-ops).
 * --only keeps the shapes whose name contains TEXT; --quick times only the bf16-input fast-tier row
 * (fused backward) of each, which is what a kernel profiler wants to see (scripts/gpu-check's ncu step).
 * FLOPs count only the visible (query, key) pairs: 4·D per pair forward (q·k and p·v), 2.5× that
 * backward (FlashAttention's convention), so both sides are rated on the same work.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type CudaBackend, createCudaBackend } from "../src/backends/cuda/index.ts";
import type { AttentionMask, MatmulPrecision } from "../src/tensor/backend.ts";
import type { DType } from "../src/tensor/dtype.ts";
import type { Tensor } from "../src/tensor/tensor.ts";
import { medianOpMs } from "./op-time.ts";

/** One attention call: q [b, t, hq, d], k/v [b, s, hkv, d]. */
export interface AttentionShape {
  name: string;
  b: number;
  t: number;
  s: number;
  hq: number;
  hkv: number;
  d: number;
  /** causal with this query offset, or block-diagonal segments (b = 1). */
  mask: { kind: "causal"; queryOffset: number } | { kind: "segments"; lengths: number[] };
}

// 14B micro-batch: 2 rows of 720 tokens (a 644×644 image's 552 tokens + prompt + answer), the
// vision tower's two images of 2116 patches; decode: one answer token against the prompt's cache.
export const SHAPES: AttentionShape[] = [
  { name: "vision 2×2116 H16 D64 (segments)", b: 1, t: 4232, s: 4232, hq: 16, hkv: 16, d: 64, mask: { kind: "segments", lengths: [2116, 2116] } },
  { name: "decoder 14B 2×720 32/8 D128 (causal)", b: 2, t: 720, s: 720, hq: 32, hkv: 8, d: 128, mask: { kind: "causal", queryOffset: 0 } },
  { name: "decoder 2×2048 32/8 D128 (causal)", b: 2, t: 2048, s: 2048, hq: 32, hkv: 8, d: 128, mask: { kind: "causal", queryOffset: 0 } },
  { name: "decode 2×1 vs 728-slot cache 32/8 D128", b: 2, t: 1, s: 728, hq: 32, hkv: 8, d: 128, mask: { kind: "causal", queryOffset: 727 } },
];

export function visiblePairs(sh: AttentionShape): number {
  if (sh.mask.kind === "segments") return sh.mask.lengths.reduce((a, l) => a + l * l, 0);
  const { queryOffset } = sh.mask;
  let pairs = 0;
  for (let t = 0; t < sh.t; t++) pairs += Math.min(sh.s, queryOffset + t + 1);
  return sh.b * pairs;
}

const forwardFlops = (sh: AttentionShape): number => 4 * sh.d * sh.hq * visiblePairs(sh);

interface Row {
  shape: string;
  impl: string;
  forwardMs: number;
  backwardMs: number;
  forwardTflops: number;
  backwardTflops: number;
}

function random(b: CudaBackend, shape: readonly number[], dtype: DType, seed: number, amplitude: number): Tensor {
  const n = shape.reduce((x, y) => x * y, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = amplitude * (s / 2 ** 31 - 1);
  }
  return b.upload(data, shape, dtype);
}

/** deterministic: the flash backward's two kernels without atomics instead of the fused default. */
function measure(b: CudaBackend, sh: AttentionShape, dtype: DType, precision: MatmulPrecision, reps: number, deterministic = false): Row {
  const q = random(b, [sh.b, sh.t, sh.hq, sh.d], dtype, 1, 2);
  const k = random(b, [sh.b, sh.s, sh.hkv, sh.d], dtype, 2, 2);
  const v = random(b, [sh.b, sh.s, sh.hkv, sh.d], dtype, 3, 1);
  const dout = random(b, [sh.b, sh.t, sh.hq, sh.d], dtype, 4, 1);
  const mask: AttentionMask = sh.mask.kind === "causal" ? { kind: "causal", queryOffset: sh.mask.queryOffset } : { kind: "segments", lengths: sh.mask.lengths };
  const scale = 1 / Math.sqrt(sh.d);
  const forwardMs = medianOpMs(b, () => {
    const r = b.attention(q, k, v, mask, scale, precision);
    return [r.out, r.lse];
  }, reps);
  const { out, lse } = b.attention(q, k, v, mask, scale, precision);
  const backwardMs = medianOpMs(b, () => {
    const g = b.attentionBackward(q, k, v, out, lse, dout, mask, scale, precision, { deterministic });
    return [g.dq, g.dk, g.dv];
  }, reps);
  for (const t of [q, k, v, dout, out, lse]) t.free();
  const flops = forwardFlops(sh);
  return {
    shape: sh.name,
    impl: precision === "f32" ? "splint exact f32" : deterministic ? `splint flash deterministic (${dtype} in)` : `splint flash (${dtype} in)`,
    forwardMs,
    backwardMs,
    forwardTflops: flops / forwardMs / 1e9,
    backwardTflops: (2.5 * flops) / backwardMs / 1e9,
  };
}

/** Runs bench/reference/sdpa_attention.py on the same shapes; rows, or the reason there are none. */
function reference(outDir: string, reps: number): { rows: Row[]; note?: string } {
  const shapesPath = join(outDir, "attention-shapes.json");
  const resultPath = join(outDir, "attention-sdpa.json");
  writeFileSync(shapesPath, JSON.stringify(SHAPES));
  const python = process.env.PYTHON ?? "python3";
  const run = spawnSync(python, ["bench/reference/sdpa_attention.py", "--shapes", shapesPath, "--out", resultPath, "--reps", String(reps)], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (run.error || run.status !== 0) return { rows: [], note: `torch SDPA reference did not run: ${run.error?.message ?? `exit ${run.status}`}` };
  return { rows: JSON.parse(readFileSync(resultPath, "utf8")) as Row[] };
}

function main(): void {
  const arg = (name: string): string | undefined => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  const outDir = arg("--out") ?? process.env.OUT ?? "out/attention-ops";
  const reps = Number(arg("--reps") ?? 20);
  mkdirSync(outDir, { recursive: true });
  const only = arg("--only");
  const quick = process.argv.includes("--quick");
  const b = createCudaBackend();
  const rows: Row[] = [];
  for (const sh of SHAPES.filter((s) => only === undefined || s.name.includes(only))) {
    rows.push(measure(b, sh, "bf16", "bf16", reps));
    if (quick) continue;
    rows.push(measure(b, sh, "bf16", "bf16", reps, true));
    rows.push(measure(b, sh, "f32", "bf16", reps));
    if (sh.t * sh.s <= 2116 * 2116 * 4) rows.push(measure(b, sh, "f32", "f32", Math.min(reps, 5)));
  }
  const device = b.device;
  b.dispose();
  const ref = process.argv.includes("--no-reference") ? { rows: [], note: "reference skipped (--no-reference)" } : reference(outDir, reps);
  rows.push(...ref.rows);

  const lines = [
    `# Attention ops: splint vs torch SDPA (flash), ${device}`,
    "",
    "| shape | implementation | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | fwd × SDPA | bwd × SDPA |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of rows) {
    const sdpa = ref.rows.find((x) => x.shape === r.shape);
    const ratio = (mine: number, theirs: number | undefined): string => (sdpa && theirs ? `${(theirs / mine).toFixed(2)}×` : "—");
    lines.push(
      `| ${r.shape} | ${r.impl} | ${r.forwardMs.toFixed(3)} | ${r.forwardTflops.toFixed(1)} | ${r.backwardMs.toFixed(3)} | ${r.backwardTflops.toFixed(1)} | ${ratio(r.forwardMs, sdpa?.forwardMs)} | ${ratio(r.backwardMs, sdpa?.backwardMs)} |`,
    );
  }
  if (ref.note) lines.push("", ref.note);
  lines.push("", `Median of ${reps} runs each (exact f32: at most 5), between synchronisations; × SDPA = SDPA's time / this row's time.`);
  const md = `${lines.join("\n")}\n`;
  writeFileSync(join(outDir, "attention-ops.md"), md);
  writeFileSync(join(outDir, "attention-ops.json"), `${JSON.stringify({ device, rows, note: ref.note ?? null }, null, 1)}\n`);
  console.log(md);
}

main();
