/**
 * Classification metrics for before/after comparisons. Predictions are class indices, or -1 for an
 * answer that named no class (counted as wrong everywhere and reported as the invalid rate).
 */
export const INVALID = -1;

export interface ClassMetrics {
  readonly name: string;
  readonly precision: number;
  readonly recall: number;
  readonly f1: number;
  /** Number of true examples of the class. */
  readonly support: number;
  /**
   * 95% Wilson interval of the recall (correct / support). Unlike a percentile bootstrap it does not
   * collapse to a point at 0/n or n/n, where small test classes often sit.
   */
  readonly recallCi95: readonly [number, number];
}

export interface Metrics {
  readonly n: number;
  readonly correct: number;
  readonly accuracy: number;
  /** 95% Wilson score interval for the accuracy. */
  readonly accuracyCi95: readonly [number, number];
  readonly macroF1: number;
  readonly invalidRate: number;
  readonly perClass: readonly ClassMetrics[];
  /** confusion[true][predicted]; the last column counts invalid answers. */
  readonly confusion: readonly (readonly number[])[];
}

/** z for a two-sided 95% interval. */
const Z95 = 1.959963984540054;

/** Wilson score interval: better than the normal approximation at small n or extreme p. */
export function wilsonInterval(successes: number, n: number, z = Z95): [number, number] {
  if (n === 0) return [0, 1];
  const p = successes / n;
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denom;
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

export function computeMetrics(classNames: readonly string[], truth: readonly number[], predicted: readonly number[]): Metrics {
  if (truth.length !== predicted.length) throw new Error("computeMetrics: truth and predictions differ in length");
  const k = classNames.length;
  const confusion = Array.from({ length: k }, () => new Array<number>(k + 1).fill(0));
  let correct = 0;
  let invalid = 0;
  truth.forEach((t, i) => {
    const p = predicted[i]!;
    if (p === INVALID) invalid++;
    if (p === t) correct++;
    confusion[t]![p === INVALID ? k : p]!++;
  });
  const perClass = classNames.map((name, c) => {
    const tp = confusion[c]![c]!;
    const support = confusion[c]!.reduce((a, b) => a + b, 0);
    const predictedAs = confusion.reduce((sum, row) => sum + row[c]!, 0);
    const precision = predictedAs === 0 ? 0 : tp / predictedAs;
    const recall = support === 0 ? 0 : tp / support;
    const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
    return { name, precision, recall, f1, support, recallCi95: wilsonInterval(tp, support) };
  });
  // Macro-F1 over classes present in the truth, as scikit-learn does when labels come from y_true ∪ y_pred;
  // classes never seen nor predicted would only add zeros that say nothing.
  const counted = perClass.filter((m, c) => m.support > 0 || confusion.some((row) => row[c]! > 0));
  const macroF1 = counted.length === 0 ? 0 : counted.reduce((a, m) => a + m.f1, 0) / counted.length;
  const n = truth.length;
  return {
    n,
    correct,
    accuracy: n === 0 ? 0 : correct / n,
    accuracyCi95: wilsonInterval(correct, n),
    macroF1,
    invalidRate: n === 0 ? 0 : invalid / n,
    perClass,
    confusion,
  };
}

export interface McNemarResult {
  /** Right before, wrong after. */
  readonly rightToWrong: number;
  /** Wrong before, right after. */
  readonly wrongToRight: number;
  /** Exact two-sided binomial p-value on the discordant pairs (1 when there are none). */
  readonly pValue: number;
}

/** McNemar's exact test on paired outcomes of the same examples. */
export function mcnemarExact(correctBefore: readonly boolean[], correctAfter: readonly boolean[]): McNemarResult {
  if (correctBefore.length !== correctAfter.length) throw new Error("mcnemarExact: the two runs cover different examples");
  let b = 0;
  let c = 0;
  correctBefore.forEach((before, i) => {
    const after = correctAfter[i]!;
    if (before && !after) b++;
    if (!before && after) c++;
  });
  const n = b + c;
  if (n === 0) return { rightToWrong: b, wrongToRight: c, pValue: 1 };
  const tail = binomialCdf(Math.min(b, c), n);
  return { rightToWrong: b, wrongToRight: c, pValue: Math.min(1, 2 * tail) };
}

/** P(X ≤ k) for X ~ Binomial(n, 1/2), summed in log space so large n does not overflow. */
function binomialCdf(k: number, n: number): number {
  let logCoef = 0; // log C(n, 0)
  let total = 0;
  for (let i = 0; i <= k; i++) {
    if (i > 0) logCoef += Math.log(n - i + 1) - Math.log(i);
    total += Math.exp(logCoef - n * Math.LN2);
  }
  return total;
}
