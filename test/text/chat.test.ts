import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { SYNTH_CLASS_NAMES } from "../../src/data/synth-xray.ts";
import {
  compileChatTemplate,
  loadModelChatTemplate,
  resolveChatTemplate,
  SHORT_VLM_TEMPLATE,
} from "../../src/text/chat-template.ts";
import { expandImageTokens, imageTokenCount, tokenizeChat } from "../../src/text/image-tokens.ts";
import { buildConversation, buildPrompt } from "../../src/text/prompt.ts";
import { loadTokenizer } from "../../src/text/tokenizer.ts";
import { InputError, SplintError } from "../../src/util/errors.ts";
import { tokenizerDirs } from "./tokenizer-fixtures.ts";

const ctx = { bosToken: "<s>", eosToken: "</s>" };

describe("prompt", () => {
  it("is the tutorial's f-string: stripped, classes joined with ', ' on two lines", () => {
    const p = buildPrompt(["A x", "B"]);
    assert.equal(
      p,
      "You are a radiology assistant specialised in bone fracture classification.\n" +
        "You must classify the X-ray image into exactly ONE of the following classes:\n" +
        "A x, B\n" +
        "Rules:\n" +
        "- Reply with ONLY the class name.\n" +
        "- No explanations, no extra words, no markdown, no punctuation.\n" +
        "- Output must be EXACTLY one of: A x, B",
    );
  });

  it("strips like Python's str.strip (a trailing class name's whitespace goes too)", () => {
    assert.ok(buildPrompt(["A", "B \u2003"]).endsWith("one of: A, B"));
    assert.ok(buildPrompt(["A", "B\ufeff"]).endsWith("B\ufeff"));
  });

  it("builds the tutorial's conversation: text then image, assistant answer", () => {
    const m = buildConversation("P", "Spiral Fracture");
    assert.deepEqual(m, [
      { role: "user", content: [{ type: "text", text: "P" }, { type: "image" }] },
      { role: "assistant", content: [{ type: "text", text: "Spiral Fracture" }] },
    ]);
    assert.equal(buildConversation("P").length, 1);
  });
});

describe("short template", () => {
  const short = resolveChatTemplate("short", "/nonexistent");
  const prompt = buildPrompt(SYNTH_CLASS_NAMES);

  it("renders a training example as transformers would (newline kept after [INST])", () => {
    const text = short.render({ ...ctx, messages: buildConversation(prompt, "Hairline Fracture"), addGenerationPrompt: false });
    assert.equal(text, `<s>[INST]\n${prompt}[IMG][/INST]Hairline Fracture</s>`);
  });

  it("stops after [/INST] with add_generation_prompt", () => {
    const text = short.render({ ...ctx, messages: buildConversation("What is the image about?"), addGenerationPrompt: true });
    assert.equal(text, "<s>[INST]\nWhat is the image about?[IMG][/INST]");
  });

  it("is the tutorial's text", () => {
    assert.ok(SHORT_VLM_TEMPLATE.startsWith("{{ bos_token }}[INST]\n{% for message in messages if message['role'] == 'user' -%}\n"));
    assert.ok(SHORT_VLM_TEMPLATE.endsWith("{%- endfor -%}\n{%- endif %}"));
    assert.equal(SHORT_VLM_TEMPLATE.split("\n").length, 15);
  });
});

