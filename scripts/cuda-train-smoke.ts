/**
 * The training smoke test of scripts/gpu-check: `splint train`'s whole path (a dataset folder from
 * the synthetic X-ray generator → collator → LoRA training with gradient checkpointing → step
 * checkpoints → PEFT adapter) on the CUDA backend with the small fixture model, checked against the
 * CPU backend running the same run. It asserts that
 *   1. every CUDA loss and gradient norm is finite and tracks the CPU run's within 1e-3 per step
 *      in f32, and within 1e-2 with bf16 weights and autocast products (the tutorial's bf16),
 *   2. the loss falls (the last logged loss is below the first),
 *   3. a run stopped after its first checkpoint and resumed ends with the uninterrupted run's
 *      adapter (max |Δ| ≤ 1e-6; whether the bytes are identical is reported),
 * and writes train-smoke.md (a table of the runs) into the output folder.
 *
 *   node --import tsx scripts/cuda-train-smoke.ts [--out DIR] [--model DIR] [--backend cuda|cpu]
 *
 * `--backend cpu` runs the "CUDA" runs on a second CPU backend: a check of this script itself on a
 * machine without a GPU.
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createCpuBackend } from "../src/backends/cpu/index.ts";
import { createCudaBackend } from "../src/backends/cuda/index.ts";
import type { Output } from "../src/cli/output.ts";
import { importImageFolder } from "../src/data/import.ts";
import { writeSyntheticDataset } from "../src/data/synth.ts";
import { openSafetensors, toFloat32 } from "../src/io/safetensors.ts";
import type { Backend } from "../src/tensor/backend.ts";
import type { TrainConfig } from "../src/train/config.ts";
import { runTraining, type TrainResult } from "../src/train/run.ts";
import type { StepRecord } from "../src/train/trainer.ts";
import { SplintError } from "../src/util/errors.ts";

const silent: Output = {
  json: false,
  log() {},
  result() {},
  progress: () => ({ update() {}, increment() {}, stop() {} }),
};

/** Twelve optimizer steps of two micro-batches of two images; a checkpoint every four steps. */
const SMOKE_CONFIG: Partial<TrainConfig> = {
  r: 4,
  lora_alpha: 8,
  lora_dropout: 0,
  learning_rate: 5e-3,
  warmup_steps: 2,
  max_steps: 12,
  per_device_train_batch_size: 2,
  gradient_accumulation_steps: 2,
  gradient_checkpointing: true,
  max_grad_norm: 1.0,
  logging_steps: 1,
  save_strategy: "steps",
  save_steps: 4,
  bf16: false,
  seed: 7,
};
/** f32 runs: the backends' f32 sums differ only in order. */
const LOSS_TOLERANCE = 1e-3;
const GRAD_NORM_TOLERANCE = 1e-3;
/**
 * bf16 runs (bf16 weights, autocast products): both backends round the same activations to bf16,
 * but an activation that lands on a rounding boundary in one order of summation and not in the
 * other moves by 2^-9 relative, and such flips carry through the layers.
 */
const BF16_LOSS_TOLERANCE = 1e-2;
const ADAPTER_TOLERANCE = 1e-6;

interface RunRow {
  name: string;
  result: TrainResult;
  steps: StepRecord[];
}

async function train(
  name: string,
  backend: Backend,
  modelDir: string,
  dataset: string,
  outDir: string,
  opts: { resume?: boolean; bf16?: boolean } = {},
): Promise<RunRow> {
  const steps: StepRecord[] = [];
  const { resume = false, bf16 = false } = opts;
  const result = await runTraining({
    modelDir,
    dataset,
    outDir,
    config: { ...SMOKE_CONFIG, bf16 },
    configSource: "cuda-train-smoke",
    resume,
    backend,
    output: silent,
    onStep: (record) => steps.push(record),
  });
  return { name, result, steps };
}

/** Runs a training that is expected to stop on its abort signal; returns the steps it logged. */
async function trainUntilStopped(backend: Backend, modelDir: string, dataset: string, outDir: string, stopAfter: number): Promise<StepRecord[]> {
  const steps: StepRecord[] = [];
  const abort = new AbortController();
  try {
    await runTraining({
      modelDir,
      dataset,
      outDir,
      config: SMOKE_CONFIG,
      configSource: "cuda-train-smoke",
      backend,
      output: silent,
      signal: abort.signal,
      onStep(record) {
        steps.push(record);
        if (record.step >= stopAfter) abort.abort();
      },
    });
  } catch (err) {
    if (!(abort.signal.aborted && err instanceof SplintError)) throw err;
    return steps;
  }
  throw new Error(`the run was asked to stop after step ${stopAfter} but finished`);
}

