/**
 * The backend parity suite: every Backend primitive run on the CUDA backend and on the CPU
 * reference backend with the same fresh random inputs (both backends draw them from one seed),
 * compared element by element with a tolerance stated per case.
 *
 * Used by test/cuda/parity.test.ts (node:test, skipped without a GPU) and by
 * scripts/cuda-parity.ts (the table scripts/gpu-check prints and writes).
 */
import type { AttentionDims, AttentionMask, Backend, MatmulPrecision } from "../../src/tensor/backend.ts";
import type { DType } from "../../src/tensor/dtype.ts";
import { packCodes, quantizeBlockwise, SIGNED_MAP, UNSIGNED_MAP } from "../../src/tensor/blockwise8.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { fp8TinyHost, fp8TinyStep } from "../models/fp8-tiny.ts";

/** mulberry32: small, seedable, the same stream on every machine. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(n: number, lo = -1, hi = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * this.next();
    return out;
  }
  int(n: number, lo: number, hi: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = lo + Math.floor(this.next() * (hi - lo));
    return out;
  }
  permutation(n: number): Int32Array {
    const out = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
}

export interface Tolerance {
  /** Elementwise |cuda − cpu| ≤ atol + rtol·|cpu|; infinities must match exactly. */
  atol: number;
  rtol: number;
  /** Why this tolerance: what differs between the two computations. */
  why: string;
  /**
   * When set, also ‖cuda − cpu‖₂ ≤ normRel·‖cpu‖₂ + 1e-6·√n over the whole output (bf16 tiers); the
   * absolute term keeps an output that is zero in exact arithmetic (the dq of a single visible key)
   * to f32 noise instead of to a ratio of two roundings.
   */
  normRel?: number;
}

export type Outputs = Record<string, Float32Array | Int32Array>;

export interface ParityCase {
  name: string;
  tolerance: Tolerance;
  /** Builds inputs from rng on backend b, runs the op, reads outputs back and frees every tensor. */
  run(b: Backend, rng: Rng): Outputs;
}

export interface Comparison {
  output: string;
  maxAbs: number;
  maxRel: number;
  /** ‖cuda − cpu‖₂ / ‖cpu‖₂ over the finite elements. */
  normRel: number;
  violations: number;
  count: number;
}

/** Compares one output array; relative error is measured against max(|cpu|, 1e-6). */
export function compare(output: string, cuda: Float32Array | Int32Array, cpu: Float32Array | Int32Array, tol: Tolerance): Comparison {
  if (cuda.length !== cpu.length) {
    return { output, maxAbs: Infinity, maxRel: Infinity, normRel: Infinity, violations: Math.max(cuda.length, cpu.length), count: cpu.length };
  }
  let maxAbs = 0;
  let maxRel = 0;
  let violations = 0;
  let diffSquares = 0;
  let refSquares = 0;
  for (let i = 0; i < cpu.length; i++) {
    const a = cuda[i]!;
    const b = cpu[i]!;
    if (Number.isFinite(b)) refSquares += b * b;
    if (a === b) continue; // also equal infinities
    const diff = Math.abs(a - b);
    if (Number.isFinite(diff)) diffSquares += diff * diff;
    if (!Number.isFinite(diff)) {
      violations++;
      maxAbs = Infinity;
      maxRel = Infinity;
      continue;
    }
    maxAbs = Math.max(maxAbs, diff);
    maxRel = Math.max(maxRel, diff / Math.max(Math.abs(b), 1e-6));
    if (diff > tol.atol + tol.rtol * Math.abs(b)) violations++;
  }
  const normRel = refSquares > 0 ? Math.sqrt(diffSquares / refSquares) : Math.sqrt(diffSquares);
  if (tol.normRel !== undefined && Math.sqrt(diffSquares) > tol.normRel * Math.sqrt(refSquares) + 1e-6 * Math.sqrt(cpu.length)) violations++;
  return { output, maxAbs, maxRel, normRel, violations, count: cpu.length };
}

// ---- helpers used inside cases --------------------------------------------------------------

/** Tracks the tensors a case creates so they can all be freed, and reads outputs back. */
class Session {
  private readonly made: Tensor[] = [];
  constructor(readonly b: Backend) {}
  track<T extends Tensor>(t: T): T {
    this.made.push(t);
    return t;
  }
  up(data: Float32Array, shape: readonly number[], dtype: DType, scale = 1): Tensor {
    return this.track(this.b.upload(data, shape, dtype, scale));
  }
  ints(data: Int32Array, shape: readonly number[]): Tensor {
    return this.track(this.b.upload(data, shape, "i32"));
  }
  finish(outputs: Record<string, Tensor>): Outputs {
    const result: Outputs = {};
    for (const [name, t] of Object.entries(outputs)) {
      this.track(t);
      result[name] = this.b.read(t);
    }
    for (const t of this.made) t.free();
    return result;
  }
}

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const EXACT: Tolerance = { atol: 0, rtol: 0, why: "moves or converts elements with the same rounding: bit-exact" };
const ELEMENTWISE: Tolerance = { atol: 1e-6, rtol: 1e-6, why: "one f32 operation per element; the CPU rounds from f64 once" };
const TRANSCENDENTAL: Tolerance = { atol: 1e-6, rtol: 2e-6, why: "f32 exp/erf on the GPU (≤ 2 ulp) against f64 on the CPU" };
const REDUCTION: Tolerance = { atol: 1e-5, rtol: 1e-5, why: "f32 sums in a different order (f64 where the CPU uses f64)" };
const MATMUL_F32: Tolerance = {
  atol: 2e-5,
  rtol: 1e-4,
  why: "cuBLASLt f32 accumulation over k ≤ 129 terms of |x| ≤ 1 against an f64 dot product",
};
const MATMUL_LARGE_K: Tolerance = {
  atol: 2e-4,
  rtol: 1e-4,
  why: "k = 1024: f32 accumulation error grows with √k·|partial sums| (cuBLASLt may split k)",
};
const MATMUL_BF16_OUT: Tolerance = { atol: 2e-4, rtol: 8e-3, why: "as f32, then one bf16 rounding of the output (half an ulp is 2^-9 relative)" };
const LORA_F32_OUT: Tolerance = {
  atol: 2e-4,
  rtol: 1e-4,
  why: "both backends round x, the dropped x, A and du to bf16 identically; only the f32 sums' order differs (k ≤ 1024, tensor-core tiles against the CPU's SIMD lanes)",
};
const LORA_UP_F32_OUT: Tolerance = {
  atol: 1e-3,
  rtol: 1e-4,
  normRel: 1e-5,
  why: "both backends round u, B and dy to bf16 identically, so every product is exact in f32; only the order of the f32 sums differs (tensor-core k-steps, 64-column tiles, clusters and slices against the CPU's SIMD lanes), over up to 4100 terms (du) or 3000 (dB) with sums up to ~150 at α = 1.75 (an ulp is 2^-16 there); a float32 emulation of both orders at these shapes differs by ≤ 6e-5",
};
const LORA_UP_BF16_OUT: Tolerance = {
  atol: 1e-3,
  rtol: 8e-3,
  why: "as LORA_UP_F32_OUT for dB; y and du then rounded once to bf16, where an f32 difference straddling a rounding boundary is one bf16 ulp (≤ 2^-7 relative)",
};
const ATTENTION: Tolerance = {
  atol: 2e-5,
  rtol: 2e-4,
  why: "online softmax in f32 with expf and tile-wise rescaling against the CPU's f64 two-pass softmax",
};

