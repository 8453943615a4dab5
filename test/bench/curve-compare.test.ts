// The window-mean comparison of bench/loss-curve.ts --compare, on synthetic curves whose true
// deviation is known.
import assert from "node:assert/strict";
import { test } from "node:test";
import { compareCurves, comparisonMarkdown, curvesSvg, windowMeans, type Curve } from "../../bench/curve-compare.ts";

/** A falling curve with a ripple, like a real run's: 8 → about 1.6 over `n` steps. */
function falling(label: string, n: number, scale = 1, ripple = 0): Curve {
  return { label, steps: Array.from({ length: n }, (_, i) => ({ step: i + 1, loss: scale * (1.6 + 6.4 * Math.exp(-i / 40)) + ripple * (i % 2 === 0 ? 1 : -1) })) };
}

const opts = { window: 10, tolerance: 0.05 };

test("window means cover consecutive steps and keep a shorter last window", () => {
  const means = windowMeans(Array.from({ length: 25 }, (_, i) => ({ step: i + 1, loss: i + 1 })), 10);
  assert.deepEqual(means, [
    { from: 1, to: 10, mean: 5.5 },
    { from: 11, to: 20, mean: 15.5 },
    { from: 21, to: 25, mean: 23 },
  ]);
});

test("a curve 10% above the reference fails a 5% tolerance, one 3% above passes", () => {
  const ref = falling("ref", 200);
  const far = compareCurves(ref, falling("far", 200, 1.1), opts);
  assert.equal(far.pass, false);
  assert.ok(Math.abs(far.worstWindow.relative - 0.1) < 1e-12, `${far.worstWindow.relative}`);
  const near = compareCurves(ref, falling("near", 200, 1.03), opts);
  assert.equal(near.pass, true);
  assert.ok(Math.abs(near.worstWindow.relative - 0.03) < 1e-12);
});

test("a step-to-step ripple that cancels within each window passes, though single steps are far off", () => {
  // ±0.3 on a loss of about 1.6 is up to 19% at single steps, 0 over every even-length window.
  const c = compareCurves(falling("ref", 200), falling("rippled", 200, 1, 0.3), opts);
  assert.equal(c.pass, true);
  assert.ok(c.worstWindow.relative < 1e-12);
  assert.ok(c.worstStepRelative > 0.15, `${c.worstStepRelative}`);
});

test("a late divergence is caught in the window where it happens", () => {
  const ref = falling("ref", 200);
  const late: Curve = { label: "late", steps: ref.steps.map((p) => (p.step > 190 ? { ...p, loss: p.loss * 1.2 } : p)) };
  const c = compareCurves(ref, late, opts);
  assert.equal(c.pass, false);
  assert.deepEqual([c.worstWindow.from, c.worstWindow.to], [191, 200]);
});

test("curves of different lengths, misnumbered steps or a non-finite loss are refused, not compared on a prefix", () => {
  const ref = falling("ref", 20);
  assert.throws(() => compareCurves(ref, falling("short", 19), opts), /19 steps/);
  const renumbered: Curve = { label: "renumbered", steps: ref.steps.map((p) => ({ ...p, step: p.step + 1 })) };
  assert.throws(() => compareCurves(ref, renumbered, opts), /numbers it 2/);
  const nan: Curve = { label: "nan", steps: ref.steps.map((p) => (p.step === 7 ? { ...p, loss: Number.NaN } : p)) };
  assert.throws(() => compareCurves(ref, nan, opts), /step 7: loss NaN/);
});

test("the table has one row per window and states each verdict; the plot draws one line per curve", () => {
  const curves = [falling("a", 30), falling("b", 30, 1.1)];
  const md = comparisonMarkdown(curves, [compareCurves(curves[0]!, curves[1]!, opts)], 10);
  assert.match(md, /b vs a: largest window deviation 10\.000% .* tolerance 5\.000%: \*\*FAIL\*\*/);
  assert.equal(md.split("\n").filter((l) => /^\| \d+–\d+ \|/.test(l)).length, 3);
  assert.equal(curvesSvg(curves, "t <&>").match(/<polyline/g)?.length, 2);
  assert.match(curvesSvg(curves, "t <&>"), /t &lt;&amp;&gt;/);
});
