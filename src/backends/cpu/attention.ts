/**
 * Scaled dot-product attention with grouped-query heads, forward and backward.
 *
 * Dimension letters: B batch, T queries, S keys, Hq query heads, Hkv key/value heads (query head h
 * reads kv head ⌊h / (Hq/Hkv)⌋, as HF's repeat_kv), D head size.
 *
 * Queries are processed in blocks of up to BLOCK rows that share a key range, so the products
 * Q·Kᵀ, P·V (and in backward dO·Vᵀ, dS·K, dSᵀ·Q, Pᵀ·dO) run on the SIMD matmul kernel; only one
 * block's scores [BLOCK, S] exist at a time. Softmax statistics are computed in f64 per row.
 */
import type { AttentionDims, AttentionMask, MatmulPrecision } from "../../tensor/backend.ts";
import { roundToBf16InPlace } from "../../tensor/bf16.ts";
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { arrayReader, gemm } from "./matmul.ts";
import { attentionDims } from "../../tensor/checks.ts";
import { type CpuAllocator, f32Of, fromF32As, i32Of, valuesF32 } from "./storage.ts";

const BLOCK = 64;

/** An operand's values as the products see them: with precision bf16, rounded to bf16 (a copy). */
function operandF32(t: Tensor, op: string, precision: MatmulPrecision): Float32Array {
  if (precision === "f32" || t.dtype !== "f32") return valuesF32(t, op);
  const rounded = Float32Array.from(valuesF32(t, op));
  roundToBf16InPlace(rounded);
  return rounded;
}

function dimsOf(op: string, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask): AttentionDims {
  const shapes = [q.shape, k.shape, v.shape];
  const dims = attentionDims(op, q, k, v);
  const { b, t, s } = dims;
  if (mask.kind === "segments") {
    const total = mask.lengths.reduce((a, x) => a + x, 0);
    if (b !== 1 || t !== s || total !== s) {
      throw new TensorError(op, `segment mask needs B = 1 and T = S = Σ lengths (${total})`, { shapes });
    }
  } else if (mask.keyValid && (mask.keyValid.size !== b * s || mask.keyValid.dtype !== "i32")) {
    throw new TensorError(op, "keyValid must be i32 [B, S]", { shapes: [...shapes, mask.keyValid.shape], dtypes: [mask.keyValid.dtype] });
  }
  return dims;
}

/** A run of consecutive queries [t0, t1) whose visible keys all lie in [s0, s1). */
interface QueryBlock {
  t0: number;
  t1: number;
  s0: number;
  s1: number;
}

/** The query blocks of one batch row, and the per-(query, key) visibility inside a block. */
function queryBlocks(mask: AttentionMask, dims: AttentionDims): QueryBlock[] {
  const blocks: QueryBlock[] = [];
  if (mask.kind === "causal") {
    for (let t0 = 0; t0 < dims.t; t0 += BLOCK) {
      const t1 = Math.min(dims.t, t0 + BLOCK);
      blocks.push({ t0, t1, s0: 0, s1: Math.max(0, Math.min(dims.s, mask.queryOffset + t1)) });
    }
    return blocks;
  }
  let start = 0;
  for (const length of mask.lengths) {
    for (let t0 = start; t0 < start + length; t0 += BLOCK) blocks.push({ t0, t1: Math.min(start + length, t0 + BLOCK), s0: start, s1: start + length });
    start += length;
  }
  return blocks;
}

/** visible(batch, query, key) for keys inside the query's block range. */
function visibility(mask: AttentionMask, s: number): (batch: number, query: number, key: number) => boolean {
  if (mask.kind === "segments") return () => true;
  const valid = mask.keyValid ? i32Of(mask.keyValid, "attention") : null;
  const offset = mask.queryOffset;
  return (batch, query, key) => key <= offset + query && (valid === null || valid[batch * s + key] !== 0);
}

/** Rows [t0, t1) of head h of x [B, T, H, D] (batch b) as a contiguous [t1-t0, D] array. */
function gatherHead(x: Float32Array, b: number, t: number, h: number, heads: number, d: number, t0: number, t1: number): Float32Array {
  const out = new Float32Array((t1 - t0) * d);
  for (let r = t0; r < t1; r++) out.set(x.subarray(((b * t + r) * heads + h) * d, ((b * t + r) * heads + h + 1) * d), (r - t0) * d);
  return out;
}

