import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { writeStatsReport } from "../../src/data/stats.ts";
import { synthesizeDatasetDict } from "../../src/data/synth.ts";
import { compareEvalDirs } from "../../src/eval/compare-dirs.ts";
import { computeMetrics, INVALID } from "../../src/eval/metrics.ts";
import { writeEvalRun, type EvalSummary, type Prediction } from "../../src/eval/records.ts";
import { writeRunReport } from "../../src/report/report.ts";
import { auditDataset } from "../../src/data/audit.ts";
import { trustFigures } from "../../src/eval/trust.ts";
import { runLayout } from "../../src/report/run-layout.ts";
import { findChromium, renderedImages, screenshotBytes } from "../helpers/chromium.ts";

const root = await mkdtemp(join(tmpdir(), "splint-report-"));
after(() => rm(root, { recursive: true, force: true }));

/**
 * A complete run folder with crafted results: 2 test images per class, known flips. The before run
 * is in generate mode (with invalid answers), the after run in score mode, with crafted scores whose
 * best class is the prediction, so calibration and selective prediction appear for it.
 */
async function craftRun(dir: string, datasetDir = runLayout(dir).dataset): Promise<{ flips: number; errorsAfter: number }> {
  const layout = runLayout(dir);
  const dataset = await synthesizeDatasetDict({ perClass: 2, testPerClass: 2, seed: 5, size: 32 });
  await saveDatasetDict(datasetDir, dataset, "arrow");
  const audit = await auditDataset(dataset);
  await mkdir(layout.audit, { recursive: true });
  await writeFile(join(layout.audit, "audit.json"), JSON.stringify(audit));
  await mkdir(layout.adapter, { recursive: true });
  await writeFile(join(layout.train, "config.resolved.json"), JSON.stringify({ r: 4, lora_alpha: 8, learning_rate: 0.0002, target_modules: ["q_proj", "v_proj"] }));
  await writeFile(join(layout.adapter, "adapter_config.json"), JSON.stringify({ base_model_name_or_path: "acme/base-model", r: 4 }));
  await writeStatsReport(dataset, layout.stats, { samples: 4, seed: 1 });
  const log = Array.from({ length: 20 }, (_, i) => ({ step: i + 1, epoch: (i + 1) / 20, loss: 3 / (i + 1), lr: 1e-3 * (1 - i / 20), grad_norm: 1 + 1 / (i + 1) }));
  await mkdir(layout.train, { recursive: true });
  await writeFile(layout.trainLog, log.map((e) => JSON.stringify(e)).join("\n") + "\n");
  const rows = dataset.splits.get("test")!;
  const truth = rows.map((r) => r.label);
  const before = truth.map((t, i) => (i % 3 === 0 ? t : i % 3 === 1 ? INVALID : (t + 1) % 10));
  const afterPred = truth.map((t, i) => (i % 4 === 3 ? (t + 2) % 10 : t));
  for (const [folder, predicted, mode] of [
    [layout.evalBefore, before, "generate"],
    [layout.evalAfter, afterPred, "score"],
  ] as const) {
    const scores = (p: number, i: number) => dataset.classNames.map((_, c) => (c === p ? 0 : -1 - ((7 * i + 3 * c) % 5)));
    const raw: Prediction[] = predicted.map((p, i) => ({
      index: i,
      path: rows[i]!.image.path,
      label: truth[i]!,
      predicted: p,
      answer: p < 0 ? "??" : dataset.classNames[p]!,
      match: p < 0 ? "invalid" : "exact",
      ...(mode === "score" ? { scores: scores(p, i) } : {}),
    }));
    const trust = trustFigures(dataset.classNames, raw, null);
    const predictions = raw.map((p, i) => (trust.confidences[i] === null ? p : { ...p, confidence: trust.confidences[i]! }));
    const summary: EvalSummary = {
      model: "acme/tiny-model@v2",
      adapter: mode === "score" ? layout.adapter : null,
      dataset: datasetDir,
      split: "test",
      mode,
      template: "short",
      classNames: dataset.classNames,
      backend: "cpu",
      seconds: 1,
      imagesPerSecond: 20,
      metrics: computeMetrics(dataset.classNames, truth, predicted),
      bootstrap: trust.bootstrap,
      calibration: trust.calibration,
      selective: trust.selective,
    };
    await writeEvalRun(folder, summary, predictions);
  }
  const comparison = await compareEvalDirs(layout.evalBefore, layout.evalAfter, layout.compare);
  return { flips: comparison.rightToWrong.length + comparison.wrongToRight.length, errorsAfter: afterPred.filter((p, i) => p !== truth[i]).length };
}

const full = join(root, "full");
const { flips, errorsAfter } = await craftRun(full);
// class counts, sample grid, loss, lr, grad norm, accuracy, 2 confusion matrices, recall with
// intervals, the after run's reliability diagram, risk–coverage, recall per class before/after.
const CHARTS = 12;

