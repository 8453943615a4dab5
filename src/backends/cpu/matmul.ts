/**
 * out = alpha · op(a) · op(b) (+ accumulate). The backward pass needs no kernel of its own: for
 * C = A·B, dA = dC·Bᵀ and dB = Aᵀ·dC are matmuls with the transpose flags flipped (see the matmul
 * op in ../../autograd/tape.ts).
 *
 * Kernel: A is copied once into the kernel's WebAssembly memory (rows zero-padded to a multiple of 4), then B
 * is packed tile by tile into "transposed" rows (one row per output column, K contiguous), so
 * bf16/fp8 weights are widened one tile at a time, never as a whole matrix. The SIMD kernel in
 * wasm-matmul.ts accumulates each dot product in f32 (four interleaved partial sums, like BLAS);
 * alpha and the accumulate input are applied in f64 when results are copied out. Large tiles are
 * split by rows across threads (kernel-pool.ts).
 */
import type { DType } from "../../tensor/dtype.ts";
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { type CpuAllocator, f32Of, fromF32As, readRangeF32, rowsCols } from "./storage.ts";
import { createKernelPool, type KernelPool } from "./kernel-pool.ts";

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  accumulate?: Tensor;
  outDtype?: DType;
}

/** Floats per packed B tile: 256 KiB, about an L2 share. */
const TILE_FLOATS = 1 << 16;

let pool: KernelPool | null = null;

const roundUp = (x: number, multiple: number): number => Math.ceil(x / multiple) * multiple;

/** A row-major matrix the kernel reads ranges of, widening to f32 (a tensor or a plain array). */
export type RangeReader = (start: number, count: number, out: Float32Array, outOffset: number) => void;

export const tensorReader =
  (t: Tensor): RangeReader =>
  (start, count, out, outOffset) =>
    readRangeF32(t, start, count, out, outOffset);

export const arrayReader =
  (x: Float32Array): RangeReader =>
  (start, count, out, outOffset) =>
    out.set(x.subarray(start, start + count), outOffset);

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
  const out = accumulate ? f32Of(accumulate, "matmul") : new Float32Array(m * n);
  gemm(tensorReader(a), tensorReader(b), m, k, n, { transA, transB, alpha, accumulate: accumulate !== undefined }, out);
  if (accumulate) return accumulate;
  const shape = transA ? [m, n] : [...a.shape.slice(0, -1), n];
  return fromF32As(alloc, out, shape, outDtype, "matmul");
}

/**
 * out [m, n] (+)= alpha · op(a) · op(b) on raw readers: a is [m, k] (or [k, m] with transA), b is
 * [k, n] (or [n, k] with transB). Other kernels (attention) call this directly.
 */
export function gemm(
  a: RangeReader,
  b: RangeReader,
  m: number,
  k: number,
  n: number,
  flags: { transA: boolean; transB: boolean; alpha: number; accumulate: boolean },
  out: Float32Array,
): void {
  const { transA, transB, alpha, accumulate } = flags;
  if (m === 0 || n === 0) return;
  pool ??= createKernelPool();
  const [m2, k4] = [roundUp(m, 2), roundUp(Math.max(k, 1), 4)];
  const tileRows = Math.min(roundUp(n, 4), Math.max(4, roundUp(Math.floor(TILE_FLOATS / k4), 4)));
  // Kernel memory: A [m2, k4], then the B tile [tileRows, k4], then raw sums [m2, tileRows].
  const tileAt = m2 * k4;
  const sumsAt = tileAt + tileRows * k4;
  const mem = pool.view(sumsAt + m2 * tileRows);
  copyA(a, transA, m, k, mem.subarray(0, tileAt), k4);
  const tile = mem.subarray(tileAt, sumsAt);
  for (let j0 = 0; j0 < n; j0 += tileRows) {
    const nb = Math.min(tileRows, n - j0);
    const nb4 = roundUp(nb, 4);
    if (k4 !== k || nb4 !== nb) tile.fill(0, 0, nb4 * k4); // zero padding; otherwise all overwritten
    packTile(b, transB, n, k, j0, nb, tile, k4);
    pool.run(0, tileAt * 4, sumsAt * 4, m2, k4, nb4, nb4);
    for (let i = 0; i < m; i++) {
      const from = sumsAt + i * nb4;
      const to = i * n + j0;
      if (accumulate) for (let jj = 0; jj < nb; jj++) out[to + jj] = out[to + jj]! + alpha * mem[from + jj]!;
      else if (alpha === 1) out.set(mem.subarray(from, from + nb), to);
      else for (let jj = 0; jj < nb; jj++) out[to + jj] = alpha * mem[from + jj]!;
    }
  }
}

/** dst[i·k4 + kk] = op(a)[i, kk], zero in the padding. */
function copyA(a: RangeReader, transA: boolean, m: number, k: number, dst: Float32Array, k4: number): void {
  if (k4 !== k) dst.fill(0);
  else dst.fill(0, m * k4); // the padding row when m is odd
  if (!transA) {
    if (k4 === k) a(0, m * k, dst, 0);
    else for (let i = 0; i < m; i++) a(i * k, k, dst, i * k4);
    return;
  }
  const src = new Float32Array(k * m); // a is [k, m]
  a(0, k * m, src, 0);
  for (let kk = 0; kk < k; kk++) for (let i = 0; i < m; i++) dst[i * k4 + kk] = src[kk * m + i]!;
}

/** tile[jj·k4 + kk] = op(b)[kk, j0 + jj] for jj < nb: rows of b [n, k] or columns of b [k, n]. */
function packTile(b: RangeReader, transB: boolean, n: number, k: number, j0: number, nb: number, tile: Float32Array, k4: number): void {
  if (transB) {
    if (k4 === k) b(j0 * k, nb * k, tile, 0);
    else for (let jj = 0; jj < nb; jj++) b((j0 + jj) * k, k, tile, jj * k4);
    return;
  }
  const row = new Float32Array(nb);
  for (let kk = 0; kk < k; kk++) {
    b(kk * n + j0, nb, row, 0);
    for (let jj = 0; jj < nb; jj++) tile[jj * k4 + kk] = row[jj]!;
  }
}