function scatterHead(x: Float32Array, rows: Float32Array, b: number, t: number, h: number, heads: number, d: number, t0: number): void {
  const count = rows.length / d;
  for (let r = 0; r < count; r++) x.set(rows.subarray(r * d, (r + 1) * d), ((b * t + t0 + r) * heads + h) * d);
}

/** scores [rows, keys] = scale · Q·Kᵀ over the block's key range. */
function blockScores(qBlock: Float32Array, keys: Float32Array, rows: number, keyCount: number, d: number, scale: number): Float32Array {
  const scores = new Float32Array(rows * keyCount);
  gemm(arrayReader(qBlock), arrayReader(keys), rows, d, keyCount, { transA: false, transB: true, alpha: scale, accumulate: false }, scores);
  return scores;
}

export function attention(
  alloc: CpuAllocator,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  mask: AttentionMask,
  scale: number,
  precision: MatmulPrecision = "f32",
): { out: Tensor; lse: Tensor } {
  const dims = dimsOf("attention", q, k, v, mask);
  const { b: nb, t: nt, s: ns, hq, hkv, d } = dims;
  const group = hq / hkv;
  const qv = operandF32(q, "attention", precision);
  const kv = operandF32(k, "attention", precision);
  const vv = operandF32(v, "attention", precision);
  const visible = visibility(mask, ns);
  const blocks = queryBlocks(mask, dims);
  const out = new Float32Array(q.size);
  const lse = new Float32Array(nb * hq * nt);
  for (let b = 0; b < nb; b++) {
    for (let kh = 0; kh < hkv; kh++) {
      const keys = gatherHead(kv, b, ns, kh, hkv, d, 0, ns);
      const values = gatherHead(vv, b, ns, kh, hkv, d, 0, ns);
      for (let h = kh * group; h < (kh + 1) * group; h++) {
        for (const { t0, t1, s0, s1 } of blocks) {
          const rows = t1 - t0;
          const width = s1 - s0;
          const scores = blockScores(gatherHead(qv, b, nt, h, hq, d, t0, t1), keys.subarray(s0 * d, s1 * d), rows, width, d, scale);
          // Each score row becomes its softmax row P (zero where hidden).
          for (let r = 0; r < rows; r++) {
            const row = scores.subarray(r * width, (r + 1) * width);
            let max = -Infinity;
            let nan = false;
            for (let j = 0; j < width; j++) {
              if (!visible(b, t0 + r, s0 + j)) row[j] = -Infinity;
              else if (row[j]! > max) max = row[j]!;
              else if (Number.isNaN(row[j]!)) nan = true;
            }
            const lseIndex = (b * hq + h) * nt + t0 + r;
            if (nan && max === -Infinity) {
              // Every visible score is NaN (NaN never wins `>`): the row must stay NaN, as in torch,
              // not pass for a fully masked row and become zeros that hide the fault downstream.
              row.fill(Number.NaN);
              lse[lseIndex] = Number.NaN;
              continue;
            }
            if (max === -Infinity) {
              row.fill(0);
              lse[lseIndex] = -Infinity; // no visible key: the output row stays zero
              continue;
            }
            let sum = 0;
            for (let j = 0; j < width; j++) {
              const e = Math.exp(row[j]! - max);
              row[j] = e;
              sum += e;
            }
            const inverse = 1 / sum;
            for (let j = 0; j < width; j++) row[j] = row[j]! * inverse;
            lse[lseIndex] = max + Math.log(sum);
          }
          const outBlock = new Float32Array(rows * d);
          gemm(arrayReader(scores), arrayReader(values.subarray(s0 * d, s1 * d)), rows, width, d, { transA: false, transB: false, alpha: 1, accumulate: false }, outBlock);
          scatterHead(out, outBlock, b, nt, h, hq, d, t0);
        }
      }
    }
  }
  // The fast tier writes out in bf16, as SDPA does for bf16 operands (its one consumer, the output
  // projection, rounds it to bf16 anyway).
  return { out: fromF32As(alloc, out, q.shape, precision === "bf16" ? "bf16" : "f32", "attention"), lse: alloc.fromF32(lse, [nb, hq, nt]) };
}

