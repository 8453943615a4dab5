/** Attention mask cases shared by the forward and backward tests. */
import type { AttentionDims, AttentionMask, Backend } from "../../src/tensor/backend.ts";

export interface AttentionCase {
  name: string;
  dims: AttentionDims;
  mask: AttentionMask;
  visible: (b: number, t: number, s: number) => boolean;
}

/** Causal (GQA), causal with offset and left padding, and segments. keyValid lives on `b`. */
export function attentionCases(b: Backend): AttentionCase[] {
  const keyValid = Int32Array.of(0, 0, 1, 1, 1, 1, 1, /* batch 1: */ 1, 1, 1, 1, 1, 1, 1);
  return [
    {
      name: "causal, prefill, GQA 4:2",
      dims: { b: 1, t: 7, s: 7, hq: 4, hkv: 2, d: 5 },
      mask: { kind: "causal", queryOffset: 0 },
      visible: (_b, t, s) => s <= t,
    },
    {
      name: "causal with query offset (KV cache) and left padding",
      dims: { b: 2, t: 3, s: 7, hq: 3, hkv: 1, d: 4 },
      mask: { kind: "causal", queryOffset: 4, keyValid: b.upload(keyValid, [2, 7], "i32") },
      visible: (bb, t, s) => s <= 4 + t && keyValid[bb * 7 + s] === 1,
    },
    {
      name: "block-diagonal segments (Pixtral, several images)",
      dims: { b: 1, t: 9, s: 9, hq: 2, hkv: 2, d: 6 },
      mask: { kind: "segments", lengths: [4, 1, 4] },
      visible: (_b, t, s) => {
        const seg = (i: number): number => (i < 4 ? 0 : i < 5 ? 1 : 2);
        return seg(t) === seg(s);
      },
    },
  ];
}
