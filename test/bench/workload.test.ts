/**
 * The benchmark workload (bench/workload.ts) is the tutorial's: token layout and counts, labels on
 * the answer only, and configurations that splint's own config parser accepts with the sizes of
 * ministral3.md §1.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseMistral3Config } from "../../src/models/mistral3/config.ts";
import { IGNORE_INDEX } from "../../src/models/mistral3/model.ts";
import { expectedWeights } from "../../src/models/mistral3/weights.ts";
import { buildInputs, hfConfig, imageTokenBlock, TUTORIAL_WORKLOAD } from "../../bench/workload.ts";

test("a 644×644 image is 552 image tokens: 23 rows of 23 [IMG], 22 [IMG_BREAK], one [IMG_END]", () => {
  const block = imageTokenBlock(644, 14, 2);
  assert.equal(block.length, 552);
  assert.equal(block.filter((t) => t === 10).length, 529);
  assert.equal(block.filter((t) => t === 12).length, 22);
  assert.equal(block.at(-1), 13);
});

test("the micro-batch: 2 rows of 720 tokens, loss only on the 8 answer tokens ending in </s>", () => {
  const config = parseMistral3Config(hfConfig("3b"));
  const inputs = buildInputs(config, TUTORIAL_WORKLOAD, 1);
  assert.equal(inputs.batch, 2);
  assert.equal(inputs.seqLen, 720);
  for (let b = 0; b < 2; b++) {
    const ids = inputs.inputIds.subarray(b * 720, (b + 1) * 720);
    const labels = inputs.labels!.subarray(b * 720, (b + 1) * 720);
    assert.deepEqual([ids[0], ids[1]], [1, 3]);
    assert.equal(ids[711], 4, "[/INST] closes the 160 prompt tokens");
    assert.equal(ids[719], 2);
    assert.ok(labels.subarray(0, 712).every((l) => l === IGNORE_INDEX));
    assert.deepEqual([...labels.subarray(712)], [...ids.subarray(712)]);
  }
  assert.equal(inputs.images!.pixelValues.length, 2 * 3 * 644 * 644);
  const prompts = buildInputs(config, TUTORIAL_WORKLOAD, 1, true);
  assert.equal(prompts.seqLen, 712);
  assert.equal(prompts.inputIds[711], 4);
});

test("the configurations have the sizes of ministral3.md §1", () => {
  const params = (size: "3b" | "8b" | "14b") => {
    const raw = hfConfig(size);
    const config = parseMistral3Config(raw);
    const tied = raw.tie_word_embeddings === true;
    return expectedWeights(config)
      .filter((s) => !(tied && s.name === "lm_head.weight"))
      .reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  };
  // Total parameters (vision tower ≈ 0.4B included): the names promise 3.x, 8.x and 13–14 billion.
  assert.ok(params("3b") > 3.5e9 && params("3b") < 4.2e9, `3b: ${params("3b")}`);
  assert.ok(params("8b") > 8.5e9 && params("8b") < 9.2e9, `8b: ${params("8b")}`);
  assert.ok(params("14b") > 13.5e9 && params("14b") < 14.2e9, `14b: ${params("14b")}`);
  const c14 = parseMistral3Config(hfConfig("14b"));
  assert.equal(c14.text_config.rope.rope_theta, 1e9);
  assert.equal(c14.vision_config.num_hidden_layers, 24);
  assert.equal(c14.vision_config.hidden_size, 1024);
});
