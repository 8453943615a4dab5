import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { synthesizeDatasetDict } from "../../src/data/synth.ts";
import { REPO_ROOT } from "../helpers/cli.ts";
import { hubCli } from "./hub-cli.ts";
import { MockHub } from "./mock-hub.ts";

/**
 * Every command that takes --model / --adapter, given Hub ids (`owner/name[@revision]`) served by a
 * local Hub, gives what it gives with the same files as folders: proof that the id was resolved,
 * downloaded and used, not merely accepted.
 */

const MODEL_DIR = join(REPO_ROOT, "test/fixtures/models/tiny");
const ADAPTER_DIR = join(REPO_ROOT, "test/fixtures/lora/tiny/adapter");
const INPUTS = join(REPO_ROOT, "test/fixtures/forward/inputs/image1.safetensors");
const IMAGE = join(REPO_ROOT, "test/fixtures/images/gray_70x50.png");

let hub: MockHub;
let dir: string;

async function repoFiles(folder: string): Promise<Record<string, { content: Buffer; lfs: boolean }>> {
  const files: Record<string, { content: Buffer; lfs: boolean }> = {};
  for (const name of await readdir(folder)) files[name] = { content: await readFile(join(folder, name)), lfs: name.endsWith(".safetensors") };
  return files;
}

before(async () => {
  hub = new MockHub();
  await hub.start();
  hub.addRepo("acme/tiny", await repoFiles(MODEL_DIR)).refs = new Set(["v1"]);
  hub.addRepo("acme/tiny-lora", await repoFiles(ADAPTER_DIR));
  dir = await mkdtemp(join(tmpdir(), "splint-hub-ids-"));
  await saveDatasetDict(join(dir, "ds"), await synthesizeDatasetDict({ perClass: 1, testPerClass: 1, seed: 3, size: 32 }), "arrow");
});
after(async () => {
  await hub.stop();
  await rm(dir, { recursive: true, force: true });
});

const { splint, ok } = hubCli(() => hub, () => dir);

/** Drops the fields that name where the model came from or how long it took. */
function comparable(json: string): unknown {
  return JSON.parse(json, (key, value: unknown) => (["model", "adapter", "seconds", "imagesPerSecond", "tokensPerSecond", "out", "file", "image"].includes(key) ? undefined : value));
}

test("eval, predict and calibrate take Hub ids for the model and the adapter, with @revision", async () => {
  const evalArgs = ["--dataset", "ds", "--mode", "score", "--limit", "3", "--json"];
  const local = await ok("eval", "--model", MODEL_DIR, "--adapter", ADAPTER_DIR, ...evalArgs, "--out", "e1");
  const remote = await ok("eval", "--model", "acme/tiny@v1", "--adapter", "acme/tiny-lora", ...evalArgs, "--out", "e2");
  assert.deepEqual(comparable(remote), comparable(local));
  const summary = JSON.parse(remote) as { model: string; adapter: string };
  // Recorded as the id the user gave, not as a cache path.
  assert.equal(summary.model, "acme/tiny@v1");
  assert.equal(summary.adapter, "acme/tiny-lora");
  assert.ok(hub.requests("hub", "GET").some((r) => r.url.startsWith("/api/models/acme/tiny/revision/v1")), "the revision was asked for");

  const viaFlag = await ok("predict", "--model", "acme/tiny", "--revision", "v1", "--adapter", "acme/tiny-lora", IMAGE, "--json");
  const predictedLocally = await ok("predict", "--model", MODEL_DIR, "--adapter", ADAPTER_DIR, IMAGE, "--json");
  assert.deepEqual(comparable(viaFlag), comparable(predictedLocally));

  const both = await splint("predict", "--model", "acme/tiny@v1", "--revision", "main", IMAGE);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /acme\/tiny@v1: names revision v1 but --revision says main/);

  const calibrated = JSON.parse(await ok("calibrate", "--model", "acme/tiny", "--adapter", "acme/tiny-lora", "--dataset", "ds", "--split", "train", "--out", "cal.json", "--json")) as { temperature: number };
  assert.ok(calibrated.temperature > 0);
  const noOut = await splint("calibrate", "--model", "acme/tiny", "--adapter", "acme/tiny-lora", "--dataset", "ds", "--split", "train");
  assert.equal(noOut.code, 2);
  assert.match(noOut.stderr, /--out: is needed for an adapter from the Hub/);
});

