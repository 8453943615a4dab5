import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";
import { saveDatasetDict } from "../../src/data/hf-dataset.ts";
import { writeStatsReport } from "../../src/data/stats.ts";
import { synthesizeDatasetDict } from "../../src/data/synth.ts";
import { compareEvalDirs } from "../../src/eval/compare-dirs.ts";
import { computeMetrics, INVALID } from "../../src/eval/metrics.ts";
import { writeEvalRun, type EvalSummary, type Prediction } from "../../src/eval/records.ts";
import { writeRunReport } from "../../src/report/report.ts";
import { runLayout } from "../../src/report/run-layout.ts";

const run = promisify(execFile);
const root = await mkdtemp(join(tmpdir(), "splint-report-"));
after(() => rm(root, { recursive: true, force: true }));

/** A complete run folder with crafted results: 2 test images per class, known flips. */
async function craftRun(dir: string): Promise<{ flips: number }> {
  const layout = runLayout(dir);
  const dataset = await synthesizeDatasetDict({ perClass: 2, testPerClass: 2, seed: 5, size: 32 });
  await saveDatasetDict(layout.dataset, dataset, "arrow");
  await writeStatsReport(dataset, layout.stats, { samples: 4, seed: 1 });
  const log = Array.from({ length: 20 }, (_, i) => ({ step: i + 1, epoch: (i + 1) / 20, loss: 3 / (i + 1), lr: 1e-3 * (1 - i / 20), grad_norm: 1 + 1 / (i + 1) }));
  await mkdir(layout.train, { recursive: true });
  await writeFile(layout.trainLog, log.map((e) => JSON.stringify(e)).join("\n") + "\n");
  const rows = dataset.splits.get("test")!;
  const truth = rows.map((r) => r.label);
  const before = truth.map((t, i) => (i % 3 === 0 ? t : i % 3 === 1 ? INVALID : (t + 1) % 10));
  const afterPred = truth.map((t, i) => (i % 4 === 3 ? (t + 2) % 10 : t));
  for (const [folder, predicted] of [
    [layout.evalBefore, before],
    [layout.evalAfter, afterPred],
  ] as const) {
    const predictions: Prediction[] = predicted.map((p, i) => ({ index: i, path: rows[i]!.image.path, label: truth[i]!, predicted: p, answer: p < 0 ? "??" : dataset.classNames[p]!, match: p < 0 ? "invalid" : "exact" }));
    const summary: EvalSummary = {
      model: "tiny",
      adapter: null,
      dataset: layout.dataset,
      split: "test",
      mode: "generate",
      template: "short",
      classNames: dataset.classNames,
      backend: "cpu",
      seconds: 1,
      imagesPerSecond: 20,
      metrics: computeMetrics(dataset.classNames, truth, predicted),
    };
    await writeEvalRun(folder, summary, predictions);
  }
  const comparison = await compareEvalDirs(layout.evalBefore, layout.evalAfter, layout.compare);
  return { flips: comparison.rightToWrong.length + comparison.wrongToRight.length };
}

const full = join(root, "full");
const { flips } = await craftRun(full);
// class counts, sample grid, loss, lr, grad norm, accuracy, 2 confusion matrices, recall per class.
const CHARTS = 9;

test("the report has every section, every figure embedded, and nothing fetched from elsewhere", async () => {
  const summary = await writeRunReport(full);
  assert.deepEqual(summary.sections, ["dataset", "training", "evaluation", "comparison"]);
  assert.deepEqual(summary.missing, []);
  const html = await readFile(summary.file, "utf8");
  for (const id of ["dataset", "training", "evaluation", "before-and-after"]) assert.match(html, new RegExp(`<section id="${id}">`));
  const images = html.match(/<img [^>]*>/g) ?? [];
  assert.equal(images.length, CHARTS + flips);
  assert.equal(summary.figures, images.length);
  assert.ok(images.every((img) => /src="data:image\/(svg\+xml|png);base64,/.test(img)), "every image is a data URI");
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, "no remote resources");
  assert.match(html, /Wrong → right/);
  assert.match(html, /\(invalid\)/, "the before run's invalid answers get their own confusion column");
});

test("a run folder with missing steps still gives a report that names what is missing", async () => {
  const partial = join(root, "partial");
  const layout = runLayout(partial);
  const dataset = await synthesizeDatasetDict({ perClass: 1, testPerClass: 1, seed: 2, size: 32 });
  await writeStatsReport(dataset, layout.stats, { samples: 2, seed: 1 });
  const summary = await writeRunReport(partial);
  assert.deepEqual(summary.sections, ["dataset"]);
  assert.equal(summary.missing.length, 3);
  const html = await readFile(summary.file, "utf8");
  assert.match(html, /train_log\.jsonl<\/code> is missing/);
});

/** Debian's chromium, when installed (CI installs it; see .ci/run). */
async function findChromium(): Promise<string | null> {
  for (const name of ["chromium", "chromium-browser"]) {
    try {
      await run("sh", ["-c", `command -v ${name}`]);
      return name;
    } catch {
      // not this one
    }
  }
  return null;
}

const chromium = await findChromium();

test("headless Chromium renders every figure of the report with a non-zero size", { skip: chromium === null ? "chromium is not installed" : false }, async () => {
  const summary = await writeRunReport(full);
  const html = await readFile(summary.file, "utf8");
  // After load, record each image's decode state and laid-out size in the DOM that --dump-dom prints.
  const probe = `<script>window.addEventListener("load", () => {
    const figures = [...document.images].map((img) => { const r = img.getBoundingClientRect(); return { alt: img.alt, decoded: img.complete && img.naturalWidth > 0, width: r.width, height: r.height }; });
    const out = document.createElement("pre"); out.id = "probe"; out.textContent = JSON.stringify(figures); document.body.appendChild(out);
  });</script>`;
  const probed = join(root, "probed.html");
  await writeFile(probed, html.replace("</body>", `${probe}</body>`));
  const { stdout } = await run(chromium!, ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", `file://${probed}`], { maxBuffer: 64 << 20, timeout: 60_000 });
  const match = /<pre id="probe">(.*?)<\/pre>/s.exec(stdout);
  assert.ok(match, "the probe ran");
  const figures = JSON.parse(match[1]!.replace(/&quot;/g, '"').replace(/&amp;/g, "&")) as { alt: string; decoded: boolean; width: number; height: number }[];
  assert.equal(figures.length, CHARTS + flips);
  for (const f of figures) assert.ok(f.decoded && f.width > 50 && f.height > 50, `${f.alt}: ${JSON.stringify(f)}`);
  const shot = join(root, "report.png");
  await run(chromium!, ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,3000", `--screenshot=${shot}`, `file://${summary.file}`], { timeout: 60_000 });
  assert.ok((await readFile(shot)).byteLength > 10_000, "a non-blank screenshot");
});
