/**
 * Test helpers: a seeded RNG, naive f64 reference formulas for every CPU kernel (written directly
 * from the math, sharing no code with src/), and a central-difference gradient checker.
 */
import assert from "node:assert/strict";
import type { AttentionDims } from "../../src/tensor/backend.ts";

/** mulberry32: deterministic uniform [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** f32-representable uniform values in [lo, hi). */
export function randomF32(random: () => number, n: number, lo = -1, hi = 1): Float32Array {
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * random());
}

/** Largest |a − b| over two arrays of equal length. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "length mismatch");
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  const err = maxAbsDiff(actual, expected);
  assert.ok(err <= tol, `${what}: max abs error ${err.toExponential(3)} > ${tol}`);
}

// ---- reference formulas (f64) ----------------------------------------------------------------

export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  k: number,
  n: number,
  transA = false,
  transB = false,
  alpha = 1,
): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (transA ? a[p * m + i]! : a[i * k + p]!) * (transB ? b[j * k + p]! : b[p * n + j]!);
      out[i * n + j] = alpha * s;
    }
  return out;
}

export function rmsNormRef(x: ArrayLike<number>, w: ArrayLike<number>, n: number, c: number, eps: number): Float64Array {
  const y = new Float64Array(n * c);
  for (let r = 0; r < n; r++) {
    let ss = 0;
    for (let j = 0; j < c; j++) ss += x[r * c + j]! ** 2;
    const inv = 1 / Math.sqrt(ss / c + eps);
    for (let j = 0; j < c; j++) y[r * c + j] = w[j]! * x[r * c + j]! * inv;
  }
  return y;
}

/** Rotate-half RoPE built as the explicit 2×2 rotation of each (i, i+D/2) pair. */
export function ropeRef(x: ArrayLike<number>, cos: ArrayLike<number>, sin: ArrayLike<number>, n: number, h: number, d: number): Float64Array {
  const half = d / 2;
  const y = new Float64Array(n * h * d);
  for (let r = 0; r < n; r++)
    for (let hh = 0; hh < h; hh++)
      for (let i = 0; i < half; i++) {
        const o = (r * h + hh) * d;
        const [c, s] = [cos[r * half + i]!, sin[r * half + i]!];
        const [a, b] = [x[o + i]!, x[o + i + half]!];
        y[o + i] = c * a - s * b;
        y[o + i + half] = s * a + c * b;
      }
  return y;
}

/** erf by its Taylor series (accurate to ~1e-13 for |x| ≤ 3, the range the tests use). */
export function erfRef(x: number): number {
  let term = x;
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= (-x * x) / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

export const geluRef = (x: number): number => 0.5 * x * (1 + erfRef(x / Math.SQRT2));
export const siluRef = (x: number): number => x / (1 + Math.exp(-x));

/**
 * Full score matrix per (batch, head), masked entries −∞, softmax, times V. visible(b, t, s)
 * decides the mask. Rows with no visible key are zero.
 */
export function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dims: AttentionDims,
  visible: (b: number, t: number, s: number) => boolean,
  scale: number,
): Float64Array {
  const { b: nb, t: nt, s: ns, hq, hkv, d } = dims;
  const out = new Float64Array(nb * nt * hq * d);
  for (let b = 0; b < nb; b++)
    for (let h = 0; h < hq; h++) {
      const kh = Math.floor((h * hkv) / hq);
      const scores = Array.from({ length: nt }, (_, t) =>
        Array.from({ length: ns }, (_, s) => {
          if (!visible(b, t, s)) return -Infinity;
          let dot = 0;
          for (let i = 0; i < d; i++) dot += q[((b * nt + t) * hq + h) * d + i]! * k[((b * ns + s) * hkv + kh) * d + i]!;
          return dot * scale;
        }),
      );
      for (let t = 0; t < nt; t++) {
        const row = scores[t]!;
        const max = Math.max(...row);
        if (max === -Infinity) continue;
        const e = row.map((x) => Math.exp(x - max));
        const z = e.reduce((a, x) => a + x, 0);
        for (let s = 0; s < ns; s++)
          for (let i = 0; i < d; i++) out[((b * nt + t) * hq + h) * d + i]! += (e[s]! / z) * v[((b * ns + s) * hkv + kh) * d + i]!;
      }
    }
  return out;
}

