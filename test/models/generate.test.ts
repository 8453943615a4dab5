import assert from "node:assert/strict";
import { test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { newLayerKVs } from "../../src/models/mistral3/decoder.ts";
import { argmax, generateMistral3, prefillPositions, samplingDistribution } from "../../src/models/mistral3/generate.ts";
import { Rng } from "../../src/util/rng.ts";
import { forwardMistral3, type ImageBatch, type Mistral3Model } from "../../src/models/mistral3/model.ts";
import { tinyModel } from "./tiny-model.ts";

/** Greedy decoding by re-running the whole sequence every step (no cache): the reference. */
function greedyByRecompute(model: Mistral3Model, ids: Int32Array, mask: Int32Array, B: number, T: number, n: number, images?: ImageBatch): Int32Array {
  const backend = model.text.embedTokens.backend;
  let seq = Int32Array.from(ids);
  let m = Int32Array.from(mask);
  let len = T;
  for (let step = 0; step < n; step++) {
    const graph = createGraph(backend, { recording: false });
    const ctx = new ForwardContext(graph);
    const out = forwardMistral3(ctx, model, {
      batch: B,
      seqLen: len,
      inputIds: seq,
      attentionMask: m,
      positionIds: prefillPositions(m, B, len),
      images,
    });
    const logits = backend.read(out.logits.value) as Float32Array;
    graph.dispose();
    ctx.release();
    const V = logits.length / (B * len);
    const next = new Int32Array(B * (len + 1));
    const nextMask = new Int32Array(B * (len + 1));
    for (let b = 0; b < B; b++) {
      next.set(seq.subarray(b * len, (b + 1) * len), b * (len + 1));
      nextMask.set(m.subarray(b * len, (b + 1) * len), b * (len + 1));
      next[b * (len + 1) + len] = argmax(logits.subarray((b * len + len - 1) * V, (b * len + len) * V));
      nextMask[b * (len + 1) + len] = 1;
    }
    seq = next;
    m = nextMask;
    len++;
  }
  return seq;
}

test("prefill positions follow transformers' generate: cumsum(mask) - 1, padding at 0", () => {
  assert.deepEqual(Array.from(prefillPositions(Int32Array.from([0, 0, 1, 1, 1, 1, 1, 1]), 2, 4)), [0, 0, 0, 1, 0, 1, 2, 3]);
});

test("KV-cache greedy generation equals full recomputation, batched with left padding and an image", () => {
  const model = tinyModel(undefined, 7);
  const B = 2;
  const T = 7;
  // Row 0: left-padded text; row 1: <s> + image (28×28 → one [IMG]) + text. Long enough that the
  // llama-4 query scale (original_max_position_embeddings 8) kicks in during decoding.
  const ids = Int32Array.from([11, 11, 1, 30, 31, 32, 33, 1, 10, 13, 40, 41, 42, 43]);
  const mask = Int32Array.from([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  const pixelValues = Float32Array.from({ length: 3 * 28 * 28 }, (_, i) => Math.cos(i * 0.11));
  const images = { pixelValues, shape: [1, 3, 28, 28] as const, imageSizes: Int32Array.from([28, 28]) };
  const n = 6;
  const cached = generateMistral3(model, () => createGraph(model.text.embedTokens.backend, { recording: false }), { batch: B, seqLen: T, inputIds: ids, attentionMask: mask, images }, { maxNewTokens: n, eosTokenIds: [], padTokenId: 11 });
  const reference = greedyByRecompute(model, ids, mask, B, T, n, images);
  assert.equal(cached.newTokens, n);
  assert.deepEqual(Array.from(cached.sequences), Array.from(reference));
  assert.ok(Array.from(cached.top2Margin).every((x) => x > 1e-4), "no near-ties that would make the comparison luck");
});

test("bf16 tier: the KV caches are bf16 and greedy generation equals full recomputation (with and without an adapter on v)", () => {
  for (const adapted of [false, true]) {
    const model = tinyModel(undefined, 9, undefined, "bf16");
    if (adapted) {
      // A LoRA pair on v (B non-zero) makes v a bf16 product output; without it v comes out f32.
      const rng = new Rng(3);
      const backend = model.text.embedTokens.backend;
      for (const layer of model.text.layers) {
        const [out, inF] = layer.v.weight.shape as [number, number];
        const up = (shape: [number, number]) => backend.upload(Float32Array.from({ length: shape[0] * shape[1] }, () => (rng.next() - 0.5) * 0.2), shape, "f32");
        layer.v.lora = { a: up([4, inF]), b: up([out, 4]), scale: 2, dropout: 0 };
      }
    }
    const ids = Int32Array.from([11, 1, 30, 31, 32, 33, 1, 40, 41, 42, 43, 44]);
    const mask = Int32Array.from([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    const newGraph = () => createGraph(model.text.embedTokens.backend, { recording: false });
    const caches = newLayerKVs(model.config.text_config, model.text, 4);
    assert.deepEqual([caches[0]!.k.dtype, caches[0]!.v.dtype], ["bf16", "bf16"]);
    for (const c of caches) [c.k, c.v].forEach((t) => t.free());
    const cached = generateMistral3(model, newGraph, { batch: 2, seqLen: 6, inputIds: ids, attentionMask: mask }, { maxNewTokens: 3, eosTokenIds: [], padTokenId: 11 });
    assert.deepEqual(Array.from(cached.sequences), Array.from(greedyByRecompute(model, ids, mask, 2, 6, 3)), `adapter on v: ${adapted}`);
    assert.ok(Array.from(cached.top2Margin).every((x) => x > 1e-3), "no near-ties that would make the comparison luck");
  }
});

test("rows stop at EOS and are padded; generation ends when every row is done", () => {
  const model = tinyModel(undefined, 3);
  const ids = Int32Array.from([1, 30, 31]);
  const free = generateMistral3(model, () => createGraph(model.text.embedTokens.backend, { recording: false }), { batch: 1, seqLen: 3, inputIds: ids }, { maxNewTokens: 3, eosTokenIds: [], padTokenId: 11 });
  const firstToken = free.sequences[3]!;
  const stopped = generateMistral3(model, () => createGraph(model.text.embedTokens.backend, { recording: false }), { batch: 1, seqLen: 3, inputIds: ids }, { maxNewTokens: 3, eosTokenIds: [firstToken], padTokenId: 11 });
  assert.equal(stopped.newTokens, 1);
  assert.deepEqual(Array.from(stopped.sequences), [1, 30, 31, firstToken]);
});

test("sampling warpers: top-k, top-p and min-p keep the tokens transformers keeps", () => {
  const row = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  const base = { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1 };
  const kept = (s: typeof base) => Array.from(samplingDistribution(row, s), (p) => (p > 0 ? 1 : 0));
  assert.deepEqual(kept({ ...base, topK: 2 }), [1, 1, 0, 0]);
  assert.deepEqual(kept({ ...base, topP: 0.8 }), [1, 1, 0, 0]); // 0.5 + 0.3 reaches 0.8
  assert.deepEqual(kept({ ...base, topP: 0.81 }), [1, 1, 1, 0]);
  assert.deepEqual(kept({ ...base, minP: 0.2 }), [1, 1, 1, 0]); // 0.05 < 0.2 · 0.5
  const hot = samplingDistribution(row, { ...base, temperature: 2 });
  assert.ok(Math.abs(hot[0]! / hot[1]! - Math.sqrt(0.5 / 0.3)) < 1e-6);
});

test("sampling is reproducible from its seed", () => {
  const model = tinyModel(undefined, 5);
  const newGraph = () => createGraph(model.text.embedTokens.backend, { recording: false });
  const sample = (seed: number) =>
    Array.from(
      generateMistral3(model, newGraph, { batch: 1, seqLen: 3, inputIds: Int32Array.from([1, 30, 31]) }, {
        maxNewTokens: 12,
        eosTokenIds: [],
        padTokenId: 11,
        sampling: { temperature: 3, topK: 0, topP: 1, minP: 0, seed },
      }).sequences,
    );
  assert.deepEqual(sample(1), sample(1));
  assert.notDeepEqual(sample(1), sample(2));
});

test("top-k keeps exactly the tokens at or above the k-th largest logit (ties included)", () => {
  const row = Float32Array.from({ length: 1000 }, (_, i) => Math.round(Math.sin(i * 12.9898) * 40) / 4);
  for (const k of [1, 7, 50, 999]) {
    const kth = Array.from(row).sort((a, b) => b - a)[k - 1]!;
    const kept = Array.from(samplingDistribution(row, { temperature: 0.7, topK: k, topP: 1, minP: 0, seed: 0 }), (p, i) => (p > 0 ? i : -1)).filter((i) => i >= 0);
    assert.deepEqual(kept, Array.from(row.keys()).filter((i) => row[i]! >= kth), `k=${k}`);
  }
});
