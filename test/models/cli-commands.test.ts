// generate, render and preprocess end to end through bin/splint.js, against the transformers fixtures.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { openSafetensors, toFloat32, toInt32 } from "../../src/io/safetensors.ts";

const exec = promisify(execFile);
const ROOT = join(import.meta.dirname, "..", "..");
const F = join(ROOT, "test", "fixtures");
const splint = (args: string[]) => exec(process.execPath, [join(ROOT, "bin", "splint.js"), ...args], { env: { ...process.env, SPLINT_NO_PROGRESS: "1" } });

interface Manifest {
  generate: { case: string; adapter: string | null; new_tokens: number[][] }[];
  processor: { auto_image_processor_class: string; variants: Record<string, { files: Record<string, string> }> };
}
const manifest = JSON.parse(await readFile(join(F, "manifest.json"), "utf8")) as Manifest;

for (const adapter of [null, "lora/tiny/adapter"]) {
  test(`generate (text case${adapter ? ", with the peft adapter" : ""}) gives transformers' greedy tokens`, async () => {
    const args = ["generate", "--model", join(F, "models", "tiny"), "--prompt", "What is the image about?", "--template", "short", "--max-new-tokens", "8", "--json"];
    if (adapter) args.push("--adapter", join(F, adapter));
    const { stdout } = await splint(args);
    const result = JSON.parse(stdout) as { tokenIds: number[]; newTokens: number };
    const expected = manifest.generate.find((g) => g.case === "text" && g.adapter === adapter)!;
    assert.deepEqual(result.tokenIds, expected.new_tokens[0]);
  });
}

interface ChatCase {
  name: string;
  template: string;
  messages: { role: string; content: { type: string; text?: string }[] | string }[];
  add_generation_prompt: boolean;
  text: string;
  images: string[];
  input_ids: number[];
}

test("render reproduces the processor's text and token ids for the short-template chat cases", async () => {
  const cases = (JSON.parse(await readFile(join(F, "tokenizer", "cases.json"), "utf8")) as { chat: ChatCase[] }).chat;
  const renderable = cases.filter((c) => {
    const [user, assistant, ...rest] = c.messages;
    if (c.template !== "short" || rest.length > 0 || user?.role !== "user" || !Array.isArray(user.content)) return false;
    // render builds the tutorial's turn: the text, then the images
    return user.content[0]?.type === "text" && user.content.slice(1).every((b) => b.type === "image") && (assistant === undefined || !c.add_generation_prompt);
  });
  assert.ok(renderable.length >= 3);
  for (const c of renderable) {
    const user = c.messages[0]!.content as { type: string; text?: string }[];
    const args = ["render", "--model", join(F, "models", "tiny"), "--template", "short", "--prompt", user[0]!.text!, "--json"];
    for (const image of c.images) args.push("--image", join(F, image));
    const answer = c.messages[1];
    if (answer && Array.isArray(answer.content)) args.push("--answer", answer.content[0]!.text!);
    const { stdout } = await splint(args);
    const r = JSON.parse(stdout) as { text: string; tokens: { id: number; loss: boolean | null; kind: string }[]; loss: { text: string } | null };
    assert.equal(r.text, c.text, c.name);
    assert.deepEqual(r.tokens.map((t) => t.id), c.input_ids, c.name);
    if (answer && Array.isArray(answer.content)) {
      assert.equal(r.loss?.text, `${answer.content[0]!.text!}</s>`, c.name);
      assert.ok(r.tokens.every((t) => !(t.loss && t.kind.startsWith("image"))), "no image token in the loss");
    }
  }
});

test("preprocess writes the HF processor's pixel_values and image_sizes for every fixture image", async () => {
  const variant = manifest.processor.variants[manifest.processor.auto_image_processor_class]!;
  const dir = await mkdtemp(join(tmpdir(), "splint-pre-"));
  try {
    for (const [stem, rel] of Object.entries(variant.files)) {
      const out = join(dir, `${stem}.safetensors`);
      await splint(["preprocess", "--model", join(F, "models", "tiny"), "--image", join(F, "images", `${stem}.png`), "--out", out]);
      const ours = await openSafetensors(out);
      const ref = await openSafetensors(join(F, rel));
      const [pv, refPv] = [await ours.read("pixel_values"), await ref.read("pixel_values")];
      assert.deepEqual(pv.shape, refPv.shape, stem);
      assert.deepEqual(Array.from(toInt32(await ours.read("image_sizes"))), Array.from(toInt32(await ref.read("image_sizes"))), stem);
      const [a, b] = [toFloat32(pv), toFloat32(refPv)];
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      // 2/255 of the pixel range, in normalized units (÷ the smallest CLIP std)
      assert.ok(worst <= 2 / 255 / 0.26130258, `${stem}: max |Δ| ${worst}`);
      await ours.close();
      await ref.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
