import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { renderChat, trainingLabels } from "../../src/models/mistral3/chat-inputs.ts";
import { resolveChatTemplate } from "../../src/text/chat-template.ts";
import { buildConversation } from "../../src/text/prompt.ts";
import { loadTokenizer } from "../../src/text/tokenizer.ts";

const MODEL = join(import.meta.dirname, "..", "fixtures", "models", "tiny");

test("completion-only labels cover the answer and </s>; image tokens are never labels", async () => {
  const tokenizer = await loadTokenizer(MODEL);
  const template = resolveChatTemplate("short", MODEL);
  const grids = [{ rows: 2, cols: 3 }];
  const prompt = renderChat(tokenizer, template, buildConversation("Which fracture?"), grids, true);
  const full = renderChat(tokenizer, template, buildConversation("Which fracture?", "Hairline Fracture"), grids, false);
  const labels = trainingLabels(full.tokens, prompt.tokens, "completion");
  const kept = full.tokens.ids.filter((_, i) => labels[i] !== -100);
  assert.equal(tokenizer.decode(kept), "Hairline Fracture</s>");

  const all = trainingLabels(full.tokens, null, "all");
  full.tokens.kinds.forEach((kind, i) => {
    const isImage = kind === "image" || kind === "image_break" || kind === "image_end";
    assert.equal(all[i] === -100, isImage, `token ${i} (${kind})`);
  });
  assert.equal(full.tokens.kinds.filter((k) => k === "image").length, 6);
});

test("a template whose prompt is not a prefix of the full render is refused for completion-only loss", async () => {
  const tokenizer = await loadTokenizer(MODEL);
  const template = resolveChatTemplate("short", MODEL);
  const full = renderChat(tokenizer, template, buildConversation("A?", "B"), [{ rows: 1, cols: 1 }], false);
  const other = renderChat(tokenizer, template, buildConversation("Different prompt"), [{ rows: 1, cols: 1 }], true);
  assert.throws(() => trainingLabels(full.tokens, other.tokens, "completion"), /cannot be found/);
});
