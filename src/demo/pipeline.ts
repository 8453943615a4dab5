import { rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Output } from "../util/output.ts";
import { auditDataset } from "../data/audit.ts";
import { loadDatasetDict } from "../data/hf-dataset.ts";
import { importFromKaggle, importImageFolder } from "../data/import.ts";
import { DEFAULT_KAGGLE_API } from "../data/kaggle.ts";
import { writeStatsReport } from "../data/stats.ts";
import { writeSyntheticDataset } from "../data/synth.ts";
import { runCalibration } from "../eval/calibrate.ts";
import { CALIBRATION_FILE } from "../eval/calibration-file.ts";
import { compareEvalDirs } from "../eval/compare-dirs.ts";
import type { Comparison } from "../eval/compare.ts";
import { runEvaluation } from "../eval/evaluate.ts";
import { downloadSnapshot } from "../hub/snapshot.ts";
import { initTinyModel } from "../models/mistral3/init.ts";
import { writeRunReport } from "../report/report.ts";
import { runLayout, type RunLayout } from "../report/run-layout.ts";
import { listCheckpoints } from "../train/checkpoint.ts";
import { runTraining } from "../train/run.ts";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError, InterruptedError } from "../util/errors.ts";
import { stopReason } from "../util/interrupt.ts";
import { lockFolder } from "../util/lock.ts";
import type { Recipe } from "./recipe.ts";
import { changedKeys, readStepRecord, removeStepRecord, stepHash, writeStepRecord } from "./step-records.ts";
import { readEvalRun } from "../eval/records.ts";
import { addEvaluationToCard, MODEL_CARD_FILE } from "../lora/model-card.ts";

/**
 * `splint run RECIPE`: the tutorial's steps over one run folder. A step whose output exists and
 * was made from the same resolved inputs (content hash, see ./step-records.ts) is skipped, so an
 * interrupted run continues where it stopped (training resumes from its newest checkpoint) and an
 * edited recipe reruns the steps the edit affects; `from` throws away that step's output and
 * everything after it, and redoes them.
 */
export const STEPS = ["data", "model", "stats", "audit", "eval-before", "train", "calibrate", "eval-after", "compare", "report"] as const;
export type Step = (typeof STEPS)[number];

export interface RunRecipeOptions {
  readonly recipe: Recipe;
  readonly runDir: string;
  readonly from?: Step;
  readonly output: Output;
  /** Aborting stops at the next safe point: between steps, or at training's next checkpoint. */
  readonly signal?: AbortSignal;
}

export interface RunRecipeResult {
  readonly runDir: string;
  readonly report: string;
  /** Steps this call ran (the others were already done). */
  readonly ran: readonly Step[];
  readonly accuracyBefore: number;
  readonly accuracyAfter: number;
  readonly comparison: Comparison;
  readonly seconds: number;
}

export async function runRecipe(opts: RunRecipeOptions): Promise<RunRecipeResult> {
  const root = resolve(opts.runDir);
  // Two recipes over one run folder would remove and rewrite each other's step outputs.
  const lock = await lockFolder(root, "splint run");
  try {
    return await runRecipeLocked(opts, root);
  } finally {
    lock.release();
  }
}

