import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { synthesizeDatasetDict, synthesizeImagePng } from "../../src/data/synth.ts";
import { REPO_ROOT, runSplint } from "../helpers/cli.ts";

const MODEL = path.join(REPO_ROOT, "test/fixtures/models/tiny");
const ADAPTER = path.join(REPO_ROOT, "test/fixtures/lora/tiny/adapter");
const dir = await mkdtemp(path.join(tmpdir(), "splint-eval-cli-"));
after(() => rm(dir, { recursive: true, force: true }));
await saveDatasetDict(path.join(dir, "ds"), await synthesizeDatasetDict({ perClass: 1, testPerClass: 2, seed: 4, size: 40 }), "arrow");

function splint(...args: string[]) {
  return runSplint(args, { cwd: dir });
}

test("eval → compare → report through the CLI, with and without an adapter", async () => {
  const before = splint("eval", "--model", MODEL, "--dataset", "ds", "--mode", "constrained", "--batch", "3", "--out", "run/eval-before", "--json");
  assert.equal(before.status, 0, before.stderr);
  const summary = JSON.parse(before.stdout);
  assert.equal(summary.metrics.n, 20);
  assert.equal(summary.metrics.invalidRate, 0, "constrained answers are always a class");
  const lines = (await readFile(path.join(dir, "run/eval-before/predictions.jsonl"), "utf8")).trim().split("\n");
  assert.equal(lines.length, 20);
  assert.deepEqual(lines.map((l) => JSON.parse(l).index), Array.from({ length: 20 }, (_, i) => i));

  const afterRun = splint("eval", "--model", MODEL, "--adapter", ADAPTER, "--dataset", "ds", "--mode", "constrained", "--out", "run/eval-after", "--json");
  assert.equal(afterRun.status, 0, afterRun.stderr);
  assert.equal(JSON.parse(afterRun.stdout).adapter, ADAPTER);

  const compare = splint("compare", "run/eval-before", "run/eval-after", "--out", "run/compare", "--json");
  assert.equal(compare.status, 0, compare.stderr);
  const comparison = JSON.parse(compare.stdout);
  assert.equal(comparison.n, 20);
  assert.equal(comparison.mcnemar.wrongToRight, comparison.wrongToRight.length);

  const report = splint("report", "run", "--json");
  assert.equal(report.status, 0, report.stderr);
  assert.deepEqual(JSON.parse(report.stdout).sections, ["evaluation", "comparison"]);
});

test("eval names the problem: a missing split, a bad --batch", () => {
  const split = splint("eval", "--model", MODEL, "--dataset", "ds", "--split", "validation", "--out", "x");
  assert.equal(split.status, 2);
  assert.match(split.stderr, /ds: has no split "validation"/);
  const batch = splint("eval", "--model", MODEL, "--dataset", "ds", "--batch", "0", "--out", "x");
  assert.equal(batch.status, 2);
  assert.match(batch.stderr, /--batch/);
});

test("predict gives a class and probabilities that sum to one per image", async () => {
  const files = ["a.png", "b.png"];
  await Promise.all(files.map(async (f, i) => writeFile(path.join(dir, f), await synthesizeImagePng({ seed: 1, size: 40 }, i, "Test", 0))));
  const run = splint("predict", "--model", MODEL, ...files, "--json");
  assert.equal(run.status, 0, run.stderr);
  const predictions = JSON.parse(run.stdout) as { image: string; class: string; probabilities: Record<string, number> }[];
  assert.deepEqual(predictions.map((p) => p.image), files);
  for (const p of predictions) {
    const probs = Object.values(p.probabilities);
    assert.equal(probs.length, 10);
    assert.ok(Math.abs(probs.reduce((a, b) => a + b, 0) - 1) < 1e-9);
    assert.equal(p.class, Object.entries(p.probabilities).sort((x, y) => y[1] - x[1])[0]![0]);
  }
  const missing = splint("predict", "--model", MODEL, "nope.png");
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /nope\.png: cannot read image/);
});
