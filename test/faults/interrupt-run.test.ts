// Defect 4 for `splint run` / `splint demo`: Ctrl-C used to kill the recipe at once (training's
// progress since its last checkpoint lost). Now the first Ctrl-C stops at a safe point (training
// saves a checkpoint), exits 130 and says how to continue; running the recipe again resumes.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { EXIT } from "../../src/util/errors.ts";
import { LOCK_FILE } from "../../src/util/lock.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { runSplintAsync, SPLINT_BIN } from "./helpers/cli.ts";

const RECIPE = `
data:
  synth: { per_class: 2, test_per_class: 1, size: 32, seed: 0 }
model:
  init: { preset: tiny, seed: 0 }
stats: { samples: 2, seed: 1 }
audit: false
eval: { split: test, mode: score, batch: 10, limit: 10 }
train:
  r: 2
  lora_alpha: 4
  lora_dropout: 0.0
  max_steps: 40
  per_device_train_batch_size: 2
  gradient_accumulation_steps: 1
  learning_rate: 0.001
  warmup_steps: 1
  logging_steps: 1
  save_strategy: "no"
  bf16: false
  gradient_checkpointing: false
`;

test("Ctrl-C during `splint run`'s training step saves a checkpoint, exits 130, and the rerun resumes from it", async () => {
  await withTempDir("splint-faults-run-", async (dir) => {
    const recipe = join(dir, "recipe.yaml");
    await writeFile(recipe, RECIPE);
    const out = join(dir, "run");
    const child = spawn(process.execPath, [SPLINT_BIN, "run", recipe, "--out", out], { env: { ...process.env, SPLINT_NO_PROGRESS: "1", SPLINT_BACKEND: "cpu" }, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
    const log = join(out, "train", "train_log.jsonl");
    while (child.exitCode === null && !(existsSync(log) && (await readFile(log, "utf8")).split("\n").filter(Boolean).length >= 3)) await new Promise((r) => setTimeout(r, 20));
    child.kill("SIGINT");
    const code = await exited;
    assert.equal(code, EXIT.sigint, stderr);
    assert.match(stderr, /stopping at the next safe point/);
    assert.match(stderr, /hint: run the same command again: training resumes/);
    // save_strategy "no": without the stop's own checkpoint, all the steps done would be lost.
    const saved = readdirSync(join(out, "train", "checkpoints")).filter((n) => /^checkpoint-\d+$/.test(n));
    assert.equal(saved.length, 1, saved.join(", "));
    assert.ok(!existsSync(join(out, LOCK_FILE)) && !existsSync(join(out, "train", LOCK_FILE)), "locks released");
    const again = await runSplintAsync(["run", recipe, "--out", out, "--json"], { env: { SPLINT_BACKEND: "cpu" } });
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, new RegExp(`resuming training from .*${saved[0]}`));
    assert.match(again.stderr, /data: already done, skipped/);
  });
});

test("a second `splint run` on a folder in use is refused with exit 75", async () => {
  await withTempDir("splint-faults-run-", async (dir) => {
    const recipe = join(dir, "recipe.yaml");
    await writeFile(recipe, RECIPE);
    const out = join(dir, "run");
    const child = spawn(process.execPath, [SPLINT_BIN, "run", recipe, "--out", out], { env: { ...process.env, SPLINT_NO_PROGRESS: "1", SPLINT_BACKEND: "cpu" }, stdio: "ignore" });
    const exited = new Promise((resolve) => child.on("close", resolve));
    try {
      while (!existsSync(join(out, LOCK_FILE))) await new Promise((r) => setTimeout(r, 10));
      const second = await runSplintAsync(["run", recipe, "--out", out]);
      assert.equal(second.status, EXIT.busy, second.stderr);
      assert.match(second.stderr, /is in use by another splint process \(pid \d+/);
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  });
});
