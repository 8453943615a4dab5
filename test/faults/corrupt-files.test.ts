// Truncated and corrupt files of every format splint reads. Each case runs the command a user
// would, and asserts: a non-zero status that is not 70 (no internal error), an "error:" line that
// names the file at fault, no stack trace, and the corrupt file itself left as it was.
import assert from "node:assert/strict";
import { cp, readdir, readFile, truncate, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { test } from "node:test";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { EXIT } from "../../src/util/errors.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { TINY_MODEL, tinyDataset } from "../train/tiny-dataset.ts";
import { runSplintAsync } from "./helpers/cli.ts";

const F = join(import.meta.dirname, "..", "fixtures");
const IMAGE = join(F, "images", "gray_70x50.png");

interface Case {
  readonly name: string;
  /** Breaks one file under `dir` (a copy of the model, adapter and dataset) and returns its path. */
  readonly corrupt: (dir: string) => Promise<string>;
  readonly args: (dir: string) => string[];
}

const halve = async (file: string) => {
  const { size } = await import("node:fs/promises").then((fs) => fs.stat(file));
  await truncate(file, Math.floor(size / 2));
  return file;
};
const overwrite = (text: string) => async (file: string) => {
  await writeFile(file, text);
  return file;
};
const predict = (dir: string, extra: string[] = []) => ["predict", "--model", join(dir, "model"), "--classes", "a,b", ...extra, IMAGE];

const CASES: Case[] = [
  { name: "model.safetensors truncated", corrupt: (d) => halve(join(d, "model", "model.safetensors")), args: (d) => predict(d) },
  { name: "model.safetensors header garbage", corrupt: (d) => overwrite("\u00ff".repeat(64))(join(d, "model", "model.safetensors")), args: (d) => predict(d) },
  { name: "config.json not JSON", corrupt: (d) => overwrite("{ not json")(join(d, "model", "config.json")), args: (d) => predict(d) },
  { name: "config.json wrong type", corrupt: async (d) => {
    const file = join(d, "model", "config.json");
    const config = JSON.parse(await readFile(file, "utf8")) as { text_config: Record<string, unknown> };
    config.text_config.hidden_size = "wide";
    return overwrite(JSON.stringify(config))(file);
  }, args: (d) => predict(d) },
  { name: "tokenizer.json truncated", corrupt: (d) => halve(join(d, "model", "tokenizer.json")), args: (d) => predict(d) },
  { name: "processor_config.json not JSON", corrupt: (d) => overwrite("[1,")(join(d, "model", "processor_config.json")), args: (d) => predict(d) },
  { name: "generation_config.json not JSON", corrupt: (d) => overwrite("nope")(join(d, "model", "generation_config.json")), args: (d) => predict(d) },
  { name: "chat_template.jinja does not parse", corrupt: (d) => overwrite("{% for %}")(join(d, "model", "chat_template.jinja")), args: (d) => predict(d, ["--template", "model"]) },
  { name: "adapter_model.safetensors truncated", corrupt: (d) => halve(join(d, "adapter", "adapter_model.safetensors")), args: (d) => predict(d, ["--adapter", join(d, "adapter")]) },
  { name: "adapter_config.json not JSON", corrupt: (d) => overwrite("{")(join(d, "adapter", "adapter_config.json")), args: (d) => predict(d, ["--adapter", join(d, "adapter")]) },
  { name: "image truncated", corrupt: async (d) => {
    const file = join(d, "broken.png");
    await writeFile(file, (await readFile(IMAGE)).subarray(0, 60));
    return file;
  }, args: (d) => ["predict", "--model", join(d, "model"), "--classes", "a,b", join(d, "broken.png")] },
  { name: "JPEG that is not one", corrupt: (d) => overwrite("\u00ff\u00d8\u00ff garbage")(join(d, "fake.jpg")), args: (d) => ["predict", "--model", join(d, "model"), "--classes", "a,b", join(d, "fake.jpg")] },
  { name: "Arrow dataset file truncated", corrupt: async (d) => {
    const split = join(d, "ds-arrow", "train");
    const arrow = (await readdir(split)).find((n) => n.endsWith(".arrow"))!;
    return halve(join(split, arrow));
  }, args: (d) => ["data", "stats", join(d, "ds-arrow"), "--out", join(d, "stats")] },
  { name: "Parquet dataset file truncated", corrupt: async (d) => {
    const files = await readdir(join(d, "ds-parquet"), { recursive: true });
    const parquet = files.find((n) => n.endsWith(".parquet"))!;
    return halve(join(d, "ds-parquet", parquet));
  }, args: (d) => ["data", "stats", join(d, "ds-parquet"), "--out", join(d, "stats")] },
  { name: "dataset_dict.json not JSON", corrupt: (d) => overwrite("{{")(join(d, "ds-arrow", "dataset_dict.json")), args: (d) => ["data", "stats", join(d, "ds-arrow"), "--out", join(d, "stats")] },
  { name: "train --config YAML broken", corrupt: (d) => overwrite("r: [1, 2\nlearning_rate: {")(join(d, "train.yaml")), args: (d) => ["train", "--model", join(d, "model"), "--dataset", join(d, "ds-arrow"), "--out", join(d, "run"), "--config", join(d, "train.yaml")] },
  { name: "recipe YAML broken", corrupt: (d) => overwrite("data: [\n")(join(d, "recipe.yaml")), args: (d) => ["run", join(d, "recipe.yaml")] },
  { name: "trainer_state.json of a checkpoint broken", corrupt: async (d) => {
    const file = join(d, "run-ckpt", "checkpoints", "checkpoint-1", "trainer_state.json");
    return overwrite("{")(file);
  }, args: (d) => ["train", "--model", join(d, "model"), "--dataset", join(d, "ds-arrow"), "--out", join(d, "run-ckpt"), "--resume", "--device", "cpu"] },
];

test("corrupt and truncated inputs: a clear error naming the file, never exit 70 or a stack trace", async (t) => {
  await withTempDir("splint-faults-corrupt-", async (root) => {
    // One pristine set, copied per case.
    const pristine = join(root, "pristine");
    await cp(TINY_MODEL, join(pristine, "model"), { recursive: true });
    await cp(join(F, "lora", "tiny", "adapter"), join(pristine, "adapter"), { recursive: true });
    await saveDatasetDict(join(pristine, "ds-arrow"), tinyDataset(), "arrow");
    await saveDatasetDict(join(pristine, "ds-parquet"), tinyDataset(), "parquet");
    const trained = await runSplintAsync(["train", "--model", join(pristine, "model"), "--dataset", join(pristine, "ds-arrow"), "--out", join(pristine, "run-ckpt"), "--max-steps", "1", "--r", "2", "--save-strategy", "steps", "--save-steps", "1", "--device", "cpu", "--bf16", "false"]);
    assert.equal(trained.status, 0, trained.stderr);
    for (const c of CASES) {
      await t.test(c.name, async () => {
        const dir = join(root, c.name.replace(/\W+/g, "-"));
        await cp(pristine, dir, { recursive: true });
        const file = await c.corrupt(dir);
        const before = await readFile(file);
        const run = await runSplintAsync(c.args(dir));
        assert.notEqual(run.status, 0, `${c.name}: must fail\n${run.stderr}`);
        assert.notEqual(run.status, EXIT.internal, `${c.name}: an internal error\n${run.stderr}`);
        assert.match(run.stderr, /^error: /m, run.stderr);
        assert.ok(run.stderr.includes(basename(file)), `${c.name}: the message names ${basename(file)}\n${run.stderr}`);
        assert.doesNotMatch(run.stderr, /\n\s+at [\w.<>]+ \(/, "no stack trace");
        assert.ok((await readFile(file)).equals(before), "the bad file is not changed");
      });
    }
  });
});
