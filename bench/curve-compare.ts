/**
 * Comparing loss curves of the same run (bench/loss-curve.ts --compare): splint f32, splint bf16 and
 * transformers + peft in bf16 start from the same adapter and see the same micro-batches, so their
 * curves should differ only by rounding. Single steps carry one step's rounding (and, in a run
 * whose gradient norm jumps from step to step, swing by percents whatever the precision), so the
 * check is on the mean loss of each window of steps, relative to the reference curve's window mean.
 */

/** One optimizer step of a curve file: the objective of that step and, where known, lr and norm. */
export interface CurvePoint {
  readonly step: number;
  readonly loss: number;
  readonly lr?: number;
  readonly grad_norm?: number;
}

/** A curve file: `{label, steps}` (bench/reference/hf_loss_curve.py writes the same shape). */
export interface Curve {
  readonly label: string;
  readonly steps: readonly CurvePoint[];
}

export interface WindowDeviation {
  /** First and last step of the window (1-based, inclusive). */
  readonly from: number;
  readonly to: number;
  readonly reference: number;
  readonly other: number;
  /** |other − reference| / max(|reference|, LOSS_FLOOR). */
  readonly relative: number;
}

export interface CurveComparison {
  readonly reference: string;
  readonly other: string;
  readonly tolerance: number;
  readonly windows: readonly WindowDeviation[];
  readonly worstWindow: WindowDeviation;
  /** The largest relative difference of single steps, for information (not checked). */
  readonly worstStepRelative: number;
  readonly worstStep: number;
  readonly pass: boolean;
}

/** Keeps relative differences finite where a loss reaches 0 (as the existing f32-vs-bf16 table does). */
export const LOSS_FLOOR = 1e-3;

function relative(other: number, reference: number): number {
  return Math.abs(other - reference) / Math.max(Math.abs(reference), LOSS_FLOOR);
}

/** Window means of consecutive steps: 1..w, w+1..2w, …; a shorter last window is kept. */
export function windowMeans(points: readonly CurvePoint[], window: number): { from: number; to: number; mean: number }[] {
  if (!Number.isInteger(window) || window < 1) throw new Error(`window must be a positive integer, got ${window}`);
  const out: { from: number; to: number; mean: number }[] = [];
  for (let i = 0; i < points.length; i += window) {
    const slice = points.slice(i, i + window);
    out.push({ from: slice[0]!.step, to: slice.at(-1)!.step, mean: slice.reduce((s, p) => s + p.loss, 0) / slice.length });
  }
  return out;
}

/**
 * `other` against `reference`, window by window; passes when every window mean is within
 * `tolerance` (relative) of the reference's. The two curves must cover the same steps, in order,
 * with finite losses: a curve that stopped early or diverged fails loudly instead of comparing
 * a prefix.
 */
export function compareCurves(reference: Curve, other: Curve, opts: { window: number; tolerance: number }): CurveComparison {
  if (reference.steps.length === 0) throw new Error(`${reference.label}: no steps`);
  if (other.steps.length !== reference.steps.length) {
    throw new Error(`${other.label} has ${other.steps.length} steps, ${reference.label} ${reference.steps.length}`);
  }
  let worstStepRelative = 0;
  let worstStep = reference.steps[0]!.step;
  for (const [i, r] of reference.steps.entries()) {
    const o = other.steps[i]!;
    if (o.step !== r.step) throw new Error(`step ${i + 1}: ${other.label} numbers it ${o.step}, ${reference.label} ${r.step}`);
    for (const c of [o, r]) if (!Number.isFinite(c.loss)) throw new Error(`step ${c.step}: loss ${c.loss} is not finite`);
    const d = relative(o.loss, r.loss);
    if (d > worstStepRelative) [worstStepRelative, worstStep] = [d, r.step];
  }
  const ref = windowMeans(reference.steps, opts.window);
  const oth = windowMeans(other.steps, opts.window);
  const windows = ref.map((w, i) => ({ from: w.from, to: w.to, reference: w.mean, other: oth[i]!.mean, relative: relative(oth[i]!.mean, w.mean) }));
  const worstWindow = windows.reduce((a, b) => (b.relative > a.relative ? b : a));
  return { reference: reference.label, other: other.label, tolerance: opts.tolerance, windows, worstWindow, worstStepRelative, worstStep, pass: worstWindow.relative <= opts.tolerance };
}

