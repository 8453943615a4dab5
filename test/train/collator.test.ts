import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { IGNORE_INDEX } from "../../src/models/mistral3/model.ts";
import { resolveChatTemplate } from "../../src/text/chat-template.ts";
import { loadTokenizer } from "../../src/text/tokenizer.ts";
import { boundImageEdge, collate, type CollatorSettings } from "../../src/train/collator.ts";
import { loadImageProcessorConfig } from "../../src/vision/image-processor.ts";
import { FIXTURES } from "./fixture-batches.ts";
import { TINY_MODEL } from "./tiny-dataset.ts";

interface ChatCase {
  name: string;
  messages: { role: string; content: { type: string; text?: string }[] }[];
  images: string[];
  input_ids: number[];
  image_sizes: number[][];
}
const cases = (JSON.parse(readFileSync(join(FIXTURES, "tokenizer", "cases.json"), "utf8")) as { chat: ChatCase[] }).chat;
const withAnswer = cases.find((c) => c.name === "strict_prompt_with_answer_short")!;
const prompt = withAnswer.messages[0]!.content[0]!.text!;
const answer = withAnswer.messages[1]!.content[0]!.text!;
const image = (rel: string) => new Uint8Array(readFileSync(join(FIXTURES, rel)));
const IMAGE_IDS = new Set([10, 12, 13]); // [IMG], [IMG_BREAK], [IMG_END]

async function settings(overrides: Partial<CollatorSettings> = {}): Promise<CollatorSettings> {
  return {
    tokenizer: await loadTokenizer(TINY_MODEL),
    template: resolveChatTemplate("short", TINY_MODEL),
    processor: loadImageProcessorConfig(TINY_MODEL),
    prompt,
    lossOn: "all",
    maxSeqLen: 2048,
    ...overrides,
  };
}

test("one example gives transformers' input_ids; loss_on all supervises every text token, never an image token", async () => {
  const batch = await collate([{ image: image(withAnswer.images[0]!), answer }], await settings());
  assert.deepEqual(Array.from(batch.inputs.inputIds), withAnswer.input_ids);
  assert.deepEqual(Array.from(batch.inputs.images!.imageSizes), withAnswer.image_sizes.flat());
  const expected = withAnswer.input_ids.map((id) => (IMAGE_IDS.has(id) ? IGNORE_INDEX : id));
  assert.deepEqual(Array.from(batch.inputs.labels), expected);
  assert.equal(batch.supervised, expected.filter((l) => l !== IGNORE_INDEX).length);
});

test("completion-only labels keep just the answer and </s>; rows are right-padded with <pad> and masked", async () => {
  const s = await settings({ lossOn: "completion" });
  const batch = await collate(
    [
      { image: image("images/downscale_rgb_300x150.png"), answer },
      { image: image("images/upscale_rgb_30x20.png"), answer: "Comminuted fracture" },
    ],
    s,
  );
  const { batch: B, seqLen: T, inputIds, attentionMask, labels } = batch.inputs;
  assert.equal(B, 2);
  const tok = s.tokenizer;
  for (let b = 0; b < B; b++) {
    const row = Array.from(inputIds.subarray(b * T, (b + 1) * T));
    const rowLabels = Array.from(labels.subarray(b * T, (b + 1) * T));
    const real = Array.from(attentionMask!.subarray(b * T, (b + 1) * T)).filter((m) => m === 1).length;
    assert.ok(row.slice(real).every((id) => id === tok.padId), "right padding with <pad>");
    assert.ok(rowLabels.slice(real).every((l) => l === IGNORE_INDEX));
    const supervised = row.filter((_, i) => rowLabels[i] !== IGNORE_INDEX);
    const endOfPrompt = row.lastIndexOf(tok.tokenToId("[/INST]")!);
    assert.ok(rowLabels.slice(0, endOfPrompt + 1).every((l) => l === IGNORE_INDEX), "prompt masked");
    assert.equal(tok.decode(supervised), `${b === 0 ? answer : "Comminuted fracture"}</s>`);
  }
  assert.equal(batch.tokens, Array.from(attentionMask!).filter((m) => m === 1).length);
});

test("max_image_edge bounds the image tokens; max_seq_len truncates text but never cuts an image", async () => {
  const big = image("images/downscale_rgb_300x150.png"); // 56×112 at longest_edge 112
  const base = await settings();
  const full = await collate([{ image: big, answer }], base);
  const bounded = await collate([{ image: big, answer }], { ...base, processor: boundImageEdge(base.processor, 56) });
  assert.deepEqual(Array.from(bounded.inputs.images!.imageSizes), [28, 56]);
  const imageTokens = (ids: Int32Array) => Array.from(ids).filter((id) => IMAGE_IDS.has(id)).length;
  assert.equal(imageTokens(full.inputs.inputIds), 2 * 5);
  assert.equal(imageTokens(bounded.inputs.inputIds), 1 * 3);

  const truncated = await collate([{ image: big, answer }], { ...base, maxSeqLen: full.inputs.seqLen - 2 });
  assert.equal(truncated.inputs.seqLen, full.inputs.seqLen - 2);
  assert.deepEqual(Array.from(truncated.inputs.inputIds), Array.from(full.inputs.inputIds.subarray(0, full.inputs.seqLen - 2)));
  const firstImage = Array.from(full.inputs.inputIds).findIndex((id) => IMAGE_IDS.has(id));
  await assert.rejects(collate([{ image: big, answer, name: "x.png" }], { ...base, maxSeqLen: firstImage + 1 }), /x\.png: \d+ tokens, and max_seq_len \d+ would cut through its image tokens/);
});
