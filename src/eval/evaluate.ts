import { resolve } from "node:path";
import type { Output } from "../util/output.ts";
import { loadDatasetDict } from "../data/hf-dataset.ts";
import type { DatasetRow } from "../data/types.ts";
import { readGenerationConfig } from "../models/mistral3/generation-config.ts";
import type { ImageBatch } from "../models/mistral3/model.ts";
import { openModelSession } from "../models/mistral3/runtime.ts";
import type { MatmulPrecision } from "../tensor/backend.ts";
import { resolvePromptSettings } from "../lora/training-prompt.ts";
import { boundImageEdge } from "../train/collator.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { InputError } from "../util/errors.ts";
import { loadImageProcessorConfig, preprocess, type ImageProcessorConfig } from "../vision/image-processor.ts";
import { ClassPrompts } from "./class-prompts.ts";
import { assertFiniteScores, classifyBatch, type ClassifierOptions, type EvalMode } from "./classify.ts";
import { resolveCalibration } from "./calibration-file.ts";
import { computeMetrics } from "./metrics.ts";
import { writeEvalRun, type EvalSummary, type Prediction } from "./records.ts";
import { trustFigures } from "./trust.ts";

/**
 * `splint eval` as a function: a model (plus adapter) over one split of a dataset, batch by batch,
 * into predictions, metrics and the two files of an eval folder.
 */
export interface EvalOptions {
  readonly model: string;
  readonly adapter?: string;
  readonly dataset: string;
  readonly split: string;
  readonly mode: EvalMode;
  readonly batchSize: number;
  /** Only the first N images of the split. */
  readonly limit?: number;
  /** Generate mode's token budget. */
  readonly maxNewTokens: number;
  /**
   * Chat template: model, short or a Jinja file; undefined: the one the adapter was trained with
   * (its training_prompt.json), else short.
   */
  readonly template?: string;
  /** Prompt template with {classes}; null: the tutorial's; undefined: the adapter's, else the tutorial's. */
  readonly prompt?: string | null;
  /** The answers, in label order, instead of the dataset's names (config class_names); undefined: the adapter's when it has as many. */
  readonly classNames?: readonly string[];
  /** Cap on the longer image side, below the processor's own (as training's max_image_edge); undefined: the adapter's. */
  readonly maxImageEdge?: number | null;
  /** How the linear layers multiply (Backend.matmul); default f32. */
  readonly matmulPrecision?: MatmulPrecision;
  /** calibration.json to apply in score mode; null: none; undefined: the adapter's, if it has one. */
  readonly calibration?: string | null;
  /** Folder for predictions.jsonl and metrics.json. */
  readonly out: string;
  readonly output: Output;
}

export interface EvalRun {
  readonly summary: EvalSummary;
  readonly predictions: readonly Prediction[];
}

export const DEFAULT_MAX_NEW_TOKENS = 32;

export async function runEvaluation(opts: EvalOptions): Promise<EvalRun> {
  // Read before the model loads, so a bad calibration file fails fast.
  const calibration = opts.mode === "score" ? await resolveCalibration(opts.adapter, opts.calibration) : null;
  const run = await classifySplit(opts);
  const trust = trustFigures(run.classNames, run.predictions, calibration);
  const predictions = run.predictions.map((p, i) => {
    const confidence = trust.confidences[i];
    return confidence === null || confidence === undefined ? p : { ...p, confidence };
  });
  const summary: EvalSummary = {
    model: resolve(opts.model),
    adapter: opts.adapter === undefined ? null : resolve(opts.adapter),
    dataset: resolve(opts.dataset),
    split: opts.split,
    mode: opts.mode,
    template: run.template,
    classNames: run.classNames,
    backend: run.backend,
    seconds: run.seconds,
    imagesPerSecond: predictions.length / run.seconds,
    metrics: computeMetrics(
      run.classNames,
      predictions.map((p) => p.label),
      predictions.map((p) => p.predicted),
    ),
    bootstrap: trust.bootstrap,
    calibration: trust.calibration,
    selective: trust.selective,
  };
  await writeEvalRun(opts.out, summary, predictions);
  return { summary, predictions };
}

export interface ClassifiedSplit {
  readonly classNames: readonly string[];
  readonly predictions: readonly Prediction[];
  /** The chat template's name. */
  readonly template: string;
  readonly backend: string;
  /** Wall time of the classification (model loading excluded). */
  readonly seconds: number;
}

