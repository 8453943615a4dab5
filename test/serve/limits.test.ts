import assert from "node:assert/strict";
import { test } from "node:test";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import OpenAI from "openai";
import { startTestServer, xrayDataUrl } from "./serve-fixture.ts";

/** The server's limits, each on a server configured to hit it: body size, queue bound, timeout, API key. */

const chat = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

test("a body over the size limit gets 413 in OpenAI's error shape", async () => {
  const server = await startTestServer({}, { maxBodyBytes: 64 << 10 });
  try {
    const big = await xrayDataUrl(1, 400);
    assert.ok(big.length > 64 << 10, `the image is ${big.length} bytes`);
    const response = await chat(server.url, { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: big } }] }] });
    assert.equal(response.status, 413);
    const body = (await response.json()) as { error: { code: string; type: string } };
    assert.equal(body.error.code, "request_too_large");
    assert.equal(body.error.type, "invalid_request_error");
    const small = await chat(server.url, { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: await xrayDataUrl(1) } }] }], max_tokens: 2 });
    assert.equal(small.status, 200);
  } finally {
    await server.close();
  }
});

test("a full queue answers 429 at once; the requests it took still succeed", async () => {
  // One request at a time, two waiting: of twelve sent together, at most three can be taken.
  const server = await startTestServer({ maxBatch: 1, maxQueue: 2, maxTokensLimit: 400 });
  try {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const outcomes = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        client.chat.completions.create({ model: "tuned", messages: [{ role: "user", content: `hi ${i}` }], max_tokens: 200 }).then(
          () => 200,
          (error: unknown) => (error instanceof OpenAI.APIError ? (error.status ?? -1) : -2),
        ),
      ),
    );
    const ok = outcomes.filter((s) => s === 200).length;
    const refused = outcomes.filter((s) => s === 429).length;
    assert.equal(ok + refused, 12, `only 200 and 429: ${outcomes.join(",")}`);
    assert.ok(refused >= 9, `${refused} refused`);
    assert.ok(ok >= 1);
    const after = await client.chat.completions.create({ model: "tuned", messages: [{ role: "user", content: "again" }], max_tokens: 2 });
    assert.equal(after.choices.length, 1, "the server serves again once the queue drained");
  } finally {
    await server.close();
  }
});

test("a request past its deadline gets 504, plain or mid-stream, and the engine moves on", async () => {
  // A 100 ms deadline against 3000 tokens (seconds on the tiny model) and a 150 ms batching wait.
  const server = await startTestServer({ maxTokensLimit: 3000 }, { requestTimeoutMs: 100 });
  try {
    const started = performance.now();
    const plain = await chat(server.url, { messages: [{ role: "user", content: "hi" }], max_tokens: 3000 });
    assert.equal(plain.status, 504);
    const body = (await plain.json()) as { error: { type: string; code: string } };
    assert.deepEqual([body.error.type, body.error.code], ["timeout_error", "timeout"]);
    assert.ok(performance.now() - started < 2000, "answered at the deadline, not after the generation");

    const streamed = await chat(server.url, { messages: [{ role: "user", content: "hi" }], max_tokens: 3000, stream: true });
    assert.equal(streamed.status, 200, "the stream had started when the deadline passed");
    const text = await streamed.text();
    assert.match(text, /"code":"timeout"/);
    while (server.engine.stats.running > 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(server.engine.stats.completed, 0);
  } finally {
    await server.close();
  }
  const queued = await startTestServer({ batchWaitMs: 500 }, { requestTimeoutMs: 100 });
  try {
    const response = await chat(queued.url, { messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    assert.equal(response.status, 504, "timed out while still waiting in the queue");
  } finally {
    await queued.close();
  }
});

test("with an API key, /v1 needs it; /health does not", async () => {
  const server = await startTestServer({}, { apiKey: "s3cret" });
  try {
    const none = await chat(server.url, { messages: [{ role: "user", content: "x" }], max_tokens: 1 });
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as { error: { type: string } }).error.type, "authentication_error");
    const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "s3cre7", maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError);
    const right = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "s3cret", maxRetries: 0 });
    assert.equal((await right.chat.completions.create({ model: "tuned", messages: [{ role: "user", content: "x" }], max_tokens: 1 })).choices.length, 1);
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
    assert.equal((await fetch(`${server.url}/api/info`)).status, 401);
  } finally {
    await server.close();
  }
});

test("http(s) image URLs are fetched only with allowRemoteImages, within the size limit", async () => {
  const png = Buffer.from((await xrayDataUrl(5)).split(",")[1]!, "base64");
  const big = Buffer.alloc(200 << 10, 7);
  const images = createServer((req, res) => {
    if (req.url === "/x.png") res.writeHead(200, { "content-type": "image/png" }).end(png);
    else if (req.url === "/big.png") res.writeHead(200, { "content-type": "image/png" }).end(big);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => images.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(images.address() as AddressInfo).port}`;
  const ask = (url: string) => chat(server.url, { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url } }] }], max_tokens: 2 });
  const server = await startTestServer({}, { allowRemoteImages: true, maxBodyBytes: 100 << 10 });
  const closed = await startTestServer();
  try {
    assert.equal((await ask(`${base}/x.png`)).status, 200);
    assert.equal((await ask(`${base}/missing.png`)).status, 400);
    assert.equal((await ask(`${base}/big.png`)).status, 413);
    const refused = await chat(closed.url, { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: `${base}/x.png` } }] }], max_tokens: 2 });
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, "remote_images_disabled");
  } finally {
    await server.close();
    await closed.close();
    images.close();
  }
});
