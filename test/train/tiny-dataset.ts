import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { DatasetDict } from "../../src/data/types.ts";
import { FIXTURES } from "./fixture-batches.ts";

export const TINY_MODEL = join(FIXTURES, "models", "tiny");

/** Six labelled examples from the fixtures' images (small enough for a few-second training run). */
export function tinyDataset(): DatasetDict {
  const names = ["upscale_rgb_30x20", "gray_70x50", "rgba_40x90", "upscale_rgb_30x20", "gray_70x50", "rgba_40x90"];
  const rows = names.map((name, i) => ({
    image: { bytes: new Uint8Array(readFileSync(join(FIXTURES, "images", `${name}.png`))), path: `${name}-${i}.png` },
    label: i % 2,
  }));
  return { classNames: ["Avulsion fracture", "Comminuted fracture"], splits: new Map([["train", rows]]) };
}

/** A recipe that trains visibly in a few steps: 6 examples, 3 optimizer steps per epoch, 2 epochs. */
export const TINY_RECIPE = {
  r: 4,
  lora_alpha: 8,
  lora_dropout: 0.1,
  per_device_train_batch_size: 1,
  gradient_accumulation_steps: 2,
  num_train_epochs: 2,
  learning_rate: 5e-3,
  warmup_steps: 1,
  weight_decay: 0.01,
  save_strategy: "steps" as const,
  save_steps: 2,
  logging_steps: 1,
  bf16: false,
};
