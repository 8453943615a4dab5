import { bootstrapMetrics, type BootstrapIntervals } from "./bootstrap.ts";
import { CALIBRATION_BINS, calibrationFigures, topConfidence, type CalibrationFigures } from "./calibration.ts";
import type { LoadedCalibration } from "./calibration-file.ts";
import { selectiveReport, type SelectiveReport } from "./selective.ts";

/**
 * The figures beyond accuracy that an eval folder's metrics.json carries: bootstrap intervals in
 * every mode; calibration and selective prediction in score mode, the only mode with a probability
 * per class. Kept apart from the model run so reports and tests can build them from predictions.
 */

export interface CalibrationReport {
  readonly bins: number;
  /** The temperature this run's confidences use, and the calibration.json it came from (null: T = 1). */
  readonly temperature: number;
  readonly temperatureFile: string | null;
  /** At T = 1, as the model gives them. */
  readonly raw: CalibrationFigures;
  /** At the applied temperature; null when none was applied. */
  readonly scaled: CalibrationFigures | null;
}

export interface TrustFigures {
  readonly bootstrap: BootstrapIntervals;
  readonly calibration: CalibrationReport | null;
  readonly selective: SelectiveReport | null;
  /** Per prediction, the top-class probability at the applied temperature (score mode), else null. */
  readonly confidences: readonly (number | null)[];
}

interface Scored {
  readonly label: number;
  readonly predicted: number;
  readonly scores?: readonly number[];
}

export function trustFigures(classNames: readonly string[], predictions: readonly Scored[], calibration: LoadedCalibration | null): TrustFigures {
  const bootstrap = bootstrapMetrics(
    classNames,
    predictions.map((p) => p.label),
    predictions.map((p) => p.predicted),
  );
  const scored = predictions.length > 0 && predictions.every((p) => p.scores !== undefined);
  if (!scored) return { bootstrap, calibration: null, selective: null, confidences: predictions.map(() => null) };
  const scores = predictions.map((p) => p.scores!);
  const labels = predictions.map((p) => p.label);
  const temperature = calibration?.calibration.temperature ?? 1;
  const items = predictions.map((p) => topConfidence(p.scores!, p.label, temperature));
  return {
    bootstrap,
    calibration: {
      bins: CALIBRATION_BINS,
      temperature,
      temperatureFile: calibration?.file ?? null,
      raw: calibrationFigures(scores, labels, 1),
      scaled: calibration ? calibrationFigures(scores, labels, temperature) : null,
    },
    selective: selectiveReport(items, calibration?.calibration.abstain?.threshold ?? null),
    confidences: items.map((i) => i.confidence),
  };
}
