import type { Comparison } from "./compare.ts";
import type { EvalSummary } from "./records.ts";

/** Terminal text for eval and compare results. */

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;

export function formatEvalSummary(s: EvalSummary): string {
  const m = s.metrics;
  const width = Math.max(5, ...s.classNames.map((c) => c.length));
  const lines = [
    `${s.mode} mode on ${s.split} (${m.n} images, ${s.imagesPerSecond.toFixed(2)} images/s, ${s.backend})`,
    `accuracy ${pct(m.accuracy)} (95% CI ${pct(m.accuracyCi95[0])}–${pct(m.accuracyCi95[1])}), ${m.correct}/${m.n}`,
    `macro-F1 ${m.macroF1.toFixed(3)}, invalid answers ${pct(m.invalidRate)}`,
    "",
    `${"class".padEnd(width)}  precision  recall     F1  support`,
    ...m.perClass.map(
      (c) => `${c.name.padEnd(width)}  ${c.precision.toFixed(3).padStart(9)}  ${c.recall.toFixed(3).padStart(6)}  ${c.f1.toFixed(3).padStart(5)}  ${String(c.support).padStart(7)}`,
    ),
  ];
  return lines.join("\n");
}

export function formatComparison(c: Comparison): string {
  const sign = (x: number) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)}`;
  const width = Math.max(5, ...c.perClass.map((p) => p.name.length));
  const lines = [
    `${c.n} paired images`,
    `accuracy  ${pct(c.accuracyBefore)} → ${pct(c.accuracyAfter)} (${sign(c.accuracyAfter - c.accuracyBefore)} points)`,
    `macro-F1  ${c.macroF1Before.toFixed(3)} → ${c.macroF1After.toFixed(3)}`,
    `invalid   ${pct(c.invalidRateBefore)} → ${pct(c.invalidRateAfter)}`,
    `McNemar exact test: ${c.mcnemar.wrongToRight} wrong→right, ${c.mcnemar.rightToWrong} right→wrong, p = ${formatP(c.mcnemar.pValue)}`,
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
