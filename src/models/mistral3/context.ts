import type { Graph, Var } from "../../autograd/graph.ts";
import type { LinearContext } from "../../lora/lora-linear.ts";
import type { DType } from "../../tensor/dtype.ts";
import type { Tensor } from "../../tensor/tensor.ts";

/**
 * The state of one forward pass beyond the graph: which weights train (bound as gradient-collecting
 * params, everything else as constants), the dropout seed of this step, and the input-sized tensors
 * the pass uploads (ids, RoPE tables, pixels), which the graph does not own and release() frees.
 */
export class ForwardContext implements LinearContext {
  private readonly vars = new Map<Tensor, Var>();
  private readonly uploads: Tensor[] = [];
  private readonly narrowCopies = new Map<Tensor, Tensor>();

  constructor(
    readonly graph: Graph,
    private readonly options: {
      /** Tensors that get gradients (LoRA A and B while training). */
      trainable?: ReadonlySet<Tensor>;
      /** Seed of this step's LoRA dropout masks; absent = dropout off (inference, parity runs). */
      dropoutSeed?: number;
      /** bf16 copies of LoRA masters kept across passes (LoraBf16Copies); others are cast per pass. */
      bf16Copies?: { get(t: Tensor): Tensor | undefined } | null;
    } = {},
  ) {}

  bind(t: Tensor): Var {
    let v = this.vars.get(t);
    if (!v) {
      v = this.options.trainable?.has(t) ? this.graph.param(t, true) : this.graph.constant(t);
      this.vars.set(t, v);
    }
    return v;
  }

  /** The Var a tensor was bound to in this pass (to read .grad after backward). */
  varOf(t: Tensor): Var | undefined {
    return this.vars.get(t);
  }

  dropoutSeed(modulePath: string): number | null {
    const seed = this.options.dropoutSeed;
    return seed === undefined ? null : mixSeed(seed, modulePath);
  }

  narrowCopy(t: Tensor): Tensor {
    if (t.dtype === "bf16") return t;
    let copy = this.options.bf16Copies?.get(t) ?? this.narrowCopies.get(t);
    if (!copy) {
      copy = this.track(this.graph.backend.cast(t, "bf16"));
      this.narrowCopies.set(t, copy);
    }
    return copy;
  }

  /** Uploads a host array for this pass only. */
  upload(data: Float32Array | Int32Array, shape: readonly number[], dtype: DType): Tensor {
    const t = this.graph.backend.upload(data, shape, dtype);
    this.uploads.push(t);
    return t;
  }

  /** Keeps a backend-made tensor until release(). */
  track(t: Tensor): Tensor {
    this.uploads.push(t);
    return t;
  }

  /** A constant Var over a host array that lives for this pass. */
  constant(data: Float32Array | Int32Array, shape: readonly number[], dtype: DType): Var {
    return this.graph.constant(this.upload(data, shape, dtype));
  }

  /** Frees what this pass uploaded (call after graph.dispose() or once the outputs are read). */
  release(): void {
    for (const t of this.uploads) t.free();
    this.uploads.length = 0;
    this.vars.clear();
    this.narrowCopies.clear();
  }
}

/** A per-module seed: FNV-1a of the path mixed with the step seed, so each module gets its own mask. */
function mixSeed(seed: number, path: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < path.length; i++) h = Math.imul(h ^ path.charCodeAt(i), 0x01000193);
  h ^= seed >>> 16;
  return Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
}