describe("model template lookup", () => {
  const mk = () => mkdtempSync(join(tmpdir(), "splint-tpl-"));

  it("prefers chat_template.jinja, then chat_template.json, then tokenizer_config.json", () => {
    const dir = mk();
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify({ chat_template: "C{{ bos_token }}" }));
    assert.equal(loadModelChatTemplate(dir).render({ ...ctx, messages: [], addGenerationPrompt: false }), "C<s>");
    writeFileSync(join(dir, "chat_template.json"), JSON.stringify({ chat_template: "J" }));
    assert.equal(loadModelChatTemplate(dir).text, "J");
    writeFileSync(join(dir, "chat_template.jinja"), "{{ eos_token }}");
    const t = resolveChatTemplate("model", dir);
    assert.equal(t.source, join(dir, "chat_template.jinja"));
    assert.equal(t.render({ ...ctx, messages: [], addGenerationPrompt: false }), "</s>");
  });

  it("reads the 'default' entry of a template list", () => {
    const dir = mk();
    writeFileSync(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({ chat_template: [{ name: "tool_use", template: "T" }, { name: "default", template: "D" }] }),
    );
    assert.equal(loadModelChatTemplate(dir).text, "D");
  });

  it("renders a Mistral-style template with system default, loops and raise_exception", () => {
    const tpl = compileChatTemplate(
      "model",
      "inline",
      "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set loop_messages = messages[1:] %}" +
        "{% else %}{% set sys = 'default' %}{% set loop_messages = messages %}{% endif %}[SYSTEM_PROMPT]{{ sys }}[/SYSTEM_PROMPT]" +
        "{% for m in loop_messages %}{% if m['role'] == 'user' %}[INST]{% if m['content'] is string %}{{ m['content'] }}" +
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}[IMG]{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}[/INST]" +
        "{% elif m['role'] == 'assistant' %}{{ m['content'][0]['text'] }}{{ eos_token }}{% else %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}{% endfor %}",
    );
    const out = tpl.render({ ...ctx, messages: buildConversation("Describe", "Answer"), addGenerationPrompt: true });
    assert.equal(out, "<s>[SYSTEM_PROMPT]default[/SYSTEM_PROMPT][INST]Describe[IMG][/INST]Answer</s>");
    assert.throws(
      () => tpl.render({ ...ctx, messages: [{ role: "user", content: "a" }, { role: "system", content: "b" }], addGenerationPrompt: false }),
      (e: unknown) => e instanceof SplintError && /bad role system/.test(e.message),
    );
  });

  it("names the file when a template is missing or broken", () => {
    const dir = mk();
    assert.throws(() => resolveChatTemplate("model", dir), (e: unknown) => e instanceof InputError && e.message.includes(dir));
    const bad = join(dir, "bad.jinja");
    writeFileSync(bad, "{% for x in %}");
    assert.throws(() => resolveChatTemplate(bad, dir), (e: unknown) => e instanceof InputError && e.message.startsWith(bad));
    assert.throws(() => resolveChatTemplate(join(dir, "missing.jinja"), dir), /no such template file/);
  });
});

describe("[IMG] expansion", () => {
  const tok = { imgId: 10, imgBreakId: 12, imgEndId: 13 };

  it("writes rows of [IMG]×cols + [IMG_BREAK], the last break being [IMG_END]", () => {
    // 90×60 image → 84×112 → 3 rows × 4 cols (ministral3.md §3)
    const out = expandImageTokens([1, 10, 5], [{ rows: 3, cols: 4 }], tok);
    assert.deepEqual(out, [1, 10, 10, 10, 10, 12, 10, 10, 10, 10, 12, 10, 10, 10, 10, 13, 5]);
  });

  it("counts match the processor table", () => {
    for (const [rows, cols, img, total] of [
      [18, 23, 414, 432],
      [28, 37, 1036, 1064],
      [28, 55, 1540, 1568],
      [55, 55, 3025, 3080],
      [2, 2, 4, 6],
    ] as const) {
      const out = expandImageTokens([10], [{ rows, cols }], tok);
      assert.equal(out.length, total);
      assert.equal(imageTokenCount({ rows, cols }), total);
      assert.equal(out.filter((t) => t === 10).length, img);
      assert.equal(out.filter((t) => t === 12).length, rows - 1);
      assert.equal(out.filter((t) => t === 13).length, 1);
    }
  });

  it("expands several images in order and rejects a count mismatch", () => {
    const out = expandImageTokens([10, 7, 10], [{ rows: 1, cols: 1 }, { rows: 1, cols: 2 }], tok);
    assert.deepEqual(out, [10, 13, 7, 10, 10, 13]);
    assert.throws(() => expandImageTokens([10, 10], [{ rows: 1, cols: 1 }], tok), /2 \[IMG\] placeholder\(s\) but 1 image/);
  });

  it("tokenizeChat labels every token and which image it belongs to", async () => {
    const t = await loadTokenizer(tokenizerDirs().tekkenDir);
    const text = "<s>[INST]\nhi[IMG][IMG][/INST]ok</s>";
    const r = tokenizeChat(t, text, [{ rows: 2, cols: 1 }, { rows: 1, cols: 2 }]);
    const img = r.kinds.map((k, i) => [k, r.imageIndex[i]]).filter(([k]) => k !== "text" && k !== "special");
    assert.deepEqual(img, [
      ["image", 0], ["image_break", 0], ["image", 0], ["image_end", 0],
      ["image", 1], ["image", 1], ["image_end", 1],
    ]);
    assert.deepEqual(r.kinds.slice(0, 2), ["special", "special"]);
    assert.equal(r.kinds.at(-1), "special");
    assert.equal(t.decode(r.ids.filter((_, i) => r.kinds[i] === "text")), "\nhiok");
    assert.equal(r.ids.length, r.kinds.length);
  });
});
