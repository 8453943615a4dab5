import assert from "node:assert/strict";
import { test } from "node:test";
import { computeMetrics, INVALID, mcnemarExact, wilsonInterval } from "../../src/eval/metrics.ts";

const close = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

test("Wilson interval matches the textbook case 81/263", () => {
  // By hand: p = 0.30798, z² = 3.8415, denom = 1 + z²/n = 1.014607,
  // centre = (p + z²/2n)/denom = 0.310744, half = z·sqrt(p(1-p)/n + z²/4n²)/denom = 0.055461.
  const [lo, hi] = wilsonInterval(81, 263);
  close(lo, 0.25528, 1e-4);
  close(hi, 0.36620, 1e-4);
});

test("Wilson interval stays inside [0, 1] at the extremes", () => {
  const [lo0, hi0] = wilsonInterval(0, 10);
  assert.equal(lo0, 0);
  close(hi0, 0.2775, 1e-4);
  const [lo1, hi1] = wilsonInterval(10, 10);
  close(lo1, 0.7225, 1e-4);
  close(hi1, 1, 1e-12);
});

test("metrics on a hand-computed 3-class case with an invalid answer", () => {
  const names = ["a", "b", "c"];
  const truth = [0, 0, 0, 1, 1, 2];
  const pred = [0, 0, 1, 1, INVALID, 2];
  const m = computeMetrics(names, truth, pred);
  assert.equal(m.correct, 4);
  close(m.accuracy, 4 / 6);
  close(m.invalidRate, 1 / 6);
  // a: tp 2, predicted-as 2, support 3 → P 1, R 2/3, F1 0.8
  close(m.perClass[0]!.precision, 1);
  close(m.perClass[0]!.recall, 2 / 3);
  close(m.perClass[0]!.f1, 0.8);
  // b: tp 1, predicted-as 2, support 2 → P 0.5, R 0.5, F1 0.5
  close(m.perClass[1]!.f1, 0.5);
  // c: perfect
  close(m.perClass[2]!.f1, 1);
  // Recall intervals are Wilson intervals of tp / support: 2/3 for a, and 1/1 for c does not collapse to a point.
  assert.deepEqual(m.perClass[0]!.recallCi95, wilsonInterval(2, 3));
  close(m.perClass[2]!.recallCi95[0], 0.2065, 1e-4);
  close(m.macroF1, (0.8 + 0.5 + 1) / 3);
  assert.deepEqual(m.confusion, [
    [2, 1, 0, 0],
    [0, 1, 0, 1],
    [0, 0, 1, 0],
  ]);
});

test("McNemar exact test: hand-computed binomial tails", () => {
  // b = 1, c = 6: p = 2·(C(7,0)+C(7,1))/2^7 = 2·8/128 = 0.125
  const before = [true, false, false, false, false, false, false, true, true];
  const after = [false, true, true, true, true, true, true, true, false];
  // pairs: (T,F) (F,T)x6 (T,T) (T,F) → b = 2, c = 6: p = 2·(1+8+28)/256 = 0.2890625
  const r = mcnemarExact(before, after);
  assert.equal(r.rightToWrong, 2);
  assert.equal(r.wrongToRight, 6);
  close(r.pValue, 0.2890625);
  const r2 = mcnemarExact([true, false, false, false, false, false, false], [false, true, true, true, true, true, true]);
  close(r2.pValue, 0.125);
  assert.equal(mcnemarExact([true, false], [true, false]).pValue, 1);
});

test("McNemar p-value is capped at 1 when the discordant counts are equal", () => {
  const r = mcnemarExact([true, false], [false, true]);
  assert.equal(r.pValue, 1);
});
