import type { ForwardContext } from "../../src/models/mistral3/context.ts";
import type { Mistral3Model } from "../../src/models/mistral3/model.ts";
import type { Backend } from "../../src/tensor/backend.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";

/** Every LoRA A and B of the model: what training binds as trainable. */
export function loraTensors(model: Mistral3Model): Set<Tensor> {
  return new Set([...model.linears.values()].flatMap((l) => (l.lora ? [l.lora.a, l.lora.b] : [])));
}

/** The raw bits of each tensor's gradient after a backward, freed and taken off its Var. */
export function takeGrads(backend: Backend, ctx: ForwardContext, tensors: Iterable<Tensor>): number[][] {
  return [...tensors].map((t) => {
    const v = ctx.varOf(t)!;
    const raw = Array.from(backend.readRaw(v.grad!));
    v.grad!.free();
    v.grad = null;
    return raw;
  });
}