/** A model (plus adapter) over one split, batch by batch, with a progress bar; nothing written. */
export async function classifySplit(opts: Omit<EvalOptions, "out" | "calibration">): Promise<ClassifiedSplit> {
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new InputError("--batch", `must be a positive integer, got ${opts.batchSize}`);
  const dataset = await loadDatasetDict(opts.dataset);
  const all = dataset.splits.get(opts.split);
  if (!all) throw new InputError(opts.dataset, `has no split "${opts.split}" (it has ${[...dataset.splits.keys()].join(", ")})`, "choose one with --split");
  const rows = opts.limit === undefined ? all : all.slice(0, opts.limit);
  if (rows.length === 0) throw new InputError(opts.dataset, `split "${opts.split}" has no images to evaluate`);

  if (opts.classNames !== undefined && opts.classNames.length !== dataset.classNames.length) {
    throw new InputError(opts.dataset, `has ${dataset.classNames.length} classes, but ${opts.classNames.length} class names were given`, "give one name per class, in label order");
  }
  const tokenizer = await loadTokenizer(opts.model);
  const asked = await resolvePromptSettings({
    modelDir: opts.model,
    adapterDir: opts.adapter,
    template: opts.template,
    promptTemplate: opts.prompt,
    classes: opts.classNames,
    labelNames: dataset.classNames,
    fallbackClasses: dataset.classNames,
    maxImageEdge: opts.maxImageEdge,
  });
  if (asked.source !== "defaults") opts.output.log(`asking as the adapter was trained (${asked.source}): template ${asked.template.name}`);
  const template = asked.template;
  const generation = readGenerationConfig(opts.model);
  const session = await openModelSession(opts.model, { adapterDir: opts.adapter, matmulPrecision: opts.matmulPrecision, output: opts.output });
  const config = session.model.config;
  const classifier: ClassifierOptions = {
    model: session.model,
    newGraph: () => session.inferenceGraph(),
    tokenizer,
    prompts: new ClassPrompts(tokenizer, template, asked.classNames, asked.prompt),
    mode: opts.mode,
    maxNewTokens: opts.maxNewTokens,
    eosTokenIds: generation.eosTokenIds ?? [tokenizer.eosId],
    padTokenId: generation.padTokenId ?? config.text_config.pad_token_id ?? tokenizer.padId,
  };
  const processor = boundImageEdge(loadImageProcessorConfig(opts.model), asked.maxImageEdge);

  const progress = opts.output.progress(`eval ${opts.mode}`, rows.length, "images");
  const started = performance.now();
  let predictions: Prediction[];
  try {
    predictions = await classifyRows(classifier, processor, rows, opts.batchSize, (done, correct) =>
      progress.update(done, { acc: correct / done, "img/s": done / ((performance.now() - started) / 1000) }),
    );
  } finally {
    progress.stop();
  }
  return { classNames: asked.classNames, predictions, template: template.name, backend: session.backend.name, seconds: (performance.now() - started) / 1000 };
}

/** Classifies dataset rows in batches; `onBatch` gets the images done and how many were right. */
export async function classifyRows(
  classifier: ClassifierOptions,
  processor: ImageProcessorConfig,
  rows: readonly DatasetRow[],
  batchSize: number,
  onBatch: (done: number, correct: number) => void = () => {},
): Promise<Prediction[]> {
  const predictions: Prediction[] = [];
  let correct = 0;
  for (let start = 0; start < rows.length; start += batchSize) {
    const batch = rows.slice(start, start + batchSize);
    const images = await imageBatch(
      batch.map((r) => r.image.bytes),
      processor,
      batch.map((r, i) => r.image.path ?? `row ${start + i}`),
    );
    const results = classifyBatch(classifier, images);
    assertFiniteScores(results, batch.map((r, i) => r.image.path ?? `row ${start + i}`));
    results.forEach((r, i) => {
      const row = batch[i]!;
      if (r.predicted === row.label) correct++;
      predictions.push({
        index: start + i,
        path: row.image.path,
        label: row.label,
        predicted: r.predicted,
        answer: r.answer,
        match: r.match,
        ...(r.scores ? { scores: r.scores } : {}),
      });
    });
    onBatch(predictions.length, correct);
  }
  return predictions;
}

/** Encoded images through the processor into the model's batch layout. */
export async function imageBatch(bytes: readonly Uint8Array[], processor: ImageProcessorConfig, names: readonly string[]): Promise<ImageBatch> {
  const batch = await preprocess(bytes, processor, names);
  return { pixelValues: batch.pixelValues, shape: batch.shape, imageSizes: Int32Array.from(batch.imageSizes.flat()) };
}
