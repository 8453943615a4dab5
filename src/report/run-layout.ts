import { join } from "node:path";

/**
 * The folder of one end-to-end run (`splint demo`, `splint run RECIPE`), one sub-folder per step,
 * so each step's output is also its "done" marker and the report knows where everything is:
 *
 *   RUN/raw/            images as downloaded or synthesised (Kaggle layout), when the recipe makes them
 *   RUN/model/          a checkpoint the run created (the demo's tiny random model)
 *   RUN/dataset/        the imported Hugging Face DatasetDict
 *   RUN/stats/          stats.json, class-counts.png, samples.png
 *   RUN/audit/          audit.json
 *   RUN/eval-before/    predictions.jsonl, metrics.json of the base model
 *   RUN/train/          config.resolved.json, train_log.jsonl, checkpoints/, adapter/ (+ calibration.json)
 *   RUN/eval-after/     the same with the adapter
 *   RUN/compare/        comparison.json
 *   RUN/report.html
 */
export interface RunLayout {
  readonly root: string;
  readonly raw: string;
  readonly model: string;
  readonly dataset: string;
  readonly stats: string;
  readonly audit: string;
  readonly evalBefore: string;
  readonly train: string;
  readonly adapter: string;
  readonly trainLog: string;
  readonly evalAfter: string;
  readonly compare: string;
  readonly report: string;
}

export function runLayout(root: string): RunLayout {
  const train = join(root, "train");
  return {
    root,
    raw: join(root, "raw"),
    model: join(root, "model"),
    dataset: join(root, "dataset"),
    stats: join(root, "stats"),
    audit: join(root, "audit"),
    evalBefore: join(root, "eval-before"),
    train,
    adapter: join(train, "adapter"),
    trainLog: join(train, "train_log.jsonl"),
    evalAfter: join(root, "eval-after"),
    compare: join(root, "compare"),
    report: join(root, "report.html"),
  };
}
