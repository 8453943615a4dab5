// Kills (SIGKILL: no handler runs) at several points of import and training. After each, the same
// command (with --resume for training) must succeed and give what an uninterrupted run gives; the
// stale lock of the killed process must not block it.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { loadDatasetDict, saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { runTraining } from "../../src/train/run.ts";
import { pngBytes, writeTree } from "../data/import-fixtures.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { quiet } from "../train/quiet-output.ts";
import { TINY_MODEL, tinyDataset } from "../train/tiny-dataset.ts";
import { runSplintAsync, SPLINT_BIN } from "./helpers/cli.ts";

/** Starts splint, waits until `when()` holds (or the process ends), then SIGKILLs it. */
async function killWhen(args: string[], when: () => boolean): Promise<void> {
  const child = spawn(process.execPath, [SPLINT_BIN, ...args], { env: { ...process.env, SPLINT_NO_PROGRESS: "1" }, stdio: "ignore" });
  const exited = new Promise((resolve) => child.on("close", resolve));
  while (child.exitCode === null && !when()) await new Promise((r) => setTimeout(r, 2));
  child.kill("SIGKILL");
  await exited;
}

test("import killed at several points, then run again: the same dataset as an uninterrupted import", async () => {
  await withTempDir("splint-faults-kill-", async (dir) => {
    const files: Record<string, Uint8Array> = {};
    let seed = 1;
    for (const split of ["train", "test"]) for (const c of ["A", "B", "C"]) for (let i = 0; i < 8; i++) files[`src/${split}/${c}/${i}.png`] = await pngBytes(seed++, 48, 40);
    await writeTree(dir, files);
    const reference = await runSplintAsync(["data", "import", "--dir", join(dir, "src"), "--out", join(dir, "reference")]);
    assert.equal(reference.status, 0, reference.stderr);
    const want = await loadDatasetDict(join(dir, "reference"));
    for (const delayMs of [30, 150, 400]) {
      const out = join(dir, `ds-${delayMs}`);
      const started = Date.now();
      await killWhen(["data", "import", "--dir", join(dir, "src"), "--out", out], () => Date.now() - started > delayMs);
      const again = await runSplintAsync(["data", "import", "--dir", join(dir, "src"), "--out", out]);
      assert.equal(again.status, 0, `after a kill at ${delayMs} ms: ${again.stderr}`);
      const got = await loadDatasetDict(out);
      assert.deepEqual(got.classNames, want.classNames);
      for (const [split, rows] of want.splits) {
        assert.deepEqual(got.splits.get(split)?.map((r) => [r.label, Buffer.from(r.image.bytes).toString("base64")]), rows.map((r) => [r.label, Buffer.from(r.image.bytes).toString("base64")]), `${split} after a kill at ${delayMs} ms`);
      }
    }
  });
});

test("training killed before its first checkpoint and while writing one: --resume ends with the uninterrupted adapter bytes", async () => {
  await withTempDir("splint-faults-kill-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const recipe = { r: 4, lora_alpha: 8, per_device_train_batch_size: 1, gradient_accumulation_steps: 1, max_steps: 12, learning_rate: 0.005, warmup_steps: 2, save_strategy: "steps" as const, save_steps: 4, bf16: false };
    const flags = ["--r", "4", "--lora-alpha", "8", "--per-device-train-batch-size", "1", "--gradient-accumulation-steps", "1", "--max-steps", "12", "--learning-rate", "0.005", "--warmup-steps", "2", "--save-strategy", "steps", "--save-steps", "4", "--bf16", "false", "--device", "cpu"];
    const straight = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "straight"), config: recipe, output: quiet });
    const want = await readFile(join(straight.adapterDir, "adapter_model.safetensors"));
    const points: Record<string, (out: string) => boolean> = {
      "before the first checkpoint": (out) => existsSync(join(out, "config.resolved.json")),
      "while a checkpoint is written": (out) => existsSync(join(out, "checkpoints")) && readdirSync(join(out, "checkpoints")).some((n) => n.endsWith(".tmp")),
    };
    for (const [name, when] of Object.entries(points)) {
      const out = join(root, name.replace(/\W+/g, "-"));
      await killWhen(["train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, ...flags], () => when(out));
      const resumed = await runSplintAsync(["train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, "--resume", "--device", "cpu", "--json"]);
      assert.equal(resumed.status, 0, `${name}: ${resumed.stderr}`);
      assert.ok((await readFile(join(out, "adapter", "adapter_model.safetensors"))).equals(want), `${name}: same final adapter bytes`);
    }
  });
});
