/**
 * Hugging Face tensor names → llama.cpp's, the q/k row order llama.cpp's rope wants, and which
 * ggml type each tensor is written in.
 *
 * Names follow gguf-py's tensor_mapping.py for MODEL_ARCH.MISTRAL3 (text) and MODEL_ARCH.MMPROJ
 * with the "pixtral-hf" / "mistral small 3.1 - hf" entries (vision tower and projector), which is
 * what llama.cpp's src/models/mistral3.cpp and tools/mtmd/clip.cpp (PROJECTOR_TYPE_PIXTRAL) load.
 *
 * Rows of q_proj and k_proj: transformers' checkpoints are in the rotate-half layout (within a
 * head, row i and row i + d/2 form a rotary pair), llama.cpp's mistral3 uses LLAMA_ROPE_TYPE_NORM
 * (pairs are adjacent rows 2i, 2i+1), so convert_hf_to_gguf.py permutes them back; so does this.
 */
import type { Mistral3Config } from "../../models/mistral3/config.ts";
import { PROJECTOR_PREFIX, TEXT_PREFIX, VISION_PREFIX, type WeightPlan } from "../../models/mistral3/weights.ts";
import type { GgmlTypeName } from "./format.ts";

export const EXPORT_QUANTS = ["bf16", "f16", "q8_0", "q4_k_m"] as const;
export type ExportQuant = (typeof EXPORT_QUANTS)[number];

export interface MappedTensor {
  /** GGUF name. */
  readonly name: string;
  /** Checkpoint key the values come from. */
  readonly key: string;
  /** Canonical (transformers v5) name of the source weight, as the adapter knows it. */
  readonly canonical: string;
  /** Row-major shape of what is written. */
  readonly shape: readonly number[];
  readonly type: GgmlTypeName;
  /** q/k: undo the rotate-half row order for this many heads. */
  readonly permuteHeads?: number;
  /** Write only this row of the source (the [IMG_BREAK] embedding in the mmproj). */
  readonly row?: number;
  /** F8_E4M3 weights: the key of their per-tensor `weight_scale_inv`. */
  readonly scaleKey?: string;
}

const TEXT_LAYER: Readonly<Record<string, string>> = {
  "input_layernorm.weight": "attn_norm.weight",
  "self_attn.q_proj.weight": "attn_q.weight",
  "self_attn.k_proj.weight": "attn_k.weight",
  "self_attn.v_proj.weight": "attn_v.weight",
  "self_attn.o_proj.weight": "attn_output.weight",
  "post_attention_layernorm.weight": "ffn_norm.weight",
  "mlp.gate_proj.weight": "ffn_gate.weight",
  "mlp.up_proj.weight": "ffn_up.weight",
  "mlp.down_proj.weight": "ffn_down.weight",
};

const VISION_LAYER: Readonly<Record<string, string>> = {
  "attention_norm.weight": "ln1.weight",
  "attention.q_proj.weight": "attn_q.weight",
  "attention.k_proj.weight": "attn_k.weight",
  "attention.v_proj.weight": "attn_v.weight",
  "attention.o_proj.weight": "attn_out.weight",
  "ffn_norm.weight": "ln2.weight",
  "feed_forward.gate_proj.weight": "ffn_gate.weight",
  "feed_forward.up_proj.weight": "ffn_up.weight",
  "feed_forward.down_proj.weight": "ffn_down.weight",
};

const VISION_FIXED: Readonly<Record<string, string>> = {
  [`${VISION_PREFIX}.patch_conv.weight`]: "v.patch_embd.weight",
  [`${VISION_PREFIX}.ln_pre.weight`]: "v.pre_ln.weight",
  [`${PROJECTOR_PREFIX}.norm.weight`]: "mm.input_norm.weight",
  [`${PROJECTOR_PREFIX}.patch_merger.merging_layer.weight`]: "mm.patch_merger.weight",
  [`${PROJECTOR_PREFIX}.linear_1.weight`]: "mm.1.weight",
  [`${PROJECTOR_PREFIX}.linear_2.weight`]: "mm.2.weight",
};

