import type { TextRope } from "./config.ts";

/**
 * Rotary position tables for the decoder (YaRN, §1.2 of ministral3.md) and for Pixtral (2-D axial,
 * §2.1). Tables are host arrays [N, D/2] of cos and sin, one row per token, ready for
 * Graph.rope (rotate-half layout: angle j is shared by dims j and j + D/2).
 *
 * transformers computes inv_freq and the angles in float32; Math.fround after each step reproduces
 * its rounding so the tables agree to the last bit or two.
 */

const f = Math.fround;

export interface RopeTables {
  /** [N, D/2] */
  readonly cos: Float32Array;
  /** [N, D/2] */
  readonly sin: Float32Array;
  readonly halfDim: number;
}

export interface TextInvFreq {
  /** [D/2] */
  readonly invFreq: Float32Array;
  /** Multiplies cos and sin (YaRN's mscale ratio; 1 for default RoPE). */
  readonly attentionFactor: number;
}

/** Plain RoPE frequencies: 1 / theta^(2i/D), i = 0..D/2-1. */
export function defaultInvFreq(theta: number, dim: number): Float32Array {
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = f(1 / f(theta ** f((2 * i) / dim)));
  return out;
}

/** YaRN's dimension where the frequency makes `rotations` turns over `maxPositions` tokens. */
function correctionDim(rotations: number, dim: number, base: number, maxPositions: number): number {
  return (dim * Math.log(maxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
}

/** The ramp bounds [low, high] of YaRN (transformers' find_correction_range). */
export function yarnCorrectionRange(
  betaFast: number,
  betaSlow: number,
  dim: number,
  base: number,
  originalMaxPositions: number,
  truncate: boolean,
): { low: number; high: number } {
  let low = correctionDim(betaFast, dim, base, originalMaxPositions);
  let high = correctionDim(betaSlow, dim, base, originalMaxPositions);
  if (truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  return { low: Math.max(low, 0), high: Math.min(high, dim - 1) };
}

function yarnMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** inv_freq and attention factor of the decoder, exactly as transformers' _compute_yarn_parameters. */
export function textInvFreq(rope: TextRope, headDim: number): TextInvFreq {
  if (rope.rope_type === "default") return { invFreq: defaultInvFreq(rope.rope_theta, headDim), attentionFactor: 1 };
  const { rope_theta: base, factor } = rope;
  let attentionFactor = rope.attention_factor;
  if (attentionFactor === null) {
    // `if mscale and mscale_all_dim` in Python: 0 and null both take the plain branch.
    attentionFactor =
      rope.mscale && rope.mscale_all_dim
        ? yarnMscale(factor, rope.mscale) / yarnMscale(factor, rope.mscale_all_dim)
        : yarnMscale(factor);
  }
  const { low, high: rawHigh } = yarnCorrectionRange(
    rope.beta_fast,
    rope.beta_slow,
    headDim,
    base,
    rope.original_max_position_embeddings,
    rope.truncate,
  );
  const high = low === rawHigh ? rawHigh + 0.001 : rawHigh;
  const half = headDim / 2;
  const invFreq = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const posFreq = f(base ** f((2 * i) / headDim));
    const extrapolation = f(1 / posFreq);
    const interpolation = f(1 / f(factor * posFreq));
    const ramp = Math.min(Math.max(f(f(i - low) / (high - low)), 0), 1);
    const keepOriginal = f(1 - ramp);
    invFreq[i] = f(f(interpolation * f(1 - keepOriginal)) + f(extrapolation * keepOriginal));
  }
  return { invFreq, attentionFactor };
}

/**
 * Ministral 3's query temperature: 1 + beta·ln(1 + floor(p / original_max_position_embeddings)),
 * multiplied into the queries after RoPE (§1.3). Exactly 1 below the original context.
 */
export function llama4QueryScale(position: number, beta: number, originalMaxPositions: number): number {
  return f(1 + beta * Math.log(1 + Math.floor(position / originalMaxPositions)));
}

/** cos/sin [N, D/2] for the given position of each row, times `scale(row)` when given. */
export function textRopeTables(
  freq: TextInvFreq,
  positions: Int32Array,
  scale?: (position: number) => number,
): RopeTables {
  const half = freq.invFreq.length;
  const cos = new Float32Array(positions.length * half);
  const sin = new Float32Array(positions.length * half);
  for (let n = 0; n < positions.length; n++) {
    const p = positions[n]!;
    const s = scale ? scale(p) : 1;
    for (let i = 0; i < half; i++) {
      const angle = f(freq.invFreq[i]! * p);
      cos[n * half + i] = f(f(Math.cos(angle)) * freq.attentionFactor) * s;
      sin[n * half + i] = f(f(Math.sin(angle)) * freq.attentionFactor) * s;
    }
  }
  return { cos, sin, halfDim: half };
}

/**
 * Query and key tables of the decoder for one forward: the query table folds the llama-4 scale in
 * (scaling a rotation by s is the same as scaling cos and sin by s, and the backward pass, the
 * inverse rotation with the same tables, is then also the exact transpose).
 */
export function decoderRopeTables(rope: TextRope, freq: TextInvFreq, positions: Int32Array): { query: RopeTables; key: RopeTables } {
  const key = textRopeTables(freq, positions);
  const beta = rope.rope_type === "yarn" ? rope.llama_4_scaling_beta : null;
  if (rope.rope_type !== "yarn" || beta === null || beta === 0) return { query: key, key };
  const original = rope.original_max_position_embeddings;
  const anyScaled = positions.some((p) => p >= original);
  if (!anyScaled) return { query: key, key };
  return { query: textRopeTables(freq, positions, (p) => llama4QueryScale(p, beta, original)), key };
}

/**
 * Pixtral's 2-D axial frequencies: of the D/2 plain frequencies, the even-indexed ones rotate with
 * the patch row and the odd-indexed ones with the patch column.
 */
export function pixtralInvFreq(headDim: number, theta: number): { rows: Float32Array; cols: Float32Array } {
  const all = defaultInvFreq(theta, headDim);
  const quarter = headDim / 4;
  const rows = new Float32Array(quarter);
  const cols = new Float32Array(quarter);
  for (let j = 0; j < quarter; j++) {
    rows[j] = all[2 * j]!;
    cols[j] = all[2 * j + 1]!;
  }
  return { rows, cols };
}

/** Tables for all patches of all images, images in order, each grid row-major (token = r·w + c). */
export function pixtralRopeTables(grids: readonly { rows: number; cols: number }[], headDim: number, theta: number): RopeTables {
  const { rows: fr, cols: fc } = pixtralInvFreq(headDim, theta);
  const quarter = headDim / 4;
  const half = headDim / 2;
  const count = grids.reduce((n, g) => n + g.rows * g.cols, 0);
  const cos = new Float32Array(count * half);
  const sin = new Float32Array(count * half);
  let n = 0;
  for (const grid of grids) {
    for (let r = 0; r < grid.rows; r++) {
      for (let c = 0; c < grid.cols; c++, n++) {
        for (let j = 0; j < quarter; j++) {
          const a = f(fr[j]! * r);
          const b = f(fc[j]! * c);
          cos[n * half + j] = f(Math.cos(a));
          sin[n * half + j] = f(Math.sin(a));
          cos[n * half + quarter + j] = f(Math.cos(b));
          sin[n * half + quarter + j] = f(Math.sin(b));
        }
      }
    }
  }
  return { cos, sin, halfDim: half };
}
