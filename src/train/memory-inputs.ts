/**
 * What the memory planner (memory-plan.ts) is fed, gathered without loading a weight: resident
 * dtypes from the checkpoint's headers (as loadPlannedWeights will upload them), the LoRA targets
 * from the adapter settings (as initAdapter will pick them), and the micro-batch shape from
 * collated batches.
 */
import { openCheckpoint, type SafetensorsDType } from "../io/safetensors.ts";
import { moduleRankAlpha, targetedModules, type LoraSettings } from "../lora/adapter.ts";
import type { Mistral3Config } from "../models/mistral3/config.ts";
import { IGNORE_INDEX } from "../models/mistral3/model.ts";
import { expectedWeights, planWeights, type WeightDtype } from "../models/mistral3/weights.ts";
import type { DType } from "../tensor/dtype.ts";
import type { TrainBatch } from "./collator.ts";
import type { LoraTarget, MicroBatchShape, ResidentWeight } from "./memory-plan.ts";

/** The dtype loadPlannedWeights gives a stored tensor (fp8 stays fp8; bf16 stays bf16 unless f32 is asked). */
export function residentDtype(stored: SafetensorsDType, dtype: WeightDtype): DType {
  if (stored === "F8_E4M3") return "fp8_e4m3";
  if (dtype === "bf16" || (dtype === "auto" && stored === "BF16")) return "bf16";
  return "f32";
}

/** Every tensor the model will hold, from the checkpoint's headers only. */
export async function residentWeightsOf(modelDir: string, config: Mistral3Config, dtype: WeightDtype): Promise<ResidentWeight[]> {
  const source = await openCheckpoint(modelDir);
  try {
    const plan = planWeights(config, source.keys(), (key) => source.info(key), modelDir);
    return plan.tensors.map((t) => ({ name: t.spec.name, shape: t.spec.shape, dtype: residentDtype(source.info(t.key).dtype, dtype) }));
  } finally {
    await source.close();
  }
}

/** The linears an adapter with these settings trains, with their sizes and ranks. */
export function loraTargetsOf(config: Mistral3Config, settings: LoraSettings): LoraTarget[] {
  const linears = new Map(expectedWeights(config).filter((s) => s.linear).map((s) => [s.name.slice(0, -".weight".length), s.shape]));
  return targetedModules(settings, linears.keys()).map((path) => {
    const shape = linears.get(path)!;
    return { path, outFeatures: shape[0]!, inFeatures: shape[1]!, r: moduleRankAlpha(settings, path).r };
  });
}

/**
 * The widest micro-batch among `batches`, per row: the longest padded row, the most patches and
 * scored labels of any row (so a smaller micro-batch of the same data is estimated from the same
 * rows). Labels are counted as the loss counts them (after the shift, so a row's first is dropped).
 */
export function microBatchShapeOf(batches: readonly TrainBatch[], patchSize: number): Omit<MicroBatchShape, "rows"> {
  let seqLen = 0;
  let patchesPerRow = 0;
  let scoredPerRow = 0;
  for (const { inputs } of batches) {
    seqLen = Math.max(seqLen, inputs.seqLen);
    const rows = inputs.batch;
    let patches = 0;
    const sizes = inputs.images?.imageSizes;
    if (sizes) for (let i = 0; i + 1 < sizes.length; i += 2) patches += (sizes[i]! / patchSize) * (sizes[i + 1]! / patchSize);
    patchesPerRow = Math.max(patchesPerRow, Math.ceil(patches / rows));
    if (inputs.labels) {
      for (let b = 0; b < rows; b++) {
        let scored = 0;
        for (let t = 1; t < inputs.seqLen; t++) if (inputs.labels[b * inputs.seqLen + t] !== IGNORE_INDEX) scored++;
        scoredPerRow = Math.max(scoredPerRow, scored);
      }
    }
  }
  return { seqLen, patchesPerRow, scoredPerRow };
}
