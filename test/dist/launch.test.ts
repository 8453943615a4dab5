import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { withoutGpusFlag } from "../../src/cli/commands/train.ts";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { launchLocal, resolveGpus } from "../../src/dist/launch.ts";
import { runTraining } from "../../src/train/run.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { quiet } from "../train/quiet-output.ts";
import { TINY_MODEL, TINY_RECIPE, tinyDataset } from "../train/tiny-dataset.ts";
import { adapterDifference } from "./adapters.ts";

const run = promisify(execFile);
const SPLINT = join(import.meta.dirname, "..", "..", "bin", "splint.js");
const FLAGS = ["--r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--per-device-train-batch-size", "1", "--gradient-accumulation-steps", "2", "--num-train-epochs", "2", "--learning-rate", "0.005", "--warmup-steps", "1", "--weight-decay", "0.01", "--save-strategy", "steps", "--save-steps", "2", "--logging-steps", "1", "--bf16", "false", "--device", "cpu"];

test("splint train --gpus 2 --device cpu: two processes train the one-process adapter; rank 0 alone reports", async () => {
  await withTempDir("splint-launch-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const single = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "single"), config: TINY_RECIPE, output: quiet });
    const out = join(root, "dp");
    const { stdout, stderr } = await run(process.execPath, [SPLINT, "train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, "--gpus", "2", "--json", ...FLAGS], { env: { ...process.env, SPLINT_NO_PROGRESS: "1" } });
    const result = JSON.parse(stdout) as { steps: number; adapterDir: string };
    assert.equal(result.steps, single.steps);
    assert.match(stderr, /data parallel: rank 0 of 2/);
    assert.doesNotMatch(stderr, /\[rank 1\]/, "rank 1 says nothing when all goes well");
    const worst = await adapterDifference(single.adapterDir, result.adapterDir);
    assert.ok(worst < 1e-5, `adapter max |Δ| ${worst}`);
    assert.deepEqual(await readdir(join(out, "checkpoints")), await readdir(join(root, "single", "checkpoints")));
  });
});

test("WORLD_SIZE=1 (the one-GPU check of the communicator path) trains the plain run's adapter", async () => {
  await withTempDir("splint-launch-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const single = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "single"), config: TINY_RECIPE, output: quiet });
    const out = join(root, "ws1");
    const { stderr } = await run(process.execPath, [SPLINT, "train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, ...FLAGS], { env: { ...process.env, SPLINT_NO_PROGRESS: "1", WORLD_SIZE: "1", RANK: "0" } });
    assert.match(stderr, /data parallel: rank 0 of 1/);
    const worst = await adapterDifference(single.adapterDir, join(out, "adapter"));
    assert.ok(worst < 1e-6, `adapter max |Δ| ${worst}`);
  });
});

test("a rank that dies stops the others, and the error names it", async () => {
  const started = Date.now();
  const lines: string[] = [];
  await assert.rejects(
    launchLocal({
      worldSize: 3,
      command: [process.execPath, "--import", "tsx", join(import.meta.dirname, "rank-script.ts")],
      output: { json: false, log: (l) => lines.push(l), result() {}, progress: () => ({ update() {}, increment() {}, stop() {} }) },
      env: { FAIL_RANK: "1", SPLINT_DIST_TIMEOUT_S: "120" },
      killAfterMs: 2000,
    }),
    /rank 1 of 3 failed \(exit code 3\); the other ranks were stopped/,
  );
  // Far below the 120 s collective deadline: the store saw rank 1 go and the launcher stopped the rest.
  assert.ok(Date.now() - started < 60_000, `took ${Date.now() - started} ms`);
  assert.ok(lines.includes("[rank 1] sum 6"), lines.join("\n"));
});

/** The child of `parent` whose environment has RANK=rank (Linux /proc), or null. */
async function rankProcess(parent: number, rank: number): Promise<number | null> {
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) !== parent) continue;
      if ((await readFile(`/proc/${entry}/environ`, "utf8")).split("\0").includes(`RANK=${rank}`)) return Number(entry);
    } catch {
      // the process ended meanwhile
    }
  }
  return null;
}

test("splint train --gpus 2: a rank killed mid-run ends the whole run at once, naming it", { skip: process.platform !== "linux" }, async () => {
  await withTempDir("splint-launch-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const out = join(root, "dp");
    const long = FLAGS.map((f, i) => (FLAGS[i - 1] === "--num-train-epochs" ? "100" : f));
    const parent = spawn(process.execPath, [SPLINT, "train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, "--gpus", "2", ...long], { env: { ...process.env, SPLINT_NO_PROGRESS: "1", SPLINT_DIST_TIMEOUT_S: "300" }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    parent.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => parent.on("exit", (code) => resolve(code)));
    // Wait until training is under way (two steps logged), then kill rank 1 as the OOM killer would.
    const log = join(out, "train_log.jsonl");
    for (let i = 0; i < 600; i++) {
      const lines = await readFile(log, "utf8").then((t) => t.trim().split("\n").filter(Boolean).length, () => 0);
      if (lines >= 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const victim = await rankProcess(parent.pid!, 1);
    const lead = await rankProcess(parent.pid!, 0);
    assert.ok(victim && lead, "both ranks are running");
    const killedAt = Date.now();
    process.kill(victim, "SIGKILL");
    const code = await exited;
    assert.notEqual(code, 0);
    assert.ok(Date.now() - killedAt < 30_000, `the run took ${Date.now() - killedAt} ms to end (its collective deadline is 300 s)`);
    assert.match(stderr, /rank 1 of 2 failed \(killed by SIGKILL\); the other ranks were stopped/);
    // The launcher waits for every rank before it exits: rank 0 is gone, not orphaned.
    assert.equal(await readFile(`/proc/${lead}/stat`, "utf8").then(() => "alive", () => "gone"), "gone");
  });
});

test("--gpus: counts, all, CUDA_VISIBLE_DEVICES, and clear errors; the ranks' command line drops it", () => {
  assert.deepEqual(resolveGpus("2", {}, () => 4), ["0", "1"]);
  assert.deepEqual(resolveGpus("all", {}, () => 3), ["0", "1", "2"]);
  assert.deepEqual(resolveGpus("all", { CUDA_VISIBLE_DEVICES: "3,5" }, () => 8), ["3", "5"]);
  assert.throws(() => resolveGpus("4", { CUDA_VISIBLE_DEVICES: "3,5" }), /--gpus: asks for 4 GPUs, but 2 are visible \(CUDA_VISIBLE_DEVICES\)/);
  assert.throws(() => resolveGpus("all", {}, () => 0), /no GPU is visible/);
  assert.throws(() => resolveGpus("two", {}, () => 2), /--gpus: expects a count/);
  assert.deepEqual(withoutGpusFlag(["train", "--gpus", "2", "--out", "x", "--gpus=all"]), ["train", "--out", "x"]);
});
