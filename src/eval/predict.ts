import { readFile } from "node:fs/promises";
import type { Output } from "../util/output.ts";
import { loadDatasetDict } from "../data/hf-dataset.ts";
import { SYNTH_CLASS_NAMES } from "../data/synth.ts";
import { readGenerationConfig } from "../models/mistral3/generation-config.ts";
import { openModelSession } from "../models/mistral3/runtime.ts";
import type { MatmulPrecision } from "../tensor/backend.ts";
import { resolvePromptSettings } from "../lora/training-prompt.ts";
import { loadTokenizer } from "../text/tokenizer.ts";
import { boundImageEdge } from "../train/collator.ts";
import { InputError } from "../util/errors.ts";
import { loadImageProcessorConfig } from "../vision/image-processor.ts";
import { ClassPrompts } from "./class-prompts.ts";
import { probabilities } from "./calibration.ts";
import { resolveCalibration } from "./calibration-file.ts";
import { assertFiniteScores, classifyBatch, type EvalMode } from "./classify.ts";
import { imageBatch } from "./evaluate.ts";

/** `splint predict` as a function: image files → a class each (with probabilities in score mode). */
export interface PredictOptions {
  readonly model: string;
  readonly adapter?: string;
  readonly images: readonly string[];
  readonly mode: EvalMode;
  /** The classes the prompt offers, in label order (--classes); undefined: the adapter's, else the tutorial's ten. */
  readonly classNames?: readonly string[];
  /** A dataset's label names (--dataset): replaced by the adapter's taught names when it has as many. */
  readonly labelNames?: readonly string[];
  /** Chat template; undefined: the adapter's, else short. */
  readonly template?: string;
  /** Prompt template with {classes}; undefined: the adapter's, else the tutorial's. */
  readonly prompt?: string | null;
  readonly maxNewTokens: number;
  readonly maxImageEdge?: number | null;
  readonly batchSize: number;
  /** How the linear layers multiply (Backend.matmul); default f32. */
  readonly matmulPrecision?: MatmulPrecision;
  /** calibration.json to apply in score mode; null: none; undefined: the adapter's, if it has one. */
  readonly calibration?: string | null;
  /**
   * Score mode: answer "uncertain" when the top probability is below this; "calibrated" takes the
   * threshold `splint calibrate --target-accuracy` stored in the calibration file.
   */
  readonly abstainBelow?: number | "calibrated";
  readonly output: Output;
}

export const UNCERTAIN = "uncertain";

export interface ImagePrediction {
  readonly image: string;
  /** null when a generated answer named no class, or when the model abstained. */
  readonly class: string | null;
  /** The model's words, or "uncertain" when it abstained. */
  readonly answer: string;
  /** Score mode: probability of each class (softmax of the answers' log-likelihoods at the temperature). */
  readonly probabilities?: Readonly<Record<string, number>>;
  /** Score mode: the temperature applied (1 without calibration). */
  readonly temperature?: number;
  /** With an abstention threshold: true when the top probability fell below it. */
  readonly abstained?: boolean;
}

export async function predictImages(opts: PredictOptions): Promise<ImagePrediction[]> {
  if (opts.images.length === 0) throw new InputError("IMAGE", "give at least one image file");
  if (opts.abstainBelow !== undefined && opts.mode !== "score") throw new InputError("--abstain-below", "needs --mode score: only score mode gives a confidence");
  const calibration = opts.mode === "score" ? await resolveCalibration(opts.adapter, opts.calibration) : null;
  const temperature = calibration?.calibration.temperature ?? 1;
  let threshold: number | null = null;
  if (opts.abstainBelow === "calibrated") {
    threshold = calibration?.calibration.abstain?.threshold ?? null;
    if (threshold === null) {
      throw new InputError("--abstain-below", calibration ? `${calibration.file} holds no threshold` : "no calibration file found", "run `splint calibrate --target-accuracy A`, or give the threshold as a number");
    }
  } else if (opts.abstainBelow !== undefined) {
    if (!(opts.abstainBelow >= 0 && opts.abstainBelow <= 1)) throw new InputError("--abstain-below", `must be a probability in [0, 1], got ${opts.abstainBelow}`);
    threshold = opts.abstainBelow;
  }
  const tokenizer = await loadTokenizer(opts.model);
  const asked = await resolvePromptSettings({
    modelDir: opts.model,
    adapterDir: opts.adapter,
    template: opts.template,
    promptTemplate: opts.prompt,
    classes: opts.classNames,
    labelNames: opts.labelNames,
    fallbackClasses: SYNTH_CLASS_NAMES,
    maxImageEdge: opts.maxImageEdge,
  });
  const classNames = asked.classNames;
  const generation = readGenerationConfig(opts.model);
  const session = await openModelSession(opts.model, { adapterDir: opts.adapter, matmulPrecision: opts.matmulPrecision, output: opts.output });
  const prompts = new ClassPrompts(tokenizer, asked.template, classNames, asked.prompt);
  const processor = boundImageEdge(loadImageProcessorConfig(opts.model), asked.maxImageEdge);
  const classifier = {
    model: session.model,
    newGraph: () => session.inferenceGraph(),
    tokenizer,
    prompts,
    mode: opts.mode,
    maxNewTokens: opts.maxNewTokens,
    eosTokenIds: generation.eosTokenIds ?? [tokenizer.eosId],
    padTokenId: generation.padTokenId ?? session.model.config.text_config.pad_token_id ?? tokenizer.padId,
  };
  const out: ImagePrediction[] = [];
  for (let start = 0; start < opts.images.length; start += opts.batchSize) {
    const files = opts.images.slice(start, start + opts.batchSize);
    const bytes = await Promise.all(files.map(readImage));
    const results = classifyBatch(classifier, await imageBatch(bytes, processor, files));
    assertFiniteScores(results, files);
    results.forEach((r, i) => {
      const base = { image: files[i]!, class: r.predicted < 0 ? null : classNames[r.predicted]!, answer: r.answer };
      if (!r.scores) {
        out.push(base);
        return;
      }
      const p = probabilities(r.scores, temperature);
      const scored = { ...base, probabilities: Object.fromEntries(p.map((q, c) => [classNames[c]!, q])), temperature };
      if (threshold === null) out.push(scored);
      else if (p[r.predicted]! < threshold) out.push({ ...scored, class: null, answer: UNCERTAIN, abstained: true });
      else out.push({ ...scored, abstained: false });
    });
  }
  return out;
}

async function readImage(file: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(file));
  } catch (error) {
    throw new InputError(file, `cannot read image (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}

/**
 * The class list: --classes (explicit), or a dataset's ClassLabel names (label names, which an
 * adapter's taught names replace), or neither: the adapter's names, else the tutorial's ten.
 */
export async function resolveClassNames(classes: string | undefined, dataset: string | undefined): Promise<{ classNames?: readonly string[]; labelNames?: readonly string[] }> {
  if (classes !== undefined && dataset !== undefined) throw new InputError("--classes", "give --classes or --dataset, not both");
  if (classes !== undefined) {
    const names = classes.split(",").map((c) => c.trim()).filter((c) => c.length > 0);
    if (names.length < 2) throw new InputError("--classes", "needs at least two comma-separated class names");
    return { classNames: names };
  }
  if (dataset !== undefined) return { labelNames: (await loadDatasetDict(dataset)).classNames };
  return {};
}
