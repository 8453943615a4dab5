/**
 * out = alpha · op(a) · op(b) (+ accumulate). The backward pass needs no kernel of its own: for
 * C = A·B, dA = dC·Bᵀ and dB = Aᵀ·dC are matmuls with the transpose flags flipped (see the matmul
 * op in ../../autograd/tape.ts).
 *
 * Kernel: A is copied once into the kernels' WebAssembly memory (rows zero-padded), then B is
 * copied in tile by tile, so bf16/fp8 weights are widened one tile at a time, never as a whole
 * matrix. The SIMD kernels (wasm-matmul.ts) accumulate in f32, like BLAS; alpha and the accumulate
 * input are applied in f64 when results are copied out. Large tiles are split by rows across
 * threads (kernel-pool.ts).
 */
import type { MatmulPrecision } from "../../tensor/backend.ts";
import { f32ArrayToBf16, roundToBf16InPlace } from "../../tensor/bf16.ts";
import { isNarrowFloat, type DType } from "../../tensor/dtype.ts";
import { matmulDims } from "../../tensor/checks.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { type CpuAllocator, f32Of, fromF32As, readRangeF32, storageOf, valuesF32 } from "./storage.ts";
import { createKernelPool, type KernelPool } from "./kernel-pool.ts";

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  accumulate?: Tensor;
  outDtype?: DType;
  precision?: MatmulPrecision;
}

/** Floats per packed B tile: 256 KiB, about an L2 share. */
const TILE_FLOATS = 1 << 16;
/** Floats of A copied into kernel memory at a time (4 MiB; at least 64 rows). */
const A_BLOCK_FLOATS = 1 << 20;

let pool: KernelPool | null = null;

const roundUp = (x: number, multiple: number): number => Math.ceil(x / multiple) * multiple;

/** A row-major matrix the kernel reads ranges of, widening to f32 (a tensor or a plain array). */
export type RangeReader = (start: number, count: number, out: Float32Array, outOffset: number) => void;

export const tensorReader =
  (t: Tensor): RangeReader =>
  (start, count, out, outOffset) =>
    readRangeF32(t, start, count, out, outOffset);

/** A reader of t's values rounded to bf16: the f32 side of an autocast product. */
const bf16RoundedReader =
  (t: Tensor): RangeReader =>
  (start, count, out, outOffset) => {
    readRangeF32(t, start, count, out, outOffset);
    roundToBf16InPlace(out, outOffset, count);
  };

/** Readers for both operands; with precision bf16 an f32 operand beside a narrow one is rounded. */
function operandReaders(a: Tensor, b: Tensor, precision: MatmulPrecision): [RangeReader, RangeReader] {
  const [narrowA, narrowB] = [isNarrowFloat(a.dtype), isNarrowFloat(b.dtype)];
  if (precision === "bf16" && narrowA !== narrowB) {
    return narrowA ? [tensorReader(a), bf16RoundedReader(b)] : [bf16RoundedReader(a), tensorReader(b)];
  }
  return [tensorReader(a), tensorReader(b)];
}

export const arrayReader =
  (x: Float32Array): RangeReader =>
  (start, count, out, outOffset) =>
    out.set(x.subarray(start, start + count), outOffset);

export function matmul(alloc: CpuAllocator, a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const { transA = false, transB = false, alpha = 1, accumulate, outDtype = "f32", precision = "f32" } = opts;
  const { m, k, n } = matmulDims(a, b, opts);
  // A bf16 accumulator is widened, summed into in f32 and rounded once back (as cuBLASLt's
  // epilogue does with beta = 1 on a bf16 C).
  const narrowSum = accumulate?.dtype === "bf16";
  const out = accumulate ? (narrowSum ? valuesF32(accumulate, "matmul") : f32Of(accumulate, "matmul")) : new Float32Array(m * n);
  const [readA, readB] = operandReaders(a, b, precision);
  gemm(readA, readB, m, k, n, { transA, transB, alpha, accumulate: accumulate !== undefined }, out);
  if (accumulate) {
    if (narrowSum) f32ArrayToBf16(out, storageOf(accumulate) as Uint16Array);
    return accumulate;
  }
  const shape = transA ? [m, n] : [...a.shape.slice(0, -1), n];
  return fromF32As(alloc, out, shape, outDtype, "matmul");
}