const FLASH_ATTENTION: Tolerance = {
  atol: 3e-2,
  rtol: 3e-2,
  normRel: 1e-2,
  why: "both round q, k, v, dout to bf16; the GPU also rounds P and dS to bf16 for the tensor-core products (2^-9 relative each) and sums in f32 tiles",
};

const FLOAT_INPUTS: readonly DType[] = ["f32", "bf16"];

// ---- the cases -------------------------------------------------------------------------------

function layoutCases(): ParityCase[] {
  const cases: ParityCase[] = [];
  for (const dtype of ["f32", "bf16", "fp8_e4m3"] as const) {
    const scale = dtype === "fp8_e4m3" ? Math.fround(0.037) : 1; // an f32 scale, as checkpoints store it
    const shape = [37, 5, 7];
    const make = (s: Session, rng: Rng): Tensor => s.up(rng.uniform(size(shape), -4, 4), shape, dtype, scale);
    cases.push(
      {
        name: `cast ${dtype}→f32/bf16/fp8`,
        tolerance: EXACT,
        run(b, rng) {
          const s = new Session(b);
          const x = make(s, rng);
          // 37·5·7 elements take the scalar kernels; 64·40 (a multiple of 8) the vectorised ones.
          const wide = s.up(rng.uniform(64 * 40, -4, 4), [64, 40], dtype, scale);
          return s.finish({
            f32: b.cast(x, "f32"),
            bf16: b.cast(x, "bf16"),
            fp8: b.cast(x, "fp8_e4m3"),
            i32: b.cast(x, "i32"),
            f32Vectorised: b.cast(wide, "f32"),
            bf16Vectorised: b.cast(wide, "bf16"),
          });
        },
      },
      {
        name: `copy/sliceRows/concatRows ${dtype}`,
        tolerance: EXACT,
        run(b, rng) {
          const s = new Session(b);
          const x = make(s, rng);
          const y = make(s, rng);
          const slice = s.track(b.sliceRows(x, 3, 11));
          return s.finish({ copy: b.copy(x), slice, concat: b.concatRows([slice, y, b.sliceRows(x, 36, 1)]) });
        },
      },
      {
        name: `gatherRows/gatherElements/scatterElements ${dtype}`,
        tolerance: EXACT,
        run(b, rng) {
          const s = new Session(b);
          const x = make(s, rng);
          const rows = s.ints(rng.int(53, 0, 37), [53]);
          const perm = s.ints(rng.permutation(size(shape)), [size(shape)]);
          return s.finish({
            gather: b.gatherRows(x, rows),
            gatherElements: b.gatherElements(x, perm, [7, 5, 37]),
            scatterElements: b.scatterElements(x, perm, [35, 37]),
          });
        },
      },
    );
  }
  cases.push(
    {
      name: "scatterRowsInPlace f32←f32/bf16, bf16←bf16",
      tolerance: EXACT,
      run(b, rng) {
        const s = new Session(b);
        const dst = s.up(rng.uniform(41 * 9), [41, 9], "f32");
        const dstBf = s.up(rng.uniform(41 * 9), [41, 9], "bf16");
        const index = s.ints(rng.permutation(41).subarray(0, 13), [13]);
        b.scatterRowsInPlace(dst, index, s.up(rng.uniform(13 * 9), [13, 9], "f32"));
        b.scatterRowsInPlace(dst, s.ints(Int32Array.of(0, 40), [2]), s.up(rng.uniform(18), [2, 9], "bf16"));
        b.scatterRowsInPlace(dstBf, index, s.up(rng.uniform(13 * 9), [13, 9], "bf16"));
        return s.finish({ dst: b.copy(dst), dstBf: b.copy(dstBf) });
      },
    },
    {
      name: "scatterAddRowsInPlace f32←f32/bf16 (repeated rows)",
      tolerance: { atol: 1e-6, rtol: 1e-6, why: "atomic adds in any order: f32 sums of ≤ 4 terms" },
      run(b, rng) {
        const s = new Session(b);
        const dst = s.up(rng.uniform(23 * 17), [23, 17], "f32");
        b.scatterAddRowsInPlace(dst, s.ints(rng.int(60, 0, 23), [60]), s.up(rng.uniform(60 * 17), [60, 17], "f32"));
        b.scatterAddRowsInPlace(dst, s.ints(rng.int(9, 0, 23), [9]), s.up(rng.uniform(9 * 17), [9, 17], "bf16"));
        return s.finish({ dst: b.copy(dst) });
      },
    },
    {
      name: "patchify [3,42,70] p=14 f32, [3,32,16] p=16 bf16",
      tolerance: EXACT,
      run(b, rng) {
        const s = new Session(b);
        return s.finish({
          a: b.patchify(s.up(rng.uniform(3 * 42 * 70), [3, 42, 70], "f32"), 14),
          b: b.patchify(s.up(rng.uniform(3 * 32 * 16), [3, 32, 16], "bf16"), 16),
        });
      },
    },
    {
      name: "upload/read/readRaw round trip bf16, fp8, i32",
      tolerance: EXACT,
      run(b, rng) {
        const s = new Session(b);
        const bf = s.up(rng.uniform(1001, -100, 100), [1001], "bf16");
        const fp = s.up(rng.uniform(999, -500, 500), [999], "fp8_e4m3", 0.5);
        const ints = s.ints(rng.int(77, -1000, 1000), [77]);
        const rawBf = b.readRaw(bf);
        const rawFp = b.readRaw(fp);
        return {
          ...s.finish({ bf: b.copy(bf), fp: b.copy(fp), ints: b.copy(ints) }),
          rawBf: Float32Array.from(rawBf),
          rawFp: Float32Array.from(rawFp),
        };
      },
    },
  );
  return cases;
}