test("the report has every section, every figure embedded, and nothing fetched from elsewhere", async () => {
  const summary = await writeRunReport(full);
  assert.deepEqual(summary.sections, ["run", "dataset", "audit", "training", "evaluation", "errors", "comparison"]);
  assert.deepEqual(summary.missing, []);
  const html = await readFile(summary.file, "utf8");
  for (const id of ["run", "dataset", "leakage-audit", "training", "evaluation", "errors", "before-and-after"]) assert.match(html, new RegExp(`<section id="${id}">`));
  // The model, its adapter's base and the settings, in the Run section.
  assert.match(html, /<td>model<\/td><td>acme\/tiny-model@v2<\/td>/);
  assert.match(html, /<td>base model of the adapter<\/td><td>acme\/base-model<\/td>/);
  assert.match(html, /<td>learning_rate<\/td><td>0.0002<\/td>/);
  assert.match(html, /<td>target_modules<\/td><td>\[&#34;q_proj&#34;,&#34;v_proj&#34;\]<\/td>/);
  // Synthetic images are all distinct: the audit's verdict is that nothing leaks.
  assert.match(html, /No test image matches a train image/);
  assert.equal(html.match(/Not for clinical use\./g)?.length, 2, "the notice opens and closes the page");
  const images = html.match(/<img [^>]*>/g) ?? [];
  // The five errors of the after run fall in five different confusion pairs: one thumbnail each.
  assert.equal(errorsAfter, 5);
  assert.equal(images.length, CHARTS + flips + errorsAfter);
  assert.equal(summary.figures, images.length);
  assert.ok(images.every((img) => /src="data:image\/(svg\+xml|png);base64,/.test(img)), "every image is a data URI");
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, "no remote resources");
  assert.match(html, /Wrong → right/);
  assert.match(html, /\(invalid\)/, "the before run's invalid answers get their own confusion column");
  assert.match(html, /alt="Reliability diagram after"/);
  assert.doesNotMatch(html, /alt="Reliability diagram before"/, "generate mode has no probabilities to calibrate");
  assert.match(html, /Paired bootstrap \(1000 resamples/);
  assert.match(html, /confidence \d+\.\d%/, "gallery cards give the confidence");
});

test("a run folder with missing steps still gives a report that names what is missing", async () => {
  const partial = join(root, "partial");
  const layout = runLayout(partial);
  const dataset = await synthesizeDatasetDict({ perClass: 1, testPerClass: 1, seed: 2, size: 32 });
  await writeStatsReport(dataset, layout.stats, { samples: 2, seed: 1 });
  const summary = await writeRunReport(partial);
  assert.deepEqual(summary.sections, ["dataset"]);
  assert.equal(summary.missing.length, 4);
  const html = await readFile(summary.file, "utf8");
  assert.match(html, /train_log\.jsonl<\/code> is missing/);
});

test("a run assembled from single commands, its dataset elsewhere, still shows the gallery images", async () => {
  const dir = join(root, "single");
  const elsewhere = join(root, "data-elsewhere");
  const { flips: f, errorsAfter: e } = await craftRun(dir, elsewhere);
  const summary = await writeRunReport(dir);
  const html = await readFile(summary.file, "utf8");
  assert.doesNotMatch(html, /image not found/);
  assert.equal((html.match(/<img [^>]*>/g) ?? []).length, CHARTS + f + e);
});

test("an audit that finds test images in train says the test figures overstate", async () => {
  const dir = join(root, "leaky");
  const dataset = await synthesizeDatasetDict({ perClass: 2, testPerClass: 2, seed: 5, size: 32 });
  const train = dataset.splits.get("train")!;
  const test = dataset.splits.get("test")!;
  // Two test rows replaced by copies of train images.
  const leaky = { ...dataset, splits: new Map([["train", train], ["test", [train[0]!, train[1]!, ...test.slice(2)]]]) };
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "audit.json"), JSON.stringify(await auditDataset(leaky)));
  const html = await readFile((await writeRunReport(dir)).file, "utf8");
  assert.match(html, new RegExp(`2 of ${test.length} test images \\(\\d+\\.\\d%\\) also appear in train`));
});

const chromium = await findChromium();

test("headless Chromium renders every figure of the report with a non-zero size, the reliability diagram and the error gallery among them", { skip: chromium === null ? "chromium is not installed" : false }, async () => {
  const summary = await writeRunReport(full);
  const figures = await renderedImages(chromium!, summary.file, root);
  assert.equal(figures.length, CHARTS + flips + errorsAfter);
  for (const f of figures) assert.ok(f.decoded && f.width > 50 && f.height > 50, `${f.alt}: ${JSON.stringify(f)}`);
  assert.ok(figures.some((f) => f.alt === "Reliability diagram after" && f.section === "evaluation"));
  assert.equal(figures.filter((f) => f.section === "errors").length, errorsAfter);
  assert.ok((await screenshotBytes(chromium!, summary.file, join(root, "report.png"))) > 10_000, "a non-blank screenshot");
});
