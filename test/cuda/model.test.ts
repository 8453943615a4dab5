/**
 * The whole tiny Mistral3 (test/models/tiny-model.ts: Pixtral tower, projector, decoder) on the
 * CUDA backend against the CPU backend, with the same random weights: forward logits and loss,
 * gradients of every weight through a checkpointed backward pass, and three AdamW steps.
 * Skipped when the library or a GPU is absent.
 */
import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, freeMistral3, type Mistral3Inputs, type Mistral3Model } from "../../src/models/mistral3/model.ts";
import type { Backend } from "../../src/tensor/backend.ts";
import { tinyModel } from "../models/tiny-model.ts";
import { cudaUnderTest } from "./cuda-under-test.ts";

const { cuda, skip } = cudaUnderTest();

/** Two rows: one with two images of different sizes (block-diagonal vision attention), one padded. */
function inputs(): Mistral3Inputs {
  const pixelValues = new Float32Array(2 * 3 * 56 * 28);
  for (let i = 0; i < pixelValues.length; i++) pixelValues[i] = Math.sin(i * 0.37);
  const images = { pixelValues, shape: [2, 3, 56, 28] as const, imageSizes: Int32Array.from([56, 28, 28, 28]) };
  // Image 1 (56×28) → 2 merged features, [IMG_BREAK]=12, [IMG_END]=13; image 2 (28×28) → 1 feature.
  const row0 = [1, 10, 12, 10, 13, 5, 10, 13, 6, 7];
  const row1 = [1, 5, 9, 20, 33, 7, 8, 2, 0, 0];
  const inputIds = Int32Array.from([...row0, ...row1]);
  const labels = Int32Array.from([-100, -100, -100, -100, -100, 5, -100, -100, 6, 7, 1, 5, 9, 20, 33, 7, 8, 2, -100, -100]);
  const attentionMask = Int32Array.from([...row0.map(() => 1), 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
  return { batch: 2, seqLen: 10, inputIds, labels, attentionMask, images };
}

interface StepResult {
  logits: Float32Array;
  loss: number;
  grads: Map<string, Float32Array>;
}

/** One recorded forward and backward pass with every weight trainable. */
function step(model: Mistral3Model, checkpointLayers: boolean): StepResult {
  const backend = model.text.embedTokens.backend;
  const graph = createGraph(backend, { recording: true });
  const ctx = new ForwardContext(graph, { trainable: new Set(model.weights.values()) });
  try {
    const out = forwardMistral3(ctx, model, inputs(), { checkpointLayers });
    const logits = backend.read(out.logits.value) as Float32Array;
    const loss = (backend.read(out.loss!.value) as Float32Array)[0]!;
    graph.backward(out.loss!);
    const grads = new Map<string, Float32Array>();
    for (const [name, t] of model.weights) {
      const grad = ctx.varOf(t)?.grad;
      if (!grad) continue;
      grads.set(name, backend.read(grad) as Float32Array);
      grad.free();
    }
    return { logits, loss, grads };
  } finally {
    graph.dispose();
    ctx.release();
  }
}

/** ‖a − b‖ / ‖b‖ (0 when both are zero). */
function relativeError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < b.length; i++) {
    diff += (a[i]! - b[i]!) ** 2;
    norm += b[i]! ** 2;
  }
  return norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
}

function adamwSteps(backend: Backend, model: Mistral3Model, steps: number): number[] {
  const state = new Map([...model.weights].map(([name, t]) => [name, { m: backend.zeros(t.shape, "f32"), v: backend.zeros(t.shape, "f32") }]));
  const losses: number[] = [];
  for (let s = 1; s <= steps; s++) {
    const graph = createGraph(backend, { recording: true });
    const ctx = new ForwardContext(graph, { trainable: new Set(model.weights.values()) });
    try {
      const out = forwardMistral3(ctx, model, inputs());
      losses.push((backend.read(out.loss!.value) as Float32Array)[0]!);
      graph.backward(out.loss!);
      for (const [name, t] of model.weights) {
        const grad = ctx.varOf(t)?.grad;
        if (!grad) continue;
        const { m, v } = state.get(name)!;
        backend.adamw(t, grad, m, v, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: s });
        grad.free();
      }
    } finally {
      graph.dispose();
      ctx.release();
    }
  }
  for (const { m, v } of state.values()) {
    m.free();
    v.free();
  }
  return losses;
}

describe("tiny Mistral3 on cuda matches the cpu backend", { skip }, () => {
  const cpu = createCpuBackend();
  after(() => cuda?.dispose());

  // Errors compound through two decoder layers, two vision layers and a checkpointed backward in
  // f32 with different summation orders and exp/erf implementations: 1e-4 relative (norm-wise)
  // is two orders of magnitude under any real divergence (a wrong mask or index gives O(1)).
  const TOL = 1e-4;

  test("forward logits and loss; gradients of every weight through a checkpointed backward", () => {
    const onCpu = tinyModel(undefined, 7, cpu);
    const onCuda = tinyModel(undefined, 7, cuda!);
    try {
      const ref = step(onCpu, true);
      const got = step(onCuda, true);
      assert.ok(relativeError(got.logits, ref.logits) < TOL, `logits rel err ${relativeError(got.logits, ref.logits)}`);
      assert.ok(Math.abs(got.loss - ref.loss) <= TOL * Math.abs(ref.loss), `loss ${got.loss} vs ${ref.loss}`);
      assert.deepEqual([...got.grads.keys()].sort(), [...ref.grads.keys()].sort());
      assert.ok(ref.grads.size > 20, "every weight gets a gradient");
      for (const [name, g] of ref.grads) {
        const err = relativeError(got.grads.get(name)!, g);
        assert.ok(err < TOL, `${name}: gradient rel err ${err}`);
      }
    } finally {
      freeMistral3(onCpu);
      freeMistral3(onCuda);
    }
  });

  test("three AdamW steps give the same losses, and the loss falls", () => {
    const onCpu = tinyModel(undefined, 11, cpu);
    const onCuda = tinyModel(undefined, 11, cuda!);
    try {
      const ref = adamwSteps(cpu, onCpu, 3);
      const got = adamwSteps(cuda!, onCuda, 3);
      for (let i = 0; i < ref.length; i++) {
        assert.ok(Math.abs(got[i]! - ref[i]!) <= TOL * Math.abs(ref[i]!), `step ${i + 1}: loss ${got[i]} vs ${ref[i]}`);
      }
      assert.ok(got[2]! < got[0]!, `loss did not fall: ${got.join(", ")}`);
    } finally {
      freeMistral3(onCpu);
      freeMistral3(onCuda);
    }
  });

  test("a repeated training step reuses cached device memory (no cudaMalloc)", () => {
    const model = tinyModel(undefined, 3, cuda!);
    try {
      step(model, true);
      const before = cuda!.allocatorStats();
      step(model, true);
      step(model, true);
      assert.equal(cuda!.allocatorStats().mallocs, before.mallocs);
    } finally {
      freeMistral3(model);
    }
  });
});
