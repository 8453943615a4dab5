import { readFile, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import sharp from "sharp";
import { loadDatasetDict } from "../data/hf-dataset.ts";
import { loadDataset } from "../data/load-dataset.ts";
import { parseHubRef } from "../hub/resolve.ts";
import { classCountsChart, type DatasetStats } from "../data/stats.ts";
import type { DatasetDict } from "../data/types.ts";
import type { Comparison, FlippedExample } from "../eval/compare.ts";
import { readComparison } from "../eval/compare-dirs.ts";
import { formatP } from "../eval/format.ts";
import { readEvalRun, type EvalSummary, type Prediction } from "../eval/records.ts";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import { barChart, heatmap, intervalChart, lineChart, reliabilityDiagram, renderSvg, type ChartSpec } from "../util/charts.ts";
import { escapeHtml, table } from "./html.ts";
import { auditFiles, auditSection, CLINICAL_DISCLAIMER, runSection } from "./run-facts.ts";
import { runLayout, type RunLayout } from "./run-layout.ts";

/**
 * `splint report RUN`: one HTML file that opens offline and shows the whole run — the data, the
 * training curves, the before/after measurements (with intervals, calibration and selective
 * prediction in score mode), a gallery of the misclassified images and the images whose answers changed. Figures
 * are Vega-Lite charts rendered to SVG and embedded as data URIs; images are embedded PNGs. A step
 * whose output is missing is named as missing instead of failing the report.
 */

export interface ReportSummary {
  readonly file: string;
  /** Sections that had data, and those that did not (with the file that was missing). */
  readonly sections: readonly string[];
  readonly missing: readonly string[];
  readonly figures: number;
}

interface TrainLogEntry {
  readonly step: number;
  readonly loss?: number;
  readonly lr?: number;
  readonly grad_norm?: number;
}

interface StatsFile extends DatasetStats {
  readonly samples?: readonly { readonly labelName: string }[];
}

const MAX_FLIPS_SHOWN = 24;
/** The error gallery: the most frequent confusion pairs, and the most confident errors of each. */
const MAX_PAIRS_SHOWN = 12;
const MAX_ERRORS_PER_PAIR = 6;

interface EvalRunFiles {
  readonly summary: EvalSummary;
  readonly predictions: readonly Prediction[];
}

export async function writeRunReport(root: string, opts: { title?: string; out?: string } = {}): Promise<ReportSummary> {
  if (!(await exists(root))) throw new InputError(root, "does not exist", "pass the run folder of `splint demo` or `splint run`");
  const run = runLayout(root);
  const page = new Page(opts.title ?? "splint run report");
  const missing: string[] = [];
  const sections: string[] = [];
  const note = (section: string, file: string) => {
    missing.push(`${section}: ${file}`);
    page.section(section, `<p class="missing">Not available: <code>${escapeHtml(file)}</code> is missing.</p>`);
  };

  const before = await readEvalIfExists(run.evalBefore);
  const after = await readEvalIfExists(run.evalAfter);
  const split = after?.summary.split ?? before?.summary.split ?? "test";
  const facts = await runSection(run, before?.summary ?? null, after?.summary ?? null);
  if (facts) {
    sections.push("run");
    page.section("Run", facts);
  }

  const stats = await readJsonIfExists<StatsFile>(join(run.stats, "stats.json"));
  if (stats) {
    sections.push("dataset");
    await datasetSection(page, run, stats);
  } else note("Dataset", join(run.stats, "stats.json"));

  const audit = await auditSection(run, split);
  if (audit) {
    sections.push("audit");
    page.section("Leakage audit", audit);
  } else note("Leakage audit", auditFiles(run)[0]!);

  const log = await readTrainLog(run.trainLog);
  if (log) {
    sections.push("training");
    await trainingSection(page, log);
  } else note("Training", run.trainLog);

  const dataset = await datasetFor(run, after?.summary ?? before?.summary ?? null);
  if (before || after) {
    sections.push("evaluation");
    await evaluationSection(page, before?.summary ?? null, after?.summary ?? null);
    // The errors of the model the run produced: the fine-tuned one when there is one.
    const [name, shown] = after ? (["after", after] as const) : (["before", before!] as const);
    sections.push("errors");
    await errorsSection(page, name, shown, dataset, split);
  } else note("Evaluation", join(run.evalBefore, "metrics.json"));

  const comparisonFile = join(run.compare, "comparison.json");
  if (await exists(comparisonFile)) {
    sections.push("comparison");
    const comparison = await readComparison(run.compare);
    await comparisonSection(page, comparison, dataset, split);
  } else note("Before and after", comparisonFile);

  const file = opts.out ?? run.report;
  await writeFileAtomic(file, page.html());
  return { file, sections, missing, figures: page.figures };
}

/**
 * The images for the galleries: the run's own dataset/ (a recipe imports into it), else the dataset
 * folder (or Hub dataset) the evaluation read, as its metrics.json records it (a run assembled from
 * single commands).
 */
async function datasetFor(run: RunLayout, summary: EvalSummary | null): Promise<DatasetDict | null> {
  if (await exists(run.dataset)) return loadDatasetDict(run.dataset);
  if (!summary) return null;
  if (await exists(summary.dataset)) return loadDatasetDict(summary.dataset);
  // A Hub dataset id: the copy eval downloaded, from the cache only (a report makes no requests).
  if (parseHubRef(summary.dataset)) return (await loadDataset(summary.dataset, { offline: true }).catch(() => null))?.dataset ?? null;
  return null;
}

async function datasetSection(page: Page, run: RunLayout, stats: StatsFile): Promise<void> {
  const rows = stats.classNames.map((name, c) => [name, ...stats.splits.map((s) => String(s.counts[c] ?? 0))]);
  rows.push(["total", ...stats.splits.map((s) => String(s.total))]);
  const parts = [
    table(["class", ...stats.splits.map((s) => s.split)], rows),
    await page.chart(classCountsChart(stats), "Images per class and split"),
  ];
  const grid = join(run.stats, "samples.png");
  if (await exists(grid)) parts.push(page.image(await readFile(grid), "image/png", "Random training images with their labels"));
  page.section("Dataset", parts.join("\n"));
}

async function trainingSection(page: Page, log: readonly TrainLogEntry[]): Promise<void> {
  const series = (key: "loss" | "lr" | "grad_norm") => log.flatMap((e) => (typeof e[key] === "number" && Number.isFinite(e[key]) ? [{ x: e.step, y: e[key] }] : []));
  const parts = [
    `<p>${log.length} logged optimizer steps; last step ${log[log.length - 1]!.step}.</p>`,
    await page.chart(lineChart(series("loss"), { title: "Training loss", xTitle: "optimizer step", yTitle: "loss (log scale)", logY: true }), "Training loss"),
    await page.chart(lineChart(series("lr"), { title: "Learning rate", xTitle: "optimizer step", yTitle: "learning rate" }), "Learning rate"),
    await page.chart(lineChart(series("grad_norm"), { title: "Gradient norm (before clipping)", xTitle: "optimizer step", yTitle: "‖g‖" }), "Gradient norm"),
  ];
  page.section("Training", parts.join("\n"));
}

async function evaluationSection(page: Page, before: EvalSummary | null, after: EvalSummary | null): Promise<void> {
  const runs = [
    ["before", before],
    ["after", after],
  ].filter((r): r is [string, EvalSummary] => r[1] !== null);
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const summaryRows = runs.map(([name, s]) => {
    const m = s.metrics;
    const f1Ci = s.bootstrap ? ` (${s.bootstrap.macroF1Ci95[0].toFixed(3)}–${s.bootstrap.macroF1Ci95[1].toFixed(3)})` : "";
    return [name, s.mode, String(m.n), `${pct(m.accuracy)} (${pct(m.accuracyCi95[0])}–${pct(m.accuracyCi95[1])})`, `${m.macroF1.toFixed(3)}${f1Ci}`, pct(m.invalidRate), s.imagesPerSecond.toFixed(2)];
  });
  const parts = [
    table(["model", "mode", "images", "accuracy (95% Wilson CI)", "macro-F1 (95% bootstrap CI)", "invalid", "images/s"], summaryRows),
  ];
  const accuracy = barChart(
    runs.map(([name, s]) => ({ category: name, value: Math.round(1000 * s.metrics.accuracy) / 10 })),
    { title: "Test accuracy (%)", valueTitle: "accuracy %", width: 200 },
  );
  parts.push(await page.chart(accuracy, "Accuracy before and after"));
  for (const [name, s] of runs) {
    const k = s.classNames.length;
    const withInvalid = s.metrics.confusion.some((row) => row[k]! > 0);
    const columns = withInvalid ? [...s.classNames, "(invalid)"] : [...s.classNames];
    const counts = s.metrics.confusion.map((row) => (withInvalid ? [...row] : row.slice(0, k)));
    parts.push(await page.chart(heatmap(s.classNames, columns, counts, { title: `Confusion matrix, ${name}`, rowTitle: "true class", columnTitle: "predicted class" }), `Confusion matrix ${name}`));
  }
  const header = ["class", "support", ...runs.flatMap(([name]) => [`precision ${name}`, `recall ${name}`, `F1 ${name}`])];
  const rows = runs[0]![1].classNames.map((cls, c) => [
    cls,
    String(runs[0]![1].metrics.perClass[c]!.support),
    ...runs.flatMap(([, s]) => {
      const m = s.metrics.perClass[c]!;
      return [m.precision.toFixed(3), m.recall.toFixed(3), m.f1.toFixed(3)];
    }),
  ]);
  parts.push("<h3>Per class</h3>", table(header, rows));
  // Older eval folders have no recall intervals.
  const withIntervals = runs.filter(([, s]) => s.metrics.perClass.every((c) => c.recallCi95 !== undefined));
  if (withIntervals.length > 0) {
    const recall = intervalChart(
      withIntervals.flatMap(([name, s]) =>
        s.metrics.perClass.map((c) => ({ category: c.name, value: c.recall, lo: c.recallCi95[0], hi: c.recallCi95[1], series: name })),
      ),
      { title: "Recall per class with 95% Wilson intervals", valueTitle: "recall" },
    );
    parts.push(await page.chart(recall, "Recall per class with intervals"));
  }
  parts.push(...(await calibrationParts(page, runs)));
  page.section("Evaluation", parts.join("\n"));
}

/** Score mode: reliability diagrams (before and after temperature scaling), the proper scores, and selective prediction. */
async function calibrationParts(page: Page, runs: readonly (readonly [string, EvalSummary])[]): Promise<string[]> {
  const scored = runs.filter(([, s]) => s.calibration && s.selective);
  if (scored.length === 0) return [];
  const f3 = (x: number) => x.toFixed(3);
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const parts = [
    "<h3>Calibration</h3>",
    "<p>From score mode's class probabilities. ECE: mean |accuracy − confidence| over confidence bins, weighted by the images in each " +
      "(15 equal-width bins, and 15 equal-mass bins); Brier: mean Σ<sub>c</sub>(p<sub>c</sub> − [c = true])²; NLL: mean −ln p(true class). " +
      "A temperature T fitted on validation (<code>splint calibrate</code>) divides the scores; it changes confidence, never the predicted class.</p>",
  ];
  const rows = scored.flatMap(([name, s]) => {
    const c = s.calibration!;
    const row = (label: string, f: typeof c.raw) => [label, f.temperature.toFixed(3), f3(f.ece), f3(f.eceEqualMass), f3(f.brier), f3(f.nll)];
    return c.scaled ? [row(`${name}, T = 1`, c.raw), row(`${name}, calibrated`, c.scaled)] : [row(name, c.raw)];
  });
  parts.push(table(["model", "T", "ECE", "ECE (equal mass)", "Brier", "NLL"], rows));
  for (const [name, s] of scored) {
    const c = s.calibration!;
    const series = [{ name: "T = 1", bins: c.raw.reliability }, ...(c.scaled ? [{ name: `T = ${c.temperature.toFixed(2)} (fitted)`, bins: c.scaled.reliability }] : [])];
    parts.push(await page.chart(reliabilityDiagram(series, { title: `Reliability diagram, ${name}` }), `Reliability diagram ${name}`));
  }
  parts.push(
    "<h3>Selective prediction</h3>",
    "<p>Answering only when the top probability reaches a threshold: coverage is the share of images answered, risk the error rate among them. " +
      "A useful confidence makes the curve rise from low risk at low coverage; AURC is the area under it (lower is better).</p>",
  );
  const curve = lineChart(
    scored.flatMap(([name, s]) => s.selective!.riskCoverage.map((p) => ({ x: p.coverage, y: p.risk, series: name }))),
    { title: "Risk–coverage", xTitle: "coverage", yTitle: "risk (error rate among answered)", points: true },
  );
  parts.push(await page.chart(curve, "Risk-coverage curve"));
  const coverages = scored[0]![1].selective!.atCoverage.map((a) => a.target);
  parts.push(
    table(
      ["model", "AURC", ...coverages.map((t) => `accuracy at ${Math.round(100 * t)}% coverage`), "abstaining at the validation threshold"],
      scored.map(([name, s]) => {
        const sel = s.selective!;
        const t = sel.atThreshold;
        return [name, f3(sel.aurc), ...sel.atCoverage.map((a) => `${pct(a.accuracy)} (${pct(a.coverage)} answered)`), t ? `below ${f3(t.threshold)}: ${pct(t.accuracy)} right, ${pct(t.coverage)} answered` : "—"];
      }),
    ),
  );
  return parts;
}

/** Misclassified images grouped by (true, predicted) pair, the most frequent pairs first, the most confident errors first within each. */
async function errorsSection(page: Page, name: string, run: EvalRunFiles, dataset: DatasetDict | null, split: string): Promise<void> {
  const classNames = run.summary.classNames;
  const label = (c: number) => (c < 0 ? "(invalid)" : (classNames[c] ?? String(c)));
  const pairs = new Map<string, Prediction[]>();
  for (const p of run.predictions) {
    if (p.predicted === p.label) continue;
    const key = `${p.label}\u0000${p.predicted}`;
    pairs.set(key, [...(pairs.get(key) ?? []), p]);
  }
  const confidence = (p: Prediction) => p.confidence ?? -1;
  const groups = [...pairs.values()]
    .map((errors) => [...errors].sort((a, b) => confidence(b) - confidence(a) || a.index - b.index))
    .sort((a, b) => b.length - a.length || confidence(b[0]!) - confidence(a[0]!));
  const errors = groups.reduce((n, g) => n + g.length, 0);
  const rows = dataset?.splits.get(split) ?? null;
  const parts = [`<p>${errors} of ${run.predictions.length} ${split} images misclassified by the ${name} model, in ${groups.length} confusion pairs${run.summary.mode === "score" ? "; confidence is the top-class probability" : ""}.</p>`];
  for (const group of groups.slice(0, MAX_PAIRS_SHOWN)) {
    const first = group[0]!;
    parts.push(`<h3>true ${escapeHtml(label(first.label))} → predicted ${escapeHtml(label(first.predicted))} (${group.length})</h3>`);
    const cards: string[] = [];
    for (const p of group.slice(0, MAX_ERRORS_PER_PAIR)) {
      const caption = `true: <b>${escapeHtml(label(p.label))}</b><br>predicted: ${escapeHtml(label(p.predicted))}${p.confidence === undefined ? "" : `<br>confidence ${(100 * p.confidence).toFixed(1)}%`}`;
      cards.push(await imageCard(page, p.index, p.path, rows?.[p.index]?.image.bytes ?? null, caption));
    }
    parts.push(`<div class="flips gallery">${cards.join("\n")}</div>`);
    if (group.length > MAX_ERRORS_PER_PAIR) parts.push(`<p>… and ${group.length - MAX_ERRORS_PER_PAIR} more.</p>`);
  }
  if (groups.length > MAX_PAIRS_SHOWN) parts.push(`<p>… and ${groups.length - MAX_PAIRS_SHOWN} more pairs in predictions.jsonl.</p>`);
  page.section("Errors", parts.join("\n"));
}

async function comparisonSection(page: Page, c: Comparison, dataset: DatasetDict | null, split: string): Promise<void> {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const delta = c.accuracyAfter - c.accuracyBefore;
  const parts = [
    `<p class="headline">Accuracy ${pct(c.accuracyBefore)} → ${pct(c.accuracyAfter)} (${delta >= 0 ? "+" : ""}${(100 * delta).toFixed(1)} points) on ${c.n} paired images. ` +
      `McNemar's exact test: ${c.mcnemar.wrongToRight} wrong→right, ${c.mcnemar.rightToWrong} right→wrong, p = ${formatP(c.mcnemar.pValue)}.</p>`,
  ];
  // comparison.json files written before the paired bootstrap have none.
  if (c.bootstrap) {
    const b = c.bootstrap;
    const signed = (x: number, scale: number, digits: number) => `${x >= 0 ? "+" : ""}${(scale * x).toFixed(digits)}`;
    parts.push(
      `<p>Paired bootstrap (${b.samples} resamples of the same images, seed ${b.seed}): accuracy change ${signed(b.accuracy.observed, 100, 1)} points ` +
        `(95% CI ${signed(b.accuracy.ci95[0], 100, 1)} to ${signed(b.accuracy.ci95[1], 100, 1)}), macro-F1 change ${signed(b.macroF1.observed, 1, 3)} ` +
        `(95% CI ${signed(b.macroF1.ci95[0], 1, 3)} to ${signed(b.macroF1.ci95[1], 1, 3)}).</p>`,
    );
  }
  const recall = barChart(
    c.perClass.flatMap((p) => [
      { category: p.name, value: Math.round(1000 * p.recallBefore) / 1000, series: "before" },
      { category: p.name, value: Math.round(1000 * p.recallAfter) / 1000, series: "after" },
    ]),
    { title: "Recall per class", valueTitle: "recall", labels: false },
  );
  parts.push(await page.chart(recall, "Recall per class before and after"));
  const rows = dataset?.splits.get(split) ?? null;
  const classNames = dataset?.classNames ?? c.perClass.map((p) => p.name);
  for (const [title, flips] of [
    ["Wrong → right", c.wrongToRight],
    ["Right → wrong", c.rightToWrong],
  ] as const) {
    parts.push(`<h3>${title} (${flips.length})</h3>`);
    if (flips.length === 0) {
      parts.push("<p>None.</p>");
      continue;
    }
    const cards: string[] = [];
    for (const flip of flips.slice(0, MAX_FLIPS_SHOWN)) cards.push(await flipCard(page, flip, rows?.[flip.index]?.image.bytes ?? null, classNames));
    parts.push(`<div class="flips">${cards.join("\n")}</div>`);
    if (flips.length > MAX_FLIPS_SHOWN) parts.push(`<p>… and ${flips.length - MAX_FLIPS_SHOWN} more in compare/comparison.json.</p>`);
  }
  page.section("Before and after", parts.join("\n"));
}

async function flipCard(page: Page, flip: FlippedExample, bytes: Uint8Array | null, classNames: readonly string[]): Promise<string> {
  const name = (label: number) => (label < 0 ? "(invalid)" : (classNames[label] ?? String(label)));
  // Older comparison.json files carry no confidences.
  const conf = (x: number | null | undefined) => (x === null || x === undefined ? "" : ` (${(100 * x).toFixed(0)}%)`);
  const caption = `true: <b>${escapeHtml(name(flip.label))}</b><br>before: ${escapeHtml(name(flip.before))}${conf(flip.confidenceBefore)}<br>after: ${escapeHtml(name(flip.after))}${conf(flip.confidenceAfter)}`;
  return imageCard(page, flip.index, flip.path, bytes, caption);
}

/** A thumbnail with its row index, file name and an HTML caption. */
async function imageCard(page: Page, index: number, path: string | null, bytes: Uint8Array | null, caption: string): Promise<string> {
  let picture = `<div class="noimage">image not found</div>`;
  if (bytes) {
    const thumb = await sharp(bytes).resize(160, 160, { fit: "contain", background: "#000000" }).flatten({ background: "#000000" }).png().toBuffer().catch(() => null);
    if (thumb) picture = page.image(thumb, "image/png", `image ${index}`);
  }
  return `<figure class="flip">${picture}<figcaption>#${index}${path ? ` <span class="path" title="${escapeHtml(path)}">${escapeHtml(basename(path))}</span>` : ""}<br>${caption}</figcaption></figure>`;
}

/** The HTML being built: sections plus figure bookkeeping. */
class Page {
  private readonly sections: string[] = [];
  figures = 0;

  constructor(private readonly title: string) {}

  section(title: string, body: string): void {
    const id = title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
    this.sections.push(`<section id="${id}"><h2>${escapeHtml(title)}</h2>\n${body}\n</section>`);
  }

  async chart(spec: ChartSpec, alt: string): Promise<string> {
    const svg = await renderSvg(spec);
    return this.image(Buffer.from(svg), "image/svg+xml", alt);
  }

  image(bytes: Uint8Array, type: string, alt: string): string {
    this.figures++;
    return `<img class="figure" src="data:${type};base64,${Buffer.from(bytes).toString("base64")}" alt="${escapeHtml(alt)}">`;
  }

  html(): string {
    return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(this.title)}</title>
<style>
body { font-family: "DejaVu Sans", system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; } th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img.figure { display: block; margin: 1rem 0; max-width: 100%; }
.flips { display: flex; flex-wrap: wrap; gap: .8rem; }
figure.flip { margin: 0; width: 170px; font-size: .8rem; } figure.flip img.figure { margin: 0 0 .3rem 0; }
.path { color: #777; word-break: break-all; } .missing { color: #a00; } .headline { font-size: 1.1rem; }
.disclaimer { border-left: 4px solid #c60; background: #fff4e5; padding: .4rem .8rem; }
.noimage { width: 160px; height: 160px; background: #eee; display: flex; align-items: center; justify-content: center; }
</style>
</head>
<body>
<h1>${escapeHtml(this.title)}</h1>
<p class="disclaimer">${escapeHtml(CLINICAL_DISCLAIMER)}</p>
<p>Generated by splint on ${new Date().toISOString()}. Everything is embedded: this file opens offline.</p>
${this.sections.join("\n")}
<footer><p class="disclaimer">${escapeHtml(CLINICAL_DISCLAIMER)}</p></footer>
</body>
</html>
`;
  }
}

export { escapeHtml };

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function readJsonIfExists<T>(file: string): Promise<T | null> {
  if (!(await exists(file))) return null;
  try {
    return JSON.parse(await readFile(file, "utf8")) as T;
  } catch (error) {
    throw new InputError(file, `invalid JSON: ${(error as Error).message}`);
  }
}

async function readEvalIfExists(dir: string): Promise<EvalRunFiles | null> {
  if (!(await exists(join(dir, "metrics.json")))) return null;
  return readEvalRun(dir);
}

async function readTrainLog(file: string): Promise<TrainLogEntry[] | null> {
  if (!(await exists(file))) return null;
  const lines = (await readFile(file, "utf8")).split("\n").filter((l) => l.trim() !== "");
  const entries = lines.map((line, i) => {
    try {
      return JSON.parse(line) as TrainLogEntry;
    } catch (error) {
      throw new InputError(`${file}:${i + 1}`, `invalid JSON: ${(error as Error).message}`);
    }
  });
  const steps = entries.filter((e) => typeof e.step === "number");
  return steps.length > 0 ? steps : null;
}
