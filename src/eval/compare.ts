import { InputError } from "../util/errors.ts";
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
  readonly perClass: readonly ClassDelta[];
  /** Examples right before and wrong after, and the other way round. */
  readonly rightToWrong: readonly FlippedExample[];
  readonly wrongToRight: readonly FlippedExample[];
}

export interface FlippedExample {
  readonly index: number;
  readonly path: string | null;
  readonly label: number;
  readonly before: number;
  readonly after: number;
  readonly answerBefore: string;
  readonly answerAfter: string;
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
