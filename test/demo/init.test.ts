import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { createCpuBackend } from "../../src/backends/cpu/index.ts";
import { initTinyModel } from "../../src/models/mistral3/init.ts";
import { freeMistral3, loadMistral3 } from "../../src/models/mistral3/model.ts";
import { loadModelChatTemplate } from "../../src/text/chat-template.ts";
import { loadTokenizer } from "../../src/text/tokenizer.ts";
import { loadImageProcessorConfig } from "../../src/vision/image-processor.ts";
import { InputError } from "../../src/util/errors.ts";

const root = await mkdtemp(join(tmpdir(), "splint-init-"));
after(() => rm(root, { recursive: true, force: true }));

test("model init writes a complete HF-layout checkpoint that splint loads", async () => {
  const dir = join(root, "a");
  const result = await initTinyModel(dir, { preset: "tiny", seed: 3 });
  const tokenizer = await loadTokenizer(dir);
  const backend = createCpuBackend();
  const model = await loadMistral3(dir, backend);
  try {
    assert.equal(model.config.text_config.vocab_size, tokenizer.vocabSize);
    assert.equal(model.config.image_token_index, tokenizer.imgId);
    const counted = [...model.weights.values()].reduce((n, t) => n + t.size, 0);
    assert.equal(counted, result.parameters);
  } finally {
    freeMistral3(model);
  }
  assert.equal(loadImageProcessorConfig(dir).maxHeight, 112);
  assert.match(loadModelChatTemplate(dir).text, /\[INST\]/);
});

test("the same seed gives the same weights, another seed other weights", async () => {
  await initTinyModel(join(root, "b1"), { preset: "tiny", seed: 7 });
  await initTinyModel(join(root, "b2"), { preset: "tiny", seed: 7 });
  await initTinyModel(join(root, "c"), { preset: "tiny", seed: 8 });
  const read = (d: string) => readFile(join(root, d, "model.safetensors"));
  assert.deepEqual(await read("b1"), await read("b2"));
  assert.notDeepEqual(await read("b1"), await read("c"));
});

test("an unknown preset is refused with the known ones named", async () => {
  await assert.rejects(initTinyModel(join(root, "x"), { preset: "huge", seed: 0 }), (e: unknown) => e instanceof InputError && /huge/.test(e.message) && /tiny/.test(e.hint ?? ""));
});