/**
 * out [m, n] (+)= alpha · op(a) · op(b) on raw readers: a is [m, k] (or [k, m] with transA), b is
 * [k, n] (or [n, k] with transB). Other kernels (attention) call this directly.
 *
 * B [n, k] (transB, e.g. a linear layer's weight) is packed as rows of k for the "tn" kernel; B
 * [k, n] is packed as is, column block by column block, for the "nn" kernel. Either way the
 * packing copies (and widens) contiguous runs, never transposes.
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
  if (k === 0) {
    if (!accumulate) out.fill(0, 0, m * n);
    return;
  }
  pool ??= createKernelPool();
  const kind = transB ? "tn" : "nn";
  // tn: rows in pairs, columns in fours, k zero-padded to a multiple of 4; nn: rows in fours, columns in eights.
  const [rowStep, colStep] = transB ? [2, 4] : [4, 8];
  const k4 = roundUp(k, 4);
  const tileCols = Math.min(roundUp(n, colStep), Math.max(colStep, Math.floor(TILE_FLOATS / k4 / colStep) * colStep));
  // A is processed in row blocks so that the kernel memory stays bounded whatever m is.
  const blockRows = Math.min(roundUp(m, rowStep), Math.max(64, Math.floor(A_BLOCK_FLOATS / k4 / 4) * 4));
  // Kernel memory: an A block [blockRows, k4], then the B tile (tileCols × k4), then sums [blockRows, tileCols].
  const tileAt = blockRows * k4;
  const sumsAt = tileAt + tileCols * k4;
  const mem = pool.view(sumsAt + blockRows * tileCols);
  const tile = mem.subarray(tileAt, sumsAt);
  for (let i0 = 0; i0 < m; i0 += blockRows) {
    const mb = Math.min(blockRows, m - i0);
    const rows = roundUp(mb, rowStep);
    copyA(a, transA, m, k, i0, mb, mem.subarray(0, rows * k4), k4);
    for (let j0 = 0; j0 < n; j0 += tileCols) {
      const nb = Math.min(tileCols, n - j0);
      const cols = roundUp(nb, colStep);
      if (transB) {
        if (k4 !== k || cols !== nb) tile.fill(0, 0, cols * k4); // zero padding; otherwise all overwritten
        if (k4 === k) b(j0 * k, nb * k, tile, 0);
        else for (let jj = 0; jj < nb; jj++) b((j0 + jj) * k, k, tile, jj * k4);
        pool.run(kind, 0, tileAt * 4, sumsAt * 4, rows, k4, cols, cols, k4);
      } else {
        if (cols !== nb) tile.fill(0, 0, cols * k);
        for (let kk = 0; kk < k; kk++) b(kk * n + j0, nb, tile, kk * cols);
        pool.run(kind, 0, tileAt * 4, sumsAt * 4, rows, k, cols, cols, k4);
      }
      for (let i = 0; i < mb; i++) {
        const from = sumsAt + i * cols;
        const to = (i0 + i) * n + j0;
        if (accumulate) for (let jj = 0; jj < nb; jj++) out[to + jj] = out[to + jj]! + alpha * mem[from + jj]!;
        else if (alpha === 1) out.set(mem.subarray(from, from + nb), to);
        else for (let jj = 0; jj < nb; jj++) out[to + jj] = alpha * mem[from + jj]!;
      }
    }
  }
}

/** dst[i·k4 + kk] = op(a)[i0 + i, kk] for i < count, zero in the padding (dst covers the padded rows). */
function copyA(a: RangeReader, transA: boolean, m: number, k: number, i0: number, count: number, dst: Float32Array, k4: number): void {
  if (k4 !== k) dst.fill(0);
  else dst.fill(0, count * k4); // padding rows
  if (!transA) {
    if (k4 === k) a(i0 * k, count * k, dst, 0);
    else for (let i = 0; i < count; i++) a((i0 + i) * k, k, dst, i * k4);
    return;
  }
  // a is [k, m]: row kk holds op(a)[·, kk].
  const segment = new Float32Array(count);
  for (let kk = 0; kk < k; kk++) {
    a(kk * m + i0, count, segment, 0);
    for (let i = 0; i < count; i++) dst[i * k4 + kk] = segment[i]!;
  }
}
