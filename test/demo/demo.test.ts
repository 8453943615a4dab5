import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parse as parseYaml } from "yaml";
import { createOutput } from "../../src/cli/output.ts";
import { DEMO_RECIPE } from "../../src/cli/commands/demo.ts";
import { runRecipe, STEPS, stepInputs } from "../../src/demo/pipeline.ts";
import { parseRecipe, readRecipe } from "../../src/demo/recipe.ts";
import { readCalibrationFile } from "../../src/eval/calibration-file.ts";
import { TEMPERATURE_RANGE } from "../../src/eval/calibration.ts";
import type { EvalSummary } from "../../src/eval/records.ts";
import { InputError } from "../../src/util/errors.ts";
import { findChromium, renderedImages } from "../helpers/chromium.ts";

process.env.SPLINT_NO_PROGRESS = "1";
const root = await mkdtemp(join(tmpdir(), "splint-demo-"));
after(() => rm(root, { recursive: true, force: true }));

/**
 * The demo recipe, shortened: 250 training steps instead of 400 (the schedule still decays to
 * zero, which the tiny model needs to get past predicting the class prior), no audit, a smaller
 * sample grid; the same model, data, validation and test split.
 */
async function shortDemo() {
  const raw = parseYaml(await readFile(DEMO_RECIPE, "utf8")) as Record<string, Record<string, unknown>>;
  raw.data = { synth: { per_class: 40, test_per_class: 10, size: 64, seed: 0 }, val_fraction: 0.1 };
  raw.audit = false as unknown as Record<string, unknown>;
  raw.stats = { samples: 4, seed: 1 };
  raw.train = { ...raw.train, max_steps: 250, warmup_steps: 25, logging_steps: 10 };
  return parseRecipe(raw, "short demo");
}

const quiet = { ...createOutput(true), log() {} };

test("the shortened demo learns: accuracy after clearly exceeds accuracy before on the synthetic test split", async () => {
  const runDir = join(root, "demo");
  const result = await runRecipe({ recipe: await shortDemo(), runDir, output: quiet });
  const { accuracyBefore, accuracyAfter, comparison } = result;
  // 100 test images over 10 classes: chance is 0.1. The random model sits near it; training must
  // add at least 15 points and be significant under the paired test.
  assert.ok(accuracyBefore <= 0.25, `before ${accuracyBefore}`);
  assert.ok(accuracyAfter >= accuracyBefore + 0.15, `before ${accuracyBefore}, after ${accuracyAfter}`);
  assert.ok(comparison.mcnemar.pValue < 0.01, `McNemar p ${comparison.mcnemar.pValue}`);
  for (const file of ["dataset/dataset_dict.json", "model/config.json", "stats/stats.json", "eval-before/metrics.json", "train/adapter/adapter_config.json", "train/train_log.jsonl", "eval-after/predictions.jsonl", "compare/comparison.json", "report.html"]) {
    await stat(join(runDir, file));
  }
  assert.deepEqual(result.ran, ["data", "model", "stats", "eval-before", "train", "calibrate", "eval-after", "compare", "report"]);

  // Temperature scaling fitted on the 40 validation images of the trained model: an interior
  // optimum (the model knows something), never a worse validation NLL, and applied by eval-after.
  const calibration = await readCalibrationFile(join(runDir, "train/adapter/calibration.json"));
  assert.equal(calibration.fittedOn.split, "validation");
  assert.ok(calibration.temperature > TEMPERATURE_RANGE[0] * 1.01 && calibration.temperature < TEMPERATURE_RANGE[1] / 1.01, `T = ${calibration.temperature}`);
  assert.ok(calibration.nll.after <= calibration.nll.before, JSON.stringify(calibration.nll));
  const afterSummary = JSON.parse(await readFile(join(runDir, "eval-after/metrics.json"), "utf8")) as EvalSummary;
  assert.equal(afterSummary.calibration!.temperature, calibration.temperature);
  assert.ok(afterSummary.calibration!.scaled && afterSummary.selective!.riskCoverage.length > 1);
  assert.ok(afterSummary.bootstrap!.macroF1Ci95[0] <= afterSummary.metrics.macroF1 && afterSummary.metrics.macroF1 <= afterSummary.bootstrap!.macroF1Ci95[1]);

  // A second run finds every step done and only rebuilds the report.
  const again = await runRecipe({ recipe: await shortDemo(), runDir, output: quiet });
  assert.deepEqual(again.ran, ["report"]);
  assert.equal(again.accuracyAfter, accuracyAfter);
});

const chromium = await findChromium();

test("the demo's report shows, in headless Chromium, the reliability diagrams, the error gallery and the flipped images", { skip: chromium === null ? "chromium is not installed" : false }, async () => {
  const runDir = join(root, "demo");
  const images = await renderedImages(chromium!, join(runDir, "report.html"), root);
  const shown = (f: { decoded: boolean; width: number; height: number }) => f.decoded && f.width > 50 && f.height > 50;
  for (const run of ["before", "after"]) assert.ok(images.some((f) => f.alt === `Reliability diagram ${run}` && shown(f)), `reliability diagram ${run}`);
  assert.ok(images.some((f) => f.alt === "Risk-coverage curve" && shown(f)));
  const gallery = images.filter((f) => f.section === "errors");
  assert.ok(gallery.length > 0 && gallery.every(shown), `${gallery.length} gallery thumbnails`);
  const flips = images.filter((f) => f.section === "before-and-after" && f.alt.startsWith("image "));
  assert.ok(flips.length > 0 && flips.every(shown), `${flips.length} flipped images`);
});