/**
 * Checks `got` step by step against `reference` (same length, finite, within the tolerances) and
 * that its loss falls; returns the largest differences.
 */
function compareRuns(reference: RunRow, got: RunRow, lossTolerance: number, normTolerance: number, failures: string[]): { worstLoss: number; worstNorm: number } {
  let worstLoss = 0;
  let worstNorm = 0;
  if (got.steps.length !== reference.steps.length) failures.push(`${got.name}: ${got.steps.length} steps, ${reference.name}: ${reference.steps.length}`);
  for (const [i, ref] of reference.steps.entries()) {
    const step = got.steps[i];
    if (!step) break;
    if (!Number.isFinite(step.loss) || !Number.isFinite(step.grad_norm)) failures.push(`${got.name} step ${step.step}: loss ${step.loss}, grad norm ${step.grad_norm}`);
    worstLoss = Math.max(worstLoss, Math.abs(step.loss - ref.loss));
    worstNorm = Math.max(worstNorm, Math.abs(step.grad_norm - ref.grad_norm) / Math.max(1, ref.grad_norm));
  }
  if (!(worstLoss <= lossTolerance)) failures.push(`${got.name}: loss differs from ${reference.name} by up to ${worstLoss} (> ${lossTolerance})`);
  if (!(worstNorm <= normTolerance)) failures.push(`${got.name}: grad norm differs from ${reference.name} by up to ${worstNorm} relative (> ${normTolerance})`);
  const first = got.steps[0]?.loss ?? Number.NaN;
  const last = got.steps[got.steps.length - 1]?.loss ?? Number.NaN;
  if (!(last < first)) failures.push(`${got.name}: the loss did not fall: step 1 ${first}, last step ${last}`);
  return { worstLoss, worstNorm };
}

async function adapterTensors(dir: string): Promise<Map<string, Float32Array>> {
  const file = await openSafetensors(join(dir, "adapter_model.safetensors"));
  const tensors = new Map<string, Float32Array>();
  try {
    for (const name of file.keys()) tensors.set(name, toFloat32(await file.read(name)));
  } finally {
    await file.close();
  }
  return tensors;
}

function maxAbsDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  if (a.size !== b.size) throw new Error(`adapters hold ${a.size} and ${b.size} tensors`);
  let worst = 0;
  for (const [name, x] of a) {
    const y = b.get(name);
    if (!y || y.length !== x.length) throw new Error(`adapter tensor ${name} is missing or has another size`);
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
  }
  return worst;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: "string", default: process.env.OUT ?? "out/gpu-check" },
      model: { type: "string", default: "test/fixtures/models/tiny" },
      backend: { type: "string", default: "cuda" },
    },
  });
  const outDir = values.out;
  const modelDir = values.model;
  if (values.backend !== "cuda" && values.backend !== "cpu") throw new Error(`--backend is cuda or cpu, not ${values.backend}`);
  const device = values.backend === "cuda" ? createCudaBackend() : createCpuBackend();
  const cpu = createCpuBackend();
  mkdirSync(outDir, { recursive: true });

  const work = await mkdtemp(join(tmpdir(), "splint-train-smoke-"));
  const failures: string[] = [];
  const lines: string[] = [];
  try {
    await writeSyntheticDataset(join(work, "raw"), { perClass: 2, testPerClass: 1, size: 64, seed: 3 });
    const dataset = join(work, "dataset");
    await importImageFolder(join(work, "raw"), { out: dataset, format: "arrow", valFraction: 0, seed: 0, output: silent });

    const reference = await train("cpu", cpu, modelDir, dataset, join(work, "cpu"));
    const onDevice = await train(values.backend, device, modelDir, dataset, join(work, "device"));
    const stoppedAt = 5;
    const beforeStop = await trainUntilStopped(device, modelDir, dataset, join(work, "resumed"), stoppedAt);
    const resumed = await train(`${values.backend}, stopped after step ${stoppedAt} and resumed`, device, modelDir, dataset, join(work, "resumed"), { resume: true });
    // The tutorial's default: bf16 weights as stored, autocast products.
    const referenceBf16 = await train("cpu, bf16", cpu, modelDir, dataset, join(work, "cpu-bf16"), { bf16: true });
    const onDeviceBf16 = await train(`${values.backend}, bf16`, device, modelDir, dataset, join(work, "device-bf16"), { bf16: true });

    const f32 = compareRuns(reference, onDevice, LOSS_TOLERANCE, GRAD_NORM_TOLERANCE, failures);
    const bf16 = compareRuns(referenceBf16, onDeviceBf16, BF16_LOSS_TOLERANCE, BF16_LOSS_TOLERANCE, failures);
    if (onDeviceBf16.steps[0]?.loss === onDevice.steps[0]?.loss) failures.push("the bf16 run's first loss equals the f32 run's: autocast did not happen");

    // The stopped run's steps and the resumed run's steps together are the uninterrupted run's. A
    // stop saves a checkpoint of the steps it finished (src/train/trainer.ts), so the resumed run
    // starts right after step stoppedAt, not at the last save_steps checkpoint.
    const joined = [...beforeStop.filter((s) => s.step <= stoppedAt), ...resumed.steps];
    if (resumed.result.resumedFrom === null) failures.push("the resumed run did not start from a checkpoint");
    if (joined.map((s) => s.step).join() !== onDevice.steps.map((s) => s.step).join()) failures.push(`resumed steps ${joined.map((s) => s.step).join()} are not the run's`);
    const adapterDelta = maxAbsDiff(await adapterTensors(onDevice.result.adapterDir), await adapterTensors(resumed.result.adapterDir));
    if (!(adapterDelta <= ADAPTER_TOLERANCE)) failures.push(`the resumed adapter differs from the uninterrupted one by up to ${adapterDelta} (> ${ADAPTER_TOLERANCE})`);
    const sameBytes = Buffer.compare(
      await readFile(join(onDevice.result.adapterDir, "adapter_model.safetensors")),
      await readFile(join(resumed.result.adapterDir, "adapter_model.safetensors")),
    ) === 0;

    lines.push(
      `# Training smoke test (${modelDir}, ${values.backend} vs cpu)`,
      "",
      `${SMOKE_CONFIG.max_steps} steps of ${SMOKE_CONFIG.gradient_accumulation_steps}×${SMOKE_CONFIG.per_device_train_batch_size} synthetic X-rays (gradient checkpointing, r ${SMOKE_CONFIG.r}), a checkpoint every ${SMOKE_CONFIG.save_steps} steps; f32 (weights widened, exact products) and bf16 (weights as stored, autocast products).`,
      "",
      "| run | steps | loss step 1 | last loss | seconds | checkpoints |",
      "| --- | ---: | ---: | ---: | ---: | ---: |",
      ...[reference, onDevice, resumed, referenceBf16, onDeviceBf16].map((r) => {
        const firstLoss = r.steps[0]?.loss.toFixed(5) ?? "";
        return `| ${r.name} | ${r.steps.length} | ${firstLoss} | ${r.result.finalLoss?.toFixed(5) ?? ""} | ${r.result.seconds.toFixed(1)} | ${r.result.checkpoints.length} |`;
      }),
      "",
      `- f32: max |loss ${values.backend} − loss cpu| over the steps ${f32.worstLoss.toExponential(2)} (tolerance ${LOSS_TOLERANCE}), max relative grad-norm difference ${f32.worstNorm.toExponential(2)} (tolerance ${GRAD_NORM_TOLERANCE})`,
      `- bf16: max |loss ${values.backend} − loss cpu| ${bf16.worstLoss.toExponential(2)}, grad norm ${bf16.worstNorm.toExponential(2)} relative (tolerance ${BF16_LOSS_TOLERANCE} each)`,
      `- resumed vs uninterrupted adapter: max |Δ| ${adapterDelta.toExponential(2)} (tolerance ${ADAPTER_TOLERANCE}), bytes ${sameBytes ? "identical" : "differ"}`,
      "",
      failures.length === 0 ? "PASS" : `FAIL\n${failures.map((f) => `- ${f}`).join("\n")}`,
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const report = `${lines.join("\n")}\n`;
  process.stdout.write(report);
  const file = join(outDir, "train-smoke.md");
  writeFileSync(`${file}.tmp`, report);
  renameSync(`${file}.tmp`, file);
  if (failures.length > 0) process.exitCode = 1;
}

await main();
