import type { Var } from "../../autograd/graph.ts";
import type { LoraLinear } from "../../lora/lora-linear.ts";
import type { MatmulPrecision } from "../../tensor/backend.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { VisionConfig } from "./config.ts";
import type { ForwardContext } from "./context.ts";
import { pixtralRopeTables } from "./rope.ts";
import type { ShapeConstants } from "./shape-constants.ts";

/**
 * The Pixtral vision tower (transformers' modeling_pixtral.py, ministral3.md §2.1): a patch conv
 * (kernel = stride = patch) as im2col + linear, ln_pre, then pre-norm layers with 2-D axial RoPE and
 * block-diagonal attention (each image attends only to itself), no final norm.
 *
 * Dimension letters: P patches of all images, Dv hidden, H heads, hd head_dim, I intermediate.
 */

/** Pixtral RMSNorm eps is hard-coded in transformers. */
const PIXTRAL_RMS_EPS = 1e-5;

export interface VisionLayer {
  attentionNorm: Tensor; // (Dv)
  q: LoraLinear; // (Dv, Dv)
  k: LoraLinear; // (Dv, Dv)
  v: LoraLinear; // (Dv, Dv)
  o: LoraLinear; // (Dv, Dv)
  ffnNorm: Tensor; // (Dv)
  gate: LoraLinear; // (I, Dv)
  up: LoraLinear; // (I, Dv)
  down: LoraLinear; // (Dv, I)
}

export interface VisionTower {
  /** The conv weight (Dv, C, p, p) viewed as (Dv, C·p·p), matching Backend.patchify's row order. */
  patchConv: Tensor;
  /** How the patch convolution multiplies (the model's matmul precision, as its linear layers). */
  patchConvPrecision: MatmulPrecision;
  lnPre: Tensor; // (Dv)
  layers: VisionLayer[];
}

/** One image, already cropped to its own size (multiples of the patch size). */
export interface VisionImage {
  pixels: Tensor; // (C, H, W)
  rows: number; // H / p
  cols: number; // W / p
}

/**
 * All images through the tower up to `layersToRun` layers (vision_feature_layer picks it) → (P, Dv),
 * images concatenated in order, each grid row-major.
 */
export function runVisionTower(
  ctx: ForwardContext,
  cfg: VisionConfig,
  tower: VisionTower,
  images: readonly VisionImage[],
  layersToRun: number,
  constants: ShapeConstants,
  opts: { checkpointLayers?: boolean; capture?: (name: string, v: Var) => void } = {},
): Var {
  const g = ctx.graph;
  const backend = g.backend;
  const patchRows = images.map((img) => ctx.track(backend.patchify(img.pixels, cfg.patch_size)));
  const patches = patchRows.length === 1 ? patchRows[0]! : ctx.track(backend.concatRows(patchRows));
  const embeds = g.linear(g.constant(patches), ctx.bind(tower.patchConv), tower.patchConvPrecision);
  opts.capture?.("vision.patch_embeds", embeds);
  let x = g.rmsNorm(embeds, ctx.bind(tower.lnPre), PIXTRAL_RMS_EPS);
  opts.capture?.("vision.ln_pre", x);

  const grids = images.map((img) => ({ rows: img.rows, cols: img.cols }));
  const P = grids.reduce((n, gr) => n + gr.rows * gr.cols, 0);
  const half = cfg.head_dim / 2;
  const gridKey = grids.map((gr) => `${gr.rows}x${gr.cols}`).join(",");
  const [cos, sin] = constants.pair(backend, `vision-rope:${gridKey}:${cfg.head_dim}:${cfg.rope_theta}`, () => {
    const rope = pixtralRopeTables(grids, cfg.head_dim, cfg.rope_theta);
    return { first: rope.cos, second: rope.sin, shape: [P, half] };
  });
  const lengths = grids.map((gr) => gr.rows * gr.cols);

  tower.layers.slice(0, layersToRun).forEach((layer, i) => {
    const body = (inputs: readonly Var[]) => visionLayer(ctx, cfg, layer, inputs[0]!, P, cos, sin, lengths);
    x = opts.checkpointLayers ? g.checkpoint([x], body) : g.scope(() => body([x]));
    opts.capture?.(`vision.layers.${i}`, x);
  });
  return x;
}

function visionLayer(
  ctx: ForwardContext,
  cfg: VisionConfig,
  layer: VisionLayer,
  x: Var,
  P: number,
  cos: Tensor,
  sin: Tensor,
  lengths: readonly number[],
): Var {
  const g = ctx.graph;
  const H = cfg.num_attention_heads;
  const hd = cfg.head_dim;
  // Norm, RoPE and SwiGLU outputs are stored as narrow as their consumers' products read them.
  const h = g.rmsNorm(x, ctx.bind(layer.attentionNorm), PIXTRAL_RMS_EPS, layer.q.inputDtype);
  const q = g.rope(g.reshape(layer.q.forward(ctx, h), [P, H, hd]), cos, sin, layer.q.inputDtype);
  const k = g.rope(g.reshape(layer.k.forward(ctx, h), [P, H, hd]), cos, sin, layer.q.inputDtype);
  const v = g.reshape(layer.v.forward(ctx, h), [1, P, H, hd]);
  const attended = g.attention(
    g.reshape(q, [1, P, H, hd]),
    g.reshape(k, [1, P, H, hd]),
    v,
    { kind: "segments", lengths },
    1 / Math.sqrt(hd),
    layer.q.precision, // as the layer's projections multiply (bf16: tensor cores)
  );
  const afterAttention = g.add(x, layer.o.forward(ctx, g.reshape(attended, [P, H * hd])));
  const h2 = g.rmsNorm(afterAttention, ctx.bind(layer.ffnNorm), PIXTRAL_RMS_EPS, layer.gate.inputDtype);
  const gate = layer.gate.forward(ctx, h2);
  const up = layer.up.forward(ctx, h2);
  const activated = cfg.hidden_act === "silu" ? g.swiglu(gate, up, layer.down.inputDtype) : g.mul(g.gelu(gate), up);
  return g.add(afterAttention, layer.down.forward(ctx, activated));
}