function matmulCases(): ParityCase[] {
  const cases: ParityCase[] = [];
  const shapes: [number, number, number][] = [
    [70, 129, 33],
    [1, 64, 1023],
    [17, 5, 3],
  ];
  for (const [m, k, n] of shapes) {
    for (const [aType, bType] of [
      ["f32", "f32"],
      ["bf16", "bf16"],
      ["f32", "bf16"],
      ["f32", "fp8_e4m3"],
      ["bf16", "fp8_e4m3"],
    ] as const) {
      cases.push({
        name: `matmul ${aType}·${bType} m=${m} k=${k} n=${n} (4 transposes)`,
        tolerance: MATMUL_F32,
        run(b, rng) {
          const s = new Session(b);
          // An fp8 weight holds value/scale (|stored| ≤ 405 < 448 here); the scale is not a power of two.
          const bScale = bType === "fp8_e4m3" ? Math.fround(0.0037) : 1;
          const bRange = bType === "fp8_e4m3" ? 1.5 : 1;
          const a = s.up(rng.uniform(m * k), [m, k], aType);
          const aT = s.up(rng.uniform(m * k), [k, m], aType);
          const w = s.up(rng.uniform(k * n, -bRange, bRange), [k, n], bType, bScale);
          const wT = s.up(rng.uniform(k * n, -bRange, bRange), [n, k], bType, bScale);
          return s.finish({
            nn: b.matmul(a, w),
            nt: b.matmul(a, wT, { transB: true, alpha: 0.5 }),
            tn: b.matmul(aT, w, { transA: true }),
            tt: b.matmul(aT, wT, { transA: true, transB: true, alpha: -2 }),
          });
        },
      });
    }
  }
  cases.push(
    {
      name: "matmul accumulate into f32 (linear backward dW += dyᵀ·x)",
      tolerance: MATMUL_F32,
      run(b, rng) {
        const s = new Session(b);
        const acc = s.up(rng.uniform(33 * 70), [33, 70], "f32");
        b.matmul(s.up(rng.uniform(45 * 33), [45, 33], "f32"), s.up(rng.uniform(45 * 70), [45, 70], "bf16"), { transA: true, accumulate: acc });
        return s.finish({ acc: b.copy(acc) });
      },
    },
    {
      name: "matmul accumulate into bf16 (the LoRA update onto a bf16 base output, precision bf16)",
      tolerance: MATMUL_BF16_OUT,
      run(b, rng) {
        const s = new Session(b);
        const acc = s.up(rng.uniform(37 * 70), [37, 70], "bf16");
        b.matmul(s.up(rng.uniform(37 * 16), [37, 16], "bf16"), s.up(rng.uniform(70 * 16), [70, 16], "bf16"), { transB: true, alpha: 2, accumulate: acc, precision: "bf16" });
        return s.finish({ acc: b.copy(acc) });
      },
    },
    {
      name: "matmul at layer scale: x·Wᵀ bf16 [300,1024]·[700,1024]ᵀ, f32 [257,1024]·[1024,300]",
      tolerance: MATMUL_LARGE_K,
      run(b, rng) {
        const s = new Session(b);
        const x = s.up(rng.uniform(300 * 1024), [300, 1024], "bf16");
        const w = s.up(rng.uniform(700 * 1024), [700, 1024], "bf16");
        const a = s.up(rng.uniform(257 * 1024), [257, 1024], "f32");
        const c = s.up(rng.uniform(1024 * 300), [1024, 300], "f32");
        return s.finish({ bf16: b.matmul(x, w, { transB: true }), f32: b.matmul(a, c) });
      },
    },
    {
      name: "matmul autocast (precision bf16): f32·bf16ᵀ, fp8·f32, and f32·f32 left exact",
      tolerance: MATMUL_LARGE_K,
      run(b, rng) {
        const s = new Session(b);
        const x = s.up(rng.uniform(300 * 1024), [300, 1024], "f32");
        const w = s.up(rng.uniform(700 * 1024), [700, 1024], "bf16");
        const w8 = s.up(rng.uniform(200 * 300), [200, 300], "fp8_e4m3");
        const a = s.up(rng.uniform(64 * 96), [64, 96], "f32");
        const c = s.up(rng.uniform(96 * 40), [96, 40], "f32");
        return s.finish({
          xw: b.matmul(x, w, { transB: true, precision: "bf16" }),
          w8x: b.matmul(w8, x, { precision: "bf16" }),
          exact: b.matmul(a, c, { precision: "bf16" }),
        });
      },
    },
    {
      name: "matmul bf16·bf16 → bf16 output, 3-D activations",
      tolerance: MATMUL_BF16_OUT,
      run(b, rng) {
        const s = new Session(b);
        const x = s.up(rng.uniform(2 * 35 * 96), [2, 35, 96], "bf16");
        const w = s.up(rng.uniform(160 * 96), [160, 96], "bf16");
        return s.finish({ y: b.matmul(x, w, { transB: true, outDtype: "bf16" }) });
      },
    },
  );
  return cases;
}