async function runRecipeLocked(opts: RunRecipeOptions, root: string): Promise<RunRecipeResult> {
  const started = performance.now();
  const { recipe, output, signal } = opts;
  const run = runLayout(root);
  if (opts.from) await discardFrom(run, recipe, opts.from);
  const ran: Step[] = [];
  const { hashes, inputs } = stepInputs(recipe);
  // `done` answers true when the step's output exists, or a reason why the step does not apply.
  const step = async (name: Step, done: () => Promise<boolean | string>, body: () => Promise<void>) => {
    const index = STEPS.indexOf(name) + 1;
    if (signal?.aborted) {
      throw new InterruptedError(stopReason(signal), `stopped before step ${index}/${STEPS.length} (${name}); the finished steps are kept`, "run the same command again to continue from this step");
    }
    const tag = `[${index}/${STEPS.length}] ${name}`;
    const hash = hashes[name];
    const record = await readStepRecord(run.root, name);
    let skip = await done();
    // Output (or, for train, checkpoints) made from other inputs is stale: thrown away, redone.
    const stale = record !== null ? record.hash !== hash || (skip === true && !record.complete) : skip === true;
    if (stale) {
      const what = record === null ? "no record of the inputs it was made from" : record.hash !== hash ? `inputs changed (${changedKeys(record.inputs, inputs[name]).join(", ") || "an earlier step"})` : "left incomplete";
      output.log(`${tag}: ${what}, running it again`);
      await discardStep(run, recipe, name);
      skip = await done();
    }
    if (skip !== false) {
      output.log(`${tag}: ${skip === true ? "already done" : skip}, skipped`);
      return;
    }
    output.log(tag);
    const t0 = performance.now();
    await writeStepRecord(run.root, { step: name, hash, complete: false, inputs: inputs[name] });
    await body();
    await writeStepRecord(run.root, { step: name, hash, complete: true, inputs: inputs[name] });
    ran.push(name);
    output.log(`${tag}: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  };

  await step("data", () => exists(join(run.dataset, "dataset_dict.json")), () => makeDataset(run, recipe, output));

  let modelDir = recipe.model.kind === "init" ? run.model : recipe.model.kind === "dir" ? resolve(recipe.model.path) : "";
  await step(
    "model",
    // Only a model the run creates is an output; a Hub snapshot is looked up (cached) every time,
    // a folder checked.
    async () => recipe.model.kind === "init" && (await exists(join(modelDir, "config.json"))),
    async () => {
      const source = recipe.model;
      if (source.kind === "init") await initTinyModel(run.model, { preset: source.preset, seed: source.seed, replace: "any" });
      else if (source.kind === "hub") modelDir = (await downloadSnapshot(source.repo, { revision: source.revision, output })).path;
      else if (!(await exists(join(modelDir, "config.json")))) throw new InputError(source.path, "has no config.json", "model.dir must be a Hugging Face model folder");
    },
  );

  await step("stats", () => exists(join(run.stats, "stats.json")), async () => {
    const dataset = await loadDatasetDict(run.dataset);
    await writeStatsReport(dataset, run.stats, { samples: recipe.stats.samples, seed: recipe.stats.seed });
  });

  await step("audit", async () => !recipe.audit || (await exists(join(run.audit, "audit.json"))), async () => {
    const report = await auditDataset(await loadDatasetDict(run.dataset));
    await writeFileAtomic(join(run.audit, "audit.json"), `${JSON.stringify(report, null, 2)}\n`);
    const leaks = Object.entries(report.summary.leakedFromTrain).map(([split, n]) => `${n} ${split}`).join(", ");
    output.log(`audit: ${report.summary.groups} duplicate groups; leaking from train: ${leaks || "none"}`);
  });

  const evaluate = (out: string, adapter?: string) =>
    runEvaluation({
      model: modelDir,
      adapter,
      dataset: run.dataset,
      split: recipe.eval.split,
      mode: recipe.eval.mode,
      batchSize: recipe.eval.batch,
      limit: recipe.eval.limit ?? undefined,
      maxNewTokens: recipe.eval.maxNewTokens,
      template: recipe.train.template,
      prompt: recipe.train.prompt,
      classNames: recipe.train.class_names ?? undefined,
      maxImageEdge: recipe.train.max_image_edge,
      // Evaluated with the numerics it is trained with (the tutorial's bf16).
      matmulPrecision: recipe.train.bf16 ? "bf16" : "f32",
      out,
      output,
    });
  await step("eval-before", () => exists(join(run.evalBefore, "metrics.json")), async () => {
    await evaluate(run.evalBefore);
  });

  await step("train", () => exists(join(run.adapter, "adapter_config.json")), async () => {
    const checkpoints = await listCheckpoints(run.train);
    if (checkpoints.length === 0) await rm(run.train, { recursive: true, force: true });
    else output.log(`resuming training from ${checkpoints[checkpoints.length - 1]!.dir}`);
    try {
      await runTraining({
        modelDir,
        dataset: run.dataset,
        outDir: run.train,
        config: recipe.train,
        configSource: recipe.file,
        resume: checkpoints.length > 0,
        output,
        signal,
      });
    } catch (error) {
      // The trainer's hint is for `splint train`; a recipe resumes by running it again.
      if (error instanceof InterruptedError) throw new InterruptedError(error.signal, error.message, "run the same command again: training resumes from the newest checkpoint");
      throw error;
    }
  });

  // Temperature scaling needs class probabilities (score mode) and images that are not the test split.
  const calibration = join(run.adapter, CALIBRATION_FILE);
  await step(
    "calibrate",
    async () => {
      if (recipe.eval.mode !== "score") return "needs eval.mode score";
      if (!(await loadDatasetDict(run.dataset)).splits.has("validation")) return "no validation split (data.val_fraction)";
      return exists(calibration);
    },
    async () => {
      const { calibration: c } = await runCalibration({
        model: modelDir,
        adapter: run.adapter,
        dataset: run.dataset,
        split: "validation",
        batchSize: recipe.eval.batch,
        maxNewTokens: recipe.eval.maxNewTokens,
        template: recipe.train.template,
        prompt: recipe.train.prompt,
        classNames: recipe.train.class_names ?? undefined,
        maxImageEdge: recipe.train.max_image_edge,
        matmulPrecision: recipe.train.bf16 ? "bf16" : "f32",
        output,
      });
      output.log(`calibrate: T = ${c.temperature.toFixed(3)}, validation NLL ${c.nll.before.toFixed(3)} → ${c.nll.after.toFixed(3)}`);
    },
  );

  await step("eval-after", () => exists(join(run.evalAfter, "metrics.json")), async () => {
    await evaluate(run.evalAfter, run.adapter);
  });

  await step("compare", () => exists(join(run.compare, "comparison.json")), async () => {
    const comparison = await compareEvalDirs(run.evalBefore, run.evalAfter, run.compare);
    // The adapter's model card gains the test-split evaluation and the change from the base model.
    const [before, after] = await Promise.all([readEvalRun(run.evalBefore), readEvalRun(run.evalAfter)]);
    if (await addEvaluationToCard(run.adapter, { after: after.summary, before: before.summary, comparison })) output.log(`model card: ${join(run.adapter, MODEL_CARD_FILE)}`);
  });

  // The report is a view of the other steps: always rebuilt, so it shows what the folder holds now.
  await writeRunReport(run.root, { title: `splint run: ${recipe.file}` });
  ran.push("report");
  const comparison = await compareEvalDirs(run.evalBefore, run.evalAfter);
  return {
    runDir: run.root,
    report: run.report,
    ran,
    accuracyBefore: comparison.accuracyBefore,
    accuracyAfter: comparison.accuracyAfter,
    comparison,
    seconds: (performance.now() - started) / 1000,
  };
}

async function makeDataset(run: RunLayout, recipe: Recipe, output: Output): Promise<void> {
  const source = recipe.data.source;
  const options = { out: run.dataset, format: "arrow" as const, valFraction: recipe.data.valFraction, seed: recipe.data.seed, output, reportFile: join(run.root, "import-report.json") };
  if (source.kind === "kaggle") {
    await importFromKaggle(source.ref, { ...options, apiBase: process.env.KAGGLE_API_BASE ?? DEFAULT_KAGGLE_API });
    return;
  }
  let folder = source.kind === "dir" ? resolve(source.path) : run.raw;
  if (source.kind === "synth") {
    // A half-written folder from an interrupted run is regenerated (same seed, same images).
    await rm(run.raw, { recursive: true, force: true });
    await writeSyntheticDataset(run.raw, { perClass: source.perClass, testPerClass: source.testPerClass, size: source.size, seed: source.seed });
    folder = run.raw;
  }
  await importImageFolder(folder, options);
}

/** Removes the outputs of `from` and every later step (never a model folder the run did not create). */
async function discardFrom(run: RunLayout, recipe: Recipe, from: Step): Promise<void> {
  for (const step of STEPS.slice(STEPS.indexOf(from))) await discardStep(run, recipe, step);
}

/** Removes one step's outputs and its input record. */
async function discardStep(run: RunLayout, recipe: Recipe, step: Step): Promise<void> {
  const outputs: Record<Step, readonly string[]> = {
    data: [run.raw, run.dataset, join(run.root, "import-report.json")],
    model: recipe.model.kind === "init" ? [run.model] : [],
    stats: [run.stats],
    audit: [run.audit],
    "eval-before": [run.evalBefore],
    train: [run.train],
    calibrate: [join(run.adapter, CALIBRATION_FILE)],
    "eval-after": [run.evalAfter],
    compare: [run.compare],
    report: [run.report],
  };
  for (const path of outputs[step]) await rm(path, { recursive: true, force: true });
  await removeStepRecord(run.root, step);
}

/**
 * Each step's resolved inputs and its hash (which also covers the hashes of the steps it reads).
 * Paths are made absolute, so the same recipe run from another folder is the same input.
 */
export function stepInputs(recipe: Recipe): { inputs: Record<Step, unknown>; hashes: Record<Step, string> } {
  const t = recipe.train;
  const source = recipe.data.source;
  const model = recipe.model;
  // How images are put to the model: shared by every evaluation and the calibration.
  const ask = { template: t.template, prompt: t.prompt, class_names: t.class_names, max_image_edge: t.max_image_edge, bf16: t.bf16 };
  const inputs: Record<Step, unknown> = {
    data: { ...recipe.data, source: source.kind === "dir" ? { ...source, path: resolve(source.path) } : source },
    model: model.kind === "dir" ? { ...model, path: resolve(model.path) } : model,
    stats: recipe.stats,
    audit: { audit: recipe.audit },
    "eval-before": { eval: recipe.eval, ask },
    train: t,
    calibrate: { mode: recipe.eval.mode, batch: recipe.eval.batch, max_new_tokens: recipe.eval.maxNewTokens, ask },
    "eval-after": { eval: recipe.eval, ask },
    compare: {},
    report: {},
  };
  const upstream: Record<Step, readonly Step[]> = {
    data: [],
    model: [],
    stats: ["data"],
    audit: ["data"],
    "eval-before": ["data", "model"],
    train: ["data", "model"],
    calibrate: ["data", "train"],
    "eval-after": ["train", "calibrate"],
    compare: ["eval-before", "eval-after"],
    report: [],
  };
  const hashes = {} as Record<Step, string>;
  for (const step of STEPS) hashes[step] = stepHash(step, inputs[step], upstream[step].map((u) => hashes[u]));
  return { inputs, hashes };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
