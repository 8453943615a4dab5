import assert from "node:assert/strict";
import { test } from "node:test";
import { compareRuns } from "../../src/eval/compare.ts";
import { computeMetrics } from "../../src/eval/metrics.ts";
import type { EvalSummary, Prediction } from "../../src/eval/records.ts";
import { evaluationMarkdown } from "../../src/eval/summary-markdown.ts";
import { trustFigures } from "../../src/eval/trust.ts";

const CLASSES = ["a", "b|c"];

/** Eight images, four per class; `right` of them predicted correctly, with two-class scores. */
function run(right: number, mode: "score" | "generate"): { summary: EvalSummary; predictions: Prediction[] } {
  const truth = [0, 0, 0, 0, 1, 1, 1, 1];
  const predicted = truth.map((t, i) => (i < right ? t : 1 - t));
  const raw: Prediction[] = predicted.map((p, i) => ({
    index: i,
    path: null,
    label: truth[i]!,
    predicted: p,
    answer: CLASSES[p]!,
    match: "exact",
    ...(mode === "score" ? { scores: p === 0 ? [0, -1 - i / 4] : [-1 - i / 4, 0] } : {}),
  }));
  const trust = trustFigures(CLASSES, raw, null);
  const summary: EvalSummary = {
    model: "m",
    adapter: null,
    dataset: "/data/xray",
    split: "test",
    mode,
    template: "short",
    classNames: CLASSES,
    backend: "cpu",
    seconds: 1,
    imagesPerSecond: 8,
    metrics: computeMetrics(CLASSES, truth, predicted),
    bootstrap: trust.bootstrap,
    calibration: trust.calibration,
    selective: trust.selective,
  };
  return { summary, predictions: raw.map((p, i) => ({ ...p, confidence: trust.confidences[i] ?? undefined })) };
}

test("the model-card section gives every figure the eval files hold, intervals included", () => {
  const before = run(4, "score");
  const after = run(6, "score");
  const comparison = compareRuns({ ...before, source: "b" }, { ...after, source: "a" });
  const md = evaluationMarkdown(after.summary, { comparison });
  assert.match(md, /^## Evaluation\n/);
  assert.match(md, /the 8 images of split `test` of `xray` \(score mode/);
  assert.match(md, /\| accuracy \| 75\.0% \(6\/8\) \| 40\.9%–92\.9% \(Wilson\) \|/);
  assert.match(md, /\| macro-F1 \| 0\.733 \| \d\.\d{3}–\d\.\d{3} \(bootstrap, 1000 resamples, seed 0\) \|/);
  assert.match(md, /\| b\\\|c \| 4 \|/, "a pipe in a class name is escaped");
  for (const heading of ["### Per class", "### Calibration", "### Selective prediction", "### Change from the base model"]) assert.ok(md.includes(heading), heading);
  assert.match(md, /\| accuracy \| 50\.0% \| 75\.0% \| \+25\.0 points \(95% CI /);
  assert.match(md, /McNemar's exact test 2 wrong→right, 0 right→wrong, p = 0\.5/);
  assert.match(md, /no temperature scaling/);
});

test("generate mode has no calibration to report, and the heading level can be chosen", () => {
  const md = evaluationMarkdown(run(5, "generate").summary, { level: 3 });
  assert.match(md, /^### Evaluation\n/);
  assert.ok(!md.includes("Calibration") && !md.includes("Selective prediction") && !md.includes("base model"));
});