function elementwiseCases(): ParityCase[] {
  const cases: ParityCase[] = [];
  // 3·1023 elements take the scalar kernels; 4·1024 (a multiple of 8, 16-byte aligned) the vectorised ones.
  for (const [shape, kernels] of [[[3, 1023], ""], [[4, 1024], " (vectorised)"]] as const) for (const dtype of FLOAT_INPUTS) {
    const n = size(shape);
    cases.push(
      {
        name: `add/mul/scale/addInPlace/scaleInPlace ${dtype}${kernels}`,
        tolerance: ELEMENTWISE,
        run(b, rng) {
          const s = new Session(b);
          const x = s.up(rng.uniform(n, -3, 3), shape, dtype);
          const y = s.up(rng.uniform(n, -3, 3), shape, dtype);
          const acc = s.up(rng.uniform(n), shape, "f32");
          b.addInPlace(acc, y, 0.3);
          b.addInPlace(acc, x);
          b.scaleInPlace(acc, -1.7);
          return s.finish({ add: b.add(x, y), mul: b.mul(x, y), scale: b.scale(x, 0.123), acc: b.copy(acc) });
        },
      },
      {
        name: `swiglu/gelu forward and backward ${dtype}${kernels}`,
        tolerance: TRANSCENDENTAL,
        run(b, rng) {
          const s = new Session(b);
          const g = s.up(rng.uniform(n, -6, 6), shape, dtype);
          const u = s.up(rng.uniform(n, -3, 3), shape, dtype);
          const d = s.up(rng.uniform(n), shape, dtype);
          const { dgate, dup } = b.swigluBackward(g, u, d);
          return s.finish({ swiglu: b.swiglu(g, u), dgate, dup, gelu: b.gelu(g), dgelu: b.geluBackward(g, d) });
        },
      },
      {
        name: `swigluBackward with bf16 gradients ${dtype}${kernels}`,
        tolerance: { atol: 1e-5, rtol: 8e-3, why: "the f32 gradients (≤ 2 ulp apart), each rounded once to bf16 (half an ulp is 2^-9 relative)" },
        run(b, rng) {
          const s = new Session(b);
          const g = s.up(rng.uniform(n, -6, 6), shape, dtype);
          const u = s.up(rng.uniform(n, -3, 3), shape, dtype);
          const d = s.up(rng.uniform(n), shape, dtype);
          const { dgate, dup } = b.swigluBackward(g, u, d, "bf16");
          return s.finish({ dgate, dup });
        },
      },
      {
        name: `dropout p=0.1 and p=0.5 forward/backward ${dtype}${kernels}`,
        tolerance: { ...EXACT, why: "the same counter-based hash and one f32 multiply: bit-exact" },
        run(b, rng) {
          const s = new Session(b);
          const x = s.up(rng.uniform(n, -3, 3), shape, dtype);
          const seed = Math.floor(rng.next() * 2 ** 32);
          return s.finish({ p01: b.dropout(x, 0.1, seed), p05: b.dropoutBackward(x, 0.5, (seed ^ 1) >>> 0), p0: b.dropout(x, 0, seed) });
        },
      },
    );
  }
  return cases;
}

function normRopeCases(): ParityCase[] {
  const cases: ParityCase[] = [];
  // 1000 columns take the vectorised RMSNorm kernels, 1001 the scalar ones; a head of 40 (pairs
  // 20 apart) the scalar RoPE kernel, 64 (32 apart, a multiple of 8) the vectorised one.
  for (const [cols, dim] of [[1000, 40], [1001, 64]] as const) for (const dtype of FLOAT_INPUTS) {
    const half = dim / 2;
    cases.push(
      {
        name: `rmsNorm forward/backward [37, ${cols}] ${dtype}`,
        tolerance: REDUCTION,
        run(b, rng) {
          const s = new Session(b);
          const x = s.up(rng.uniform(37 * cols, -2, 2), [37, cols], dtype);
          const w = s.up(rng.uniform(cols, 0.5, 1.5), [cols], dtype);
          const dy = s.up(rng.uniform(37 * cols), [37, cols], dtype);
          const { y, rstd } = b.rmsNorm(x, w, 1e-5);
          const { dx, dweight } = b.rmsNormBackward(x, w, rstd, dy);
          // A frozen weight: the same dx, no dweight.
          const frozen = b.rmsNormBackward(x, w, rstd, dy, false);
          if (frozen.dweight !== null) throw new Error("rmsNormBackward(weightGrad false) returned a dweight");
          // Added into a gradient summed so far (the residual stream's).
          const sum = s.up(rng.uniform(37 * cols), [37, cols], "f32");
          if (b.rmsNormBackward(x, w, rstd, dy, false, sum).dx !== sum) throw new Error("rmsNormBackward(…, into) returned another tensor");
          return s.finish({ y, rstd, dx, dweight: dweight!, dxFrozen: frozen.dx, dxInto: b.copy(sum) });
        },
      },
      ...(["f32", "bf16"] as const).map(
        (outDtype): ParityCase => ({
          name: `rope forward/inverse [29, 3, ${dim}] ${dtype}${outDtype === "bf16" ? " with bf16 output" : ""}`,
          tolerance:
            outDtype === "f32"
              ? ELEMENTWISE
              : { atol: 1e-5, rtol: 8e-3, why: "the f32 rotation (≤ 1 ulp apart), rounded once to bf16 (half an ulp is 2^-9 relative)" },
          run(b, rng) {
            const s = new Session(b);
            const x = s.up(rng.uniform(29 * 3 * dim), [29, 3, dim], dtype);
            const angles = rng.uniform(29 * half, -Math.PI, Math.PI);
            const cos = s.up(angles.map(Math.cos), [29, half], "f32");
            const sin = s.up(angles.map(Math.sin), [29, half], "f32");
            return s.finish({ fwd: b.rope(x, cos, sin, false, outDtype), inv: b.rope(x, cos, sin, true, outDtype) });
          },
        }),
      ),
    );
  }
  return cases;
}

interface AttentionShape extends AttentionDims {
  label: string;
  mask: (sess: Session, rng: Rng) => AttentionMask;
}

function attentionCases(): ParityCase[] {
  const shapes: AttentionShape[] = [
    {
      label: "causal GQA 8/2, D=64, queryOffset 8, left-padded keys (rows with no visible key)",
      b: 2, t: 37, s: 45, hq: 8, hkv: 2, d: 64,
      mask: (sess) => {
        const valid = new Int32Array(2 * 45).fill(1);
        valid.fill(0, 45, 45 + 12); // batch 1: 12 padded keys, so its first queries see nothing
        return { kind: "causal", queryOffset: 8, keyValid: sess.ints(valid, [2, 45]) };
      },
    },
    {
      label: "causal prefill GQA 4/1, D=128",
      b: 1, t: 70, s: 70, hq: 4, hkv: 1, d: 128,
      mask: () => ({ kind: "causal", queryOffset: 0 }),
    },
    {
      label: "segments [256, 300, 44] (two images and a crop), D=64",
      b: 1, t: 600, s: 600, hq: 2, hkv: 2, d: 64,
      mask: () => ({ kind: "segments", lengths: [256, 300, 44] }),
    },
    {
      label: "segments [5, 33, 1, 24] (vision), D=40",
      b: 1, t: 63, s: 63, hq: 3, hkv: 3, d: 40,
      mask: () => ({ kind: "segments", lengths: [5, 33, 1, 24] }),
    },
  ];
  const cases: ParityCase[] = [];
  for (const sh of shapes) {
    for (const dtype of FLOAT_INPUTS) cases.push(attentionCase(`attention fwd/bwd ${sh.label} ${dtype}`, sh, dtype, "f32", ATTENTION));
  }
  return cases;
}