test("train, merge, generate, forward, render and preprocess take Hub ids", async () => {
  const trained = JSON.parse(await ok("train", "--model", "acme/tiny", "--dataset", "ds", "--out", "run", "--max-steps", "1", "--r", "2", "--bf16", "false", "--device", "cpu", "--json")) as { steps: number; adapterDir: string };
  assert.equal(trained.steps, 1);
  const adapterConfig = JSON.parse(await readFile(join(trained.adapterDir, "adapter_config.json"), "utf8")) as { base_model_name_or_path: string };
  assert.equal(adapterConfig.base_model_name_or_path, "acme/tiny", "the adapter names its base by Hub id, as PEFT does");

  const merged = JSON.parse(await ok("merge", "--model", "acme/tiny", "--adapter", "acme/tiny-lora", "--out", "merged", "--json")) as { mergedModules: number; shards: string[] };
  const mergedLocally = JSON.parse(await ok("merge", "--model", MODEL_DIR, "--adapter", ADAPTER_DIR, "--out", "merged-local", "--json")) as { mergedModules: number; shards: string[] };
  assert.ok(merged.mergedModules > 0);
  assert.equal(merged.mergedModules, mergedLocally.mergedModules);
  assert.deepEqual(merged.shards, mergedLocally.shards);
  for (const shard of merged.shards) assert.ok((await readFile(join(dir, "merged", shard))).equals(await readFile(join(dir, "merged-local", shard))), shard);

  const gen = ["--prompt", "What is it?", "--template", "short", "--max-new-tokens", "4", "--json"];
  assert.deepEqual(comparable(await ok("generate", "--model", "acme/tiny", "--adapter", "acme/tiny-lora", ...gen)), comparable(await ok("generate", "--model", MODEL_DIR, "--adapter", ADAPTER_DIR, ...gen)));

  await ok("forward", "--model", "acme/tiny@v1", "--inputs", INPUTS, "--out", "f1.safetensors");
  await ok("forward", "--model", MODEL_DIR, "--inputs", INPUTS, "--out", "f2.safetensors");
  assert.ok((await readFile(join(dir, "f1.safetensors"))).equals(await readFile(join(dir, "f2.safetensors"))));

  const render = ["--template", "short", "--prompt", "Which fracture?", "--image", IMAGE, "--json"];
  assert.deepEqual(JSON.parse(await ok("render", "--model", "acme/tiny", ...render)), JSON.parse(await ok("render", "--model", MODEL_DIR, ...render)));
  await ok("preprocess", "--model", "acme/tiny", "--image", IMAGE, "--out", "p1.safetensors");
  await ok("preprocess", "--model", MODEL_DIR, "--image", IMAGE, "--out", "p2.safetensors");
  assert.ok((await readFile(join(dir, "p1.safetensors"))).equals(await readFile(join(dir, "p2.safetensors"))));
});

test("a value that is neither a folder nor a Hub id is named in the error", async () => {
  const run = await splint("eval", "--model", "./no/such/model", "--dataset", "ds", "--out", "x");
  assert.equal(run.code, 2);
  assert.match(run.stderr, /error: \.\/no\/such\/model: does not exist \(no such folder, and not a Hub repo id/);
  const missing = await splint("merge", "--model", "acme/tiny", "--adapter", "acme/absent", "--out", "m");
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /acme\/absent: no such folder, and as a Hub model id: repository not found/);
});
