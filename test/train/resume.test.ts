import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { runTraining } from "../../src/train/run.ts";
import { InterruptedError } from "../../src/util/errors.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { quiet } from "./quiet-output.ts";
import { TINY_MODEL, TINY_RECIPE, tinyDataset } from "./tiny-dataset.ts";

test("a run stopped mid-epoch and resumed ends with the same adapter bytes as an uninterrupted run", async () => {
  await withTempDir("splint-resume-", async (root) => {
    const straight = await runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: join(root, "straight"), config: TINY_RECIPE, output: quiet });
    assert.equal(straight.steps, 6);
    assert.deepEqual(straight.checkpoints.map((c) => c.split("/").pop()), ["checkpoint-2", "checkpoint-4", "checkpoint-6"]);
    assert.ok(straight.history[5]!.loss < straight.history[0]!.loss, "the loss goes down");

    // Stop during step 4 (epoch 2 of 3-step epochs): step 3 is done but not at a save point; the
    // stop saves it (checkpoint-3) before throwing, so the resumed run redoes nothing.
    const stopped = join(root, "stopped");
    const controller = new AbortController();
    await assert.rejects(
      runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: stopped, config: TINY_RECIPE, output: quiet, signal: controller.signal, onStep: (r) => r.step === 3 && controller.abort() }),
      (e: Error) => e instanceof InterruptedError && e.exitCode === 130 && /training stopped at step 4 \(interrupted\); .*checkpoint-3 holds the 3 finished steps/.test(e.message),
    );
    const resumed = await runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: stopped, resume: true, output: quiet });
    assert.match(resumed.resumedFrom ?? "", /checkpoint-3$/);
    assert.deepEqual(resumed.history.map((r) => r.step), [4, 5, 6]);
    assert.deepEqual(resumed.history.map((r) => r.loss), straight.history.slice(3).map((r) => r.loss));

    const bytes = async (run: string, file: string) => readFile(join(run, "adapter", file));
    assert.ok((await bytes(straight.runDir, "adapter_model.safetensors")).equals(await bytes(stopped, "adapter_model.safetensors")), "same final adapter bytes");
    assert.ok((await bytes(straight.runDir, "adapter_config.json")).equals(await bytes(stopped, "adapter_config.json")));
    // The log of the resumed run has each step once, as the uninterrupted one.
    assert.equal(await readFile(join(stopped, "train_log.jsonl"), "utf8").then((t) => t.trim().split("\n").length), 6);
  });
});

test("resume refuses changed settings, and a new run refuses a folder that holds one", async () => {
  await withTempDir("splint-resume-", async (root) => {
    const outDir = join(root, "run");
    await runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir, config: { ...TINY_RECIPE, max_steps: 2 }, output: quiet });
    await assert.rejects(runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir, config: TINY_RECIPE, output: quiet }), /already holds a training run/);
    await assert.rejects(
      runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir, config: { learning_rate: 1 }, configSource: "flags", resume: true, output: quiet }),
      /flags: --resume continues .* but learning_rate \(1 vs the run's 0\.005\) differ/,
    );
    await assert.rejects(runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: join(root, "fresh"), resume: true, output: quiet }), /config\.resolved\.json: not found/);
  });
});
