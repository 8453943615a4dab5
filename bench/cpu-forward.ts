/**
 * CPU forward throughput against transformers on the same machine in the same run (issue 3): one
 * forward pass (vision tower, projector, decoder, logits of every position, loss) of a
 * random-weight Mistral3 on one 224×224 image (72 image tokens) and a 64-token prompt, f32, for the
 * tiny and the small configuration of bench/workload.ts.
 *
 *   node --import tsx bench/cpu-forward.ts [--sizes tiny,small] [--reps 5] [--python PY] [--out FILE.md]
 *
 * With --python (a Python with torch and transformers), bench/reference/hf_cpu_forward.py runs the
 * same configuration and token layout with transformers (eager attention, f32, as many threads as
 * splint's worker pool) and the table gives the ratio; without it, splint's numbers alone.
 * Timing: median wall time of --reps forwards after one warm-up.
 */
import { spawnSync } from "node:child_process";
import { writeFileSync, mkdtempSync, rmSync, renameSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createGraph } from "../src/autograd/tape.ts";
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import { threadCount } from "../src/backends/cpu/kernel-pool.ts";
import { parseMistral3Config, type Mistral3Config } from "../src/models/mistral3/config.ts";
import { ForwardContext } from "../src/models/mistral3/context.ts";
import { buildMistral3, forwardMistral3, freeMistral3, type Mistral3Inputs } from "../src/models/mistral3/model.ts";
import type { Tensor } from "../src/tensor/tensor.ts";
import { buildInputs, hfConfig, median, randomWeights, SIZES, type Size, type Workload } from "./workload.ts";

const WORKLOAD: Workload = { batch: 1, imageSize: 224, promptTokens: 64, answerTokens: 8 };

interface Row {
  tool: string;
  size: string;
  tokens: number;
  medianMs: number;
  tokensPerSecond: number;
  threads?: number;
  versions?: Record<string, string>;
  error?: string;
}

/** One size's configuration and inputs, shared by both sides. */
interface Case {
  size: Size;
  raw: Record<string, unknown>;
  config: Mistral3Config;
  inputs: Mistral3Inputs;
}

function caseOf(size: Size): Case {
  const raw = hfConfig(size);
  const config = parseMistral3Config(raw, `${size} config`);
  return { size, raw, config, inputs: buildInputs(config, WORKLOAD, 7) };
}

function splintForward({ size, raw, config, inputs }: Case, reps: number): Row {
  const backend = createCpuBackend();
  const tied = raw.tie_word_embeddings === true;
  // bench/workload draws bf16 weights; the comparison is f32 on both sides.
  const weights = new Map<string, Tensor>();
  for (const [name, t] of randomWeights(backend, config, tied, 1)) {
    weights.set(name, backend.cast(t, "f32"));
    t.free();
  }
  const model = buildMistral3(config, weights, tied);
  const once = (): number => {
    const graph = createGraph(backend, { recording: false });
    const ctx = new ForwardContext(graph);
    const start = performance.now();
    try {
      const out = forwardMistral3(ctx, model, inputs);
      backend.read(out.logits.value);
      return performance.now() - start;
    } finally {
      graph.dispose();
      ctx.release();
    }
  };
  once();
  const times = Array.from({ length: reps }, once);
  freeMistral3(model);
  const tokens = inputs.batch * inputs.seqLen;
  const medianMs = median(times);
  return { tool: "splint", size, tokens, medianMs, tokensPerSecond: tokens / (medianMs / 1000) };
}

function referenceForward(python: string, { size, raw, inputs }: Case, reps: number, threads: number): Row {
  const dir = mkdtempSync(join(tmpdir(), "splint-cpu-forward-"));
  try {
    const plan = join(dir, "plan.json");
    writeFileSync(plan, JSON.stringify({ size, config: raw, workload: { ...WORKLOAD, seqLen: inputs.seqLen } }));
    const run = spawnSync(python, ["bench/reference/hf_cpu_forward.py", "--plan", plan, "--reps", String(reps), "--threads", String(threads)], {
      encoding: "utf8",
      maxBuffer: 1 << 24,
    });
    if (run.status !== 0) return { tool: "transformers", size, tokens: 0, medianMs: 0, tokensPerSecond: 0, error: (run.stderr || run.error?.message || "failed").trim().split("\n").slice(-3).join(" ") };
    return JSON.parse(run.stdout.trim().split("\n").pop()!) as Row;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function main(): void {
  const { values } = parseArgs({
    options: {
      sizes: { type: "string", default: "tiny,small" },
      reps: { type: "string", default: "5" },
      python: { type: "string" },
      out: { type: "string" },
    },
  });
  const sizes = values.sizes.split(",") as Size[];
  for (const s of sizes) if (!SIZES.includes(s)) throw new Error(`--sizes: ${s} is not one of ${SIZES.join(", ")}`);
  const reps = Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1) throw new Error("--reps must be a positive integer");
  // The reference gets as many threads as splint's matmul pool uses.
  const threads = threadCount();
  const rows: Row[] = [];
  for (const size of sizes) {
    const sizeCase = caseOf(size);
    const ours = splintForward(sizeCase, reps);
    process.stderr.write(`[cpu-forward ${size}] splint ${ours.medianMs.toFixed(1)} ms, ${ours.tokensPerSecond.toFixed(0)} tokens/s\n`);
    rows.push(ours);
    if (values.python) {
      const theirs = referenceForward(values.python, sizeCase, reps, threads);
      process.stderr.write(`[cpu-forward ${size}] transformers ${theirs.error ?? `${theirs.medianMs.toFixed(1)} ms`}\n`);
      rows.push(theirs);
    }
  }
  const versions = rows.find((r) => r.versions)?.versions;
  const lines = [
    `# CPU forward, ${new Date().toISOString().slice(0, 10)}, ${cpus()[0]?.model ?? "cpu"} (${threads} threads)`,
    "",
    `One forward (logits of every position and the loss) on one ${WORKLOAD.imageSize}×${WORKLOAD.imageSize} image and a ${WORKLOAD.promptTokens}-token prompt plus ${WORKLOAD.answerTokens} answer tokens, random f32 weights, median of ${reps} after a warm-up.${versions ? ` Reference: ${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(", ")}, eager attention, torch.set_num_threads(${threads}).` : ""}`,
    "",
    "| size | implementation | tokens | ms / forward | tokens/s | splint speed ÷ this |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
    ...rows.map((r) => {
      const ours = rows.find((x) => x.tool === "splint" && x.size === r.size)!;
      if (r.error) return `| ${r.size} | ${r.tool} | failed: ${r.error} | | | |`;
      const ratio = r.tool === "splint" ? "1.000×" : `${(ours.tokensPerSecond / r.tokensPerSecond).toFixed(3)}×`;
      return `| ${r.size} | ${r.tool} | ${r.tokens} | ${r.medianMs.toFixed(1)} | ${r.tokensPerSecond.toFixed(0)} | ${ratio} |`;
    }),
    "",
  ];
  const table = lines.join("\n");
  process.stdout.write(table);
  if (values.out) {
    writeFileSync(`${values.out}.tmp`, table);
    renameSync(`${values.out}.tmp`, values.out);
  }
}

main();
