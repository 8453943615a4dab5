import type { Comparison } from "./compare.ts";
import type { EvalSummary } from "./records.ts";

/** Terminal text for eval and compare results. */

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const range = (ci: readonly [number, number], f: (x: number) => string): string => `${f(ci[0])}–${f(ci[1])}`;
const f3 = (x: number): string => x.toFixed(3);

export function formatEvalSummary(s: EvalSummary): string {
  const m = s.metrics;
  const width = Math.max(5, ...s.classNames.map((c) => c.length));
  const lines = [
    `${s.mode} mode on ${s.split} (${m.n} images, ${s.imagesPerSecond.toFixed(2)} images/s, ${s.backend})`,
    `accuracy ${pct(m.accuracy)} (95% CI ${pct(m.accuracyCi95[0])}–${pct(m.accuracyCi95[1])}), ${m.correct}/${m.n}`,
    `macro-F1 ${m.macroF1.toFixed(3)}${s.bootstrap ? ` (95% bootstrap CI ${range(s.bootstrap.macroF1Ci95, f3)})` : ""}, invalid answers ${pct(m.invalidRate)}`,
    ...calibrationLines(s),
    "",
    `${"class".padEnd(width)}  precision  recall     F1  support  recall 95% CI (Wilson)${s.bootstrap ? "  F1 95% CI (bootstrap)" : ""}`,
    ...m.perClass.map((c, i) => {
      // Eval folders written before recallCi95 existed have none.
      const recallCi = c.recallCi95 ? range(c.recallCi95, f3) : "n/a";
      const f1Ci = s.bootstrap?.perClass[i]?.f1Ci95;
      const f1Interval = s.bootstrap ? `  ${f1Ci ? range(f1Ci, f3) : "n/a"}` : "";
      return `${c.name.padEnd(width)}  ${c.precision.toFixed(3).padStart(9)}  ${c.recall.toFixed(3).padStart(6)}  ${c.f1.toFixed(3).padStart(5)}  ${String(c.support).padStart(7)}  ${recallCi.padEnd(22)}${f1Interval}`;
    }),
  ];
  return lines.join("\n");
}

function calibrationLines(s: EvalSummary): string[] {
  if (!s.calibration || !s.selective) return [];
  const c = s.calibration;
  const figures = (f: typeof c.raw) => `ECE ${f3(f.ece)} (equal-mass ${f3(f.eceEqualMass)}), Brier ${f3(f.brier)}, NLL ${f3(f.nll)}`;
  const lines = [`calibration at T = 1: ${figures(c.raw)}`];
  if (c.scaled) lines.push(`calibration at T = ${c.temperature.toFixed(3)} (${c.temperatureFile}): ${figures(c.scaled)}`);
  lines.push(`selective: AURC ${f3(s.selective.aurc)}; accuracy at coverage ${s.selective.atCoverage.map((a) => `${pct(a.coverage)} → ${pct(a.accuracy)}`).join(", ")}`);
  const t = s.selective.atThreshold;
  if (t) lines.push(`abstaining below ${f3(t.threshold)} (picked on validation): answers ${pct(t.coverage)} of images, ${pct(t.accuracy)} of them right`);
  return lines;
}

export function formatComparison(c: Comparison): string {
  const sign = (x: number) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)}`;
  const signed3 = (x: number) => `${x >= 0 ? "+" : ""}${x.toFixed(3)}`;
  const width = Math.max(5, ...c.perClass.map((p) => p.name.length));
  const lines = [
    `${c.n} paired images`,
    `accuracy  ${pct(c.accuracyBefore)} → ${pct(c.accuracyAfter)} (${sign(c.accuracyAfter - c.accuracyBefore)} points)`,
    `          paired bootstrap 95% CI of the change ${sign(c.bootstrap.accuracy.ci95[0])} to ${sign(c.bootstrap.accuracy.ci95[1])} points`,
    `macro-F1  ${c.macroF1Before.toFixed(3)} → ${c.macroF1After.toFixed(3)} (change ${signed3(c.bootstrap.macroF1.observed)}, paired bootstrap 95% CI ${signed3(c.bootstrap.macroF1.ci95[0])} to ${signed3(c.bootstrap.macroF1.ci95[1])})`,
    `invalid   ${pct(c.invalidRateBefore)} → ${pct(c.invalidRateAfter)}`,
    `McNemar exact test: ${c.mcnemar.wrongToRight} wrong→right, ${c.mcnemar.rightToWrong} right→wrong, p = ${formatP(c.mcnemar.pValue)}`,
    ...(c.calibrationBefore && c.calibrationAfter
      ? [
          `ECE       ${f3(c.calibrationBefore.ece)} → ${f3(c.calibrationAfter.ece)}   Brier ${f3(c.calibrationBefore.brier)} → ${f3(c.calibrationAfter.brier)}   NLL ${f3(c.calibrationBefore.nll)} → ${f3(c.calibrationAfter.nll)}`,
          `AURC      ${f3(c.calibrationBefore.aurc)} → ${f3(c.calibrationAfter.aurc)} (area under the risk–coverage curve; lower is better)`,
        ]
      : []),
    "",
    `${"class".padEnd(width)}  recall before → after   F1 before → after`,
    ...c.perClass.map(
      (p) => `${p.name.padEnd(width)}  ${p.recallBefore.toFixed(3).padStart(13)} → ${p.recallAfter.toFixed(3)}   ${p.f1Before.toFixed(3).padStart(9)} → ${p.f1After.toFixed(3)}`,
    ),
  ];
  return lines.join("\n");
}

export function formatP(p: number): string {
  return p < 1e-4 ? p.toExponential(1) : p.toPrecision(2);
}