/** The tensor-core kernels (precision bf16) at the odd shapes the exact tier's cases miss. */
function flashAttentionCases(): ParityCase[] {
  const causal = (): AttentionMask => ({ kind: "causal", queryOffset: 0 });
  const shapes: AttentionShape[] = [
    {
      label: "causal GQA 8/2, D=64, queryOffset 8, left-padded keys (rows with no visible key)",
      b: 2, t: 37, s: 45, hq: 8, hkv: 2, d: 64,
      mask: (sess) => {
        const valid = new Int32Array(2 * 45).fill(1);
        valid.fill(0, 45, 45 + 12);
        return { kind: "causal", queryOffset: 8, keyValid: sess.ints(valid, [2, 45]) };
      },
    },
    { label: "causal prefill GQA 4/1, D=128, T=70", b: 1, t: 70, s: 70, hq: 4, hkv: 1, d: 128, mask: causal },
    { label: "causal T=1, GQA 4/2, D=128", b: 1, t: 1, s: 1, hq: 4, hkv: 2, d: 128, mask: causal },
    { label: "causal T=17, D=64", b: 2, t: 17, s: 17, hq: 2, hkv: 2, d: 64, mask: causal },
    {
      label: "decode: 1 new token against a 17-slot cache, GQA 4/1, D=128",
      b: 2, t: 1, s: 17, hq: 4, hkv: 1, d: 128,
      mask: () => ({ kind: "causal", queryOffset: 16 }),
    },
    { label: "causal GQA 6/2, D=96 (padded to 128), T=65", b: 1, t: 65, s: 65, hq: 6, hkv: 2, d: 96, mask: causal },
    // 264 key tiles × kv heads: on 132 SMs the fused backward splits each group of 4 query heads in
    // two (query_head_splits), so a block walks 2 heads and the slices meet in flash_dkv_finish_kernel.
    { label: "causal GQA 32/8, D=64, B=33, T=64 (query heads split in two)", b: 33, t: 64, s: 64, hq: 32, hkv: 8, d: 64, mask: causal },
    { label: "segments [2116] (one 644×644 image), D=64", b: 1, t: 2116, s: 2116, hq: 2, hkv: 2, d: 64, mask: () => ({ kind: "segments", lengths: [2116] }) },
    { label: "segments [300, 2116], D=64", b: 1, t: 2416, s: 2416, hq: 1, hkv: 1, d: 64, mask: () => ({ kind: "segments", lengths: [300, 2116] }) },
    { label: "segments [63, 17, 1], D=128", b: 1, t: 81, s: 81, hq: 2, hkv: 2, d: 128, mask: () => ({ kind: "segments", lengths: [63, 17, 1] }) },
    { label: "segments [5, 33, 1, 24], D=40 (unvectorised loads)", b: 1, t: 63, s: 63, hq: 3, hkv: 3, d: 40, mask: () => ({ kind: "segments", lengths: [5, 33, 1, 24] }) },
    // Tiles cut within segments (none straddles two), empty segments among them.
    { label: "segments [70, 0, 130, 0, 1], GQA 2/1, D=64", b: 1, t: 201, s: 201, hq: 2, hkv: 1, d: 64, mask: () => ({ kind: "segments", lengths: [70, 0, 130, 0, 1] }) },
  ];
  const cases: ParityCase[] = [];
  for (const sh of shapes) {
    for (const dtype of FLOAT_INPUTS) {
      cases.push(attentionCase(`flash attention fwd/bwd ${sh.label} ${dtype}`, sh, dtype, "bf16", FLASH_ATTENTION));
    }
  }
  return cases;
}

function attentionCase(
  name: string,
  sh: AttentionShape,
  dtype: DType,
  precision: MatmulPrecision,
  tolerance: Tolerance,
): ParityCase {
  return {
    name,
    tolerance,
    run(b, rng) {
      const s = new Session(b);
      const q = s.up(rng.uniform(sh.b * sh.t * sh.hq * sh.d, -2, 2), [sh.b, sh.t, sh.hq, sh.d], dtype);
      const k = s.up(rng.uniform(sh.b * sh.s * sh.hkv * sh.d, -2, 2), [sh.b, sh.s, sh.hkv, sh.d], dtype);
      const v = s.up(rng.uniform(sh.b * sh.s * sh.hkv * sh.d), [sh.b, sh.s, sh.hkv, sh.d], dtype);
      const dout = s.up(rng.uniform(sh.b * sh.t * sh.hq * sh.d), [sh.b, sh.t, sh.hq, sh.d], dtype);
      const mask = sh.mask(s, rng);
      const scale = 1 / Math.sqrt(sh.d);
      const { out, lse } = b.attention(q, k, v, mask, scale, precision);
      const { dq, dk, dv } = b.attentionBackward(q, k, v, out, lse, dout, mask, scale, precision);
      if (precision === "f32") return s.finish({ out, lse, dq, dk, dv });
      // The fast tier has two backwards (the fused default above, and two kernels without atomics):
      // both against the same CPU reference, which ignores the option.
      const det = b.attentionBackward(q, k, v, out, lse, dout, mask, scale, precision, { deterministic: true });
      return s.finish({ out, lse, dq, dk, dv, "dq deterministic": det.dq, "dk deterministic": det.dk, "dv deterministic": det.dv });
    },
  };
}

/**
 * The flash backward run twice on the same inputs: outputs are 1 where the two runs' bits differ,
 * so the CPU side (deterministic by construction) is all zeros and any differing bit on the GPU is
 * a violation. deterministic: true must repeat dq, dk and dv exactly; the fused default only dk
 * and dv (its dq is summed with atomics in a varying order, so it is not checked).
 */
