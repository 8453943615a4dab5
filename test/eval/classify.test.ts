import assert from "node:assert/strict";
import { test } from "node:test";
import sharp from "sharp";
import { createGraph } from "../../src/autograd/tape.ts";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { synthesizeImagePng, SYNTH_CLASS_NAMES } from "../../src/data/synth.ts";
import { ClassPrompts } from "../../src/eval/class-prompts.ts";
import { probabilities } from "../../src/eval/calibration.ts";
import { classifyBatch, tokenLogProb, type ClassifierOptions } from "../../src/eval/classify.ts";
import { imageBatch } from "../../src/eval/evaluate.ts";
import { INVALID } from "../../src/eval/metrics.ts";
import { buildTokenTrie } from "../../src/eval/token-trie.ts";
import { imageGrids } from "../../src/models/mistral3/chat-inputs.ts";
import { ForwardContext } from "../../src/models/mistral3/context.ts";
import { forwardMistral3, loadMistral3, type ImageBatch } from "../../src/models/mistral3/model.ts";
import { resolveChatTemplate } from "../../src/text/chat-template.ts";
import { loadTokenizer } from "../../src/text/tokenizer.ts";
import { loadImageProcessorConfig } from "../../src/vision/image-processor.ts";

const MODEL = "test/fixtures/models/tiny";
const backend = createCpuBackend();
const model = await loadMistral3(MODEL, backend);
const tokenizer = await loadTokenizer(MODEL);
const prompts = new ClassPrompts(tokenizer, resolveChatTemplate("short", MODEL), SYNTH_CLASS_NAMES);
const processor = loadImageProcessorConfig(MODEL);
const newGraph = () => createGraph(backend, { recording: false });
const options = (mode: ClassifierOptions["mode"]): ClassifierOptions => ({
  model,
  newGraph,
  tokenizer,
  prompts,
  mode,
  maxNewTokens: 8,
  eosTokenIds: [tokenizer.eosId],
  padTokenId: tokenizer.padId,
});

/** Three images of different shapes, so their prompts differ in length and the batch is left-padded. */
async function mixedImages(): Promise<{ batch: ImageBatch; singles: ImageBatch[] }> {
  const pngs = await Promise.all(
    [
      [64, 64],
      [40, 100],
      [90, 30],
    ].map(async ([w, h], i) => new Uint8Array(await sharp(await synthesizeImagePng({ seed: 3, size: 64 }, i, "Test", i)).resize(w, h, { fit: "fill" }).png().toBuffer())),
  );
  const names = pngs.map((_, i) => `image ${i}`);
  const batch = await imageBatch(pngs, processor, names);
  const singles = await Promise.all(pngs.map((p, i) => imageBatch([p], processor, [names[i]!])));
  return { batch, singles };
}

/** Last-position logits of one un-padded sequence, by a full forward pass without any cache. */
function lastLogits(ids: readonly number[], image: ImageBatch): Float32Array {
  const graph = newGraph();
  const ctx = new ForwardContext(graph);
  try {
    const out = forwardMistral3(ctx, model, { batch: 1, seqLen: ids.length, inputIds: Int32Array.from(ids), images: image }, { lastPositionOnly: true });
    return backend.read(out.logits.value) as Float32Array;
  } finally {
    graph.dispose();
    ctx.release();
  }
}

const { batch, singles } = await mixedImages();
const grids = imageGrids(model.config, batch);

test("the mixed batch really is left-padded (prompts of different lengths)", () => {
  const lengths = new Set(grids.map((g) => prompts.promptIds(g).length));
  assert.ok(lengths.size > 1, `prompt lengths ${[...lengths]}`);
});

test("score mode: batched, cached class log-likelihoods equal full forward passes of prompt + answer", () => {
  const results = classifyBatch(options("score"), batch);
  const V = model.config.text_config.vocab_size;
  results.forEach((r, b) => {
    const promptIds = prompts.promptIds(grids[b]!);
    prompts.answers.forEach((answer, c) => {
      let expected = 0;
      for (let j = 0; j < answer.length; j++) expected += tokenLogProb(lastLogits([...promptIds, ...answer.slice(0, j)], singles[b]!), 0, V, answer[j]!);
      assert.ok(Math.abs(r.scores![c]! - expected) < 2e-3, `image ${b} class ${c}: ${r.scores![c]} vs ${expected}`);
    });
    const best = r.scores!.indexOf(Math.max(...r.scores!));
    assert.equal(r.predicted, best);
    const p = probabilities(r.scores!);
    assert.ok(Math.abs(p.reduce((a, x) => a + x, 0) - 1) < 1e-9);
  });
});

test("constrained mode: the batched walk equals a greedy trie walk with full forward passes", () => {
  const results = classifyBatch(options("constrained"), batch);
  const trie = buildTokenTrie(prompts.answers);
  results.forEach((r, b) => {
    const ids = [...prompts.promptIds(grids[b]!)];
    let node = trie;
    while (node.classIndex < 0) {
      const logits = lastLogits(ids, singles[b]!);
      const token = [...node.children.keys()].reduce((best, t) => (logits[t]! > logits[best]! ? t : best));
      ids.push(token);
      node = node.children.get(token)!;
    }
    assert.equal(r.predicted, node.classIndex, `image ${b}`);
    assert.equal(r.answer, SYNTH_CLASS_NAMES[node.classIndex]);
  });
});

test("constrained and score modes always name a class, even when free generation from a random model does not", () => {
  const generated = classifyBatch(options("generate"), batch);
  assert.ok(generated.some((r) => r.predicted === INVALID), "the random tiny model rambles");
  for (const mode of ["constrained", "score"] as const) {
    for (const r of classifyBatch(options(mode), batch)) {
      assert.ok(r.predicted >= 0 && r.predicted < SYNTH_CLASS_NAMES.length, `${mode}: ${r.predicted}`);
      assert.equal(r.match, "exact");
    }
  }
});

test("class answers are the tokens the training conversation puts after the prompt, ending in EOS", () => {
  for (const answer of prompts.answers) assert.equal(answer[answer.length - 1], tokenizer.eosId);
  const decoded = prompts.answers.map((a) => tokenizer.decode(a.slice(0, -1)));
  assert.deepEqual(decoded, [...SYNTH_CLASS_NAMES]);
});

test("the trie refuses an answer that is a prefix of another", () => {
  assert.throws(() => buildTokenTrie([[5, 6], [5, 6, 7]]));
  assert.throws(() => buildTokenTrie([[5, 6], [5, 6]]));
  const trie = buildTokenTrie([[5, 6, 2], [5, 7, 2], [8, 2]]);
  assert.deepEqual([...trie.children.keys()], [5, 8]);
  assert.equal(trie.children.get(8)!.children.get(2)!.classIndex, 2);
});
