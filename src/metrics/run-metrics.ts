import { appendFile, readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../util/atomic.ts";
import { EventFileWriter } from "./tfevents.ts";

/**
 * The metrics of a training run for standard viewers, under the Hugging Face Trainer's names:
 *
 * - RUN/metrics.jsonl: one JSON object per line, as the Trainer's log_history: a training entry
 *   every logging step ({step, epoch, loss, learning_rate, grad_norm, tokens_per_second, …}) and an
 *   evaluation entry whenever one ran ({step, epoch, eval_loss, eval_accuracy, eval_samples,
 *   eval_runtime}). pandas.read_json(lines=True) or `jq` read it.
 * - RUN/tensorboard/events.out.tfevents.*: the same numbers as TensorBoard scalars under the tags
 *   transformers' TensorBoardCallback uses (train/loss, train/learning_rate, train/grad_norm,
 *   train/epoch, eval/loss, eval/accuracy, …), when report_to has tensorboard.
 *
 * A resumed run first drops the lines past the step it restarts from (they are computed again)
 * and starts a new event file with a SessionLog START, which makes TensorBoard drop those points.
 */

export const METRICS_FILE = "metrics.jsonl";
export const TENSORBOARD_DIR = "tensorboard";

export interface TrainMetrics {
  readonly step: number;
  readonly epoch: number;
  readonly loss: number;
  readonly learning_rate: number;
  readonly grad_norm: number;
  readonly tokens_per_second: number;
  readonly images_per_second: number;
  readonly memory_live_bytes: number;
  readonly memory_peak_bytes: number;
}

export interface EvalMetrics {
  readonly step: number;
  readonly epoch: number;
  /** Mean token loss over the split (each batch's mean weighted by its examples, as the Trainer). */
  readonly eval_loss: number;
  /** Score-mode accuracy: the class whose answer is most likely after the prompt. */
  readonly eval_accuracy: number;
  readonly eval_samples: number;
  readonly eval_runtime: number;
}

export type MetricsEntry = TrainMetrics | EvalMetrics;

export function isEvalEntry(entry: MetricsEntry): entry is EvalMetrics {
  return "eval_loss" in entry;
}

export class RunMetrics {
  private constructor(
    readonly file: string,
    private readonly events: EventFileWriter | null,
  ) {}

  /**
   * Opens the run's metrics; `resumeStep` (steps already done) keeps the entries up to it and
   * returns them, so a resumed run knows its earlier evaluations (early stopping needs them).
   */
  static async open(runDir: string, opts: { tensorboard: boolean; resumeStep?: number }): Promise<{ metrics: RunMetrics; earlier: MetricsEntry[] }> {
    const file = join(runDir, METRICS_FILE);
    let earlier: MetricsEntry[] = [];
    if (opts.resumeStep !== undefined) {
      earlier = (await readMetrics(file)).filter((e) => e.step <= opts.resumeStep!);
      await writeFileAtomic(file, earlier.map((e) => `${JSON.stringify(e)}\n`).join(""));
    } else {
      await writeFileAtomic(file, "");
    }
    const events = opts.tensorboard ? new EventFileWriter(join(runDir, TENSORBOARD_DIR)) : null;
    if (events && opts.resumeStep !== undefined) events.sessionStart(opts.resumeStep + 1);
    return { metrics: new RunMetrics(file, events), earlier };
  }

  async train(entry: TrainMetrics): Promise<void> {
    await appendFile(this.file, `${JSON.stringify(entry)}\n`);
    this.events?.scalars(entry.step, {
      "train/loss": entry.loss,
      "train/learning_rate": entry.learning_rate,
      "train/grad_norm": entry.grad_norm,
      "train/epoch": entry.epoch,
      "train/tokens_per_second": entry.tokens_per_second,
      "train/memory_peak_gib": entry.memory_peak_bytes / 2 ** 30,
    });
  }

  async eval(entry: EvalMetrics): Promise<void> {
    await appendFile(this.file, `${JSON.stringify(entry)}\n`);
    this.events?.scalars(entry.step, { "eval/loss": entry.eval_loss, "eval/accuracy": entry.eval_accuracy, "eval/runtime": entry.eval_runtime });
  }

  close(): void {
    this.events?.close();
  }
}

/** The entries of a metrics.jsonl (lines that do not parse are skipped: a torn last line). */
export async function readMetrics(file: string): Promise<MetricsEntry[]> {
  let text = "";
  try {
    text = await readFile(file, "utf8");
  } catch {
    return [];
  }
  const out: MetricsEntry[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const entry = JSON.parse(line) as MetricsEntry;
      if (Number.isInteger(entry.step)) out.push(entry);
    } catch {
      // an interrupted append
    }
  }
  return out;
}