function flashRepeatCases(): ParityCase[] {
  const shapes: AttentionShape[] = [
    { label: "causal GQA 8/2, D=128, T=300", b: 2, t: 300, s: 300, hq: 8, hkv: 2, d: 128, mask: () => ({ kind: "causal", queryOffset: 0 }) },
    { label: "segments [300, 1100], GQA 2/1, D=64", b: 1, t: 1400, s: 1400, hq: 2, hkv: 1, d: 64, mask: () => ({ kind: "segments", lengths: [300, 1100] }) },
  ];
  const differing = (a: Float32Array, c: Float32Array): Float32Array => Float32Array.from(a, (x, i) => (Object.is(x, c[i]) ? 0 : 1));
  return shapes.map((sh) => ({
    name: `flash attention backward repeated bit for bit ${sh.label}`,
    tolerance: { ...EXACT, why: "the same kernels on the same inputs: no atomics in these outputs, so the same bits" },
    run(b, rng) {
      const s = new Session(b);
      const q = s.up(rng.uniform(sh.b * sh.t * sh.hq * sh.d, -2, 2), [sh.b, sh.t, sh.hq, sh.d], "bf16");
      const k = s.up(rng.uniform(sh.b * sh.s * sh.hkv * sh.d, -2, 2), [sh.b, sh.s, sh.hkv, sh.d], "bf16");
      const v = s.up(rng.uniform(sh.b * sh.s * sh.hkv * sh.d), [sh.b, sh.s, sh.hkv, sh.d], "bf16");
      const dout = s.up(rng.uniform(sh.b * sh.t * sh.hq * sh.d), [sh.b, sh.t, sh.hq, sh.d], "bf16");
      const mask = sh.mask(s, rng);
      const scale = 1 / Math.sqrt(sh.d);
      const { out, lse } = b.attention(q, k, v, mask, scale, "bf16");
      s.track(out);
      s.track(lse);
      const f32 = (t: Tensor): Float32Array => {
        const x = b.read(s.track(t));
        if (!(x instanceof Float32Array)) throw new Error("attention gradients are f32");
        return x;
      };
      const run = (deterministic: boolean): Record<"dq" | "dk" | "dv", Float32Array> => {
        const g = b.attentionBackward(q, k, v, out, lse, dout, mask, scale, "bf16", { deterministic });
        return { dq: f32(g.dq), dk: f32(g.dk), dv: f32(g.dv) };
      };
      const det1 = run(true), det2 = run(true), fused1 = run(false), fused2 = run(false);
      s.finish({});
      return {
        "dq deterministic": differing(det1.dq, det2.dq),
        "dk deterministic": differing(det1.dk, det2.dk),
        "dv deterministic": differing(det1.dv, det2.dv),
        "dk fused": differing(fused1.dk, fused2.dk),
        "dv fused": differing(fused1.dv, fused2.dv),
      };
    },
  }));
}

function lossOptimCases(): ParityCase[] {
  const cases: ParityCase[] = [];
  for (const dtype of FLOAT_INPUTS) {
    cases.push({
      name: `crossEntropy [37, 1000] with ignored rows ${dtype}`,
      tolerance: REDUCTION,
      run(b, rng) {
        const s = new Session(b);
        const logits = s.up(rng.uniform(37 * 1000, -8, 8), [37, 1000], dtype);
        const labels = rng.int(37, 0, 1000);
        for (let i = 0; i < 37; i += 4) labels[i] = -100;
        const lab = s.ints(labels, [37]);
        const withGrad = b.crossEntropy(logits, lab, -100, 1 / 28);
        const lossOnly = b.crossEntropy(logits, lab, -100);
        return s.finish({ loss: withGrad.loss, dlogits: withGrad.dlogits!, lossOnly: lossOnly.loss });
      },
    });
  }
  cases.push(
    {
      name: "sumSquares f32 [100003], bf16 [4097], fp8 [999]",
      tolerance: REDUCTION,
      run(b, rng) {
        const s = new Session(b);
        return s.finish({
          f32: b.sumSquares(s.up(rng.uniform(100003), [100003], "f32")),
          bf16: b.sumSquares(s.up(rng.uniform(4097), [4097], "bf16")),
          fp8: b.sumSquares(s.up(rng.uniform(999, -4, 4), [999], "fp8_e4m3", Math.fround(0.01))),
        });
      },
    },
    {
      name: "adamw 3 steps, weight decay 0.01",
      tolerance: { ...EXACT, why: "the same f32 operations in torch's order, no fused multiply-adds: bit-exact" },
      run(b, rng) {
        const s = new Session(b);
        const n = 1031;
        const param = s.up(rng.uniform(n), [n], "f32");
        const m = s.track(b.zeros([n], "f32"));
        const v = s.track(b.zeros([n], "f32"));
        for (let step = 1; step <= 3; step++) {
          const grad = s.up(rng.uniform(n, -0.1, 0.1), [n], "f32");
          b.adamw(param, grad, m, v, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step });
        }
        return s.finish({ param: b.copy(param), m: b.copy(m), v: b.copy(v) });
      },
    },
    ...multiTensorOptimCases(),
  );
  return cases;
}

/**
 * The fused LoRA ops (Backend.loraDown, loraGradA, loraDx, loraDxAccumulate). precision bf16 runs
 * native/cuda/src/lora.cu's kernels: shapes with one row, rows and columns that fill no tile, K not
 * a multiple of 8 (the element-wise loads), ranks 8, 12, 16 and 64, K = 1024 at N = 300 (grad_a's
 * row slices and their sum); precision f32 runs the composite (dropout + cuBLASLt f32 products).
 */
function loraCases(): ParityCase[] {
  const cases: ParityCase[] = [];
  const shapes: [number, number, number][] = [
    [1, 64, 16],
    [17, 200, 8],
    [17, 77, 12],
    [70, 1000, 64],
    [300, 1024, 16],
  ];
  const outputs = (xDtype: DType, dropout: number, precision: MatmulPrecision, narrowOut: boolean) =>
    (b: Backend, rng: Rng, [n, k, r]: [number, number, number]): Outputs => {
      const s = new Session(b);
      const x = s.up(rng.uniform(n * k), [n, k], xDtype);
      const a = s.up(rng.uniform(r * k), [r, k], "bf16");
      const du = s.up(rng.uniform(n * r), [n, r], "bf16");
      const dx = s.up(rng.uniform(n * k), [n, k], narrowOut ? "bf16" : "f32");
      const seed = Math.floor(rng.next() * 2 ** 32);
      const opts = { dropout, seed: dropout > 0 ? seed : null, precision };
      b.loraDxAccumulate(dx, du, a, opts);
      if (narrowOut) return s.finish({ u: b.loraDown(x, a, { ...opts, outDtype: "bf16" }), dx: b.copy(dx) });
      // dxNew: the same term into a new tensor (the kernel writing dx without reading it).
      return s.finish({ u: b.loraDown(x, a, opts), da: b.loraGradA(du, x, opts), dx: b.copy(dx), dxNew: b.loraDx(du, a, opts) });
    };
  for (const shape of shapes) {
    const [n, k, r] = shape;
    for (const dropout of [0, 0.05]) {
      for (const xDtype of FLOAT_INPUTS) {
        const label = `N=${n} K=${k} r=${r} p=${dropout} x ${xDtype}`;
        const f32 = outputs(xDtype, dropout, "bf16", false);
        const bf16 = outputs(xDtype, dropout, "bf16", true);
        cases.push(
          { name: `lora fused bf16 tier ${label}: u, dA, dx, dx new f32`, tolerance: LORA_F32_OUT, run: (b, rng) => f32(b, rng, shape) },
          { name: `lora fused bf16 tier ${label}: u, dx bf16`, tolerance: MATMUL_BF16_OUT, run: (b, rng) => bf16(b, rng, shape) },
        );
      }
    }
  }
  const exact = outputs("f32", 0.05, "f32", false);
  cases.push({ name: "lora fused f32 tier (composite) N=70 K=1000 r=64 p=0.05", tolerance: MATMUL_LARGE_K, run: (b, rng) => exact(b, rng, [70, 1000, 64]) });
  return cases;
}

