import assert from "node:assert/strict";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, type Mistral3Inputs } from "../../src/models/mistral3/model.ts";
import { tinyModel } from "./tiny-model.ts";

function run(model: ReturnType<typeof tinyModel>, inputs: Mistral3Inputs): { logits: Float32Array; loss?: number } {
  const backend = model.text.embedTokens.backend;
  const graph = createGraph(backend, { recording: false });
  const ctx = new ForwardContext(graph);
  try {
    const out = forwardMistral3(ctx, model, inputs);
    return {
      logits: backend.read(out.logits.value) as Float32Array,
      loss: out.loss ? (backend.read(out.loss.value) as Float32Array)[0] : undefined,
    };
  } finally {
    graph.dispose();
    ctx.release();
  }
}

test("a text-only forward gives finite logits of the right shape and a causal dependence", () => {
  const model = tinyModel();
  const ids = Int32Array.from([1, 5, 9, 20, 33, 7]);
  const a = run(model, { batch: 1, seqLen: 6, inputIds: ids });
  assert.equal(a.logits.length, 6 * 64);
  assert.ok(a.logits.every(Number.isFinite));
  const changed = Int32Array.from(ids);
  changed[4] = 40;
  const b = run(model, { batch: 1, seqLen: 6, inputIds: changed });
  // positions before the change are unaffected, the changed one is not
  for (let i = 0; i < 4 * 64; i++) assert.equal(b.logits[i], a.logits[i]);
  assert.ok(Math.abs(b.logits[4 * 64]! - a.logits[4 * 64]!) > 0);
});

test("loss is the mean cross-entropy of shifted labels, ignoring -100 (transformers' ForCausalLMLoss)", () => {
  const model = tinyModel();
  const ids = Int32Array.from([1, 5, 9, 20, 33, 7, 1, 8, 8, 2, 11, 11]);
  const labels = Int32Array.from([-100, 5, 9, -100, 33, 7, -100, 8, 8, 2, -100, -100]);
  const { logits, loss } = run(model, { batch: 2, seqLen: 6, inputIds: ids, labels, attentionMask: Int32Array.from([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]) });
  let sum = 0;
  let count = 0;
  for (let b = 0; b < 2; b++) {
    for (let t = 0; t < 5; t++) {
      const label = labels[b * 6 + t + 1]!;
      if (label === -100) continue;
      const row = logits.subarray((b * 6 + t) * 64, (b * 6 + t + 1) * 64);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
      sum += lse - row[label]!;
      count++;
    }
  }
  assert.equal(count, 7);
  assert.ok(Math.abs(loss! - sum / count) < 1e-5, `loss ${loss} vs ${sum / count}`);
});

test("images: features fill the [IMG] slots; a mismatch in counts is a clear error", () => {
  const model = tinyModel();
  // One 56×28 image → grid 4×2 patches → 2×1 merged features; another 28×28 → 1 feature.
  const pixelValues = new Float32Array(2 * 3 * 56 * 28);
  for (let i = 0; i < pixelValues.length; i++) pixelValues[i] = Math.sin(i * 0.37);
  for (let c = 0; c < 3; c++) for (let y = 28; y < 56; y++) for (let x = 0; x < 28; x++) pixelValues[((1 * 3 + c) * 56 + y) * 28 + x] = 0;
  const images = { pixelValues, shape: [2, 3, 56, 28] as const, imageSizes: Int32Array.from([56, 28, 28, 28]) };
  const ids = Int32Array.from([1, 10, 12, 10, 13, 5, 10, 13, 6]);
  const withImages = run(model, { batch: 1, seqLen: 9, inputIds: ids, images });
  assert.ok(withImages.logits.every(Number.isFinite));
  // The padding of the second image is cropped away: changing it changes nothing.
  const repadded = Float32Array.from(pixelValues);
  for (let c = 0; c < 3; c++) for (let y = 28; y < 56; y++) repadded[((1 * 3 + c) * 56 + y) * 28 + 3] = 5;
  const again = run(model, { batch: 1, seqLen: 9, inputIds: ids, images: { ...images, pixelValues: repadded } });
  assert.deepEqual(again.logits, withImages.logits);
  // Position 0 (<s>) precedes every image token: unchanged by the pixels; the first [IMG] is not.
  const blank = run(model, { batch: 1, seqLen: 9, inputIds: ids, images: { ...images, pixelValues: new Float32Array(pixelValues.length) } });
  assert.deepEqual(blank.logits.subarray(0, 64), withImages.logits.subarray(0, 64));
  assert.notDeepEqual(blank.logits.subarray(64, 128), withImages.logits.subarray(64, 128));
  assert.throws(
    () => run(model, { batch: 1, seqLen: 8, inputIds: Int32Array.from([1, 10, 12, 10, 13, 5, 13, 6]), images }),
    /input_ids: 2 \[IMG\] tokens \(id 10\) but the 2 image\(s\) give 3 features/,
  );
});
