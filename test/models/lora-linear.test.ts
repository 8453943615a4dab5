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