test("--from redoes a step and every later one", async () => {
  const runDir = join(root, "demo");
  const result = await runRecipe({ recipe: await shortDemo(), runDir, from: "compare", output: quiet });
  assert.deepEqual(result.ran, ["compare", "report"]);
});

test("both shipped recipes parse, and the tutorial recipe carries the tutorial's settings", async () => {
  const demo = await readRecipe(DEMO_RECIPE);
  assert.equal(demo.model.kind, "init");
  const tutorial = await readRecipe(join(import.meta.dirname, "../../recipes/ministral3-14b-bone-fracture.yaml"));
  assert.deepEqual(tutorial.data.source, { kind: "kaggle", ref: "pkdarabi/bone-break-classification-image-dataset" });
  assert.deepEqual(tutorial.model, { kind: "hub", repo: "mistralai/Ministral-3-14B-Instruct-2512-BF16", revision: "main" });
  const t = tutorial.train;
  assert.deepEqual(
    [t.r, t.lora_alpha, t.lora_dropout, t.per_device_train_batch_size, t.gradient_accumulation_steps, t.learning_rate, t.max_grad_norm, t.warmup_steps, t.lr_scheduler_type, t.num_train_epochs],
    [16, 32, 0.05, 2, 4, 2e-4, 0.3, 25, "linear", 1],
  );
});

test("a recipe with an unknown setting is refused with the key named", () => {
  assert.throws(() => parseRecipe({ data: { synth: { per_class: 1 } }, model: { init: {} }, evaluate: {} }, "r.yaml"), (e: unknown) => e instanceof InputError && /"evaluate"/.test(e.message));
  assert.throws(() => parseRecipe({ data: { synth: { per_class: 1 }, kaggle: "a/b" }, model: { init: {} } }, "r.yaml"), /exactly one of synth, kaggle or dir/);
});

test("content hashes: an edit changes the hash of the steps it affects and of those downstream, nothing else", async () => {
  const base = stepInputs(await shortDemo()).hashes;
  const edited = async (edit: (raw: Record<string, Record<string, unknown>>) => void) => {
    const raw = parseYaml(await readFile(DEMO_RECIPE, "utf8")) as Record<string, Record<string, unknown>>;
    raw.data = { synth: { per_class: 40, test_per_class: 10, size: 64, seed: 0 }, val_fraction: 0.1 };
    raw.audit = false as unknown as Record<string, unknown>;
    raw.stats = { samples: 4, seed: 1 };
    raw.train = { ...raw.train, max_steps: 250, warmup_steps: 25, logging_steps: 10 };
    edit(raw);
    const h = stepInputs(parseRecipe(raw, "edited")).hashes;
    return STEPS.filter((s) => h[s] !== base[s]);
  };
  assert.deepEqual(await edited(() => {}), [], "the same recipe hashes the same");
  // Key order in the file does not matter.
  assert.deepEqual(await edited((r) => (r.train = Object.fromEntries(Object.entries(r.train!).reverse()))), []);
  assert.deepEqual(await edited((r) => (r.train!.learning_rate = 0.001)), ["train", "calibrate", "eval-after", "compare"]);
  assert.deepEqual(await edited((r) => (r.stats!.samples = 2)), ["stats"]);
  assert.deepEqual(await edited((r) => (r.train!.prompt = "Classify: {classes}")), ["eval-before", "train", "calibrate", "eval-after", "compare"]);
  assert.deepEqual(await edited((r) => (r.data!.val_fraction = 0.2)), ["data", "stats", "audit", "eval-before", "train", "calibrate", "eval-after", "compare"]);
});

test("an edited recipe reruns the affected steps instead of finding them done", async () => {
  const runDir = join(root, "demo");
  const recipe = await shortDemo();
  const shorter = parseRecipe({ ...(parseYaml(await readFile(DEMO_RECIPE, "utf8")) as object), data: { synth: { per_class: 40, test_per_class: 10, size: 64, seed: 0 }, val_fraction: 0.1 }, audit: false, stats: { samples: 4, seed: 1 }, train: { ...recipe.train, max_steps: 20, warmup_steps: 2 } }, "edited demo");
  const logs: string[] = [];
  const result = await runRecipe({ recipe: shorter, runDir, output: { ...quiet, log: (m: string) => logs.push(m) } });
  assert.deepEqual(result.ran, ["train", "calibrate", "eval-after", "compare", "report"]);
  assert.ok(logs.some((l) => /train: inputs changed \(max_steps, warmup_steps\)/.test(l)), logs.join("\n"));
  const config = JSON.parse(await readFile(join(runDir, "train/config.resolved.json"), "utf8")) as { max_steps: number };
  assert.equal(config.max_steps, 20);
  // The model card now carries the evaluation and the comparison.
  const card = await readFile(join(runDir, "train/adapter/README.md"), "utf8");
  assert.match(card, /## Evaluation/);
  assert.match(card, /### Change from the base model/);
  assert.match(card, /Not for clinical use/);
  const again = await runRecipe({ recipe: shorter, runDir, output: quiet });
  assert.deepEqual(again.ran, ["report"]);
});
