import { join } from "node:path";
import { calibrationFigures, fitTemperature, topConfidence } from "./calibration.ts";
import { CALIBRATION_FILE, CALIBRATION_FORMAT, CALIBRATION_VERSION, writeCalibrationFile, type CalibrationFile } from "./calibration-file.ts";
import { classifySplit, type EvalOptions } from "./evaluate.ts";
import { riskCoverage, thresholdForAccuracy } from "./selective.ts";
import { InputError } from "../util/errors.ts";
import { resolveDatasetRef, resolveModelAndAdapter } from "../hub/resolve.ts";

/**
 * `splint calibrate` as a function: score mode over a validation split (never the test split the
 * figures are reported on), a temperature fitted to its NLL, and optionally the abstention
 * threshold that reaches a target accuracy there; written as calibration.json.
 */
export interface CalibrateOptions extends Omit<EvalOptions, "out" | "calibration" | "mode"> {
  /** Pick the lowest threshold whose accuracy among answered validation images reaches this. */
  readonly targetAccuracy?: number;
  /** Where to write; default ADAPTER/calibration.json. */
  readonly out?: string;
}

export async function runCalibration(given: CalibrateOptions): Promise<{ file: string; calibration: CalibrationFile }> {
  const refs = await resolveModelAndAdapter(given.model, given.adapter, { output: given.output, ...(given.revision !== undefined ? { revision: given.revision } : {}) });
  const data = await resolveDatasetRef(given.dataset, { output: given.output });
  const opts = { ...given, model: refs.model.dir, adapter: refs.adapter?.dir, dataset: data.dir };
  // An adapter from the Hub lives in the shared cache, which is not ours to write into.
  const file = opts.out ?? (refs.adapter === undefined || refs.adapter.snapshot ? undefined : join(refs.adapter.dir, CALIBRATION_FILE));
  if (file === undefined) {
    throw refs.adapter?.snapshot
      ? new InputError("--out", "is needed for an adapter from the Hub", "calibration.json is not written into the Hugging Face cache; name a file and pass it to eval/predict with --calibration")
      : new InputError("--out", "is needed without --adapter", "calibration.json is stored with an adapter; for the base model name a file");
  }
  if (opts.split === "test") throw new InputError("--split", "test is where calibrated figures are reported; fitting on it would grade the model on its own answers", "carve a validation split with `splint data import --val-fraction`");
  const target = opts.targetAccuracy;
  if (target !== undefined && !(target > 0 && target <= 1)) throw new InputError("--target-accuracy", `must be in (0, 1], got ${target}`);
  const run = await classifySplit({ ...opts, mode: "score" });
  const scores = run.predictions.map((p) => p.scores!);
  const labels = run.predictions.map((p) => p.label);
  const temperature = fitTemperature(scores, labels);
  const before = calibrationFigures(scores, labels, 1);
  const after = calibrationFigures(scores, labels, temperature);
  let abstain: CalibrationFile["abstain"] = null;
  if (target !== undefined) {
    const picked = thresholdForAccuracy(riskCoverage(scores.map((row, i) => topConfidence(row, labels[i]!, temperature))), target);
    if (picked === null) throw new InputError("--target-accuracy", `no confidence threshold reaches ${target} on ${opts.split} (${run.predictions.length} images)`, "lower the target or calibrate on more images");
    abstain = { targetAccuracy: target, ...picked };
  }
  const calibration: CalibrationFile = {
    format: CALIBRATION_FORMAT,
    version: CALIBRATION_VERSION,
    temperature,
    fittedOn: { dataset: data.name, split: opts.split, n: run.predictions.length },
    nll: { before: before.nll, after: after.nll },
    ece: { before: before.ece, after: after.ece },
    abstain,
  };
  await writeCalibrationFile(file, calibration);
  return { file, calibration };
}
