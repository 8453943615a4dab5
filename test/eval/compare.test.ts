import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { compareEvalDirs } from "../../src/eval/compare-dirs.ts";
import { computeMetrics, INVALID } from "../../src/eval/metrics.ts";
import { writeEvalRun, type EvalSummary, type Prediction } from "../../src/eval/records.ts";
import { InputError } from "../../src/util/errors.ts";

const root = await mkdtemp(join(tmpdir(), "splint-compare-"));
after(() => rm(root, { recursive: true, force: true }));

const classNames = ["a", "b", "c"];
// Ten images; truth, and the predictions of a "before" and an "after" run.
const truth = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2];
const beforePred = [0, 1, INVALID, 1, 0, 0, 2, 0, 0, 2];
const afterPred = [0, 0, 0, 1, 1, 0, 2, 2, 2, 1];

async function writeRun(name: string, predicted: readonly number[], labels = truth): Promise<string> {
  const dir = join(root, name);
  const predictions: Prediction[] = predicted.map((p, i) => ({
    index: i,
    path: `img-${i}.png`,
    label: labels[i]!,
    predicted: p,
    answer: p === INVALID ? "no idea" : classNames[p]!,
    match: p === INVALID ? "invalid" : "exact",
  }));
  const summary: EvalSummary = {
    model: "m",
    adapter: null,
    dataset: "/data/x",
    split: "test",
    mode: "generate",
    template: "short",
    classNames,
    backend: "cpu",
    seconds: 1,
    imagesPerSecond: 10,
    metrics: computeMetrics(classNames, labels, predicted),
  };
  await writeEvalRun(dir, summary, predictions);
  return dir;
}

test("compare pairs the runs image by image: flips, McNemar counts and per-class deltas", async () => {
  const before = await writeRun("before", beforePred);
  const afterDir = await writeRun("after", afterPred);
  const out = join(root, "cmp");
  const c = await compareEvalDirs(before, afterDir, out);
  // Hand count: right before = {0,3,6,9}; right after = {0,1,2,3,4,6,7,8}.
  assert.equal(c.n, 10);
  assert.equal(c.accuracyBefore, 0.4);
  assert.equal(c.accuracyAfter, 0.8);
  assert.deepEqual(c.wrongToRight.map((f) => f.index), [1, 2, 4, 7, 8]);
  assert.deepEqual(c.rightToWrong.map((f) => f.index), [9]);
  assert.equal(c.mcnemar.wrongToRight, 5);
  assert.equal(c.mcnemar.rightToWrong, 1);
  // Two-sided exact binomial: 2 · P(X ≤ 1 | n = 6, p = ½) = 2 · 7/64.
  assert.ok(Math.abs(c.mcnemar.pValue - 14 / 64) < 1e-12);
  assert.equal(c.invalidRateBefore, 0.1);
  assert.equal(c.invalidRateAfter, 0);
  const flipped = c.rightToWrong[0]!;
  assert.deepEqual([flipped.label, flipped.before, flipped.after, flipped.answerAfter], [2, 2, 1, "b"]);
  // Class c: recall 2/4 → 3/4.
  assert.equal(c.perClass[2]!.recallBefore, 0.5);
  assert.equal(c.perClass[2]!.recallAfter, 0.75);
  const written = JSON.parse(await readFile(join(out, "comparison.json"), "utf8"));
  assert.equal(written.mcnemar.wrongToRight, 5);
});

test("compare refuses runs over different images", async () => {
  const before = await writeRun("before2", beforePred);
  const other = await writeRun("other-labels", afterPred, [...truth.slice(0, 9), 0]);
  await assert.rejects(compareEvalDirs(before, other), InputError);
  const shorter = join(root, "shorter");
  await writeRun("shorter", afterPred.slice(0, 9), truth.slice(0, 9));
  await assert.rejects(compareEvalDirs(before, shorter), /9 predictions/);
});

test("compare names the missing file when a folder is not an eval folder", async () => {
  const before = await writeRun("before3", beforePred);
  await assert.rejects(compareEvalDirs(before, join(root, "nope")), /metrics\.json: missing/);
});
