import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { runTraining } from "../../src/train/run.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { MockHub } from "../hub/mock-hub.ts";
import { quiet } from "./quiet-output.ts";
import { TINY_MODEL, tinyDataset } from "./tiny-dataset.ts";

const run = promisify(execFile);
const SPLINT = join(import.meta.dirname, "..", "..", "bin", "splint.js");

/** 6 examples, one per micro-batch and step: 6 steps per epoch, 5 epochs, a checkpoint every 2 steps. */
const FLAGS = ["--r", "4", "--lora-alpha", "8", "--per-device-train-batch-size", "1", "--gradient-accumulation-steps", "1", "--num-train-epochs", "5", "--learning-rate", "0.005", "--warmup-steps", "2", "--save-strategy", "steps", "--save-steps", "2", "--bf16", "false", "--device", "cpu"];
const RECIPE = { r: 4, lora_alpha: 8, per_device_train_batch_size: 1, gradient_accumulation_steps: 1, num_train_epochs: 5, learning_rate: 0.005, warmup_steps: 2, save_strategy: "steps" as const, save_steps: 2, bf16: false };

test("splint train killed (SIGKILL) after a mid-epoch checkpoint, then --resume, gives the uninterrupted run's adapter bytes", async () => {
  await withTempDir("splint-train-cli-", async (root) => {
    const dataset = join(root, "data");
    await saveDatasetDict(dataset, tinyDataset(), "arrow");
    const straight = await runTraining({ modelDir: TINY_MODEL, dataset, outDir: join(root, "straight"), config: RECIPE, output: quiet });
    assert.equal(straight.steps, 30);

    const out = join(root, "killed");
    const child = spawn(process.execPath, [SPLINT, "train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, ...FLAGS], { stdio: "ignore", env: { ...process.env, SPLINT_NO_PROGRESS: "1" } });
    const exited = new Promise((done) => child.on("exit", done));
    // Step 4 is mid-epoch (6 steps per epoch).
    while (!existsSync(join(out, "checkpoints", "checkpoint-4")) && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
    child.kill("SIGKILL");
    await exited;
    assert.ok(!existsSync(join(out, "adapter")), "the run was killed before it finished");

    const { stdout } = await run(process.execPath, [SPLINT, "train", "--model", TINY_MODEL, "--dataset", dataset, "--out", out, "--resume", "--device", "cpu", "--json"], { env: { ...process.env, SPLINT_NO_PROGRESS: "1" } });
    const result = JSON.parse(stdout) as { steps: number; resumedFrom: string; adapterDir: string };
    assert.equal(result.steps, 30);
    assert.match(result.resumedFrom, /checkpoint-\d+$/);
    const a = await readFile(join(straight.adapterDir, "adapter_model.safetensors"));
    const b = await readFile(join(result.adapterDir, "adapter_model.safetensors"));
    assert.ok(a.equals(b), "same final adapter bytes");
    const resolved = JSON.parse(await readFile(join(out, "config.resolved.json"), "utf8")) as Record<string, unknown>;
    assert.equal(resolved.learning_rate, 0.005);
    assert.equal(resolved.lora_alpha, 8);
  });
});

test("bad settings fail with the file or flag named, before any model is loaded", async () => {
  await withTempDir("splint-train-cli-", async (root) => {
    const config = join(root, "recipe.yaml");
    await writeFile(config, "r: 4\nlearning_rate: fast\n");
    const fail = async (args: string[]) => {
      const error = await run(process.execPath, [SPLINT, "train", "--model", join(root, "none"), "--dataset", join(root, "none"), "--out", join(root, "run"), ...args]).then(
        () => assert.fail("expected a failure"),
        (e: { code: number; stderr: string }) => e,
      );
      assert.equal(error.code, 2);
      return error.stderr;
    };
    assert.match(await fail(["--config", config]), /recipe\.yaml: "learning_rate" must be a number \(got "fast"\)/);
    await writeFile(config, "r: 4\nlearning_rat: 0.1\n");
    assert.match(await fail(["--config", config]), /recipe\.yaml: unknown setting "learning_rat"\nhint: did you mean "learning_rate"\?/);
    await writeFile(config, "r: 4\noutput_dir: ministral-3-bone-fracture\n");
    assert.match(await fail(["--config", config]), /recipe\.yaml: "output_dir" is not a setting in splint\nhint: instead: the run folder is `splint train --out DIR`/);
    // A TRL alias in the file and splint's flag for the same setting: the flag wins (the run gets
    // as far as the missing dataset); both names in one file is a conflict.
    await writeFile(config, "max_length: 64\n");
    assert.match(await fail(["--config", config, "--max-seq-len", "128"]), /none: does not exist/);
    await writeFile(config, "max_length: 64\nmax_seq_len: 32\n");
    assert.match(await fail(["--config", config]), /recipe\.yaml: "max_seq_len" and "max_length" both set max_seq_len/);
    assert.match(await fail(["--lora-dropout", "1.5"]), /command-line flags: "lora_dropout" must be in \[0, 1\)/);
    assert.match(await fail(["--bf16", "yes"]), /--bf16: expects true or false/);
    assert.match(await fail(["--push-to-hub", "not a repo"]), /not a repo: not a Hub repo id/);
    assert.match(await fail(["--optim", "sgd"]), /command-line flags: "optim" must be one of adamw_torch, adamw_8bit \(got "sgd"\)/);
  });
});

test("splint train --push-to-hub uploads the final adapter (HF_TOKEN, to a local server speaking the Hub's API)", async () => {
  await withTempDir("splint-train-cli-", async (root) => {
    const hub = new MockHub();
    await hub.start();
    try {
      const dataset = join(root, "data");
      await saveDatasetDict(dataset, tinyDataset(), "arrow");
      const env = { ...process.env, SPLINT_NO_PROGRESS: "1", HF_TOKEN: hub.writeToken, HF_ENDPOINT: hub.endpoint };
      const args = [SPLINT, "train", "--model", TINY_MODEL, "--dataset", dataset, "--out", join(root, "run"), "--max-steps", "1", "--r", "2", "--device", "cpu", "--push-to-hub", "me/bones-lora", "--json"];
      const { stdout } = await run(process.execPath, args, { env });
      const result = JSON.parse(stdout) as { adapterDir: string; pushed: { repo: string; files: string[] } };
      // The adapter, the prompt it was trained with, and its model card (the Hub shows README.md).
      assert.deepEqual(result.pushed.files, ["README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "training_prompt.json"]);
      const repo = hub.repos.get("me/bones-lora")!;
      for (const name of result.pushed.files) assert.deepEqual(repo.files.get(name)?.content, await readFile(join(result.adapterDir, name)), name);
    } finally {
      await hub.stop();
    }
  });
});
