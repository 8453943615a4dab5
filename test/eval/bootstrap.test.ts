import assert from "node:assert/strict";
import { test } from "node:test";
import { bootstrapMetrics, pairedBootstrap, quantile } from "../../src/eval/bootstrap.ts";

const close = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

test("quantiles interpolate linearly between order statistics", () => {
  close(quantile([0, 10, 20, 30, 40], 0.025), 0.1 * 10);
  close(quantile([0, 10, 20, 30, 40], 0.975), 39);
  close(quantile([5], 0.5), 5);
});

test("two images, one right: the bootstrap's macro-F1 takes 1, 1/3 or 0, so the interval is [0, 1]", () => {
  // Resampling (0→0 right, 1→0 wrong): both right → only class 0 counts, F1 1; both wrong → 0;
  // one of each (half the time) → class 0 P ½ R 1 F1 ⅔, class 1 F1 0 → ⅓.
  const r = bootstrapMetrics(["a", "b"], [0, 1], [0, 0], { samples: 400, seed: 3 });
  assert.deepEqual(r.macroF1Ci95, [0, 1]);
  // Class b is never predicted right: its recall is 0 in every resample that holds it.
  assert.deepEqual(r.perClass[1]!.recallCi95, [0, 0]);
  // Precision of b is never defined (b is never predicted).
  assert.equal(r.perClass[1]!.precisionCi95, null);
  assert.deepEqual(r.perClass[0]!.precisionCi95, [0, 1]);
});

test("the bootstrap is seeded: the same seed repeats, another seed differs", () => {
  const truth = Array.from({ length: 60 }, (_, i) => i % 3);
  const pred = truth.map((t, i) => (i % 4 === 0 ? (t + 1) % 3 : t));
  const a = bootstrapMetrics(["x", "y", "z"], truth, pred, { seed: 11 });
  assert.deepEqual(bootstrapMetrics(["x", "y", "z"], truth, pred, { seed: 11 }), a);
  assert.notDeepEqual(bootstrapMetrics(["x", "y", "z"], truth, pred, { seed: 12 }).macroF1Ci95, a.macroF1Ci95);
  assert.equal(a.samples, 1000);
});

test("paired bootstrap of a difference: zero for identical runs, the binomial width against a null run", () => {
  const n = 400;
  const truth = Array.from({ length: n }, (_, i) => i % 2);
  const wrong = truth.map((t) => 1 - t);
  // 280 of 400 right (p = 0.7), spread over both classes.
  const after = truth.map((t, i) => (i % 10 < 7 ? t : 1 - t));
  const same = pairedBootstrap(["a", "b"], truth, after, after);
  assert.deepEqual([same.accuracy.observed, ...same.accuracy.ci95], [0, 0, 0]);
  const d = pairedBootstrap(["a", "b"], truth, wrong, after, { seed: 5 });
  close(d.accuracy.observed, 0.7);
  // Against an always-wrong run the difference is the after run's accuracy, whose bootstrap
  // half-width should be near 1.96·sqrt(p(1 − p)/n) = 0.0449.
  const half = (d.accuracy.ci95[1] - d.accuracy.ci95[0]) / 2;
  assert.ok(Math.abs(half - 1.96 * Math.sqrt(0.21 / n)) < 0.15 * 0.0449, `half-width ${half}`);
  assert.ok(d.accuracy.ci95[0] < 0.7 && 0.7 < d.accuracy.ci95[1]);
  assert.ok(d.macroF1.ci95[0] < d.macroF1.observed && d.macroF1.observed < d.macroF1.ci95[1]);
});
