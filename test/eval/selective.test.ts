import assert from "node:assert/strict";
import { test } from "node:test";
import { accuracyAtCoverages, areaUnderRiskCoverage, atThreshold, riskCoverage, selectiveReport, thresholdForAccuracy } from "../../src/eval/selective.ts";

const close = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

// Confidences 0.9 ✓, 0.8 ✗, 0.8 ✓, 0.6 ✓, 0.3 ✗ (the two 0.8s cannot be told apart by a threshold).
const ITEMS = [
  { confidence: 0.8, correct: false },
  { confidence: 0.3, correct: false },
  { confidence: 0.9, correct: true },
  { confidence: 0.6, correct: true },
  { confidence: 0.8, correct: true },
];

test("risk–coverage curve of a toy set, ties entering together", () => {
  const curve = riskCoverage(ITEMS);
  assert.deepEqual(
    curve.map((p) => [p.threshold, p.coverage]),
    [
      [0.9, 0.2],
      [0.8, 0.6],
      [0.6, 0.8],
      [0.3, 1],
    ],
  );
  [0, 1 / 3, 1 / 4, 2 / 5].forEach((risk, i) => close(curve[i]!.risk, risk));
  // 0.2·0 + 0.4·(1/3) + 0.2·(1/4) + 0.2·(2/5)
  close(areaUnderRiskCoverage(curve), 0.4 / 3 + 0.05 + 0.08);
});

test("accuracy at chosen coverages takes the first threshold that reaches each", () => {
  const at = accuracyAtCoverages(riskCoverage(ITEMS), [0.5, 0.8, 1]);
  assert.deepEqual(
    at.map((a) => [a.target, a.coverage, a.threshold]),
    [
      [0.5, 0.6, 0.8],
      [0.8, 0.8, 0.6],
      [1, 1, 0.3],
    ],
  );
  close(at[0]!.accuracy, 2 / 3);
  close(at[1]!.accuracy, 0.75);
  close(at[2]!.accuracy, 0.6);
});

test("the threshold for a target accuracy is the one with the largest coverage that reaches it", () => {
  const curve = riskCoverage(ITEMS);
  assert.deepEqual(thresholdForAccuracy(curve, 0.75), { threshold: 0.6, coverage: 0.8, accuracy: 0.75 });
  assert.deepEqual(thresholdForAccuracy(curve, 1), { threshold: 0.9, coverage: 0.2, accuracy: 1 });
  assert.equal(thresholdForAccuracy(riskCoverage([{ confidence: 0.9, correct: false }, { confidence: 0.5, correct: true }]), 0.9), null);
  const applied = atThreshold(ITEMS, 0.8);
  close(applied.coverage, 0.6);
  close(applied.accuracy, 2 / 3);
  assert.deepEqual(atThreshold(ITEMS, 0.95), { threshold: 0.95, coverage: 0, accuracy: 1 });
  assert.deepEqual(selectiveReport(ITEMS, 0.6).atThreshold, { threshold: 0.6, coverage: 0.8, accuracy: 0.75 });
});
