import { createGraph } from "../autograd/tape.ts";
import type { TensorToWrite } from "../io/safetensors.ts";
import { adapterKey } from "../lora/adapter.ts";
import { ForwardContext } from "../models/mistral3/context.ts";
import { forwardMistral3, type Mistral3Inputs, type Mistral3Model } from "../models/mistral3/model.ts";
import type { Backend } from "../tensor/backend.ts";
import { InputError, SplintError } from "../util/errors.ts";

export interface LoraGradients {
  /** (B·T·V) f32, as forwardMistral3 returns them. */
  logits: Float32Array;
  /** transformers' mean token loss. */
  loss: number;
  /** d loss / d every LoRA tensor (f32), keyed as in adapter_model.safetensors, A then B per module. */
  grads: TensorToWrite[];
}

/**
 * One forward and backward with dropout off: the loss and its gradients with respect to every LoRA
 * tensor attached to the model, under PEFT's key names (`base_model.model.<module>.lora_A.weight`),
 * so they compare one to one with peft's `param.grad` (what `splint forward --grads` writes).
 */
export function loraGradients(backend: Backend, model: Mistral3Model, inputs: Mistral3Inputs, opts: { checkpointLayers?: boolean } = {}): LoraGradients {
  if (!inputs.labels) throw new InputError(inputs.source ?? "inputs", `has no "labels", which a loss gradient needs`);
  const pairs = [...model.linears].filter(([, l]) => l.lora);
  if (pairs.length === 0) throw new SplintError("no LoRA adapter is attached, so there are no LoRA gradients to compute", "pass --adapter DIR");
  const trainable = new Set(pairs.flatMap(([, l]) => [l.lora!.a, l.lora!.b]));
  const graph = createGraph(backend, { recording: true });
  const ctx = new ForwardContext(graph, { trainable });
  try {
    const out = forwardMistral3(ctx, model, inputs, { checkpointLayers: opts.checkpointLayers });
    const logits = Float32Array.from(backend.read(out.logits.value) as Float32Array);
    const loss = (backend.read(out.loss!.value) as Float32Array)[0]!;
    graph.backward(out.loss!);
    const grads: TensorToWrite[] = [];
    for (const [path, l] of pairs) {
      for (const [which, t] of [["A", l.lora!.a], ["B", l.lora!.b]] as const) {
        const v = ctx.varOf(t);
        // A pair the inputs never reach (the vision tower without images) has a zero gradient.
        const data = v?.grad ? Float32Array.from(backend.read(v.grad) as Float32Array) : new Float32Array(t.size);
        v?.grad?.free();
        if (v) v.grad = null;
        grads.push({ name: adapterKey(path, which), dtype: "F32", shape: t.shape, data });
      }
    }
    return { logits, loss, grads };
  } finally {
    graph.dispose();
    ctx.release();
  }
}