/**
 * With P = exp(scale·Q·Kᵀ − lse) recovered from the saved lse and δ = Σ_i dO·O per row:
 * dP = dO·Vᵀ, dS = scale·P·(dP − δ), dQ = dS·K, dK += dSᵀ·Q, dV += Pᵀ·dO.
 */
export function attentionBackward(
  alloc: CpuAllocator,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dout: Tensor,
  mask: AttentionMask,
  scale: number,
  precision: MatmulPrecision = "f32",
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const dims = dimsOf("attentionBackward", q, k, v, mask);
  const { b: nb, t: nt, s: ns, hq, hkv, d } = dims;
  if (out.size !== q.size || dout.size !== q.size || lse.size !== nb * hq * nt) {
    throw new TensorError("attentionBackward", "out/dout must match q and lse be [B, Hq, T]", { shapes: [q.shape, out.shape, dout.shape, lse.shape] });
  }
  const group = hq / hkv;
  const qv = operandF32(q, "attentionBackward", precision);
  const kv = operandF32(k, "attentionBackward", precision);
  const vv = operandF32(v, "attentionBackward", precision);
  const ov = valuesF32(out, "attentionBackward");
  const dov = operandF32(dout, "attentionBackward", precision);
  const lv = f32Of(lse, "attentionBackward");
  const visible = visibility(mask, ns);
  const blocks = queryBlocks(mask, dims);
  const dq = new Float32Array(q.size);
  const dk = new Float32Array(k.size);
  const dv = new Float32Array(v.size);
  const plain = { transA: false, transB: false, alpha: 1, accumulate: false };
  for (let b = 0; b < nb; b++) {
    for (let kh = 0; kh < hkv; kh++) {
      const keys = gatherHead(kv, b, ns, kh, hkv, d, 0, ns);
      const values = gatherHead(vv, b, ns, kh, hkv, d, 0, ns);
      const dKeys = new Float32Array(ns * d);
      const dValues = new Float32Array(ns * d);
      for (let h = kh * group; h < (kh + 1) * group; h++) {
        for (const { t0, t1, s0, s1 } of blocks) {
          const rows = t1 - t0;
          const width = s1 - s0;
          const qBlock = gatherHead(qv, b, nt, h, hq, d, t0, t1);
          const doBlock = gatherHead(dov, b, nt, h, hq, d, t0, t1);
          const oBlock = gatherHead(ov, b, nt, h, hq, d, t0, t1);
          const keyRange = keys.subarray(s0 * d, s1 * d);
          const valueRange = values.subarray(s0 * d, s1 * d);
          const p = blockScores(qBlock, keyRange, rows, width, d, scale);
          const dp = new Float32Array(rows * width);
          gemm(arrayReader(doBlock), arrayReader(valueRange), rows, d, width, { ...plain, transB: true }, dp);
          for (let r = 0; r < rows; r++) {
            const rowLse = lv[(b * hq + h) * nt + t0 + r]!;
            let delta = 0;
            for (let i = 0; i < d; i++) delta += doBlock[r * d + i]! * oBlock[r * d + i]!;
            for (let j = 0; j < width; j++) {
              const at = r * width + j;
              const shown = rowLse !== -Infinity && visible(b, t0 + r, s0 + j);
              const pj = shown ? Math.exp(p[at]! - rowLse) : 0;
              p[at] = pj;
              dp[at] = scale * pj * (dp[at]! - delta); // dp now holds dS
            }
          }
          const dqBlock = new Float32Array(rows * d);
          gemm(arrayReader(dp), arrayReader(keyRange), rows, width, d, plain, dqBlock);
          scatterHead(dq, dqBlock, b, nt, h, hq, d, t0);
          gemm(arrayReader(dp), arrayReader(qBlock), width, rows, d, { ...plain, transA: true, accumulate: true }, dKeys.subarray(s0 * d, s1 * d));
          gemm(arrayReader(p), arrayReader(doBlock), width, rows, d, { ...plain, transA: true, accumulate: true }, dValues.subarray(s0 * d, s1 * d));
        }
      }
      scatterHead(dk, dKeys, b, ns, kh, hkv, d, 0);
      scatterHead(dv, dValues, b, ns, kh, hkv, d, 0);
    }
  }
  return { dq: alloc.fromF32(dq, q.shape), dk: alloc.fromF32(dk, k.shape), dv: alloc.fromF32(dv, v.shape) };
}
