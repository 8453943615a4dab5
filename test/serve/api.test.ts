import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import OpenAI from "openai";
import type { ChatCompletionCreateParamsNonStreaming, ChatCompletionMessageParam } from "openai/resources/chat/completions";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { predictImages } from "../../src/eval/predict.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { quietOutput, startTestServer, TINY_ADAPTER, TINY_MODEL, xrayDataUrl, type TestServer } from "./serve-fixture.ts";

/**
 * `splint serve` through the official openai client, as a user's code would call it: the tiny
 * fixture model (and its adapter, served as "tuned") on 127.0.0.1.
 */
let server: TestServer;
let client: OpenAI;
let image: string;

before(async () => {
  server = await startTestServer({ maxTokensLimit: 3000 });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
  image = await xrayDataUrl(2);
});
after(() => server.close());

const withImage = (text: string, url: string): ChatCompletionMessageParam[] => [
  { role: "user", content: [{ type: "text", text }, { type: "image_url", image_url: { url } }] },
];

async function streamed(params: ChatCompletionCreateParamsNonStreaming): Promise<{ text: string; finish: string | null; chunks: number }> {
  const stream = await client.chat.completions.create({ ...params, stream: true });
  let text = "";
  let finish: string | null = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    text += chunk.choices[0]?.delta.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  return { text, finish, chunks };
}

test("GET /v1/models lists the base model and the adapter", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ["tiny", "tuned"]);
  const health = (await (await fetch(`${server.url}/health`)).json()) as { status: string; backend: string };
  assert.equal(health.status, "ok");
  assert.equal(health.backend, "cpu");
});

test("chat completion with an image, plain and streamed, gives the same greedy text", async () => {
  const params = { model: "tuned", messages: withImage("Which fracture is this?", image), max_tokens: 12, temperature: 0 };
  const plain = await client.chat.completions.create(params);
  assert.equal(plain.object, "chat.completion");
  assert.equal(plain.model, "tuned");
  const choice = plain.choices[0]!;
  assert.equal(choice.message.role, "assistant");
  assert.ok(choice.message.content && choice.message.content.length > 0);
  assert.ok(choice.finish_reason === "length" || choice.finish_reason === "stop");
  // 40×40 px → 56×56 after resizing to multiples of 28 → a 2×2 grid: 4 [IMG] + 2 breaks/ends.
  assert.ok(plain.usage!.prompt_tokens > 6, `prompt tokens include the image's: ${plain.usage!.prompt_tokens}`);
  assert.ok(plain.usage!.completion_tokens <= 12);

  const stream = await streamed(params);
  assert.equal(stream.text, choice.message.content);
  assert.equal(stream.finish, choice.finish_reason);
  assert.ok(stream.chunks >= 3, "a role chunk, content, a finish chunk");

  // The adapter changes the answer: the base and the tuned model are different models.
  const base = await client.chat.completions.create({ ...params, model: "tiny" });
  assert.notEqual(base.choices[0]!.message.content, choice.message.content);
});

test("a request answers the same whether it runs alone or batched with others", async () => {
  const prompts = ["What is shown?", "Describe it", "Is it broken?", "Name the class", "Where?", "Why?", "How?", "Which?"];
  const params = (text: string, i: number) => ({ model: "tuned", messages: withImage(text, i % 2 === 0 ? image : imageB), max_tokens: 10, temperature: 0 });
  const imageB = await xrayDataUrl(7, 64);
  const alone: string[] = [];
  for (const [i, p] of prompts.entries()) alone.push((await client.chat.completions.create(params(p, i))).choices[0]!.message.content!);
  const batchesBefore = server.engine.stats.batches;
  const together = await Promise.all(prompts.map((p, i) => client.chat.completions.create(params(p, i))));
  assert.deepEqual(together.map((r) => r.choices[0]!.message.content), alone);
  assert.ok(server.engine.stats.batches - batchesBefore < prompts.length, "concurrent requests shared batches");
  assert.ok(server.engine.stats.largestBatch > 1);
});

test("sampling: a seed gives the same text again; temperature 0 is greedy", async () => {
  const params = { model: "tuned", messages: [{ role: "user" as const, content: "Tell me something" }], max_tokens: 16, temperature: 1.5, seed: 42 };
  const a = await client.chat.completions.create(params);
  const b = await client.chat.completions.create(params);
  assert.equal(a.choices[0]!.message.content, b.choices[0]!.message.content);
  const other = await client.chat.completions.create({ ...params, seed: 43 });
  assert.notEqual(other.choices[0]!.message.content, a.choices[0]!.message.content);
  const greedy1 = await client.chat.completions.create({ ...params, temperature: 0, seed: 1 });
  const greedy2 = await client.chat.completions.create({ ...params, temperature: 0, seed: 2 });
  assert.equal(greedy1.choices[0]!.message.content, greedy2.choices[0]!.message.content);
});

