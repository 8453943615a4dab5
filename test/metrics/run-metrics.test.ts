import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { readMetrics, RunMetrics } from "../../src/metrics/run-metrics.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { readEvents } from "../helpers/tfevents-reader.ts";

const train = (step: number) => ({ step, epoch: step / 4, loss: 1 / step, learning_rate: 1e-3, grad_norm: 0.5, tokens_per_second: 100, images_per_second: 2, memory_live_bytes: 0, memory_peak_bytes: 2 ** 30 });
const evaluation = (step: number) => ({ step, epoch: step / 4, eval_loss: 2 / step, eval_accuracy: step / 10, eval_samples: 3, eval_runtime: 0.1 });

test("a resumed run keeps the metrics up to its checkpoint, returns the earlier evaluations, and marks the restart for TensorBoard", async () => {
  await withTempDir("splint-run-metrics-", async (dir) => {
    const first = (await RunMetrics.open(dir, { tensorboard: true })).metrics;
    for (let step = 1; step <= 4; step++) {
      await first.train(train(step));
      if (step % 2 === 0) await first.eval(evaluation(step));
    }
    first.close();
    // Killed after step 4, resumed from the checkpoint at step 2.
    const { metrics, earlier } = await RunMetrics.open(dir, { tensorboard: true, resumeStep: 2 });
    assert.deepEqual(earlier.map((e) => [e.step, "eval_loss" in e]), [[1, false], [2, false], [2, true]]);
    await metrics.train(train(3));
    metrics.close();
    assert.deepEqual((await readMetrics(join(dir, "metrics.jsonl"))).map((e) => e.step), [1, 2, 2, 3]);

    const files = readdirSync(join(dir, "tensorboard")).sort();
    assert.equal(files.length, 2);
    const second = files.map((f) => readEvents(readFileSync(join(dir, "tensorboard", f)))).find((events) => events.some((e) => e.sessionStatus === 1))!;
    assert.deepEqual(second.slice(1).map((e) => [e.step, e.sessionStatus ?? null]), [[3, 1], [3, null]], "SessionLog START at the first recomputed step, then the new points");
    assert.equal(second[2]!.scalars["train/loss"], Math.fround(1 / 3));
  });
});

test("report_to none writes metrics.jsonl only", async () => {
  await withTempDir("splint-run-metrics-", async (dir) => {
    const { metrics } = await RunMetrics.open(dir, { tensorboard: false });
    await metrics.eval(evaluation(1));
    metrics.close();
    assert.deepEqual(readdirSync(dir), ["metrics.jsonl"]);
  });
});