/** The text GGUF name of a canonical weight name, or undefined for vision/projector weights. */
export function textGgufName(canonical: string): string | undefined {
  if (canonical === `${TEXT_PREFIX}.embed_tokens.weight`) return "token_embd.weight";
  if (canonical === `${TEXT_PREFIX}.norm.weight`) return "output_norm.weight";
  if (canonical === "lm_head.weight") return "output.weight";
  const m = /^model\.language_model\.layers\.(\d+)\.(.+)$/.exec(canonical);
  if (m) {
    const suffix = TEXT_LAYER[m[2]!];
    return suffix === undefined ? undefined : `blk.${m[1]}.${suffix}`;
  }
  return undefined;
}

/** The mmproj GGUF name of a canonical vision/projector weight name. */
export function visionGgufName(canonical: string): string | undefined {
  const fixed = VISION_FIXED[canonical];
  if (fixed !== undefined) return fixed;
  const m = /^model\.vision_tower\.transformer\.layers\.(\d+)\.(.+)$/.exec(canonical);
  if (m) {
    const suffix = VISION_LAYER[m[2]!];
    return suffix === undefined ? undefined : `v.blk.${m[1]}.${suffix}`;
  }
  return undefined;
}

/** llama-quant.cpp's use_more_bits: the first and last eighth of the layers, and every third between. */
export function useMoreBits(layer: number, layers: number): boolean {
  return layer < Math.floor(layers / 8) || layer >= Math.floor((7 * layers) / 8) || (layer - Math.floor(layers / 8)) % 3 === 2;
}

/**
 * A weight's ggml type in the text GGUF. Norms (1-D) stay F32 as llama.cpp requires. q4_k_m is
 * llama.cpp's Q4_K_M mix for a dense model: Q4_K, with Q6_K for the head (and a tied embedding)
 * and for attn_v / ffn_down of the layers useMoreBits picks. Rows that do not divide into a
 * type's blocks fall back: k-quants to Q8_0 (llama.cpp would pick Q5_0/Q8_0; splint does not
 * implement Q5_0, so the fallback is larger but never less precise), Q8_0 to F16. The fallback
 * only matters for toy models; every Ministral 3 matrix has rows of multiples of 256.
 */
export function textTensorType(name: string, shape: readonly number[], quant: ExportQuant, layers: number, tied: boolean): GgmlTypeName {
  if (shape.length === 1) return "F32";
  const ne0 = shape[shape.length - 1]!;
  const fallback = (t: GgmlTypeName): GgmlTypeName => {
    if ((t === "Q4_K" || t === "Q6_K") && ne0 % 256 !== 0) t = "Q8_0";
    if (t === "Q8_0" && ne0 % 32 !== 0) t = "F16";
    return t;
  };
  switch (quant) {
    case "bf16":
      return "BF16";
    case "f16":
      return "F16";
    case "q8_0":
      return fallback("Q8_0");
    case "q4_k_m": {
      if (name === "output.weight" || (tied && name === "token_embd.weight")) return fallback("Q6_K");
      const m = /^blk\.(\d+)\.(attn_v|ffn_down)\.weight$/.exec(name);
      if (m && useMoreBits(Number(m[1]), layers)) return fallback("Q6_K");
      return fallback("Q4_K");
    }
  }
}

/**
 * mmproj types: the vision tower is small (0.4B) and sensitive, so q4_k_m keeps it F16 (as
 * llama.cpp's published mmproj files do); q8_0 quantises its matrices. The patch embedding and
 * the patch merger stay F32 (F16 in an f16 export), as convert_hf_to_gguf.py forces them.
 */
