/**
 * Selective prediction: the model may decline to answer below a confidence threshold. Answering
 * only when confidence ≥ t covers a fraction of the images (coverage) with some error rate among
 * those answered (risk); the risk–coverage curve lists every distinct threshold. Images with equal
 * confidence cannot be separated by any threshold, so they enter the curve together.
 */

export interface RiskCoveragePoint {
  /** Answer when confidence ≥ threshold. */
  readonly threshold: number;
  /** Fraction of images answered. */
  readonly coverage: number;
  /** Error rate among the answered images. */
  readonly risk: number;
}

export interface CoverageAccuracy {
  /** The coverage asked for, and the smallest coverage a threshold achieves at or above it. */
  readonly target: number;
  readonly coverage: number;
  readonly accuracy: number;
  readonly threshold: number;
}

export interface SelectiveReport {
  /** From the most confident threshold (lowest coverage) to answering everything (coverage 1). */
  readonly riskCoverage: readonly RiskCoveragePoint[];
  /** Area under the risk–coverage curve (step-wise): lower is better; the error rate if confidence were random. */
  readonly aurc: number;
  readonly atCoverage: readonly CoverageAccuracy[];
  /** Test figures at a threshold picked elsewhere (on validation, stored with the adapter). */
  readonly atThreshold: ThresholdResult | null;
}

export interface ThresholdResult {
  readonly threshold: number;
  readonly coverage: number;
  /** Accuracy among the answered images (1 when none are answered: no answer is wrong). */
  readonly accuracy: number;
}

export const DEFAULT_COVERAGES: readonly number[] = [0.5, 0.7, 0.8, 0.9, 1];

export function riskCoverage(items: readonly { confidence: number; correct: boolean }[]): RiskCoveragePoint[] {
  const sorted = [...items].sort((a, b) => b.confidence - a.confidence);
  const n = sorted.length;
  const points: RiskCoveragePoint[] = [];
  let errors = 0;
  for (let i = 0; i < n; i++) {
    if (!sorted[i]!.correct) errors++;
    const last = i === n - 1 || sorted[i + 1]!.confidence !== sorted[i]!.confidence;
    if (last) points.push({ threshold: sorted[i]!.confidence, coverage: (i + 1) / n, risk: errors / (i + 1) });
  }
  return points;
}

/** Σ over the curve's steps of Δcoverage · risk. */
export function areaUnderRiskCoverage(points: readonly RiskCoveragePoint[]): number {
  let previous = 0;
  let area = 0;
  for (const p of points) {
    area += (p.coverage - previous) * p.risk;
    previous = p.coverage;
  }
  return area;
}

/** For each target, the first point of the curve whose coverage reaches it. */
export function accuracyAtCoverages(points: readonly RiskCoveragePoint[], targets: readonly number[] = DEFAULT_COVERAGES): CoverageAccuracy[] {
  return targets.map((target) => {
    // 1e-12 absorbs k/n rounding, so a target of 0.7 on 10 images is met by 7 of them.
    const p = points.find((q) => q.coverage >= target - 1e-12) ?? points[points.length - 1]!;
    return { target, coverage: p.coverage, accuracy: 1 - p.risk, threshold: p.threshold };
  });
}

/**
 * The threshold with the largest coverage whose accuracy among answered images is at least
 * `targetAccuracy`, or null when no threshold reaches it. Pick it on validation, apply it to test.
 */
export function thresholdForAccuracy(points: readonly RiskCoveragePoint[], targetAccuracy: number): ThresholdResult | null {
  let best: RiskCoveragePoint | null = null;
  for (const p of points) if (1 - p.risk >= targetAccuracy - 1e-12 && (best === null || p.coverage > best.coverage)) best = p;
  return best === null ? null : { threshold: best.threshold, coverage: best.coverage, accuracy: 1 - best.risk };
}

/** Coverage and accuracy when answering only at confidence ≥ threshold. */
export function atThreshold(items: readonly { confidence: number; correct: boolean }[], threshold: number): ThresholdResult {
  const answered = items.filter((item) => item.confidence >= threshold);
  return {
    threshold,
    coverage: answered.length / items.length,
    accuracy: answered.length === 0 ? 1 : answered.filter((item) => item.correct).length / answered.length,
  };
}

export function selectiveReport(items: readonly { confidence: number; correct: boolean }[], threshold: number | null = null): SelectiveReport {
  const curve = riskCoverage(items);
  return {
    riskCoverage: curve,
    aurc: areaUnderRiskCoverage(curve),
    atCoverage: accuracyAtCoverages(curve),
    atThreshold: threshold === null ? null : atThreshold(items, threshold),
  };
}
