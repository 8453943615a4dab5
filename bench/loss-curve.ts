/**
 * The fast tier's loss curve against the exact tier's (issue 12): the tiny fixture model
 * (test/fixtures/models/tiny) trained 200 steps on the fixtures' 4 micro-batches (2 a step, the
 * fixtures' recipe: r 4, alpha 8, AdamW lr 2e-3, warm-up 3, clip 0.3, dropout 0), from the same
 * initial adapter, once with f32 matmul precision (exact products) and once with bf16 (the fast
 * tier: bf16 operands for every product, LoRA included, f32 accumulation, bf16 activations where
 * only products read them). Runs on the CPU backend by default, the reference of every kernel.
 *
 *   node --import tsx bench/loss-curve.ts [--steps 200] [--backend cpu|cuda] [--out FILE.md]
 *
 * Prints (and writes with --out) a Markdown table of the losses every 10 steps and the largest
 * differences between the two curves.
 */
import { writeFile } from "node:fs/promises";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import { createCudaBackend } from "../src/backends/cuda/index.ts";
import { loadAdapter } from "../src/lora/adapter.ts";
import { freeMistral3, loadMistral3 } from "../src/models/mistral3/model.ts";
import type { Backend, MatmulPrecision } from "../src/tensor/backend.ts";
import { trainLoop, type StepRecord } from "../src/train/trainer.ts";
import { silentProgress, type Output } from "../src/util/output.ts";
import { FIXTURES, fixtureBatches, fixtureRecipe } from "../test/train/fixture-batches.ts";

const quiet: Output = { json: true, log() {}, result() {}, progress: () => silentProgress };

async function curve(backend: Backend, precision: MatmulPrecision, steps: number): Promise<StepRecord[]> {
  const model = await loadMistral3(join(FIXTURES, "models", "tiny"), backend, { matmulPrecision: precision });
  const runDir = await mkdtemp(join(tmpdir(), "splint-loss-curve-"));
  try {
    const adapter = await loadAdapter(join(FIXTURES, "train", "tiny", "initial_adapter"), model.linears, backend);
    const config = { ...fixtureRecipe(steps), logging_steps: steps };
    const records: StepRecord[] = [];
    await trainLoop({ backend, model, adapter, config, source: await fixtureBatches("labels"), runDir, output: quiet, onStep: (r) => records.push(r) });
    return records;
  } finally {
    freeMistral3(model);
    await rm(runDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { steps: { type: "string", default: "200" }, backend: { type: "string", default: "cpu" }, out: { type: "string" } } });
  const steps = Number(values.steps);
  const backend = values.backend === "cuda" ? createCudaBackend() : createCpuBackend();
  const exact = await curve(backend, "f32", steps);
  const fast = await curve(backend, "bf16", steps);
  let worstAbs = 0;
  let worstRel = 0;
  let worstStep = 0;
  for (let i = 0; i < steps; i++) {
    const d = Math.abs(fast[i]!.loss - exact[i]!.loss);
    if (d > worstAbs) [worstAbs, worstStep] = [d, i + 1];
    worstRel = Math.max(worstRel, d / Math.max(exact[i]!.loss, 1e-3));
  }
  const rows = exact
    .map((e, i) => ({ e, f: fast[i]! }))
    .filter(({ e }) => e.step === 1 || e.step % 10 === 0)
    .map(({ e, f }) => `| ${e.step} | ${e.loss.toFixed(5)} | ${f.loss.toFixed(5)} | ${(f.loss - e.loss).toExponential(2)} | ${e.grad_norm.toFixed(4)} | ${f.grad_norm.toFixed(4)} |`);
  const md = [
    `# Loss curve: fast tier (bf16) against exact tier (f32), ${steps} steps, tiny fixture model, ${backend.name} backend`,
    "",
    "Same initial adapter, same 4 micro-batches in the same order (2 a step), the fixtures' recipe (bench/loss-curve.ts).",
    "",
    `Largest |loss bf16 − loss f32|: ${worstAbs.toExponential(3)} at step ${worstStep}; largest relative difference (against max(loss, 1e-3)): ${worstRel.toExponential(3)}.`,
    "",
    "| step | loss f32 | loss bf16 | difference | grad norm f32 | grad norm bf16 |",
    "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows,
    "",
  ].join("\n");
  process.stdout.write(md);
  if (values.out) await writeFile(values.out, md);
}

await main();
