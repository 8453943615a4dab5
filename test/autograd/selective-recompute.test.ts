// Selective recomputation (createGraph's evictElementwise): a recorded layer scope drops its norms'
// and SwiGLU's outputs and the backward remakes them where it reads them. The gradients must be
// those of keeping everything, bit for bit, with less memory held after the forward and nothing
// left behind after dispose.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { loadAdapter } from "../../src/lora/adapter.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import { fixtureBatches, FIXTURES } from "../train/fixture-batches.ts";
import { loraTensors, takeGrads } from "./lora-grads.ts";

for (const precision of ["bf16", "f32"] as const) {
  test(`a tiny-model micro-batch (${precision} products): the same LoRA gradients with norm and SwiGLU outputs dropped and remade, less memory after the forward`, async () => {
    const backend = createCpuBackend();
    const model = await loadMistral3(join(FIXTURES, "models", "tiny"), backend, { matmulPrecision: precision });
    try {
      await loadAdapter(join(FIXTURES, "train", "tiny", "initial_adapter"), model.linears, backend);
      const batch = await (await fixtureBatches("labels")).get(0, 0);
      const trainable = loraTensors(model);
      const run = (evictElementwise: boolean) => {
        const before = backend.memory().live;
        const graph = createGraph(backend, { recording: true, evictElementwise });
        const ctx = new ForwardContext(graph, { trainable });
        const { loss } = forwardMistral3(ctx, model, batch.inputs, { checkpointLayers: false, scoredPositionsOnly: true });
        const afterForward = backend.memory().live - before;
        graph.backward(loss!);
        const grads = takeGrads(backend, ctx, trainable);
        graph.dispose();
        ctx.release();
        return { grads, afterForward, left: backend.memory().live - before };
      };
      run(false); // shape constants the model keeps are made once, before anything is compared
      const kept = run(false);
      const selective = run(true);
      assert.deepEqual(selective.grads, kept.grads);
      assert.ok(selective.afterForward < kept.afterForward, `after the forward: ${selective.afterForward} bytes selective vs ${kept.afterForward}`);
      assert.equal(selective.left, 0);
    } finally {
      freeMistral3(model);
    }
  });
}

test("a remade value is dropped after its last reader, also when a consumer gets no gradient or does not read it", () => {
  const backend = createCpuBackend();
  const up = (shape: number[], seed: number) => backend.upload(Float32Array.from({ length: shape[0]! * (shape[1] ?? 1) }, (_, i) => Math.sin(i * 0.7 + seed)), shape, "f32");
  const [x0, w, w1, w2, y0] = [up([4, 8], 1), up([8], 2), up([6, 8], 3), up([6, 8], 4), up([4, 8], 5)];
  const labels = backend.upload(Int32Array.from([0, 1, 2, 3]), [4], "i32");
  const liveAfterBackward = (evictElementwise: boolean) => {
    const before = backend.memory().live;
    const g = createGraph(backend, { recording: true, evictElementwise });
    const x = g.param(x0, true);
    const out = g.scope(() => {
      const h = g.rmsNorm(g.scale(x, 2), g.constant(w), 1e-5);
      g.linear(h, g.param(w2, true)); // no gradient ever reaches this product
      g.add(h, g.constant(y0)); // nor this sum, whose backward would not read h anyway
      return g.linear(h, g.param(w1, true));
    });
    g.backward(g.crossEntropy(out, labels, -100));
    const live = backend.memory().live - before - x.grad!.size * 4;
    const grad = Array.from(backend.read(x.grad!));
    g.dispose();
    return { live, grad };
  };
  const kept = liveAfterBackward(false);
  const selective = liveAfterBackward(true);
  assert.deepEqual(selective.grad, kept.grad);
  assert.ok(selective.live < kept.live, `live after backward: ${selective.live} selective vs ${kept.live} kept`);
});
