/**
 * Scaled dot-product attention with grouped-query heads, forward and backward, one query row at a
 * time: the scores of a single (batch, head, query) row are the only thing materialised.
 *
 * Dimension letters: B batch, T queries, S keys, Hq query heads, Hkv key/value heads (query head h
 * reads kv head ⌊h / (Hq/Hkv)⌋, as HF's repeat_kv), D head size.
 */
import type { AttentionMask } from "../../tensor/backend.ts";
import { TensorError } from "../../tensor/errors.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { type CpuAllocator, f32Of, i32Of, valuesF32 } from "./storage.ts";

interface Dims {
  b: number;
  t: number;
  s: number;
  hq: number;
  hkv: number;
  d: number;
}

function dimsOf(op: string, q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask): Dims {
  const shapes = [q.shape, k.shape, v.shape];
  if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4) {
    throw new TensorError(op, "expected q [B, T, Hq, D] and k, v [B, S, Hkv, D]", { shapes });
  }
  const [b, t, hq, d] = q.shape as [number, number, number, number];
  const [kb, s, hkv, kd] = k.shape as [number, number, number, number];
  if (kb !== b || kd !== d || !v.shape.every((x, i) => x === k.shape[i]) || hkv === 0 || hq % hkv !== 0) {
    throw new TensorError(op, "k and v must be [B, S, Hkv, D] with Hq a multiple of Hkv", { shapes });
  }
  if (mask.kind === "segments") {
    const total = mask.lengths.reduce((a, x) => a + x, 0);
    if (b !== 1 || t !== s || total !== s) {
      throw new TensorError(op, `segment mask needs B = 1 and T = S = Σ lengths (${total})`, { shapes });
    }
  } else if (mask.keyValid && (mask.keyValid.size !== b * s || mask.keyValid.dtype !== "i32")) {
    throw new TensorError(op, "keyValid must be i32 [B, S]", { shapes: [...shapes, mask.keyValid.shape], dtypes: [mask.keyValid.dtype] });
  }
  return { b, t, s, hq, hkv, d };
}

/**
 * For each (batch, query) the visible keys are [from, to) minus padded keys (keyValid = 0).
 * Returns a function filling `range` for one query.
 */
function visibility(mask: AttentionMask, dims: Dims): { range: (batch: number, query: number) => [number, number]; valid: Int32Array | null } {
  if (mask.kind === "causal") {
    const valid = mask.keyValid ? i32Of(mask.keyValid, "attention") : null;
    return { range: (_batch, query) => [0, Math.min(dims.s, mask.queryOffset + query + 1)], valid };
  }
  const segmentOf = new Int32Array(dims.s);
  const starts: number[] = [];
  let start = 0;
  mask.lengths.forEach((length, i) => {
    starts.push(start);
    segmentOf.fill(i, start, start + length);
    start += length;
  });
  return {
    range: (_batch, query) => {
      const seg = segmentOf[query]!;
      return [starts[seg]!, starts[seg]! + mask.lengths[seg]!];
    },
    valid: null,
  };
}

