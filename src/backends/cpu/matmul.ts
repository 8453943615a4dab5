/**
 * out = alpha · op(a) · op(b) (+ accumulate). The backward pass needs no kernel of its own: for
 * C = A·B, dA = dC·Bᵀ and dB = Aᵀ·dC are matmuls with the transpose flags flipped (see the matmul
 * op in ../../autograd/tape.ts).
 *
 * Kernel: B is packed tile by tile into "transposed" rows (one row per output column, K contiguous)
 * in an f32 scratch, so bf16/fp8 weights are widened one tile at a time, never as a whole matrix.
 * Each output element is one dot product over the full K accumulated in f64 (JS numbers), and
 * rounded to f32 once: the products of two f32 values are exact in f64, so the result is nearly
 * the correctly rounded sum.
 */
import type { DType } from "../../tensor/dtype.ts";
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { type CpuAllocator, f32Of, fromF32As, readRangeF32, rowsCols, valuesF32 } from "./storage.ts";

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  accumulate?: Tensor;
  outDtype?: DType;
}

/** Floats per packed B tile: 256 KiB, about an L2 share. */
const TILE_FLOATS = 1 << 16;

export function matmul(alloc: CpuAllocator, a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const { transA = false, transB = false, alpha = 1, accumulate, outDtype = "f32" } = opts;
  const [aRows, aCols] = rowsCols(a);
  const [bRows, bCols] = rowsCols(b);
  const [m, k] = transA ? [aCols, aRows] : [aRows, aCols];
  const [kb, n] = transB ? [bCols, bRows] : [bRows, bCols];
  if (k !== kb) {
    throw new TensorError("matmul", `inner dimensions differ (${k} vs ${kb}, transA=${transA}, transB=${transB})`, {
      shapes: [a.shape, b.shape],
      dtypes: [a.dtype, b.dtype],
    });
  }
  if (accumulate && (accumulate.size !== m * n || accumulate.dtype !== "f32")) {
    throw new TensorError("matmul", `accumulate must be f32 [${m}, ${n}]`, { shapes: [accumulate.shape], dtypes: [accumulate.dtype] });
  }
  const aRowsF32 = transA ? transposed(valuesF32(a, "matmul"), aRows, aCols) : valuesF32(a, "matmul");
  const out = accumulate ? f32Of(accumulate, "matmul") : new Float32Array(m * n);
  const tileRows = Math.max(4, Math.min(n, Math.floor(TILE_FLOATS / Math.max(k, 1)))) & ~3 || 4;
  const tile = new Float32Array(tileRows * k);
  const columnScratch = transB ? null : new Float32Array(tileRows);
  for (let j0 = 0; j0 < n; j0 += tileRows) {
    const nb = Math.min(tileRows, n - j0);
    if (transB) readRangeF32(b, j0 * k, nb * k, tile);
    else packColumns(b, n, k, j0, nb, tile, columnScratch!);
    dotTile(aRowsF32, tile, out, m, n, k, j0, nb, alpha, accumulate !== undefined);
  }
  if (accumulate) return accumulate;
  const shape = transA ? [m, n] : [...a.shape.slice(0, -1), n];
  return fromF32As(alloc, out, shape, outDtype, "matmul");
}

function transposed(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c]!;
  return out;
}

/** tile[jj·k + kk] = b[kk, j0 + jj] for b [k, n]. */
function packColumns(b: Tensor, n: number, k: number, j0: number, nb: number, tile: Float32Array, scratch: Float32Array): void {
  for (let kk = 0; kk < k; kk++) {
    readRangeF32(b, kk * n + j0, nb, scratch);
    for (let jj = 0; jj < nb; jj++) tile[jj * k + kk] = scratch[jj]!;
  }
}

/** out[i, j0+jj] (+)= alpha · Σ_k a[i,k]·tile[jj,k], four output columns at a time. */
function dotTile(
  a: Float32Array,
  tile: Float32Array,
  out: Float32Array,
  m: number,
  n: number,
  k: number,
  j0: number,
  nb: number,
  alpha: number,
  accumulate: boolean,
): void {
  const nb4 = nb & ~3;
  for (let i = 0; i < m; i++) {
    const ar = i * k;
    const or = i * n + j0;
    let jj = 0;
    for (; jj < nb4; jj += 4) {
      const b0 = jj * k;
      const b1 = b0 + k;
      const b2 = b1 + k;
      const b3 = b2 + k;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let kk = 0; kk < k; kk++) {
        const av = a[ar + kk]!;
        s0 += av * tile[b0 + kk]!;
        s1 += av * tile[b1 + kk]!;
        s2 += av * tile[b2 + kk]!;
        s3 += av * tile[b3 + kk]!;
      }
      if (accumulate) {
        out[or + jj] = out[or + jj]! + alpha * s0;
        out[or + jj + 1] = out[or + jj + 1]! + alpha * s1;
        out[or + jj + 2] = out[or + jj + 2]! + alpha * s2;
        out[or + jj + 3] = out[or + jj + 3]! + alpha * s3;
      } else {
        out[or + jj] = alpha * s0;
        out[or + jj + 1] = alpha * s1;
        out[or + jj + 2] = alpha * s2;
        out[or + jj + 3] = alpha * s3;
      }
    }
    for (; jj < nb; jj++) {
      const b0 = jj * k;
      let s = 0;
      for (let kk = 0; kk < k; kk++) s += a[ar + kk]! * tile[b0 + kk]!;
      out[or + jj] = accumulate ? out[or + jj]! + alpha * s : alpha * s;
    }
  }
}
