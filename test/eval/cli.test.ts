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
  const written = JSON.parse(report.stdout) as { sections: string[]; file: string };
  assert.deepEqual(written.sections, ["run", "evaluation", "errors", "comparison"]);
  const html = await readFile(path.resolve(dir, written.file), "utf8");
  // Built from single commands: the gallery's images come from the dataset eval read.
  assert.doesNotMatch(html, /image not found/);
  assert.match(html, /<td>model<\/td><td>[^<]*models\/tiny<\/td>/);
  assert.match(html, /Not for clinical use/);
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

test("predict --abstain-below answers uncertain under the threshold; alone it takes the calibration file's", async () => {
  const files = ["u1.png", "u2.png"];
  await Promise.all(files.map(async (f, i) => writeFile(path.join(dir, f), await synthesizeImagePng({ seed: 2, size: 40 }, i, "Test", 3))));
  type Answer = { class: string | null; answer: string; abstained: boolean; temperature: number; probabilities: Record<string, number> };
  const predict = (...flags: string[]) => {
    const run = splint("predict", "--model", MODEL, ...files, ...flags, "--json");
    assert.equal(run.status, 0, run.stderr);
    return JSON.parse(run.stdout) as Answer[];
  };
  // Ten classes: the top probability lies in [0.1, 1), so a threshold of 1 always abstains and 0 never does.
  for (const p of predict("--abstain-below", "1")) assert.deepEqual([p.class, p.answer, p.abstained], [null, "uncertain", true]);
  for (const p of predict("--abstain-below", "0")) assert.ok(p.class !== null && !p.abstained);

  const calibration = { format: "splint-calibration", version: 1, temperature: 2, fittedOn: { dataset: "ds", split: "validation", n: 1 }, nll: { before: 1, after: 1 }, ece: { before: 0, after: 0 }, abstain: { targetAccuracy: 1, threshold: 1, coverage: 0, accuracy: 1 } };
  await writeFile(path.join(dir, "calibration.json"), JSON.stringify(calibration));
  const plain = predict();
  const scaled = predict("--calibration", "calibration.json", "--abstain-below");
  scaled.forEach((p, i) => {
    assert.equal(p.temperature, 2);
    assert.equal(p.abstained, true, "the stored threshold of 1 abstains");
    const top = Math.max(...Object.values(p.probabilities));
    assert.ok(top < Math.max(...Object.values(plain[i]!.probabilities)), "T = 2 lowers the top probability");
  });

  const none = splint("predict", "--model", MODEL, ...files, "--abstain-below");
  assert.equal(none.status, 2);
  assert.match(none.stderr, /--abstain-below: no calibration file found/);
  const bad = splint("predict", "--model", MODEL, ...files, "--abstain-below", "1.5");
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /not a probability/);
  const generate = splint("predict", "--model", MODEL, ...files, "--mode", "generate", "--abstain-below", "0.5");
  assert.equal(generate.status, 2);
  assert.match(generate.stderr, /needs --mode score/);
});

test("calibrate needs somewhere to write and refuses to fit on the test split", () => {
  const noOut = splint("calibrate", "--model", MODEL, "--dataset", "ds");
  assert.equal(noOut.status, 2);
  assert.match(noOut.stderr, /--out: is needed without --adapter/);
  const onTest = splint("calibrate", "--model", MODEL, "--dataset", "ds", "--split", "test", "--out", "c.json");
  assert.equal(onTest.status, 2);
  assert.match(onTest.stderr, /--split: test is where calibrated figures are reported/);
  const noValidation = splint("calibrate", "--model", MODEL, "--dataset", "ds", "--out", "c.json");
  assert.equal(noValidation.status, 2);
  assert.match(noValidation.stderr, /has no split "validation"/);
});