export function attention(
  alloc: CpuAllocator,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  mask: AttentionMask,
  scale: number,
): { out: Tensor; lse: Tensor } {
  const dims = dimsOf("attention", q, k, v, mask);
  const { b: nb, t: nt, s: ns, hq, hkv, d } = dims;
  const group = hq / hkv;
  const qv = valuesF32(q, "attention");
  const kv = valuesF32(k, "attention");
  const vv = valuesF32(v, "attention");
  const { range, valid } = visibility(mask, dims);
  const out = new Float32Array(q.size);
  const lse = new Float32Array(nb * hq * nt);
  const scores = new Float64Array(ns);
  const acc = new Float64Array(d);
  for (let b = 0; b < nb; b++) {
    for (let h = 0; h < hq; h++) {
      const kh = Math.floor(h / group);
      for (let t = 0; t < nt; t++) {
        const qo = ((b * nt + t) * hq + h) * d;
        const [from, to] = range(b, t);
        let max = -Infinity;
        for (let s = from; s < to; s++) {
          if (valid && valid[b * ns + s] === 0) continue;
          const ko = ((b * ns + s) * hkv + kh) * d;
          let dot = 0;
          for (let i = 0; i < d; i++) dot += qv[qo + i]! * kv[ko + i]!;
          scores[s] = dot * scale;
          if (scores[s]! > max) max = scores[s]!;
        }
        const lseIndex = (b * hq + h) * nt + t;
        if (max === -Infinity) {
          lse[lseIndex] = -Infinity; // no visible key: output stays zero
          continue;
        }
        let sum = 0;
        acc.fill(0);
        for (let s = from; s < to; s++) {
          if (valid && valid[b * ns + s] === 0) continue;
          const p = Math.exp(scores[s]! - max);
          sum += p;
          const vo = ((b * ns + s) * hkv + kh) * d;
          for (let i = 0; i < d; i++) acc[i]! += p * vv[vo + i]!;
        }
        for (let i = 0; i < d; i++) out[qo + i] = acc[i]! / sum;
        lse[lseIndex] = max + Math.log(sum);
      }
    }
  }
  return { out: alloc.fromF32(out, q.shape), lse: alloc.fromF32(lse, [nb, hq, nt]) };
}

/**
 * With P = softmax(scores) recovered from the saved lse (P = exp(score − lse)) and
 * δ = Σ_i dout·out per row: dV += Pᵀ·dout, dS = P·(dout·Vᵀ − δ), dQ = scale·dS·K, dK += scale·dSᵀ·Q.
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
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const dims = dimsOf("attentionBackward", q, k, v, mask);
  const { b: nb, t: nt, s: ns, hq, hkv, d } = dims;
  if (out.size !== q.size || dout.size !== q.size || lse.size !== nb * hq * nt) {
    throw new TensorError("attentionBackward", "out/dout must match q and lse be [B, Hq, T]", { shapes: [q.shape, out.shape, dout.shape, lse.shape] });
  }
  const group = hq / hkv;
  const qv = valuesF32(q, "attentionBackward");
  const kv = valuesF32(k, "attentionBackward");
  const vv = valuesF32(v, "attentionBackward");
  const ov = valuesF32(out, "attentionBackward");
  const dov = valuesF32(dout, "attentionBackward");
  const lv = f32Of(lse, "attentionBackward");
  const { range, valid } = visibility(mask, dims);
  const dq = new Float32Array(q.size);
  const dk = new Float64Array(k.size);
  const dv = new Float64Array(v.size);
  const dqRow = new Float64Array(d);
  for (let b = 0; b < nb; b++) {
    for (let h = 0; h < hq; h++) {
      const kh = Math.floor(h / group);
      for (let t = 0; t < nt; t++) {
        const rowLse = lv[(b * hq + h) * nt + t]!;
        if (rowLse === -Infinity) continue;
        const qo = ((b * nt + t) * hq + h) * d;
        let delta = 0;
        for (let i = 0; i < d; i++) delta += dov[qo + i]! * ov[qo + i]!;
        dqRow.fill(0);
        const [from, to] = range(b, t);
        for (let s = from; s < to; s++) {
          if (valid && valid[b * ns + s] === 0) continue;
          const ko = ((b * ns + s) * hkv + kh) * d;
          let dot = 0;
          let dp = 0;
          for (let i = 0; i < d; i++) {
            dot += qv[qo + i]! * kv[ko + i]!;
            dp += dov[qo + i]! * vv[ko + i]!;
          }
          const p = Math.exp(dot * scale - rowLse);
          const ds = p * (dp - delta) * scale;
          for (let i = 0; i < d; i++) {
            dv[ko + i]! += p * dov[qo + i]!;
            dqRow[i]! += ds * kv[ko + i]!;
            dk[ko + i]! += ds * qv[qo + i]!;
          }
        }
        for (let i = 0; i < d; i++) dq[qo + i] = dqRow[i]!;
      }
    }
  }
  return {
    dq: alloc.fromF32(dq, q.shape),
    dk: alloc.fromF32(Float32Array.from(dk), k.shape),
    dv: alloc.fromF32(Float32Array.from(dv), v.shape),
  };
}