/** Percentages to 0.001 points: a well-conditioned run's curves differ by hundredths of a percent. */
export const pct = (x: number) => `${(100 * x).toFixed(3)}%`;

/** The Markdown table of window means of every curve and the verdict of each comparison. */
export function comparisonMarkdown(curves: readonly Curve[], comparisons: readonly CurveComparison[], window: number): string {
  const means = curves.map((c) => windowMeans(c.steps, window));
  const header = [`| steps | ${curves.map((c) => `mean loss ${c.label}`).join(" | ")} | ${comparisons.map((c) => `${c.other} vs ${c.reference}`).join(" | ")} |`];
  header.push(`| ---: | ${[...curves, ...comparisons].map(() => "---:").join(" | ")} |`);
  const rows = means[0]!.map((w, i) => {
    const losses = means.map((m) => m[i]!.mean.toFixed(5));
    const devs = comparisons.map((c) => pct(c.windows[i]!.relative));
    return `| ${w.from}–${w.to} | ${losses.join(" | ")} | ${devs.join(" | ")} |`;
  });
  const verdicts = comparisons.map(
    (c) =>
      `- ${c.other} vs ${c.reference}: largest window deviation ${pct(c.worstWindow.relative)} (steps ${c.worstWindow.from}–${c.worstWindow.to}), ` +
      `tolerance ${pct(c.tolerance)}: **${c.pass ? "PASS" : "FAIL"}**; largest single-step deviation ${pct(c.worstStepRelative)} (step ${c.worstStep}, not checked)`,
  );
  return [...verdicts, "", ...header, ...rows, ""].join("\n");
}

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/** A line plot of the per-step losses of every curve (plain SVG, no dependencies). */
export function curvesSvg(curves: readonly Curve[], title: string): string {
  const [W, H, left, right, top, bottom] = [720, 420, 60, 20, 40, 50];
  const all = curves.flatMap((c) => c.steps);
  const maxStep = Math.max(...all.map((p) => p.step));
  const lo = Math.min(...all.map((p) => p.loss));
  const hi = Math.max(...all.map((p) => p.loss));
  const span = hi - lo || 1;
  const x = (step: number) => left + ((step - 1) / Math.max(1, maxStep - 1)) * (W - left - right);
  const y = (loss: number) => top + ((hi - loss) / span) * (H - top - bottom);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`];
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`, `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`);
  out.push(`<line x1="${left}" y1="${H - bottom}" x2="${W - right}" y2="${H - bottom}" stroke="black"/>`, `<line x1="${left}" y1="${top}" x2="${left}" y2="${H - bottom}" stroke="black"/>`);
  for (let k = 0; k <= 4; k++) {
    const loss = lo + (span * k) / 4;
    const step = Math.round(1 + ((maxStep - 1) * k) / 4);
    out.push(`<text x="${left - 6}" y="${y(loss) + 4}" text-anchor="end">${loss.toFixed(2)}</text>`);
    out.push(`<text x="${x(step)}" y="${H - bottom + 16}" text-anchor="middle">${step}</text>`);
  }
  out.push(`<text x="${W / 2}" y="${H - 12}" text-anchor="middle">optimizer step</text>`, `<text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})" text-anchor="middle">loss</text>`);
  curves.forEach((c, i) => {
    const colour = COLOURS[i % COLOURS.length]!;
    const points = c.steps.map((p) => `${x(p.step).toFixed(1)},${y(p.loss).toFixed(1)}`).join(" ");
    out.push(`<polyline fill="none" stroke="${colour}" stroke-width="1.5" points="${points}"/>`);
    out.push(`<line x1="${W - right - 200}" y1="${top + 14 + 16 * i}" x2="${W - right - 180}" y2="${top + 14 + 16 * i}" stroke="${colour}" stroke-width="2"/>`);
    out.push(`<text x="${W - right - 174}" y="${top + 18 + 16 * i}">${escapeXml(c.label)}</text>`);
  });
  out.push("</svg>", "");
  return out.join("\n");
}

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
