import type { Backend } from "../tensor/backend.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { LoraLinear } from "./lora-linear.ts";

/**
 * The bf16 copies of the f32 LoRA masters (A and B of every pair whose layer runs bf16 products)
 * that the fast tier's products read, kept between passes and refreshed in one launch
 * (Backend.narrowMany) when the masters change. Without them every forward pass casts each A and B
 * again (ForwardContext.narrowCopy): two launches per adapted module per pass, a decode step
 * included. Whoever writes the masters (the optimizer step) calls refresh() before the next pass.
 */
export class LoraBf16Copies {
  private readonly copies = new Map<Tensor, Tensor>();

  private constructor(
    private readonly backend: Backend,
    masters: readonly Tensor[],
  ) {
    // Uninitialised: refresh() writes every element before anything reads them.
    for (const m of masters) this.copies.set(m, backend.empty(m.shape, "bf16"));
    this.refresh();
  }

  /** Copies of every f32 A and B of the model's bf16-precision LoRA layers; null when there are none. */
  static forModel(backend: Backend, linears: Iterable<LoraLinear>): LoraBf16Copies | null {
    const masters = new Set<Tensor>();
    for (const linear of linears) {
      if (!linear.lora || linear.precision !== "bf16") continue;
      for (const t of [linear.lora.a, linear.lora.b]) if (t.dtype === "f32") masters.add(t);
    }
    return masters.size > 0 ? new LoraBf16Copies(backend, [...masters]) : null;
  }

  /** The bf16 copy of master t as of the last refresh, or undefined when t has none here. */
  get(t: Tensor): Tensor | undefined {
    return this.copies.get(t);
  }

  /** Re-rounds every copy from its master (after the masters were written). */
  refresh(): void {
    this.backend.narrowMany([...this.copies.keys()], [...this.copies.values()]);
  }

  free(): void {
    for (const copy of this.copies.values()) copy.free();
    this.copies.clear();
  }
}