/**
 * The products with a LoRA B (Backend.loraUp, loraUpBackward; lora.cu's lora_up and
 * lora_up_backward for r ≤ 64), α = 1.75. Shapes cover one row; n, m and r that fill no tile or
 * vector (m = 77, 100, 4100: element loads of dy and scalar stores of y; r = 5: element loads of u
 * and B; r = 8, 24: zero-padded k-steps and m-tiles); r = 16, 24, 64 (one, two and four k-steps);
 * du summed by one cluster of 2 column tiles, by 2 clusters of 8, by 9 clusters (the last mostly
 * past m); dB in one slice and in 5 to 16 slices; slices of 6 tiles (du groups of 4, then 2) and,
 * at r = 64, groups of one tile (two cluster exchanges a slice); r = 80 the composite.
 */
function loraUpCases(): ParityCase[] {
  const alpha = 1.75;
  const shapes: { shape: [number, number, number]; inputs: readonly DType[] }[] = [
    { shape: [1, 64, 16], inputs: FLOAT_INPUTS },
    { shape: [17, 77, 8], inputs: FLOAT_INPUTS },
    { shape: [33, 100, 5], inputs: FLOAT_INPUTS },
    { shape: [300, 1024, 24], inputs: FLOAT_INPUTS },
    { shape: [1000, 1000, 16], inputs: FLOAT_INPUTS },
    { shape: [3000, 4096, 16], inputs: ["bf16"] },
    { shape: [1000, 4100, 64], inputs: ["bf16"] },
    { shape: [17, 100, 80], inputs: ["bf16"] },
  ];
  const outputs = (dtype: DType, outDtype: DType) =>
    (b: Backend, rng: Rng, [n, m, r]: [number, number, number]): Outputs => {
      const s = new Session(b);
      const u = s.up(rng.uniform(n * r), [n, r], dtype);
      const bw = s.up(rng.uniform(m * r), [m, r], dtype);
      const dy = s.up(rng.uniform(n * m), [n, m], dtype);
      const { du, db } = b.loraUpBackward(dy, bw, u, { alpha, duDtype: outDtype });
      return s.finish({ y: b.loraUp(u, bw, { alpha, outDtype }), du, db });
    };
  const cases: ParityCase[] = [];
  for (const { shape, inputs } of shapes) {
    const [n, m, r] = shape;
    for (const dtype of inputs) {
      const label = `N=${n} m=${m} r=${r} ${dtype} operands`;
      cases.push(
        { name: `lora up and up backward ${label}: y, du f32, dB`, tolerance: LORA_UP_F32_OUT, run: (b, rng) => outputs(dtype, "f32")(b, rng, shape) },
        { name: `lora up and up backward ${label}: y, du bf16, dB`, tolerance: LORA_UP_BF16_OUT, run: (b, rng) => outputs(dtype, "bf16")(b, rng, shape) },
      );
    }
  }
  const differing = (a: Float32Array | Int32Array, c: Float32Array | Int32Array): Float32Array => Float32Array.from(a, (x, i) => (Object.is(x, c[i]) ? 0 : 1));
  cases.push({
    name: "lora up backward repeated bit for bit N=3000 m=4096 r=16 (clusters, groups and slices)",
    tolerance: { ...EXACT, why: "the same kernels on the same inputs, every sum in an order fixed by the shapes (no atomics): the same bits" },
    run(b, rng) {
      const s = new Session(b);
      const [n, m, r] = [3000, 4096, 16];
      const u = s.up(rng.uniform(n * r), [n, r], "bf16");
      const bw = s.up(rng.uniform(m * r), [m, r], "bf16");
      const dy = s.up(rng.uniform(n * m), [n, m], "bf16");
      // y needs no repeat: each of its elements is one thread's sum over r.
      const once = () => {
        const { du, db } = b.loraUpBackward(dy, bw, u, { alpha, duDtype: "f32" });
        return { du: b.read(s.track(du)), db: b.read(s.track(db)) };
      };
      const first = once(), second = once();
      s.finish({});
      return { du: differing(first.du, second.du), db: differing(first.db, second.db) };
    },
  });
  return cases;
}

/**
 * The multi-tensor optimiser step (native/cuda/src/optim.cu): LoRA-like shapes and sizes that end
 * inside a chunk (2048 for the f32 step, 8 × 256 for the 8-bit one, 8192 for Σx²) or a 256-block.
 * The clipped steps read a Σg² uploaded to both backends, so the coefficient is the same input
 * and the step itself can be held to bit-exactness.
 */
