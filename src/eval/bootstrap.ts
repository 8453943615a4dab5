import { Rng } from "../util/rng.ts";
import { computeMetrics } from "./metrics.ts";

/**
 * Seeded percentile bootstrap: resample the test images with replacement, recompute the figure,
 * and take the 2.5th and 97.5th percentiles. Used where no closed form fits (macro-F1, per-class
 * precision, recall and F1; accuracy keeps its Wilson interval) and for paired differences between
 * two runs, which resample the same images for both so that their correlation is kept.
 */

export const BOOTSTRAP_SAMPLES = 1000;
export const BOOTSTRAP_SEED = 0;

export type Interval = readonly [number, number];

export interface ClassIntervals {
  readonly name: string;
  /** null when no resample defined the figure (a class never present, or never predicted). */
  readonly precisionCi95: Interval | null;
  readonly recallCi95: Interval | null;
  readonly f1Ci95: Interval | null;
}

export interface BootstrapIntervals {
  readonly samples: number;
  readonly seed: number;
  readonly macroF1Ci95: Interval;
  readonly perClass: readonly ClassIntervals[];
}

export interface Difference {
  /** after − before on the images as they are. */
  readonly observed: number;
  readonly ci95: Interval;
}

export interface PairedBootstrap {
  readonly samples: number;
  readonly seed: number;
  readonly accuracy: Difference;
  readonly macroF1: Difference;
}

export interface BootstrapOptions {
  readonly samples?: number;
  readonly seed?: number;
}

/** Linear-interpolated quantile of sorted values (type 7, as numpy's default). */
export function quantile(sorted: readonly number[], q: number): number {
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

function interval(values: readonly number[]): Interval | null {
  const defined = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  return defined.length === 0 ? null : [quantile(defined, 0.025), quantile(defined, 0.975)];
}

function resamples(n: number, opts: BootstrapOptions, body: (indices: Int32Array) => void): { samples: number; seed: number } {
  const samples = opts.samples ?? BOOTSTRAP_SAMPLES;
  const seed = opts.seed ?? BOOTSTRAP_SEED;
  const rng = new Rng(seed);
  const indices = new Int32Array(n);
  for (let s = 0; s < samples; s++) {
    for (let i = 0; i < n; i++) indices[i] = rng.int(n);
    body(indices);
  }
  return { samples, seed };
}

function pick<T>(values: readonly T[], indices: Int32Array): T[] {
  return Array.from(indices, (i) => values[i]!);
}

export function bootstrapMetrics(classNames: readonly string[], truth: readonly number[], predicted: readonly number[], opts: BootstrapOptions = {}): BootstrapIntervals {
  const macroF1: number[] = [];
  const perClass = classNames.map(() => ({ precision: [] as number[], recall: [] as number[], f1: [] as number[] }));
  const meta = resamples(truth.length, opts, (indices) => {
    const m = computeMetrics(classNames, pick(truth, indices), pick(predicted, indices));
    macroF1.push(m.macroF1);
    m.perClass.forEach((c, j) => {
      // computeMetrics reports 0 for an undefined ratio; a resample without the class says nothing about it.
      const predictedAs = m.confusion.reduce((sum, row) => sum + row[j]!, 0);
      perClass[j]!.recall.push(c.support > 0 ? c.recall : NaN);
      perClass[j]!.precision.push(predictedAs > 0 ? c.precision : NaN);
      perClass[j]!.f1.push(c.support > 0 || predictedAs > 0 ? c.f1 : NaN);
    });
  });
  return {
    ...meta,
    macroF1Ci95: interval(macroF1) ?? [0, 1],
    perClass: classNames.map((name, j) => ({
      name,
      precisionCi95: interval(perClass[j]!.precision),
      recallCi95: interval(perClass[j]!.recall),
      f1Ci95: interval(perClass[j]!.f1),
    })),
  };
}

/** Bootstrap of after − before in accuracy and macro-F1, both runs resampled on the same images. */
export function pairedBootstrap(
  classNames: readonly string[],
  truth: readonly number[],
  before: readonly number[],
  after: readonly number[],
  opts: BootstrapOptions = {},
): PairedBootstrap {
  if (before.length !== truth.length || after.length !== truth.length) throw new Error("pairedBootstrap: the runs cover different examples");
  const diff = (t: readonly number[], b: readonly number[], a: readonly number[]) => {
    const mb = computeMetrics(classNames, t, b);
    const ma = computeMetrics(classNames, t, a);
    return { accuracy: ma.accuracy - mb.accuracy, macroF1: ma.macroF1 - mb.macroF1 };
  };
  const observed = diff(truth, before, after);
  const accuracy: number[] = [];
  const macroF1: number[] = [];
  const meta = resamples(truth.length, opts, (indices) => {
    const d = diff(pick(truth, indices), pick(before, indices), pick(after, indices));
    accuracy.push(d.accuracy);
    macroF1.push(d.macroF1);
  });
  return {
    ...meta,
    accuracy: { observed: observed.accuracy, ci95: interval(accuracy)! },
    macroF1: { observed: observed.macroF1, ci95: interval(macroF1)! },
  };
}