export function visionTensorType(name: string, shape: readonly number[], quant: ExportQuant): GgmlTypeName {
  if (shape.length === 1) return "F32";
  if (name === "v.patch_embd.weight" || name === "mm.patch_merger.weight") return quant === "f16" ? "F16" : "F32";
  switch (quant) {
    case "bf16":
      return "BF16";
    case "f16":
    case "q4_k_m":
      return "F16";
    case "q8_0":
      return shape[shape.length - 1]! % 32 === 0 ? "Q8_0" : "F16";
  }
}

function isQkProjection(canonical: string): boolean {
  return /\.(q_proj|k_proj)\.weight$/.test(canonical);
}

/** The text model's tensors in writing order: embedding, layers, final norm, head. */
export function textTensors(config: Mistral3Config, plan: WeightPlan, quant: ExportQuant): MappedTensor[] {
  const t = config.text_config;
  const out: MappedTensor[] = [];
  for (const planned of plan.tensors) {
    const name = textGgufName(planned.spec.name);
    if (name === undefined) continue;
    const permuteHeads = isQkProjection(planned.spec.name)
      ? planned.spec.name.includes(".q_proj.")
        ? t.num_attention_heads
        : t.num_key_value_heads
      : undefined;
    out.push({
      name,
      key: planned.key,
      canonical: planned.spec.name,
      shape: planned.spec.shape,
      type: textTensorType(name, planned.spec.shape, quant, t.num_hidden_layers, plan.tiedHead),
      ...(permuteHeads !== undefined ? { permuteHeads } : {}),
      ...(planned.scaleKey !== undefined ? { scaleKey: planned.scaleKey } : {}),
    });
  }
  const rank = (n: string): number => (n === "token_embd.weight" ? -1 : n === "output_norm.weight" ? 1e9 : n === "output.weight" ? 1e9 + 1 : Number(n.split(".")[1]));
  return out.sort((a, b) => rank(a.name) - rank(b.name));
}

/** The mmproj's tensors: vision tower, projector, and the [IMG_BREAK] row of the embedding. */
export function visionTensors(config: Mistral3Config, plan: WeightPlan, quant: ExportQuant, imgBreakId: number): MappedTensor[] {
  const heads = config.vision_config.num_attention_heads;
  const out: MappedTensor[] = [];
  for (const planned of plan.tensors) {
    const name = visionGgufName(planned.spec.name);
    if (name === undefined) continue;
    out.push({
      name,
      key: planned.key,
      canonical: planned.spec.name,
      shape: planned.spec.shape,
      type: visionTensorType(name, planned.spec.shape, quant),
      // LlavaVisionModel.modify_tensors permutes the HF Pixtral q/k with n_head for both.
      ...(isQkProjection(planned.spec.name) ? { permuteHeads: heads } : {}),
      ...(planned.scaleKey !== undefined ? { scaleKey: planned.scaleKey } : {}),
    });
  }
  const embed = plan.tensors.find((p) => p.spec.name === `${TEXT_PREFIX}.embed_tokens.weight`)!;
  // clip.cpp inserts this embedding after each row of image patches (Pixtral's [IMG_BREAK]).
  out.push({ name: "v.token_embd.img_break", key: embed.key, canonical: embed.spec.name, shape: [config.text_config.hidden_size], type: "F32", row: imgBreakId });
  return out;
}

/**
 * Undoes the rotate-half row order: within each head of d rows, source row j·d/2 + i goes to
 * row 2i + j (convert_hf_to_gguf.py's LlamaModel.permute).
 */
export function permuteRotaryRows(values: Float32Array, rows: number, cols: number, heads: number): Float32Array {
  const d = rows / heads;
  if (!Number.isInteger(d) || d % 2 !== 0) throw new Error(`cannot split ${rows} rows into ${heads} heads of even size`);
  const half = d / 2;
  const out = new Float32Array(values.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const src = (h * d + j * half + i) * cols;
        out.set(values.subarray(src, src + cols), (h * d + 2 * i + j) * cols);
      }
    }
  }
  return out;
}
