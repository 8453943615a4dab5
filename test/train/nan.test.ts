import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { loadAdapter } from "../../src/lora/adapter.ts";
import { freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import { resolveConfig, TUTORIAL_DEFAULTS } from "../../src/train/config.ts";
import { trainLoop, type MicroBatchSource } from "../../src/train/trainer.ts";
import { fixtureBatches, FIXTURES } from "./fixture-batches.ts";
import { quiet } from "./quiet-output.ts";

test("a NaN loss stops training with the step named, keeping the last good checkpoint", async () => {
  const backend = createCpuBackend();
  const model = await loadMistral3(join(FIXTURES, "models", "tiny"), backend);
  const runDir = await mkdtemp(join(tmpdir(), "splint-nan-"));
  try {
    const adapter = await loadAdapter(join(FIXTURES, "train", "tiny", "initial_adapter"), model.linears, backend);
    const good = await fixtureBatches("labels");
    // Epoch 2 (steps 3 and 4) brings a corrupted image: its pixels are NaN.
    const source: MicroBatchSource = {
      length: good.length,
      async get(epoch, index) {
        const batch = await good.get(epoch, index);
        if (epoch < 1) return batch;
        const images = { ...batch.inputs.images!, pixelValues: batch.inputs.images!.pixelValues.map(() => Number.NaN) };
        return { ...batch, inputs: { ...batch.inputs, images } };
      },
    };
    const config = resolveConfig(TUTORIAL_DEFAULTS, { r: 4, lora_alpha: 8, lora_dropout: 0, gradient_accumulation_steps: 2, max_steps: 6, save_strategy: "steps", save_steps: 1 }, "test");
    await assert.rejects(trainLoop({ backend, model, adapter, config, source, runDir, output: quiet }), (e: Error) => {
      assert.match(e.message, /the training loss is NaN at step 3 \(epoch 2\); training stopped and the last good checkpoint is .*checkpoint-2/);
      return true;
    });
    assert.ok(existsSync(join(runDir, "checkpoints", "checkpoint-2", "adapter_model.safetensors")));
    assert.ok(!existsSync(join(runDir, "checkpoints", "checkpoint-3")));
  } finally {
    freeMistral3(model);
    await rm(runDir, { recursive: true, force: true });
  }
});
