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

for (const precision of ["bf16", "f32"] as const) {
  test(`a tiny-model micro-batch (${precision} products): the same LoRA gradients with norm and SwiGLU outputs dropped and remade, less memory after the forward`, async () => {
    const backend = createCpuBackend();
    const model = await loadMistral3(join(FIXTURES, "models", "tiny"), backend, { matmulPrecision: precision });
    try {
      await loadAdapter(join(FIXTURES, "train", "tiny", "initial_adapter"), model.linears, backend);
      const batch = await (await fixtureBatches("labels")).get(0, 0);
      const trainable = new Set([...model.linears.values()].flatMap((l) => (l.lora ? [l.lora.a, l.lora.b] : [])));
      const run = (evictElementwise: boolean) => {
        const before = backend.memory().live;
        const graph = createGraph(backend, { recording: true, evictElementwise });
        const ctx = new ForwardContext(graph, { trainable });
        const { loss } = forwardMistral3(ctx, model, batch.inputs, { checkpointLayers: false, scoredPositionsOnly: true });
        const afterForward = backend.memory().live - before;
        graph.backward(loss!);
        const grads = [...trainable].map((t) => {
          const v = ctx.varOf(t)!;
          const raw = Array.from(backend.readRaw(v.grad!));
          v.grad!.free();
          v.grad = null;
          return raw;
        });
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
