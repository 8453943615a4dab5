// Defects 3 (run-folder lock), 4 (stuck after a kill before the first checkpoint; Ctrl-C) and the
// training half of 5 (non-finite loss and gradients: named, stop or skip-step).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { loadAdapter } from "../../src/lora/adapter.ts";
import { freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import { resolveConfig, TUTORIAL_DEFAULTS } from "../../src/train/config.ts";
import { runTraining } from "../../src/train/run.ts";
import { firstNonFiniteGradient, trainLoop, type MicroBatchSource } from "../../src/train/trainer.ts";
import { BusyError, EXIT, InterruptedError } from "../../src/util/errors.ts";
import { LOCK_FILE } from "../../src/util/lock.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { fixtureBatches, FIXTURES } from "../train/fixture-batches.ts";
import { quiet } from "../train/quiet-output.ts";
import { TINY_MODEL, TINY_RECIPE, tinyDataset } from "../train/tiny-dataset.ts";
import { runSplintAsync, SPLINT_BIN } from "./helpers/cli.ts";

test("defect 3: a second training into a folder in use is refused (exit 75) and the first run is unharmed", async () => {
  await withTempDir("splint-faults-train-", async (root) => {
    const outDir = join(root, "run");
    const first = runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir, config: TINY_RECIPE, output: quiet });
    // The lock is taken before anything is loaded, so the second call meets it.
    const second = runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir, config: TINY_RECIPE, resume: true, output: quiet });
    await assert.rejects(second, (e) => e instanceof BusyError && e.exitCode === EXIT.busy && /in use by another splint process/.test(e.message));
    const result = await first;
    assert.deepEqual(result.checkpoints.map((c) => c.split("/").pop()), ["checkpoint-2", "checkpoint-4", "checkpoint-6"]);
    assert.ok(!existsSync(join(outDir, LOCK_FILE)), "released when the run ends");
  });
});

test("defect 3: a lock left by a process that died is taken over", async () => {
  await withTempDir("splint-faults-train-", async (root) => {
    const outDir = join(root, "run");
    const dead = spawn(process.execPath, ["-e", ""]);
    const pid = await new Promise<number>((resolve) => dead.on("exit", () => resolve(dead.pid!)));
    await mkdir(outDir);
    await writeFile(join(outDir, LOCK_FILE), JSON.stringify({ pid, host: (await import("node:os")).hostname(), since: "earlier", command: "splint train" }));
    const logs: string[] = [];
    const result = await runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir, config: { ...TINY_RECIPE, max_steps: 1 }, output: { ...quiet, log: (m) => logs.push(m) } });
    assert.equal(result.steps, 1);
    assert.ok(logs.some((l) => l.includes(`took over the lock of a process that is gone (pid ${pid}`)), logs.join("\n"));
  });
});

test("defect 4: a run stopped before its first checkpoint can be started again, with or without --resume", async () => {
  await withTempDir("splint-faults-train-", async (root) => {
    const outDir = join(root, "run");
    const controller = new AbortController();
    controller.abort("SIGTERM");
    await assert.rejects(
      runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir, config: TINY_RECIPE, output: quiet, signal: controller.signal }),
      (e) => e instanceof InterruptedError && e.exitCode === EXIT.sigterm && /nothing to resume/.test(e.message),
    );
    assert.ok(existsSync(join(outDir, "config.resolved.json")), "the state a kill leaves: settings written, no checkpoint");
    assert.ok(!existsSync(join(outDir, "checkpoints")));
    const resumed = await runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir, resume: true, output: quiet });
    assert.equal(resumed.steps, 6);
    assert.equal(resumed.resumedFrom, null);
    // And a plain rerun of such a folder (the other command a user would try) is accepted too.
    const other = join(root, "other");
    const again = new AbortController();
    again.abort();
    await assert.rejects(runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: other, config: TINY_RECIPE, output: quiet, signal: again.signal }));
    const rerun = await runTraining({ modelDir: TINY_MODEL, dataset: tinyDataset(), outDir: other, config: TINY_RECIPE, output: quiet });
    assert.ok((await readFile(join(rerun.adapterDir, "adapter_model.safetensors"))).equals(await readFile(join(resumed.adapterDir, "adapter_model.safetensors"))), "same result as the uninterrupted run");
  });
});

