import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { parseMistral3Config } from "../../src/models/mistral3/config.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { buildMistral3, forwardMistral3, loadMistral3, type Mistral3Model } from "../../src/models/mistral3/model.ts";
import { bf16ToF32, f32ToBf16 } from "../../src/tensor/bf16.ts";
import { FP8_E4M3_TABLE, f32ToFp8E4m3 } from "../../src/tensor/fp8.ts";
import type { Tensor } from "../../src/tensor/tensor.ts";
import { randomHostWeights, writeCheckpoint } from "./checkpoint.ts";

const rawConfig = {
  model_type: "mistral3",
  text_config: {
    model_type: "ministral3",
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    head_dim: 8,
    vocab_size: 40,
  },
  vision_config: { hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, patch_size: 14, hidden_act: "silu" },
};
const config = parseMistral3Config(rawConfig);
const host = randomHostWeights(config, 11);
const backend = createCpuBackend();
const root = await mkdtemp(join(tmpdir(), "splint-load-"));
after(() => rm(root, { recursive: true, force: true }));

const ids = Int32Array.from([1, 10, 12, 10, 13, 7, 20, 30]);
const images = {
  pixelValues: Float32Array.from({ length: 3 * 28 * 56 }, (_, i) => Math.sin(i * 0.05)),
  shape: [1, 3, 28, 56] as const,
  imageSizes: Int32Array.from([28, 56]),
};

function logitsOf(model: Mistral3Model): Float32Array {
  const graph = createGraph(backend, { recording: false });
  const ctx = new ForwardContext(graph);
  try {
    return backend.read(forwardMistral3(ctx, model, { batch: 1, seqLen: ids.length, inputIds: ids, images }).logits.value) as Float32Array;
  } finally {
    graph.dispose();
    ctx.release();
  }
}

/** The same model built in memory from values transformed by `round` (what the file stores). */
function inMemory(round: (name: string, x: Float32Array) => Float32Array, tied = false): Mistral3Model {
  const weights = new Map<string, Tensor>();
  for (const [name, { shape, data }] of host) {
    if (tied && name === "lm_head.weight") continue;
    weights.set(name, backend.upload(round(name, data), shape, "f32"));
  }
  return buildMistral3(config, weights, tied);
}

const bf16Round = (_: string, x: Float32Array) => Float32Array.from(x, (v) => bf16ToF32(f32ToBf16(v)));

test("legacy prefixes, BF16, sharded: weights stay bf16 and the logits equal the in-memory model", async () => {
  const dir = join(root, "legacy-bf16");
  await writeCheckpoint(dir, rawConfig, host, { prefixes: "legacy", dtype: "BF16", shardBytes: 4000 });
  const model = await loadMistral3(dir, backend);
  assert.equal(model.tiedHead, false);
  assert.equal(model.text.layers[0]!.q.weight.dtype, "bf16");
  assert.deepEqual(logitsOf(model), logitsOf(inMemory(bf16Round)));
  const widened = await loadMistral3(dir, backend, { dtype: "f32" });
  assert.equal(widened.text.layers[0]!.q.weight.dtype, "f32");
  assert.deepEqual(logitsOf(widened), logitsOf(model));
});

test("new prefixes, F32, no lm_head: the head is the embedding matrix", async () => {
  const dir = join(root, "new-tied");
  await writeCheckpoint(dir, rawConfig, host, { prefixes: "new", dtype: "F32", tied: true });
  const model = await loadMistral3(dir, backend);
  assert.equal(model.tiedHead, true);
  assert.equal(model.text.lmHead.weight, model.text.embedTokens);
  assert.deepEqual(logitsOf(model), logitsOf(inMemory((_, x) => x, true)));
});

test("FP8 per-tensor checkpoint: decoder linears stay fp8 with their scale, W = fp8 × weight_scale_inv", async () => {
  const dir = join(root, "fp8");
  await writeCheckpoint(dir, rawConfig, host, { prefixes: "legacy", dtype: "BF16", fp8: true });
  const model = await loadMistral3(dir, backend);
  const q = model.text.layers[1]!.q.weight;
  assert.equal(q.dtype, "fp8_e4m3");
  assert.ok(q.scale > 0 && q.scale !== 1);
  assert.equal(model.vision.layers[0]!.q.weight.dtype, "bf16");
  const dequant = (name: string, x: Float32Array) => {
    if (!/^model\.language_model\.layers\.\d+\.(self_attn|mlp)\./.test(name) || !name.endsWith("_proj.weight")) return bf16Round(name, x);
    let max = 0;
    for (const v of x) max = Math.max(max, Math.abs(v));
    const scale = max / 448;
    return Float32Array.from(x, (v) => FP8_E4M3_TABLE[f32ToFp8E4m3(v / scale)]! * scale);
  };
  const expected = logitsOf(inMemory(dequant));
  const got = logitsOf(model);
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]!));
  assert.ok(worst < 1e-5, `max abs diff ${worst}`);
});

test("a checkpoint missing a tensor names the folder and the tensor", async () => {
  const dir = join(root, "broken");
  const partial = new Map(host);
  partial.delete("model.language_model.layers.1.mlp.down_proj.weight");
  await writeCheckpoint(dir, rawConfig, partial, { prefixes: "legacy", dtype: "F32" });
  await assert.rejects(loadMistral3(dir, backend), new RegExp(`${dir}: the checkpoint does not match its config.json:\\n1 missing:\\n  model\\.language_model\\.layers\\.1\\.mlp\\.down_proj\\.weight`));
  await assert.rejects(loadMistral3(join(root, "nowhere"), backend), /config\.json: cannot read the model config \(ENOENT\)/);
});
