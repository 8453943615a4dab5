import { open, readdir, stat } from "node:fs/promises";
import { join, relative, resolve, sep } from "node:path";

/**
 * The training dashboard's data: the runs under a folder and the curves in their metrics logs.
 * The trainer writes train_log.jsonl (one JSON object per logged step: step, loss, lr, grad_norm,
 * tokens_per_s, …) and metrics.jsonl beside it (the same under the Trainer's names, learning_rate,
 * tokens_per_second, …, plus eval_* entries); other writers may write scalar events there
 * ({step, tag, value}, TensorBoard's shape). Names are mapped to one per quantity, and a value
 * both files hold for a step is taken once (metrics.jsonl's). Both are read defensively: a line
 * being written (no newline yet), a line that is not JSON, a field that is not a finite number
 * are skipped, never an error, since the files are read while a run appends to them.
 */
export const METRICS_FILES = ["metrics.jsonl", "train_log.jsonl"] as const;

/** Folders deeper than this under --runs are not searched (a run folder holds train/ under it). */
const MAX_DEPTH = 4;
/** The most of a log read per request; a longer log shows its first part (a real run logs far less). */
const MAX_LOG_BYTES = 32 << 20;

export interface RunSummary {
  /** Path of the folder holding the log, relative to the runs folder ("." for the folder itself). */
  readonly id: string;
  readonly files: string[];
  /** Newest modification time of its logs (ms since the epoch). */
  readonly updated: number;
}

export interface MetricPoint {
  readonly step: number;
  readonly values: Record<string, number>;
}

export interface RunMetrics extends RunSummary {
  readonly points: MetricPoint[];
  /** Every series name seen, sorted. */
  readonly series: string[];
}

export async function listRuns(root: string): Promise<RunSummary[]> {
  const base = resolve(root);
  const found: RunSummary[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return; // vanished or unreadable while we looked: not a run
    }
    const logs = entries.filter((e) => e.isFile() && (METRICS_FILES as readonly string[]).includes(e.name)).map((e) => e.name);
    if (logs.length > 0) {
      const times = await Promise.all(logs.map((f) => stat(join(dir, f)).then((s) => s.mtimeMs, () => 0)));
      found.push({ id: relative(base, dir).split(sep).join("/") || ".", files: logs.sort(), updated: Math.max(...times) });
    }
    if (depth >= MAX_DEPTH) return;
    // Checkpoint folders hold no logs; skipping them keeps a long run's listing fast.
    const dirs = entries.filter((e) => e.isDirectory() && !e.name.startsWith(".") && e.name !== "node_modules" && e.name !== "checkpoints");
    await Promise.all(dirs.map((e) => walk(join(dir, e.name), depth + 1)));
  };
  await walk(base, 0);
  return found.sort((a, b) => a.id.localeCompare(b.id));
}

/** The run folder an id names, or null when the id is not a folder under root (no `..` escapes). */
export function runDir(root: string, id: string): string | null {
  const base = resolve(root);
  const dir = resolve(base, id);
  if (dir !== base && !dir.startsWith(base + sep)) return null;
  return dir;
}

export async function readRunMetrics(root: string, id: string): Promise<RunMetrics | null> {
  const dir = runDir(root, id);
  if (dir === null) return null;
  const files: string[] = [];
  const byStep = new Map<number, Record<string, number>>();
  let updated = 0;
  for (const name of METRICS_FILES) {
    const file = join(dir, name);
    const text = await readHead(file);
    if (text === null) continue;
    files.push(name);
    updated = Math.max(updated, await stat(file).then((s) => s.mtimeMs, () => 0));
    for (const point of parseMetricsLog(text)) {
      const values = byStep.get(point.step) ?? {};
      // Files are read in METRICS_FILES order: the first to give a series at a step wins.
      for (const [name, value] of Object.entries(point.values)) if (!(name in values)) values[name] = value;
      byStep.set(point.step, values);
    }
  }
  if (files.length === 0) return null;
  const points: MetricPoint[] = [...byStep].sort((a, b) => a[0] - b[0]).map(([step, values]) => ({ step, values }));
  const series = [...new Set(points.flatMap((p) => Object.keys(p.values)))].sort();
  return { id, files, updated, points, series };
}

async function readHead(file: string): Promise<string | null> {
  let handle;
  try {
    handle = await open(file, "r");
  } catch {
    return null;
  }
  try {
    const size = (await handle.stat()).size;
    const buffer = Buffer.alloc(Math.min(size, MAX_LOG_BYTES));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead).toString("utf8");
  } finally {
    await handle.close();
  }
}

/** Parses complete lines of a metrics log; the last line counts only once its newline is written. */
export function parseMetricsLog(text: string): MetricPoint[] {
  const lines = text.split("\n");
  lines.pop(); // "" after the last newline, or a line still being written
  const points: MetricPoint[] = [];
  for (const line of lines) {
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      continue;
    }
    const point = toPoint(record);
    if (point) points.push(point);
  }
  return points;
}

function toPoint(record: unknown): MetricPoint | null {
  if (typeof record !== "object" || record === null || Array.isArray(record)) return null;
  const r = record as Record<string, unknown>;
  const step = r.step ?? r.global_step;
  if (typeof step !== "number" || !Number.isFinite(step)) return null;
  const values: Record<string, number> = {};
  const tag = r.tag ?? r.name;
  if (typeof tag === "string" && typeof r.value === "number") {
    // A scalar event: one tag, one value.
    if (Number.isFinite(r.value)) values[seriesName(tag)] = r.value;
  } else {
    for (const [key, value] of Object.entries(r)) {
      if (key === "step" || key === "global_step") continue;
      if (typeof value === "number" && Number.isFinite(value)) values[seriesName(key)] = value;
    }
  }
  return Object.keys(values).length > 0 ? { step, values } : null;
}

/**
 * One name per quantity whoever wrote it: learning_rate is lr, train/loss is loss, eval/x is
 * eval_x, tokens_per_second is tokens_per_s.
 */
export function seriesName(key: string): string {
  const k = key.replace(/^train[/_.]/, "").replace(/^eval[/.]/, "eval_").replace(/_per_second$/, "_per_s");
  return k === "learning_rate" ? "lr" : k;
}