test("stop strings cut the text before them, plain and streamed", async () => {
  const params = { model: "tuned", messages: withImage("Answer", image), max_tokens: 40, temperature: 0 };
  const full = (await client.chat.completions.create(params)).choices[0]!.message.content!;
  assert.ok(full.length >= 6, `enough text to cut: ${JSON.stringify(full)}`);
  const stop = full.slice(3, 5);
  const expected = full.slice(0, full.indexOf(stop));
  const cut = await client.chat.completions.create({ ...params, stop: [stop] });
  assert.equal(cut.choices[0]!.message.content, expected);
  assert.equal(cut.choices[0]!.finish_reason, "stop");
  const stream = await streamed({ ...params, stop });
  assert.equal(stream.text, expected);
  assert.equal(stream.finish, "stop");
});

test("stream_options.include_usage sends a usage chunk", async () => {
  const stream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 4, stream: true, stream_options: { include_usage: true } });
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const chunk of stream) usage = chunk.usage ?? usage;
  assert.equal(usage?.completion_tokens, 4);
  // The extension the serve bench reads: the server's own time to the first token.
  const ttft = (usage as { time_to_first_token_ms?: number } | undefined)?.time_to_first_token_ms;
  assert.ok(typeof ttft === "number" && ttft > 0, `time_to_first_token_ms ${ttft}`);
});

test("ignore_eos generates exactly max_tokens, past the end-of-sequence the same seed stops at", async () => {
  // Found by trying seeds: this one samples EOS after 33 tokens on the tiny model.
  const params = { model: "tuned", messages: [{ role: "user" as const, content: "Answer" }], max_tokens: 200, temperature: 1, seed: 3 };
  const stops = await client.chat.completions.create(params);
  assert.equal(stops.choices[0]!.finish_reason, "stop");
  assert.ok(stops.usage!.completion_tokens < 200);
  const goesOn = await client.chat.completions.create({ ...params, ignore_eos: true } as ChatCompletionCreateParamsNonStreaming);
  assert.equal(goesOn.usage?.completion_tokens, 200);
  assert.equal(goesOn.choices[0]!.finish_reason, "length");
  assert.ok(goesOn.choices[0]!.message.content!.startsWith(stops.choices[0]!.message.content!));
});

test("bad requests get 4xx in OpenAI's error shape, and the server keeps serving", async () => {
  const expect4xx = async (status: number, body: unknown, param?: RegExp) => {
    try {
      await client.chat.completions.create(body as ChatCompletionCreateParamsNonStreaming);
      assert.fail(`expected HTTP ${status} for ${JSON.stringify(body).slice(0, 80)}`);
    } catch (error) {
      assert.ok(error instanceof OpenAI.APIError, String(error));
      assert.equal(error.status, status, error.message);
      assert.equal(typeof error.message, "string");
      if (param) assert.match(String(error.param), param);
    }
  };
  await expect4xx(400, { model: "tuned", messages: [] }, /messages/);
  await expect4xx(400, { model: "tuned", messages: [{ role: "robot", content: "x" }] }, /role/);
  await expect4xx(400, { model: "tuned", messages: [{ role: "user", content: "x" }], max_tokens: 0 }, /max_tokens/);
  await expect4xx(400, { model: "tuned", messages: [{ role: "user", content: "x" }], max_tokens: 100000 }, /max_tokens/);
  await expect4xx(400, { model: "tuned", messages: [{ role: "user", content: "x" }], temperature: 7 }, /temperature/);
  await expect4xx(400, { model: "tuned", messages: [{ role: "user", content: "x" }], n: 2 }, /^n$/);
  await expect4xx(400, { model: "tuned", messages: withImage("x", "data:image/png;base64,notbase64!!") }, /image_url/);
  await expect4xx(400, { model: "tuned", messages: withImage("x", "data:image/png;base64,aGVsbG8=") }, /messages/); // "hello" is no PNG
  await expect4xx(400, { model: "tuned", messages: withImage("x", "https://example.com/x.png") }, /image_url/);
  await expect4xx(400, { model: "tuned", messages: [{ role: "user", content: "[IMG] with no image" }] }, /messages/);
  await expect4xx(404, { model: "gpt-9", messages: [{ role: "user", content: "x" }] }, /model/);

  const raw = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: "{not json" });
  assert.equal(raw.status, 400);
  const err = (await raw.json()) as { error: { type: string; message: string } };
  assert.equal(err.error.type, "invalid_request_error");
  assert.doesNotMatch(err.error.message, /at .*\.ts:\d+/, "no stack trace");
  const missing = await fetch(`${server.url}/v1/nothing`);
  assert.equal(missing.status, 404);
  assert.equal(((await missing.json()) as { error: { type: string } }).error.type, "not_found_error");

  const ok = await client.chat.completions.create({ model: "tuned", messages: [{ role: "user", content: "still there?" }], max_tokens: 2 });
  assert.equal(ok.choices.length, 1);
  assert.deepEqual(server.logs, [], "no internal errors were logged");
});

