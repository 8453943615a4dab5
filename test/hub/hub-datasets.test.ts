import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, test } from "node:test";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { synthesizeDatasetDict } from "../../src/data/synth.ts";
import { REPO_ROOT } from "../helpers/cli.ts";
import { hubCli } from "./hub-cli.ts";
import { MockHub } from "./mock-hub.ts";

/**
 * --dataset takes a Hub dataset id as --model takes a model id: the Parquet layout `datasets`'
 * push_to_hub writes, served by the local Hub, gives the same results as the folder it came from.
 */

const MODEL_DIR = join(REPO_ROOT, "test/fixtures/models/tiny");
const IMAGE = join(REPO_ROOT, "test/fixtures/images/gray_70x50.png");

let hub: MockHub;
let dir: string;
let local: string;

before(async () => {
  hub = new MockHub();
  await hub.start();
  dir = await mkdtemp(join(tmpdir(), "splint-hub-datasets-"));
  local = join(dir, "bones-local");
  await saveDatasetDict(local, await synthesizeDatasetDict({ perClass: 1, testPerClass: 1, seed: 8, size: 32 }), "parquet");
  const files: Record<string, { content: Buffer; lfs: boolean }> = {};
  for (const entry of await readdir(local, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = relative(local, join(entry.parentPath, entry.name));
    files[path] = { content: await readFile(join(local, path)), lfs: path.endsWith(".parquet") };
  }
  hub.addRepo("datasets:acme/bones", files).refs = new Set(["v1"]);
});
after(async () => {
  await hub.stop();
  await rm(dir, { recursive: true, force: true });
});

const { splint, ok } = hubCli(() => hub, () => dir);

const without = (json: string, keys: readonly string[]): unknown => JSON.parse(json, (key, value: unknown) => (keys.includes(key) ? undefined : value));

test("data stats, eval, predict and train read a Hub dataset id; the report finds its images in the cache", async () => {
  const stats = await ok("data", "stats", "acme/bones", "--out", "stats-hub", "--json");
  assert.deepEqual(without(stats, ["dataset", "out", "files", "seconds"]), without(await ok("data", "stats", local, "--out", "stats-local", "--json"), ["dataset", "out", "files", "seconds"]));
  const commit = hub.repos.get("datasets:acme/bones")!.commit;
  assert.ok((await readdir(join(dir, "cache", "datasets--acme--bones", "snapshots"))).includes(commit), "cached as huggingface_hub caches datasets");

  const evalArgs = ["--model", MODEL_DIR, "--mode", "score", "--json"];
  const remote = await ok("eval", ...evalArgs, "--dataset", "acme/bones@v1", "--out", "run/eval-after");
  const fromFolder = await ok("eval", ...evalArgs, "--dataset", local, "--out", "e-local");
  const volatile = ["dataset", "out", "seconds", "imagesPerSecond"];
  assert.deepEqual(without(remote, volatile), without(fromFolder, volatile));
  assert.equal((JSON.parse(remote) as { dataset: string }).dataset, "acme/bones@v1");

  const predicted = JSON.parse(await ok("predict", "--model", MODEL_DIR, "--dataset", "acme/bones", IMAGE, "--json")) as { probabilities: Record<string, number> }[];
  const classNames = (JSON.parse(remote) as { classNames: string[] }).classNames;
  assert.deepEqual(Object.keys(predicted[0]!.probabilities), classNames);

  const trained = JSON.parse(await ok("train", "--model", MODEL_DIR, "--dataset", "acme/bones", "--out", "run/train", "--max-steps", "1", "--r", "2", "--bf16", "false", "--device", "cpu", "--json")) as { steps: number };
  assert.equal(trained.steps, 1);

  const report = JSON.parse(await ok("report", "run", "--json")) as { file: string; sections: string[] };
  assert.ok(report.sections.includes("errors"));
  const html = await readFile(join(dir, report.file), "utf8");
  assert.doesNotMatch(html, /image not found/, "the gallery reads the Hub dataset from the cache");
  assert.match(html, /<td>dataset<\/td><td>acme\/bones@v1<\/td>/);
});

test("a dataset value that is neither a folder nor a Hub dataset says both", async () => {
  const run = await splint("eval", "--model", MODEL_DIR, "--dataset", "data/typo", "--out", "x");
  assert.equal(run.code, 2);
  assert.match(run.stderr, /error: data\/typo: no such folder, and as a Hub dataset id: repository not found/);
});
