import type { Graph, Var } from "../autograd/graph.ts";
import type { MatmulPrecision } from "../tensor/backend.ts";
import type { DType } from "../tensor/dtype.ts";
import type { Tensor } from "../tensor/tensor.ts";

/**
 * The one linear layer of the model: a frozen base weight, optionally with a LoRA pair on top
 * (PEFT semantics): y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ, with A [r, in] and B [out, r], and
 * scale = alpha/r, or alpha/√r with rsLoRA. Every projection of the decoder and the vision tower
 * is one of these, so attaching an adapter swaps nothing in the architecture.
 */

export interface LoraPair {
  /** [r, in] (PEFT's lora_A.weight) */
  readonly a: Tensor;
  /** [out, r] (PEFT's lora_B.weight) */
  readonly b: Tensor;
  readonly scale: number;
  readonly dropout: number;
}

/** What a layer needs from the forward pass it runs in. */
export interface LinearContext {
  readonly graph: Graph;
  /** The Var of a weight tensor in this graph (the same Var every time for the same tensor). */
  bind(t: Tensor): Var;
  /** Seed of this module's LoRA dropout mask for this forward, or null when dropout is off. */
  dropoutSeed(modulePath: string): number | null;
  /** A bf16 copy of t made once for this pass (every product of the pass reads the same copy). */
  narrowCopy(t: Tensor): Tensor;
}

export function loraScale(alpha: number, r: number, rslora: boolean): number {
  return rslora ? alpha / Math.sqrt(r) : alpha / r;
}

export class LoraLinear {
  lora: LoraPair | null = null;

  constructor(
    /** The module's path in the Hugging Face model (e.g. `model.language_model.layers.0.self_attn.q_proj`). */
    readonly path: string,
    /** [out, in], any float dtype (bf16 and fp8 stay as they are). */
    readonly weight: Tensor,
    /** How the base and the LoRA products run (Backend.matmul; Graph.loraLinear). */
    readonly precision: MatmulPrecision = "f32",
  ) {}

  get inFeatures(): number {
    return this.weight.shape[1]!;
  }

  get outFeatures(): number {
    return this.weight.shape[0]!;
  }

  /**
   * The dtype the layer's input can be stored in without changing its result: bf16 when every
   * product rounds the input to bf16 anyway (the fast tier), so producers (norms, SwiGLU, RoPE)
   * write it narrow once instead of each consumer casting it again.
   */
  get inputDtype(): DType {
    return this.precision === "bf16" ? "bf16" : "f32";
  }

  /** x [N, in] → [N, out] */
  forward(ctx: LinearContext, x: Var): Var {
    const g = ctx.graph;
    if (!this.lora) return g.linear(x, ctx.bind(this.weight), this.precision);
    const { a, b, scale, dropout } = this.lora;
    const seed = dropout > 0 ? ctx.dropoutSeed(this.path) : null;
    // bf16 products read A and B through copies cast once per pass, not once per product.
    const narrow = this.precision === "bf16" ? { a: ctx.narrowCopy(a), b: ctx.narrowCopy(b) } : undefined;
    return g.loraLinear(x, ctx.bind(this.weight), ctx.bind(a), ctx.bind(b), { scale, dropout, seed, narrow }, this.precision);
  }
}
