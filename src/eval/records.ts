import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import type { Metrics } from "./metrics.ts";
import type { MatchKind } from "./answer.ts";
import type { BootstrapIntervals } from "./bootstrap.ts";
import type { SelectiveReport } from "./selective.ts";
import type { CalibrationReport } from "./trust.ts";

/** One evaluated image: a line of predictions.jsonl. */
export interface Prediction {
  /** Row index in the split; the key that pairs two runs in `splint compare`. */
  readonly index: number;
  readonly path: string | null;
  readonly label: number;
  /** Class index, or -1 when the answer named no class. */
  readonly predicted: number;
  /** What the model wrote (generate and constrained modes) or the top class (score mode). */
  readonly answer: string;
  readonly match: MatchKind;
  /** Score mode: log-likelihood of each class answer, in class order. */
  readonly scores?: readonly number[];
  /** Score mode: the top class's probability, at the temperature the run applied. */
  readonly confidence?: number;
}

export interface EvalSummary {
  readonly model: string;
  readonly adapter: string | null;
  readonly dataset: string;
  readonly split: string;
  readonly mode: "generate" | "constrained" | "score";
  /** The chat template's name (model, short, or its file). */
  readonly template: string;
  readonly classNames: readonly string[];
  readonly backend: string;
  /** Wall time of the classification (model loading excluded). */
  readonly seconds: number;
  readonly imagesPerSecond: number;
  readonly metrics: Metrics;
  /** Seeded bootstrap intervals (absent in files from splint before they were added). */
  readonly bootstrap?: BootstrapIntervals;
  /** Score mode only: calibration and selective prediction (null in the other modes). */
  readonly calibration?: CalibrationReport | null;
  readonly selective?: SelectiveReport | null;
}

export const PREDICTIONS_FILE = "predictions.jsonl";
export const METRICS_FILE = "metrics.json";

export async function writeEvalRun(dir: string, summary: EvalSummary, predictions: readonly Prediction[]): Promise<void> {
  await writeFileAtomic(join(dir, PREDICTIONS_FILE), predictions.map((p) => JSON.stringify(p)).join("\n") + "\n");
  await writeFileAtomic(join(dir, METRICS_FILE), JSON.stringify(summary, null, 2) + "\n");
}

export async function readEvalRun(dir: string): Promise<{ summary: EvalSummary; predictions: Prediction[] }> {
  const metricsPath = join(dir, METRICS_FILE);
  const predictionsPath = join(dir, PREDICTIONS_FILE);
  const summary = parseJson(metricsPath, await readText(metricsPath, dir)) as EvalSummary;
  if (!Array.isArray(summary.classNames) || typeof summary.metrics !== "object") {
    throw new InputError(metricsPath, "not a splint eval summary (no classNames or metrics)");
  }
  const lines = (await readText(predictionsPath, dir)).split("\n").filter((l) => l.trim() !== "");
  const predictions = lines.map((line, i) => {
    const p = parseJson(`${predictionsPath}:${i + 1}`, line) as Prediction;
    if (typeof p.index !== "number" || typeof p.label !== "number" || typeof p.predicted !== "number") {
      throw new InputError(`${predictionsPath}:${i + 1}`, "a prediction needs numeric index, label and predicted");
    }
    return p;
  });
  return { summary, predictions };
}

async function readText(path: string, dir: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new InputError(path, code === "ENOENT" ? "missing" : `cannot read (${code})`, `is ${dir} the output folder of \`splint eval\`?`);
  }
}

function parseJson(where: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new InputError(where, `invalid JSON: ${(error as Error).message}`);
  }
}
