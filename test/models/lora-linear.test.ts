import assert from "node:assert/strict";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { LoraLinear, loraScale } from "../../src/lora/lora-linear.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";

test("LoRA linear computes x·Wᵀ + scale·(x·Aᵀ)·Bᵀ and trains only A and B", () => {
  const backend = createCpuBackend();
  const [N, IN, OUT, R] = [3, 5, 4, 2];
  const val = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k + 0.3));
  const x = val(N * IN, 0.7);
  const w = val(OUT * IN, 1.3);
  const a = val(R * IN, 2.1);
  const b = val(OUT * R, 0.9);
  const linear = new LoraLinear("m.q_proj", backend.upload(w, [OUT, IN], "bf16"));
  linear.lora = { a: backend.upload(a, [R, IN], "f32"), b: backend.upload(b, [OUT, R], "f32"), scale: loraScale(8, R, false), dropout: 0.1 };
  const graph = createGraph(backend, { recording: true });
  const ctx = new ForwardContext(graph, { trainable: new Set([linear.lora.a, linear.lora.b]) });
  const y = backend.read(linear.forward(ctx, ctx.constant(x, [N, IN], "f32")).value) as Float32Array;
  const wBf16 = backend.read(linear.weight) as Float32Array;
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < OUT; o++) {
      let base = 0;
      for (let i = 0; i < IN; i++) base += x[n * IN + i]! * wBf16[o * IN + i]!;
      let update = 0;
      for (let r = 0; r < R; r++) {
        let ax = 0;
        for (let i = 0; i < IN; i++) ax += x[n * IN + i]! * a[r * IN + i]!;
        update += ax * b[o * R + r]!;
      }
      assert.ok(Math.abs(y[n * OUT + o]! - (base + 4 * update)) < 1e-4, `y[${n},${o}]`);
    }
  }
  assert.equal(ctx.varOf(linear.lora.a)?.requiresGrad, true);
  assert.equal(ctx.varOf(linear.weight)?.requiresGrad, false);
  graph.dispose();
  ctx.release();
});

test("LoRA dropout masks are seeded per step and module, so recomputation under checkpointing sees the same mask", async () => {
  const { tinyModel } = await import("./tiny-model.ts");
  const { initAdapter, parseAdapterConfig } = await import("../../src/lora/adapter.ts");
  const { forwardMistral3 } = await import("../../src/models/mistral3/model.ts");
  const { Rng } = await import("../../src/util/rng.ts");
  const model = tinyModel(undefined, 4);
  const backend = model.text.embedTokens.backend;
  const settings = parseAdapterConfig({ r: 2, lora_alpha: 4, lora_dropout: 0.5, target_modules: ["q_proj", "down_proj"] }, "cfg");
  initAdapter(settings, model.linears, backend, new Rng(9));
  for (const l of model.linears.values()) {
    if (l.lora) backend.addInPlace(l.lora.b, backend.upload(Float32Array.from({ length: l.lora.b.size }, (_, i) => Math.cos(i)), l.lora.b.shape, "f32"));
  }
  const trainable = new Set([...model.linears.values()].flatMap((l) => (l.lora ? [l.lora.a, l.lora.b] : [])));
  const inputs = { batch: 1, seqLen: 6, inputIds: Int32Array.from([1, 5, 9, 20, 33, 7]), labels: Int32Array.from([1, 5, 9, 20, 33, 7]) };
  const gradsWith = (checkpointLayers: boolean, dropoutSeed: number) => {
    const graph = createGraph(backend, { recording: true });
    const ctx = new ForwardContext(graph, { trainable, dropoutSeed });
    const { loss } = forwardMistral3(ctx, model, inputs, { checkpointLayers });
    const lossValue = (backend.read(loss!.value) as Float32Array)[0]!;
    graph.backward(loss!);
    // Text only: the vision tower's pairs are never reached.
    const reached = [...trainable].filter((t) => ctx.varOf(t));
    assert.equal(reached.length, 8);
    const out = reached.map((t) => Array.from(backend.read(ctx.varOf(t)!.grad!)));
    for (const t of reached) ctx.varOf(t)!.grad!.free();
    graph.dispose();
    ctx.release();
    return { loss: lossValue, out };
  };
  const plain = gradsWith(false, 17);
  const checkpointed = gradsWith(true, 17);
  assert.equal(checkpointed.loss, plain.loss);
  assert.deepEqual(checkpointed.out, plain.out);
  assert.notEqual(gradsWith(false, 18).loss, plain.loss, "another step seed draws other masks");
});