function multiTensorOptimCases(): ParityCase[] {
  const shapes: number[][] = [[16, 320], [320, 16], [8, 1031], [3, 77], [20000], [5000]];
  const hp = (step: number) => ({ lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step });
  const tensors = (s: Session, rng: Rng, lo: number, hi: number): Tensor[] => shapes.map((shape) => s.up(rng.uniform(size(shape), lo, hi), shape, "f32"));
  const named = (prefix: string, ts: readonly Tensor[], b: Backend): Record<string, Tensor> => Object.fromEntries(ts.map((t, i) => [`${prefix}${i}`, b.copy(t)]));
  return [
    {
      name: "sumSquaresMany of 6 f32 tensors (LoRA shapes, 20000 elements the largest)",
      tolerance: {
        atol: 0,
        rtol: 1e-6,
        why: "each tensor's f64 sum in another order (8192-element chunks, then chunk order) rounds to f32 like the CPU's sequential one but for a rare 1-ulp tie; the f32 sum over tensors runs in the same order",
      },
      run(b, rng) {
        const s = new Session(b);
        return s.finish({ total: b.sumSquaresMany(tensors(s, rng, -1, 1)) });
      },
    },
    {
      name: "addMany of 6 f32 tensors into their sums (LoRA shapes, 20000 elements the largest; 8192-element chunks)",
      tolerance: { ...EXACT, why: "one f32 addition an element, as addInPlace: bit-exact" },
      run(b, rng) {
        const s = new Session(b);
        const sums = tensors(s, rng, -1, 1);
        b.addMany(sums, tensors(s, rng, -0.1, 0.1));
        return s.finish(named("sum", sums, b));
      },
    },
    {
      name: "narrowMany of 6 f32 tensors into bf16 copies (LoRA shapes, 20000 elements the largest; 8192-element chunks)",
      tolerance: { ...EXACT, why: "round to nearest even of the same f32 values, as cast: bit-exact" },
      run(b, rng) {
        const s = new Session(b);
        const masters = tensors(s, rng, -1, 1);
        const copies = masters.map((m) => s.track(b.zeros(m.shape, "bf16")));
        b.narrowMany(masters, copies);
        return s.finish(named("copy", copies, b));
      },
    },
    ...[false, true].map(
      (clipped): ParityCase => ({
        name: `adamwMany 3 steps over 6 tensors${clipped ? ", clipped (coefficient from an uploaded Σg² = 50, max_norm 0.3)" : ""}`,
        tolerance: { ...EXACT, why: "the same f32 operations in torch's order as adamw (and f32 clip coefficient), no fused multiply-adds: bit-exact" },
        run(b, rng) {
          const s = new Session(b);
          const params = tensors(s, rng, -1, 1);
          const ms = params.map((p) => s.track(b.zeros(p.shape, "f32")));
          const vs = params.map((p) => s.track(b.zeros(p.shape, "f32")));
          const sumSquares = s.up(Float32Array.of(50), [1], "f32");
          for (let step = 1; step <= 3; step++) {
            const grads = tensors(s, rng, -0.1, 0.1);
            b.adamwMany(params, grads, ms, vs, hp(step), clipped ? { sumSquares, maxNorm: 0.3 } : undefined);
          }
          return s.finish({ ...named("param", params, b), ...named("m", ms, b), ...named("v", vs, b) });
        },
      }),
    ),
    ...[false, true].map(
      (clipped): ParityCase => ({
        name: `adamw8bitMany 4 steps over 6 tensors${clipped ? ", clipped (Σg² = 50, max_norm 0.3)" : ""}: params, packed codes, absmaxes`,
        tolerance: {
          ...EXACT,
          why: "dequantise as an f32 product, the adamw step in f32, block max, f64 division and binary search over the same maps as the CPU's blockwise8.ts: bit-exact",
        },
        run(b, rng) {
          const s = new Session(b);
          const params = tensors(s, rng, -1, 1);
          const quantized = (p: Tensor, map: Float32Array) => {
            const q = quantizeBlockwise(new Float32Array(p.size), map);
            return { codes: s.track(b.upload(packCodes(q.codes), [Math.ceil(p.size / 4)], "i32")), absmax: s.up(q.absmax, [q.absmax.length], "f32") };
          };
          const moments = params.map((p) => ({ m: quantized(p, SIGNED_MAP), v: quantized(p, UNSIGNED_MAP) }));
          const sumSquares = s.up(Float32Array.of(50), [1], "f32");
          for (let step = 1; step <= 4; step++) {
            // Gradients of three magnitudes, so the blocks' maxima and the codes' decades move.
            const grads = tensors(s, rng, -(10 ** -(step % 3)), 10 ** -(step % 3));
            b.adamw8bitMany(params, grads, moments, hp(step), clipped ? { sumSquares, maxNorm: 0.3 } : undefined);
          }
          return s.finish({
            ...named("param", params, b),
            ...named("mCodes", moments.map((q) => q.m.codes), b),
            ...named("mAbsmax", moments.map((q) => q.m.absmax), b),
            ...named("vCodes", moments.map((q) => q.v.codes), b),
            ...named("vAbsmax", moments.map((q) => q.v.absmax), b),
          });
        },
      }),
    ),
  ];
}

/**
 * The FP8 path end to end (issue 13): the tiny Mistral3 of test/models/fp8-tiny.ts with per-tensor
 * fp8 decoder linears (amax/448 scales) and a LoRA pair on every q/k/v/o/gate/up/down, one
 * checkpointed forward and backward: logits, loss and every LoRA gradient. On CUDA the matmul
 * widens each fp8 weight unscaled into scratch and folds its scale into alpha; the CPU multiplies
 * by fp8 · scale tile by tile.
 */
function fp8ModelCases(): ParityCase[] {
  const step = (precision: MatmulPrecision) => (b: Backend, rng: Rng): Outputs => {
    const { logits, loss, loraGrads } = fp8TinyStep(b, fp8TinyHost((n) => rng.uniform(n)), "fp8", precision);
    return { logits, loss, loraGrads };
  };
  return [
    {
      name: "tiny model, fp8 decoder linears, precision f32: logits, loss, LoRA gradients",
      tolerance: {
        atol: 1e-4,
        rtol: 1e-3,
        normRel: 1e-4,
        why: "f32 products throughout (fp8 widened exactly, its scale in alpha on the GPU, in the operand on the CPU), summed in other orders through 2+2 layers and a checkpointed backward; |logits| ≤ 2, |grad| ≤ 1.1",
      },
      run: step("f32"),
    },
    {
      name: "tiny model, fp8 decoder linears, precision bf16 (training path): logits, loss, LoRA gradients",
      tolerance: {
        atol: 5e-2,
        rtol: 2e-2,
        normRel: 4e-2,
        why: "both round activations (the LoRA linears' outputs included) to bf16 where they meet the fp8 (and bf16) weights; a 1-ulp f32 difference in a sum can flip one bf16 rounding (2^-8 relative), which the later layers carry on; on CUDA the flash attention also rounds q, k, v and P to bf16 where the CPU's attention stays f32 (H200, three fresh seeds: LoRA gradients up to 2.47e-2 norm-relative, logits up to 3.4e-2 absolute at |logit| ≤ 2)",
      },
      run: step("bf16"),
    },
  ];
}

export function parityCases(): ParityCase[] {
  return [...layoutCases(), ...matmulCases(), ...elementwiseCases(), ...normRopeCases(), ...attentionCases(), ...flashAttentionCases(), ...flashRepeatCases(), ...lossOptimCases(), ...loraCases(), ...loraUpCases(), ...fp8ModelCases()];
}

export interface CaseResult {
  name: string;
  tolerance: Tolerance;
  comparisons: Comparison[];
  ok: boolean;
  error?: string;
}

/** Runs one case on both backends with the same seed. */
export function runCase(c: ParityCase, cuda: Backend, cpu: Backend, seed: number): CaseResult {
  try {
    const ref = c.run(cpu, new Rng(seed));
    const got = c.run(cuda, new Rng(seed));
    const comparisons = Object.keys(ref).map((key) => compare(key, got[key] ?? new Float32Array(0), ref[key]!, c.tolerance));
    return { name: c.name, tolerance: c.tolerance, comparisons, ok: comparisons.every((x) => x.violations === 0) };
  } catch (err) {
    return { name: c.name, tolerance: c.tolerance, comparisons: [], ok: false, error: (err as Error).stack ?? String(err) };
  }
}
