// Narrow gradients (createGraph's narrowGradients): where a bf16 value's gradient only ever meets
// a product that rounds it to bf16, the op producing it writes bf16 directly. The numbers must be
// those of the f32 gradient rounded by its consumer, bit for bit, with fewer casts and copies.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { loadAdapter } from "../../src/lora/adapter.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import type { Backend } from "../../src/tensor/backend.ts";
import { Rng } from "../../src/util/rng.ts";
import { fixtureBatches, FIXTURES } from "../train/fixture-batches.ts";
import { loraTensors, takeGrads } from "./lora-grads.ts";

/** The CPU backend with a count of every call by name. */
function countingBackend(): { backend: Backend; calls: Map<string, number> } {
  const inner = createCpuBackend();
  const calls = new Map<string, number>();
  const backend = new Proxy(inner, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.set(String(key), (calls.get(String(key)) ?? 0) + 1);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { backend, calls };
}

for (const checkpointLayers of [false, true]) {
  test(`a bf16-tier micro-batch of the tiny model: the LoRA gradients bit for bit, 4+ casts and copies a layer fewer (checkpointing ${checkpointLayers ? "on" : "off"})`, async () => {
    const { backend, calls } = countingBackend();
    const model = await loadMistral3(join(FIXTURES, "models", "tiny"), backend, { matmulPrecision: "bf16" });
    try {
      await loadAdapter(join(FIXTURES, "train", "tiny", "initial_adapter"), model.linears, backend);
      const batch = await (await fixtureBatches("labels")).get(0, 0);
      const trainable = loraTensors(model);
      const run = (narrowGradients: boolean) => {
        calls.clear();
        const graph = createGraph(backend, { recording: true, narrowGradients });
        const ctx = new ForwardContext(graph, { trainable });
        try {
          const { loss } = forwardMistral3(ctx, model, batch.inputs, { checkpointLayers, scoredPositionsOnly: true });
          graph.backward(loss!);
          const grads = takeGrads(backend, ctx, trainable);
          return { grads, castsAndCopies: (calls.get("cast") ?? 0) + (calls.get("copy") ?? 0) };
        } finally {
          graph.dispose();
          ctx.release();
        }
      };
      const reference = run(false);
      const narrow = run(true);
      assert.deepEqual(narrow.grads, reference.grads);
      const layers = model.config.text_config.num_hidden_layers + model.config.vision_config.num_hidden_layers;
      assert.ok(
        reference.castsAndCopies - narrow.castsAndCopies >= 4 * layers,
        `casts + copies: ${narrow.castsAndCopies} narrow vs ${reference.castsAndCopies} (${layers} layers)`,
      );
    } finally {
      freeMistral3(model);
    }
  });
}

test("a bf16 value used twice keeps an f32 gradient, summed before any rounding", () => {
  const backend = createCpuBackend();
  const rng = new Rng(7);
  const up = (shape: number[], dtype: "f32" | "bf16") => backend.upload(Float32Array.from({ length: shape[0]! * shape[1]! }, () => rng.next() - 0.5), shape, dtype);
  const [x, w, a, b] = [up([5, 8], "f32"), up([6, 8], "bf16"), up([2, 8], "f32"), up([6, 2], "f32")];
  const gradOfA = (narrowGradients: boolean) => {
    const g = createGraph(backend, { recording: true, narrowGradients });
    const av = g.param(a, true);
    const y = g.loraLinear(g.constant(x), g.constant(w), av, g.param(b, true), { scale: 2, dropout: 0, seed: null }, "bf16");
    assert.equal(y.value.dtype, "bf16");
    // y feeds both sides of the add: its gradient is the f32 sum of two, rounded once.
    const loss = g.crossEntropy(g.add(y, y), backend.upload(Int32Array.from([0, 1, 2, 3, 4]), [5], "i32"), -100);
    g.backward(loss);
    const grad = Array.from(backend.read(av.grad!));
    g.dispose();
    return grad;
  };
  assert.deepEqual(gradOfA(true), gradOfA(false));
});