/** Σ over counted rows of −log softmax(row)[label]. */
export function crossEntropyRef(logits: ArrayLike<number>, labels: ArrayLike<number>, vocab: number, ignoreIndex: number): number {
  let total = 0;
  for (let r = 0; r < labels.length; r++) {
    if (labels[r] === ignoreIndex) continue;
    const row = Array.from({ length: vocab }, (_, j) => logits[r * vocab + j]!);
    const max = Math.max(...row);
    const z = row.reduce((a, x) => a + Math.exp(x - max), 0);
    total -= row[labels[r]!]! - max - Math.log(z);
  }
  return total;
}

// ---- gradient checking ---------------------------------------------------------------------

/**
 * Central differences of a scalar f64 function with respect to every element of one input
 * (the others held fixed): (f(x+h) − f(x−h)) / 2h, h = 1e-6, truncation error O(h²) ≈ 1e-12.
 */
export function numericGrad(f: (inputs: Float64Array[]) => number, inputs: readonly ArrayLike<number>[], which: number, h = 1e-6): Float64Array {
  const xs = inputs.map((x) => Float64Array.from(x));
  const target = xs[which]!;
  const grad = new Float64Array(target.length);
  for (let i = 0; i < target.length; i++) {
    const orig = target[i]!;
    target[i] = orig + h;
    const up = f(xs);
    target[i] = orig - h;
    const down = f(xs);
    target[i] = orig;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

/**
 * Asserts analytic ≈ numeric with |a − n| ≤ tol · max(1, max|n|): the analytic side comes from f32
 * kernels, so tol is an f32-sized relative tolerance (1e-4 unless a test states another).
 */
export function assertGradClose(analytic: ArrayLike<number>, numeric: ArrayLike<number>, what: string, tol = 1e-4): void {
  let scale = 1;
  for (let i = 0; i < numeric.length; i++) scale = Math.max(scale, Math.abs(numeric[i]!));
  assertClose(analytic, numeric, tol * scale, `gradient of ${what}`);
}

/** Σ r·y: the scalar whose gradient with respect to y is r. */
export function dot(r: ArrayLike<number>, y: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < r.length; i++) s += r[i]! * y[i]!;
  return s;
}

/**
 * The attention gradients written directly from the math with full matrices (f64):
 * P = softmax(scale·QKᵀ + mask), dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − rowsum(dP∘P)),
 * dQ = scale·dS·K, dK = scale·dSᵀ·Q, summed over the query heads sharing a kv head.
 */
export function attentionBackwardRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dout: ArrayLike<number>,
  dims: AttentionDims,
  visible: (b: number, t: number, s: number) => boolean,
  scale: number,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { b: nb, t: nt, s: ns, hq, hkv, d } = dims;
  const dq = new Float64Array(nb * nt * hq * d);
  const dk = new Float64Array(nb * ns * hkv * d);
  const dv = new Float64Array(nb * ns * hkv * d);
  const qi = (b: number, t: number, h: number, i: number) => ((b * nt + t) * hq + h) * d + i;
  const ki = (b: number, s: number, h: number, i: number) => ((b * ns + s) * hkv + h) * d + i;
  for (let b = 0; b < nb; b++)
    for (let h = 0; h < hq; h++) {
      const kh = Math.floor((h * hkv) / hq);
      for (let t = 0; t < nt; t++) {
        const scores = Array.from({ length: ns }, (_, s) => {
          if (!visible(b, t, s)) return -Infinity;
          let x = 0;
          for (let i = 0; i < d; i++) x += q[qi(b, t, h, i)]! * k[ki(b, s, kh, i)]!;
          return x * scale;
        });
        const max = Math.max(...scores);
        if (max === -Infinity) continue;
        const e = scores.map((x) => Math.exp(x - max));
        const z = e.reduce((a, x) => a + x, 0);
        const p = e.map((x) => x / z);
        const dp = Array.from({ length: ns }, (_, s) => {
          let x = 0;
          for (let i = 0; i < d; i++) x += dout[qi(b, t, h, i)]! * v[ki(b, s, kh, i)]!;
          return x;
        });
        const rowDot = p.reduce((a, x, s) => a + x * dp[s]!, 0);
        for (let s = 0; s < ns; s++) {
          const ds = p[s]! * (dp[s]! - rowDot);
          for (let i = 0; i < d; i++) {
            dv[ki(b, s, kh, i)]! += p[s]! * dout[qi(b, t, h, i)]!;
            dq[qi(b, t, h, i)]! += scale * ds * k[ki(b, s, kh, i)]!;
            dk[ki(b, s, kh, i)]! += scale * ds * q[qi(b, t, h, i)]!;
          }
        }
      }
    }
  return { dq, dk, dv };
}
