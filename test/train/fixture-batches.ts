import { join } from "node:path";
import { openSafetensors, toFloat32, toInt32 } from "../../src/io/safetensors.ts";
import { IGNORE_INDEX } from "../../src/models/mistral3/model.ts";
import type { TrainBatch } from "../../src/train/collator.ts";
import { resolveConfig, type TrainConfig, TUTORIAL_DEFAULTS } from "../../src/train/config.ts";
import type { MicroBatchSource } from "../../src/train/trainer.ts";

import { FIXTURES } from "../helpers/reference.ts";

export { FIXTURES };

/** The fixtures' 4 training micro-batches, served in their recorded order (no shuffling). */
export async function fixtureBatches(labels: "labels" | "labels_completion"): Promise<MicroBatchSource> {
  const source = await openSafetensors(join(FIXTURES, "train", "tiny", "batches.safetensors"));
  const batches: TrainBatch[] = [];
  try {
    for (let k = 0; k < 4; k++) {
      const ids = await source.read(`mb${k}.input_ids`);
      const [B, T] = ids.shape as [number, number];
      const mask = toInt32(await source.read(`mb${k}.attention_mask`));
      const lab = toInt32(await source.read(`mb${k}.${labels}`));
      const pixels = await source.read(`mb${k}.pixel_values`);
      const sizes = toInt32(await source.read(`mb${k}.image_sizes`));
      batches.push({
        inputs: {
          batch: B,
          seqLen: T,
          inputIds: toInt32(ids),
          attentionMask: mask,
          labels: lab,
          images: { pixelValues: toFloat32(pixels), shape: pixels.shape as [number, number, number, number], imageSizes: sizes },
        },
        tokens: mask.reduce((a, b) => a + b, 0),
        supervised: lab.filter((l) => l !== IGNORE_INDEX).length,
        images: pixels.shape[0]!,
      });
    }
  } finally {
    await source.close();
  }
  return { length: batches.length, get: async (_epoch, index) => batches[index]! };
}

/** The fixtures' recipe: r 4, alpha 8, AdamW lr 2e-3, linear warm-up 3 steps, clip 0.3, 2 micro-batches a step, dropout 0. */
export function fixtureRecipe(maxSteps: number): TrainConfig {
  return resolveConfig(
    TUTORIAL_DEFAULTS,
    {
      r: 4,
      lora_alpha: 8,
      lora_dropout: 0,
      learning_rate: 2e-3,
      warmup_steps: 3,
      max_steps: maxSteps,
      gradient_accumulation_steps: 2,
      max_grad_norm: 0.3,
      weight_decay: 0,
      save_strategy: "no",
      logging_steps: 5,
    },
    "fixture recipe",
  );
}
