// The tutorial's default numerics (bf16: true): the fixture model's bf16 weights stay bf16 and the
// linear layers' products are autocast, end to end through runTraining (forward, checkpointed
// backward, AdamW).
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { runTraining } from "../../src/train/run.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { quiet } from "./quiet-output.ts";
import { TINY_MODEL, TINY_RECIPE, tinyDataset } from "./tiny-dataset.ts";

test("training with bf16 (autocast) follows the f32 run closely without being it, and learns", async () => {
  await withTempDir("splint-bf16-train-", async (root) => {
    const recipe = { ...TINY_RECIPE, lora_dropout: 0, save_strategy: "no" as const };
    const backend = createCpuBackend();
    const runWith = (bf16: boolean) =>
      runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: join(root, bf16 ? "bf16" : "f32"), config: { ...recipe, bf16 }, backend, output: quiet });
    const exact = await runWith(false);
    const autocast = await runWith(true);
    assert.equal(autocast.history.length, exact.history.length);
    let differs = false;
    for (const [i, step] of autocast.history.entries()) {
      const ref = exact.history[i]!;
      assert.ok(Number.isFinite(step.loss) && Number.isFinite(step.grad_norm), `step ${step.step}`);
      // Activations rounded to bf16 (2^-9 relative) through every linear layer.
      assert.ok(Math.abs(step.loss - ref.loss) <= 1e-2, `step ${step.step}: loss ${step.loss} vs f32 ${ref.loss}`);
      if (step.loss !== ref.loss) differs = true;
    }
    assert.ok(differs, "the bf16 run computed exactly what the f32 run did: autocast never happened");
    assert.ok(autocast.history.at(-1)!.loss < autocast.history[0]!.loss, "the loss falls");
  });
});
