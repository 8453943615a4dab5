import assert from "node:assert/strict";
import { test } from "node:test";
import { calibrationFigures, equalMassBins, equalWidthBins, fitTemperature, meanNll, probabilities, topConfidence } from "../../src/eval/calibration.ts";
import { Rng } from "../../src/util/rng.ts";

const close = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

/**
 * Five two-class predictions whose top class is always class 0 with probability p (scores
 * ln p, ln(1 − p)), right when the label is 0: confidences 0.9 ✓, 0.95 ✗, 0.7 ✓, 0.65 ✓, 0.55 ✗.
 */
const P = [0.9, 0.95, 0.7, 0.65, 0.55];
const LABELS = [0, 1, 0, 0, 1];
const SCORES = P.map((p) => [Math.log(p), Math.log(1 - p)]);

test("ECE over 5 equal-width and 5 equal-mass bins, Brier and NLL of a hand-computed set", () => {
  const f = calibrationFigures(SCORES, LABELS, 1, 5);
  // Equal width: (0.8, 1] holds 0.9 ✓, 0.95 ✗: conf 0.925, acc 0.5, weight 2/5 → 0.17;
  // (0.6, 0.8] holds 0.7 ✓, 0.65 ✓: conf 0.675, acc 1 → 0.13; (0.4, 0.6] holds 0.55 ✗ → 0.11.
  close(f.ece, 0.41);
  assert.deepEqual(
    f.reliability.map((b) => [b.lo, b.hi, b.count]),
    [
      [0.4, 0.6, 1],
      [0.6, 0.8, 2],
      [0.8, 1, 2],
    ],
  );
  close(f.reliability[2]!.confidence, 0.925);
  close(f.reliability[2]!.accuracy, 0.5);
  // Equal mass with 5 bins: one prediction each, |acc − conf| = 0.55, 0.35, 0.3, 0.1, 0.95 → mean 0.45.
  close(f.eceEqualMass, 0.45);
  // Brier for two classes: 2(1 − p)² when right, 2p² when wrong: 0.02 + 1.805 + 0.18 + 0.245 + 0.605.
  close(f.brier, 2.855 / 5);
  close(f.nll, -(Math.log(0.9) + Math.log(0.05) + Math.log(0.7) + Math.log(0.65) + Math.log(0.45)) / 5);
});

test("equal-mass bins cut the confidence order into runs of ⌊n/B⌋ or ⌈n/B⌉", () => {
  const items = P.map((p, i) => ({ confidence: p, correct: LABELS[i] === 0 }));
  // n = 5, B = 2: positions 0–1 (0.55 ✗, 0.65 ✓) and 2–4 (0.7 ✓, 0.9 ✓, 0.95 ✗).
  const bins = equalMassBins(items, 2);
  assert.deepEqual(
    bins.map((b) => [b.lo, b.hi, b.count]),
    [
      [0.55, 0.65, 2],
      [0.7, 0.95, 3],
    ],
  );
  close(bins[0]!.confidence, 0.6);
  close(bins[1]!.accuracy, 2 / 3);
  // A confidence on a bin edge belongs to the bin below it: (i/B, (i+1)/B].
  assert.deepEqual(equalWidthBins([{ confidence: 0.4, correct: true }, { confidence: 0, correct: false }], 5).map((b) => b.lo), [0, 0.2]);
});

test("temperature divides the scores; it changes confidence but never the top class", () => {
  const s = [2, 1, -1];
  const p2 = probabilities(s, 2);
  const e = [1, Math.exp(-0.5), Math.exp(-1.5)];
  const total = e[0]! + e[1]! + e[2]!;
  e.forEach((x, i) => close(p2[i]!, x / total, 1e-12));
  assert.ok(topConfidence(s, 0, 2).confidence < topConfidence(s, 0, 1).confidence);
  assert.equal(topConfidence(s, 0, 5).correct, true);
  assert.equal(topConfidence([0, 3, 3], 1).correct, true, "ties go to the first class, as score mode picks");
});

/** Standard normal by Box–Muller. */
function gaussian(rng: Rng): number {
  return Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
}

test("temperature scaling recovers the temperature that generated the labels", () => {
  // Labels drawn from softmax(z / 2.5): the model's logits z are over-confident by exactly T = 2.5.
  const rng = new Rng(7);
  const T0 = 2.5;
  const scores: number[][] = [];
  const labels: number[] = [];
  for (let i = 0; i < 20_000; i++) {
    const z = Array.from({ length: 5 }, () => 3 * gaussian(rng));
    const p = probabilities(z, T0);
    let u = rng.next();
    let label = 0;
    while (label < 4 && u >= p[label]!) u -= p[label++]!;
    scores.push(z);
    labels.push(label);
  }
  const T = fitTemperature(scores, labels);
  assert.ok(Math.abs(T - T0) / T0 < 0.04, `fitted ${T}, generated with ${T0}`);
  // And it is the minimum of the NLL, not just near the truth.
  for (const nudge of [0.99, 1.01]) assert.ok(meanNll(scores, labels, T) < meanNll(scores, labels, T * nudge));
  assert.ok(meanNll(scores, labels, T) < meanNll(scores, labels, 1));
});