test("32 concurrent requests, plain and streamed, all succeed", async () => {
  const results = await Promise.all(
    Array.from({ length: 32 }, (_, i) => {
      const params = { model: i % 3 === 0 ? "tiny" : "tuned", messages: withImage(`request ${i}`, image), max_tokens: 6, temperature: 0 };
      return i % 2 === 0 ? client.chat.completions.create(params).then((r) => r.choices[0]!.message.content!) : streamed(params).then((s) => s.text);
    }),
  );
  assert.equal(results.length, 32);
  for (const text of results) assert.equal(typeof text, "string");
  assert.equal((await (await fetch(`${server.url}/health`)).json() as { status: string }).status, "ok");
});

test("POST /v1/classify returns per-class probabilities that sum to one, as predict scores them", async () => {
  const response = await fetch(`${server.url}/v1/classify`, { method: "POST", body: JSON.stringify({ model: "tuned", image }) });
  assert.equal(response.status, 200);
  const body = (await response.json()) as { class: string; probabilities: Record<string, number>; temperature: number; model: string };
  assert.equal(body.model, "tuned");
  const entries = Object.entries(body.probabilities);
  assert.equal(entries.length, 10);
  assert.ok(Math.abs(entries.reduce((s, [, p]) => s + p, 0) - 1) < 1e-9);
  const top = entries.reduce((a, b) => (b[1] > a[1] ? b : a));
  assert.equal(body.class, top[0]);
  // The same numbers `splint predict` gives for the same image file and adapter.
  const predicted = await withTempDir("splint-serve-classify-", async (dir) => {
    const file = path.join(dir, "x.png");
    await writeFile(file, Buffer.from(image.slice(image.indexOf(",") + 1), "base64"));
    return predictImages({ model: TINY_MODEL, adapter: TINY_ADAPTER, images: [file], mode: "score", maxNewTokens: 1, batchSize: 1, output: quietOutput });
  });
  for (const [name, p] of entries) assert.ok(Math.abs(p - predicted[0]!.probabilities![name]!) < 1e-9, `${name}: ${p} vs predict's ${predicted[0]!.probabilities![name]}`);

  const custom = await fetch(`${server.url}/v1/classify`, { method: "POST", body: JSON.stringify({ model: "tiny", image: { url: image }, classes: ["cat", "dog"] }) });
  const two = (await custom.json()) as { probabilities: Record<string, number> };
  assert.deepEqual(Object.keys(two.probabilities), ["cat", "dog"]);

  const bad = await fetch(`${server.url}/v1/classify`, { method: "POST", body: JSON.stringify({ image: "nope" }) });
  assert.equal(bad.status, 400);
  const dup = await fetch(`${server.url}/v1/classify`, { method: "POST", body: JSON.stringify({ image, classes: ["a", "a"] }) });
  assert.equal(dup.status, 400);
});

test("a client that goes away mid-stream stops its generation", async () => {
  const before = server.engine.stats;
  const controller = new AbortController();
  const started = performance.now();
  // 3000 tokens take the tiny model several seconds: long enough to see it stop early.
  const stream = await client.chat.completions.create({ model: "tuned", messages: [{ role: "user", content: "hi" }], max_tokens: 3000, stream: true }, { signal: controller.signal });
  let chunks = 0;
  // The client ends the iteration quietly once aborted (it swallows its own AbortError).
  for await (const _ of stream) {
    if (++chunks === 3) controller.abort();
  }
  assert.equal(chunks, 3, "no chunk arrived after the abort");
  // The engine notices at its next step; wait until it is idle again.
  while (server.engine.stats.running > 0 || server.engine.stats.queued > 0) await new Promise((r) => setTimeout(r, 5));
  const seconds = (performance.now() - started) / 1000;
  const now = server.engine.stats;
  assert.equal(now.completed, before.completed, "the request did not run to its end");
  assert.equal(now.failed, before.failed + 1);
  assert.ok(seconds < 3, `stopped early (${seconds.toFixed(2)} s)`);
});

test("a client that goes away before a plain (non-streamed) answer stops its generation too", async () => {
  const before = server.engine.stats;
  const controller = new AbortController();
  const started = performance.now();
  const request = fetch(`${server.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "tuned", messages: [{ role: "user", content: "hi" }], max_tokens: 3000 }), signal: controller.signal });
  while (server.engine.stats.running === 0) await new Promise((r) => setTimeout(r, 5));
  controller.abort();
  await assert.rejects(request);
  while (server.engine.stats.running > 0 || server.engine.stats.queued > 0) await new Promise((r) => setTimeout(r, 5));
  assert.equal(server.engine.stats.completed, before.completed);
  assert.equal(server.engine.stats.failed, before.failed + 1);
  assert.ok((performance.now() - started) / 1000 < 3);
});
