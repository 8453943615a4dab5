import { InputError } from "../util/errors.ts";
import { pairedBootstrap, type Interval, type PairedBootstrap } from "./bootstrap.ts";
import { mcnemarExact, type McNemarResult } from "./metrics.ts";
import type { EvalSummary, Prediction } from "./records.ts";

export interface ClassDelta {
  readonly name: string;
  readonly recallBefore: number;
  readonly recallAfter: number;
  readonly f1Before: number;
  readonly f1After: number;
}

export interface Comparison {
  readonly n: number;
  readonly accuracyBefore: number;
  readonly accuracyAfter: number;
  readonly macroF1Before: number;
  readonly macroF1After: number;
  readonly invalidRateBefore: number;
  readonly invalidRateAfter: number;
  readonly mcnemar: McNemarResult;
  /** Seeded paired bootstrap of after − before in accuracy and macro-F1 (the same images resampled for both). */
  readonly bootstrap: PairedBootstrap;
  /** Each run's bootstrap interval for macro-F1 (null for eval folders written before splint had them). */
  readonly macroF1Ci95Before: Interval | null;
  readonly macroF1Ci95After: Interval | null;
  /** Score mode: calibration and selective-prediction figures of each run (null in other modes). */
  readonly calibrationBefore: CalibrationSummary | null;
  readonly calibrationAfter: CalibrationSummary | null;
  readonly perClass: readonly ClassDelta[];
  /** Examples right before and wrong after, and the other way round. */
  readonly rightToWrong: readonly FlippedExample[];
  readonly wrongToRight: readonly FlippedExample[];
}

/** A run's headline calibration figures, at the temperature it applied. */
export interface CalibrationSummary {
  readonly temperature: number;
  readonly ece: number;
  readonly eceEqualMass: number;
  readonly brier: number;
  readonly nll: number;
  readonly aurc: number;
}

export function calibrationSummary(s: EvalSummary): CalibrationSummary | null {
  if (!s.calibration || !s.selective) return null;
  const f = s.calibration.scaled ?? s.calibration.raw;
  return { temperature: s.calibration.temperature, ece: f.ece, eceEqualMass: f.eceEqualMass, brier: f.brier, nll: f.nll, aurc: s.selective.aurc };
}

export interface FlippedExample {
  readonly index: number;
  readonly path: string | null;
  readonly label: number;
  readonly before: number;
  readonly after: number;
  readonly answerBefore: string;
  readonly answerAfter: string;
  /** Score mode: each run's top-class probability. */
  readonly confidenceBefore: number | null;
  readonly confidenceAfter: number | null;
}

/**
 * Pairs two evaluations of the same split image by image. Refuses runs over different images or
 * classes: a paired test on unpaired data would be meaningless.
 */
export function compareRuns(
  before: { summary: EvalSummary; predictions: readonly Prediction[]; source: string },
  after: { summary: EvalSummary; predictions: readonly Prediction[]; source: string },
): Comparison {
  if (before.summary.classNames.join("\u0000") !== after.summary.classNames.join("\u0000")) {
    throw new InputError(after.source, "its class names differ from the first run's; both runs must use the same dataset");
  }
  const afterByIndex = new Map(after.predictions.map((p) => [p.index, p]));
  if (afterByIndex.size !== before.predictions.length) {
    throw new InputError(after.source, `has ${after.predictions.length} predictions, the first run ${before.predictions.length}`);
  }
  const pairs = before.predictions.map((b) => {
    const a = afterByIndex.get(b.index);
    if (!a || a.label !== b.label) {
      throw new InputError(after.source, `image ${b.index} is missing or has another label than in the first run`);
    }
    return { b, a };
  });
  const mcnemar = mcnemarExact(
    pairs.map(({ b }) => b.predicted === b.label),
    pairs.map(({ a }) => a.predicted === a.label),
  );
  const flipped = (wantBefore: boolean) =>
    pairs
      .filter(({ b, a }) => (b.predicted === b.label) === wantBefore && (a.predicted === a.label) === !wantBefore)
      .map(({ b, a }) => ({
        index: b.index,
        path: b.path,
        label: b.label,
        before: b.predicted,
        after: a.predicted,
        answerBefore: b.answer,
        answerAfter: a.answer,
        confidenceBefore: b.confidence ?? null,
        confidenceAfter: a.confidence ?? null,
      }));
  const mb = before.summary.metrics;
  const ma = after.summary.metrics;
  return {
    n: pairs.length,
    accuracyBefore: mb.accuracy,
    accuracyAfter: ma.accuracy,
    macroF1Before: mb.macroF1,
    macroF1After: ma.macroF1,
    invalidRateBefore: mb.invalidRate,
    invalidRateAfter: ma.invalidRate,
    mcnemar,
    bootstrap: pairedBootstrap(
      before.summary.classNames,
      pairs.map(({ b }) => b.label),
      pairs.map(({ b }) => b.predicted),
      pairs.map(({ a }) => a.predicted),
    ),
    macroF1Ci95Before: before.summary.bootstrap?.macroF1Ci95 ?? null,
    macroF1Ci95After: after.summary.bootstrap?.macroF1Ci95 ?? null,
    calibrationBefore: calibrationSummary(before.summary),
    calibrationAfter: calibrationSummary(after.summary),
    perClass: before.summary.classNames.map((name, c) => ({
      name,
      recallBefore: mb.perClass[c]!.recall,
      recallAfter: ma.perClass[c]!.recall,
      f1Before: mb.perClass[c]!.f1,
      f1After: ma.perClass[c]!.f1,
    })),
    rightToWrong: flipped(true),
    wrongToRight: flipped(false),
  };
}
