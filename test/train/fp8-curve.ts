/**
 * The tiny FP8 fixture (test/fixtures/models/tiny-fp8) trained against its BF16-dequantized copy
 * (W = bf16(fp8 · weight_scale_inv), as transformers dequantizes it and as a -BF16 repo would hold
 * it): the fixtures' 20-step recipe, the same initial adapter and micro-batches, the training
 * precision (bf16 matmul, weights as stored). Used by test/train/fp8-curve.test.ts and
 * scripts/fp8-curve.ts (the committed table).
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openCheckpoint, toFloat32, toFp8Bytes, writeSafetensors, type TensorToWrite } from "../../src/io/safetensors.ts";
import { loadAdapter } from "../../src/lora/adapter.ts";
import { freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import type { Backend } from "../../src/tensor/backend.ts";
import { f32ArrayToBf16 } from "../../src/tensor/bf16.ts";
import { fp8E4m3ArrayToF32 } from "../../src/tensor/fp8.ts";
import { resolveConfig, TUTORIAL_DEFAULTS } from "../../src/train/config.ts";
import { trainLoop, type StepRecord } from "../../src/train/trainer.ts";
import type { Output } from "../../src/util/output.ts";
import { fixtureBatches, FIXTURES } from "./fixture-batches.ts";

const quiet: Output = { json: true, log() {}, result() {}, progress: () => ({ update() {}, increment() {}, stop() {} }) };

/** The fixtures' curve recipe (test/train/curve.test.ts) in the training precision. */
export const FP8_CURVE_RECIPE = resolveConfig(
  TUTORIAL_DEFAULTS,
  { r: 4, lora_alpha: 8, lora_dropout: 0, learning_rate: 2e-3, warmup_steps: 3, max_steps: 20, gradient_accumulation_steps: 2, max_grad_norm: 0.3, weight_decay: 0, save_strategy: "no", logging_steps: 5, bf16: true },
  "fp8 curve recipe",
);

/** Writes the BF16-dequantized copy of an FP8 checkpoint folder (one file; scales dropped). */
export async function writeDequantizedCopy(fp8Dir: string, outDir: string): Promise<void> {
  const source = await openCheckpoint(fp8Dir);
  const tensors: TensorToWrite[] = [];
  try {
    for (const key of source.keys()) {
      if (key.endsWith(".weight_scale_inv") || key.endsWith(".activation_scale")) continue;
      const stored = await source.read(key);
      if (stored.dtype === "F8_E4M3") {
        const scale = toFloat32(await source.read(key.replace(/\.weight$/, ".weight_scale_inv")))[0]!;
        tensors.push({ name: key, dtype: "BF16", shape: stored.shape, data: f32ArrayToBf16(fp8E4m3ArrayToF32(toFp8Bytes(stored), scale)) });
      } else {
        tensors.push({ name: key, dtype: stored.dtype, shape: stored.shape, data: stored.data });
      }
    }
  } finally {
    await source.close();
  }
  await writeSafetensors(join(outDir, "model.safetensors"), tensors, { format: "pt" });
  const config = JSON.parse(await readFile(join(fp8Dir, "config.json"), "utf8")) as Record<string, unknown>;
  delete config.quantization_config;
  await writeFile(join(outDir, "config.json"), `${JSON.stringify({ ...config, dtype: "bfloat16" }, null, 2)}\n`);
}

async function curve(backend: Backend, modelDir: string): Promise<StepRecord[]> {
  const model = await loadMistral3(modelDir, backend, { dtype: "auto", matmulPrecision: "bf16" });
  const runDir = await mkdtemp(join(tmpdir(), "splint-fp8-curve-"));
  try {
    const adapter = await loadAdapter(join(FIXTURES, "train", "tiny", "initial_adapter"), model.linears, backend);
    const steps: StepRecord[] = [];
    await trainLoop({ backend, model, adapter, config: FP8_CURVE_RECIPE, source: await fixtureBatches("labels"), runDir, output: quiet, onStep: (r) => steps.push(r) });
    return steps;
  } finally {
    freeMistral3(model);
    await rm(runDir, { recursive: true, force: true });
  }
}

/** Both runs on `backend`: from the FP8 checkpoint, and from its BF16-dequantized copy. */
export async function fp8Curves(backend: Backend): Promise<{ fp8: StepRecord[]; bf16: StepRecord[] }> {
  const dir = await mkdtemp(join(tmpdir(), "splint-fp8-dequantized-"));
  try {
    await writeDequantizedCopy(join(FIXTURES, "models", "tiny-fp8"), dir);
    return { fp8: await curve(backend, join(FIXTURES, "models", "tiny-fp8")), bf16: await curve(backend, dir) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