test("defect 4: Ctrl-C during `splint train` saves a checkpoint, says how to resume, exits 130; --resume then finishes", async () => {
  await withTempDir("splint-faults-train-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const out = join(root, "run");
    // Checkpoints only at epoch ends (6 steps): a stop in between has none of its own to fall back on.
    const flags = ["--r", "4", "--per-device-train-batch-size", "1", "--gradient-accumulation-steps", "1", "--num-train-epochs", "5", "--logging-steps", "1", "--save-strategy", "epoch", "--bf16", "false", "--device", "cpu"];
    const child = spawn(process.execPath, [SPLINT_BIN, "train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, ...flags], { env: { ...process.env, SPLINT_NO_PROGRESS: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
    const log = join(out, "train_log.jsonl");
    // Wait for the second logged step, then interrupt mid-epoch.
    while (child.exitCode === null && !(existsSync(log) && (await readFile(log, "utf8")).split("\n").filter(Boolean).length >= 2)) await new Promise((r) => setTimeout(r, 10));
    child.kill("SIGINT");
    const code = await exited;
    assert.equal(code, EXIT.sigint, stderr);
    assert.match(stderr, /stopping at the next safe point/);
    assert.match(stderr, /training stopped at step \d+ \(interrupted\)/);
    assert.match(stderr, /--resume/);
    const saved = readdirSync(join(out, "checkpoints")).filter((n) => /^checkpoint-\d+$/.test(n));
    assert.equal(saved.length, 1, `one checkpoint, of the last finished step: ${saved.join(", ")}`);
    assert.ok(Number(saved[0]!.split("-")[1]) >= 2);
    assert.ok(!existsSync(join(out, LOCK_FILE)), "the lock is released on the way out");
    const resumed = await runSplintAsync(["train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, "--resume", "--device", "cpu", "--json"]);
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.equal((JSON.parse(resumed.stdout) as { steps: number }).steps, 30);
  });
});

/** The nan.test.ts source: epoch 2 onwards brings images whose pixels are NaN. */
async function nanFromSecondEpoch(): Promise<MicroBatchSource> {
  const good = await fixtureBatches("labels");
  return {
    length: good.length,
    async get(epoch, index) {
      const batch = await good.get(epoch, index);
      if (epoch < 1) return batch;
      const images = { ...batch.inputs.images!, pixelValues: batch.inputs.images!.pixelValues.map(() => Number.NaN) };
      return { ...batch, inputs: { ...batch.inputs, images } };
    },
  };
}

test("defect 5: --on-nan skip-step drops the non-finite steps' updates, logs them, and leaves the adapter finite", async () => {
  await withTempDir("splint-faults-train-", async (runDir) => {
    const backend = createCpuBackend();
    const model = await loadMistral3(join(FIXTURES, "models", "tiny"), backend);
    try {
      const adapter = await loadAdapter(join(FIXTURES, "train", "tiny", "initial_adapter"), model.linears, backend);
      const config = resolveConfig(TUTORIAL_DEFAULTS, { r: 4, lora_alpha: 8, lora_dropout: 0, gradient_accumulation_steps: 2, max_steps: 4, save_strategy: "steps", save_steps: 1, on_nan: "skip-step" }, "test");
      const logs: string[] = [];
      const result = await trainLoop({ backend, model, adapter, config, source: await nanFromSecondEpoch(), runDir, output: { ...quiet, log: (m) => logs.push(m) } });
      assert.deepEqual(result.skippedSteps, [3, 4]);
      assert.ok(logs.some((l) => /the training loss is NaN at step 3 \(epoch 2\); this step's update is skipped/.test(l)));
      const a = await readFile(join(runDir, "checkpoints", "checkpoint-2", "adapter_model.safetensors"));
      const b = await readFile(join(runDir, "checkpoints", "checkpoint-4", "adapter_model.safetensors"));
      assert.ok(a.equals(b), "skipped steps change nothing");
      const logged = (await readFile(join(runDir, "train_log.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l) as { step: number; skipped?: boolean });
      assert.deepEqual(logged.filter((l) => l.skipped).map((l) => l.step), [3, 4]);
    } finally {
      freeMistral3(model);
    }
  });
});

test("defect 5: a non-finite gradient is reported with the parameter's PEFT name and index", () => {
  const backend = createCpuBackend();
  const params = [
    { name: "base_model.model.x.q_proj.lora_A.weight", value: backend.zeros([2, 2], "f32") },
    { name: "base_model.model.x.q_proj.lora_B.weight", value: backend.zeros([2, 2], "f32") },
  ];
  const grads = [backend.upload(Float32Array.of(1, 2, 3, 4), [2, 2], "f32"), backend.upload(Float32Array.of(0, Number.POSITIVE_INFINITY, 0, 0), [2, 2], "f32")];
  assert.equal(firstNonFiniteGradient(backend, params, grads), "base_model.model.x.q_proj.lora_B.weight[1] = Infinity");
});
