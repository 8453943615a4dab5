import { basename } from "node:path";
import type { Comparison } from "./compare.ts";
import { formatP } from "./format.ts";
import type { EvalSummary } from "./records.ts";

/**
 * An evaluation as a Markdown section for a model card (README.md of an adapter): accuracy with its
 * Wilson interval, macro-F1 and per-class figures with bootstrap intervals, calibration and
 * selective prediction in score mode, and the paired comparison with the base model when given.
 * Only figures present in the eval files appear; nothing is rounded into a claim they do not make.
 */
export interface EvaluationMarkdownOptions {
  /** The base model's evaluation on the same split, and the comparison of the two. */
  readonly before?: EvalSummary | null;
  readonly comparison?: Comparison | null;
  /** Heading level of the section title (default 2: "## Evaluation"). */
  readonly level?: number;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const f3 = (x: number) => x.toFixed(3);
const signed = (x: number, scale: number, digits: number) => `${x >= 0 ? "+" : ""}${(scale * x).toFixed(digits)}`;
/** A table cell: pipes would end the cell, newlines the row. */
const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\s*\n\s*/g, " ");

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  return [`| ${header.map(cell).join(" | ")} |`, `|${header.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.map(cell).join(" | ")} |`)].join("\n");
}

export function evaluationMarkdown(after: EvalSummary, opts: EvaluationMarkdownOptions = {}): string {
  const h = "#".repeat(opts.level ?? 2);
  const m = after.metrics;
  const b = after.bootstrap;
  const out: string[] = [
    `${h} Evaluation`,
    "",
    `Measured with splint on the ${m.n} images of split \`${after.split}\` of \`${basename(after.dataset)}\` (${after.mode} mode, template ${after.template}).`,
    "",
    table(
      ["metric", "value", "95% interval"],
      [
        ["accuracy", `${pct(m.accuracy)} (${m.correct}/${m.n})`, `${pct(m.accuracyCi95[0])}–${pct(m.accuracyCi95[1])} (Wilson)`],
        ["macro-F1", f3(m.macroF1), b ? `${f3(b.macroF1Ci95[0])}–${f3(b.macroF1Ci95[1])} (bootstrap, ${b.samples} resamples, seed ${b.seed})` : "—"],
        ["invalid answers", pct(m.invalidRate), "—"],
      ],
    ),
    "",
    `${h}# Per class`,
    "",
    table(
      ["class", "support", "precision", "recall (95% Wilson CI)", "F1 (95% bootstrap CI)"],
      after.classNames.map((name, c) => {
        const pc = m.perClass[c]!;
        const ci = b?.perClass[c];
        const withCi = (value: number, interval: readonly [number, number] | null | undefined) => (interval ? `${f3(value)} (${f3(interval[0])}–${f3(interval[1])})` : f3(value));
        return [name, String(pc.support), f3(pc.precision), withCi(pc.recall, pc.recallCi95), withCi(pc.f1, ci?.f1Ci95)];
      }),
    ),
  ];
  const c = after.calibration;
  if (c) {
    out.push("", `${h}# Calibration`, "");
    out.push(
      c.scaled
        ? `Probabilities are softmax(scores / T) with T = ${c.temperature.toFixed(3)}, fitted on a validation split (\`${basename(c.temperatureFile ?? "calibration.json")}\`, shipped with the adapter).`
        : "Probabilities as the model gives them (no temperature scaling).",
      "",
    );
    const row = (label: string, f: typeof c.raw) => [label, f3(f.ece), f3(f.eceEqualMass), f3(f.brier), f3(f.nll)];
    out.push(table([`temperature`, `ECE (${c.bins} bins)`, "ECE (equal mass)", "Brier", "NLL"], [row("1", c.raw), ...(c.scaled ? [row(c.temperature.toFixed(3), c.scaled)] : [])]));
  }
  const s = after.selective;
  if (s) {
    out.push("", `${h}# Selective prediction`, "", `Answering only the most confident images; AURC (area under the risk–coverage curve, lower is better) ${f3(s.aurc)}.`, "");
    out.push(table(["coverage", "accuracy", "threshold"], s.atCoverage.map((a) => [pct(a.coverage), pct(a.accuracy), f3(a.threshold)])));
    if (s.atThreshold) {
      out.push("", `With the abstention threshold picked on validation (${f3(s.atThreshold.threshold)}), the model answers ${pct(s.atThreshold.coverage)} of these images and is right on ${pct(s.atThreshold.accuracy)} of those.`);
    }
  }
  const cmp = opts.comparison;
  if (cmp) {
    out.push("", `${h}# Change from the base model`, "");
    const rows = [
      ["accuracy", pct(cmp.accuracyBefore), pct(cmp.accuracyAfter), `${signed(cmp.bootstrap.accuracy.observed, 100, 1)} points (95% CI ${signed(cmp.bootstrap.accuracy.ci95[0], 100, 1)} to ${signed(cmp.bootstrap.accuracy.ci95[1], 100, 1)})`],
      ["macro-F1", f3(cmp.macroF1Before), f3(cmp.macroF1After), `${signed(cmp.bootstrap.macroF1.observed, 1, 3)} (95% CI ${signed(cmp.bootstrap.macroF1.ci95[0], 1, 3)} to ${signed(cmp.bootstrap.macroF1.ci95[1], 1, 3)})`],
    ];
    if (cmp.calibrationBefore && cmp.calibrationAfter) {
      rows.push(["ECE", f3(cmp.calibrationBefore.ece), f3(cmp.calibrationAfter.ece), signed(cmp.calibrationAfter.ece - cmp.calibrationBefore.ece, 1, 3)]);
      rows.push(["NLL", f3(cmp.calibrationBefore.nll), f3(cmp.calibrationAfter.nll), signed(cmp.calibrationAfter.nll - cmp.calibrationBefore.nll, 1, 3)]);
    }
    out.push(table(["", "base model", "with adapter", "change"], rows));
    out.push(
      "",
      `Paired on the same ${cmp.n} images: McNemar's exact test ${cmp.mcnemar.wrongToRight} wrong→right, ${cmp.mcnemar.rightToWrong} right→wrong, p = ${formatP(cmp.mcnemar.pValue)}; ` +
        `intervals from a paired bootstrap (${cmp.bootstrap.samples} resamples, seed ${cmp.bootstrap.seed}).`,
    );
  } else if (opts.before) {
    out.push("", `The base model on the same images: accuracy ${pct(opts.before.metrics.accuracy)}, macro-F1 ${f3(opts.before.metrics.macroF1)}.`);
  }
  return `${out.join("\n")}\n`;
}
