/**
 * Whether score mode's probabilities mean what they say. Every figure here is computed from the
 * per-class log-likelihoods score mode writes (Prediction.scores), turned into probabilities by a
 * softmax at a temperature T (1 = as the model gives them):
 *
 *   p_c = exp(s_c / T) / Σ_j exp(s_j / T)
 *
 * Confidence is the top-class probability; dividing by T > 0 never changes the top class, so
 * temperature scaling moves confidence and the proper scores (NLL, Brier) but never accuracy.
 */

/** Equal-width bins of the reliability diagram and ECE (Guo et al. 2017 use 15). */
export const CALIBRATION_BINS = 15;

export interface ReliabilityBin {
  /** Confidence range of the bin: (lo, hi] for equal-width bins, [lo, hi] of its members for equal-mass. */
  readonly lo: number;
  readonly hi: number;
  readonly count: number;
  /** Mean confidence and accuracy of the predictions in the bin. */
  readonly confidence: number;
  readonly accuracy: number;
}

export interface CalibrationFigures {
  readonly temperature: number;
  /** Expected calibration error over equal-width bins: Σ_b (n_b / n)·|accuracy_b − confidence_b|. */
  readonly ece: number;
  /** The same over equal-mass bins (each holds about n / bins predictions, cut in confidence order). */
  readonly eceEqualMass: number;
  /** Multi-class Brier score: mean over images of Σ_c (p_c − [c = true])², in [0, 2]. */
  readonly brier: number;
  /** Mean negative log-likelihood of the true class, in nats. */
  readonly nll: number;
  /** Non-empty equal-width bins: the reliability diagram. */
  readonly reliability: readonly ReliabilityBin[];
  readonly reliabilityEqualMass: readonly ReliabilityBin[];
}

/** log softmax(scores / T), in float64. */
export function logProbabilities(scores: readonly number[], temperature = 1): number[] {
  const scaled = scores.map((s) => s / temperature);
  const max = Math.max(...scaled);
  const logSum = max + Math.log(scaled.reduce((a, s) => a + Math.exp(s - max), 0));
  return scaled.map((s) => s - logSum);
}

export function probabilities(scores: readonly number[], temperature = 1): number[] {
  return logProbabilities(scores, temperature).map(Math.exp);
}

/** Top-class probability and whether the top class (first on ties, as score mode) is the true one. */
export function topConfidence(scores: readonly number[], label: number, temperature = 1): { confidence: number; correct: boolean } {
  // The top class is taken from the scores, as score mode picks it, so float ties break the same way.
  let best = 0;
  for (let c = 1; c < scores.length; c++) if (scores[c]! > scores[best]!) best = c;
  return { confidence: probabilities(scores, temperature)[best]!, correct: best === label };
}

function bin(members: readonly { confidence: number; correct: boolean }[], lo: number, hi: number): ReliabilityBin {
  const count = members.length;
  return {
    lo,
    hi,
    count,
    confidence: members.reduce((a, m) => a + m.confidence, 0) / count,
    accuracy: members.filter((m) => m.correct).length / count,
  };
}

function eceOf(bins: readonly ReliabilityBin[], n: number): number {
  return bins.reduce((a, b) => a + (b.count / n) * Math.abs(b.accuracy - b.confidence), 0);
}

/** Equal-width bins (i/B, (i+1)/B]; a confidence of exactly 0 goes to the first. Empty bins are left out. */
export function equalWidthBins(items: readonly { confidence: number; correct: boolean }[], bins = CALIBRATION_BINS): ReliabilityBin[] {
  const groups = Array.from({ length: bins }, () => [] as { confidence: number; correct: boolean }[]);
  for (const item of items) groups[Math.min(bins - 1, Math.max(0, Math.ceil(item.confidence * bins) - 1))]!.push(item);
  return groups.flatMap((g, i) => (g.length === 0 ? [] : [bin(g, i / bins, (i + 1) / bins)]));
}

/**
 * Equal-mass bins: the predictions in confidence order cut into `bins` runs of ⌊n/B⌋ or ⌈n/B⌉
 * (run b holds positions ⌊b·n/B⌋ … ⌊(b+1)·n/B⌋ − 1). Equal confidences may straddle two runs.
 */
export function equalMassBins(items: readonly { confidence: number; correct: boolean }[], bins = CALIBRATION_BINS): ReliabilityBin[] {
  const sorted = [...items].sort((a, b) => a.confidence - b.confidence);
  const n = sorted.length;
  const out: ReliabilityBin[] = [];
  for (let b = 0; b < bins; b++) {
    const members = sorted.slice(Math.floor((b * n) / bins), Math.floor(((b + 1) * n) / bins));
    if (members.length > 0) out.push(bin(members, members[0]!.confidence, members[members.length - 1]!.confidence));
  }
  return out;
}

/** Mean NLL of the true classes at temperature T. */
export function meanNll(scores: readonly (readonly number[])[], labels: readonly number[], temperature = 1): number {
  let total = 0;
  scores.forEach((row, i) => (total -= logProbabilities(row, temperature)[labels[i]!]!));
  return total / scores.length;
}

export function brierScore(scores: readonly (readonly number[])[], labels: readonly number[], temperature = 1): number {
  let total = 0;
  scores.forEach((row, i) => {
    probabilities(row, temperature).forEach((p, c) => (total += (p - (c === labels[i] ? 1 : 0)) ** 2));
  });
  return total / scores.length;
}

export function calibrationFigures(scores: readonly (readonly number[])[], labels: readonly number[], temperature = 1, bins = CALIBRATION_BINS): CalibrationFigures {
  if (scores.length !== labels.length || scores.length === 0) throw new RangeError("calibrationFigures: needs one score row per label, at least one");
  const items = scores.map((row, i) => topConfidence(row, labels[i]!, temperature));
  const reliability = equalWidthBins(items, bins);
  const reliabilityEqualMass = equalMassBins(items, bins);
  return {
    temperature,
    ece: eceOf(reliability, items.length),
    eceEqualMass: eceOf(reliabilityEqualMass, items.length),
    brier: brierScore(scores, labels, temperature),
    nll: meanNll(scores, labels, temperature),
    reliability,
    reliabilityEqualMass,
  };
}

/** Search range of the fitted temperature; a fit at either end means the data want something more extreme. */
export const TEMPERATURE_RANGE: readonly [number, number] = [1e-2, 1e3];

/**
 * Temperature scaling (Guo et al. 2017): the T > 0 that minimises the mean NLL of the true classes.
 * The NLL is convex in 1/T, hence unimodal in log T, so a golden-section search over log T finds
 * the minimum; 100 steps shrink the bracket far below float precision.
 */
export function fitTemperature(scores: readonly (readonly number[])[], labels: readonly number[]): number {
  if (scores.length === 0) throw new RangeError("fitTemperature: no examples");
  const f = (u: number) => meanNll(scores, labels, Math.exp(u));
  const g = (Math.sqrt(5) - 1) / 2;
  let a = Math.log(TEMPERATURE_RANGE[0]);
  let b = Math.log(TEMPERATURE_RANGE[1]);
  let x1 = b - g * (b - a);
  let x2 = a + g * (b - a);
  let f1 = f(x1);
  let f2 = f(x2);
  for (let i = 0; i < 100; i++) {
    if (f1 <= f2) {
      b = x2;
      x2 = x1;
      f2 = f1;
      x1 = b - g * (b - a);
      f1 = f(x1);
    } else {
      a = x1;
      x1 = x2;
      f1 = f2;
      x2 = a + g * (b - a);
      f2 = f(x2);
    }
  }
  return Math.exp((a + b) / 2);
}
