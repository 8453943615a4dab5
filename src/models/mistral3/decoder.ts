import type { Var } from "../../autograd/graph.ts";
import type { LoraLinear } from "../../lora/lora-linear.ts";
import type { AttentionMask } from "../../tensor/backend.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { TextConfig } from "./config.ts";
import type { ForwardContext } from "./context.ts";

/**
 * The Ministral3 / Mistral decoder (transformers' modeling_ministral3.py, ministral3.md §2.4):
 * pre-norm layers of GQA attention with YaRN RoPE and the llama-4 query scale, then a SwiGLU MLP;
 * a final RMSNorm; the head is `lm_head` or the tied embedding matrix.
 *
 * Dimension letters: B batch, T tokens per row, N = B·T, D hidden, Hq/Hkv heads, hd head_dim,
 * S key/value slots (= T without a cache), V vocabulary.
 */

export interface DecoderLayer {
  inputNorm: Tensor; // (D)
  q: LoraLinear; // (Hq·hd, D)
  k: LoraLinear; // (Hkv·hd, D)
  v: LoraLinear; // (Hkv·hd, D)
  o: LoraLinear; // (D, Hq·hd)
  postNorm: Tensor; // (D)
  gate: LoraLinear; // (I, D)
  up: LoraLinear; // (I, D)
  down: LoraLinear; // (D, I)
}

export interface TextModel {
  embedTokens: Tensor; // (V, D)
  layers: DecoderLayer[];
  norm: Tensor; // (D)
  /** Its weight is embedTokens itself when the checkpoint ties the head. */
  lmHead: LoraLinear; // (V, D)
}

/** One layer's keys and values for all slots: rows b·S + s. */
export interface LayerKV {
  k: Tensor; // (B·S, Hkv·hd)
  v: Tensor; // (B·S, Hkv·hd)
}

/**
 * Zeroed key/value caches of `rows` slots for every layer. bf16 where the layers' products run in
 * bf16: attention then rounds keys and values to bf16 anyway, so storing them rounded gives the
 * same numbers at half the bytes, and no cast of the whole cache at every decode step.
 */
export function newLayerKVs(cfg: TextConfig, text: TextModel, rows: number): LayerKV[] {
  const backend = text.embedTokens.backend;
  const width = cfg.num_key_value_heads * cfg.head_dim;
  return text.layers.map((layer) => {
    const dtype = layer.k.precision === "bf16" ? "bf16" : "f32";
    return { k: backend.zeros([rows, width], dtype), v: backend.zeros([rows, width], dtype) };
  });
}

/** Everything a decoder pass needs besides the hidden states. */
export interface DecoderPass {
  batch: number;
  seqLen: number;
  /** Rotation tables per row of the flattened batch; the query table carries the llama-4 scale. */
  queryCos: Tensor; // (N, hd/2)
  querySin: Tensor; // (N, hd/2)
  keyCos: Tensor; // (N, hd/2)
  keySin: Tensor; // (N, hd/2)
  mask: AttentionMask;
  /** With a KV cache: the caches, their slot count S, and the slot row (b·S + s) of each new token. */
  cache?: { layers: readonly LayerKV[]; slots: number; rowOfToken: Tensor /* i32 (N) */ };
  /** Gradient checkpointing per layer (training). */
  checkpointLayers?: boolean;
  /** Sees the output of each layer (fixture comparisons); called with the live Var. */
  capture?: (name: string, v: Var) => void;
}

/** x (N, D) → the final-norm hidden states (N, D). */
export function runDecoder(ctx: ForwardContext, cfg: TextConfig, text: TextModel, x: Var, pass: DecoderPass): Var {
  const g = ctx.graph;
  let h = x;
  text.layers.forEach((layer, i) => {
    const cache = pass.cache?.layers[i];
    const body = (inputs: readonly Var[]) => decoderLayer(ctx, cfg, layer, inputs[0]!, pass, cache);
    h = pass.checkpointLayers ? g.checkpoint([h], body) : g.scope(() => body([h]));
    pass.capture?.(`text.layers.${i}`, h);
  });
  const out = g.rmsNorm(h, ctx.bind(text.norm), cfg.rms_norm_eps);
  pass.capture?.("text.norm", out);
  return out;
}

function decoderLayer(ctx: ForwardContext, cfg: TextConfig, layer: DecoderLayer, x: Var, pass: DecoderPass, cache?: LayerKV): Var {
  const g = ctx.graph;
  const { batch: B, seqLen: T } = pass;
  const N = B * T;
  const hd = cfg.head_dim;
  const Hq = cfg.num_attention_heads;
  const Hkv = cfg.num_key_value_heads;

  // Norm and RoPE outputs are stored as narrow as their consumers' products read them.
  const h = g.rmsNorm(x, ctx.bind(layer.inputNorm), cfg.rms_norm_eps, layer.q.inputDtype);
  const q = g.rope(g.reshape(layer.q.forward(ctx, h), [N, Hq, hd]), pass.queryCos, pass.querySin, layer.q.inputDtype);
  const k = g.rope(g.reshape(layer.k.forward(ctx, h), [N, Hkv, hd]), pass.keyCos, pass.keySin, layer.q.inputDtype);
  const v = layer.v.forward(ctx, h);

  let keys: Var;
  let values: Var;
  if (cache && pass.cache) {
    // Inference only: the new keys/values go into their slots, attention reads all S slots and
    // the causal mask (with queryOffset and keyValid) hides the ones not written yet.
    const backend = g.backend;
    const slotRows = pass.cache.rowOfToken;
    // A bf16 cache takes the new rows rounded (an f32 v from a plain linear; k is RoPE's bf16).
    const write = (cached: Tensor, rows: Tensor) => {
      const src = cached.dtype === "bf16" && rows.dtype !== "bf16" ? backend.cast(rows, "bf16") : rows;
      backend.scatterRowsInPlace(cached, slotRows, src.reshape([N, Hkv * hd]));
      if (src !== rows) src.free();
    };
    write(cache.k, k.value);
    write(cache.v, v.value);
    const S = pass.cache.slots;
    keys = g.constant(cache.k.reshape([B, S, Hkv, hd]));
    values = g.constant(cache.v.reshape([B, S, Hkv, hd]));
  } else {
    keys = g.reshape(k, [B, T, Hkv, hd]);
    values = g.reshape(v, [B, T, Hkv, hd]);
  }
  // Attention multiplies at the precision of the layer's projections (bf16: tensor cores).
  const attended = g.attention(g.reshape(q, [B, T, Hq, hd]), keys, values, pass.mask, 1 / Math.sqrt(hd), layer.q.precision);
  const afterAttention = g.add(x, layer.o.forward(ctx, g.reshape(attended, [N, Hq * hd])));

  const h2 = g.rmsNorm(afterAttention, ctx.bind(layer.postNorm), cfg.rms_norm_eps, layer.gate.inputDtype);
  const mlp = layer.down.forward(ctx, g.swiglu(layer.gate.forward(ctx, h2), layer.up.forward(ctx, h2), layer.down.inputDtype));
  return g.add(afterAttention, mlp);
}
