/**
 * `splint serve` throughput and latency (issue 16): streamed chat completions with one X-ray each,
 * sent by --concurrency clients at a time, through the real HTTP server (hono, SSE) and engine
 * (queue, batching). For each concurrency level: requests/s, generated tokens/s, and p50/p95 of
 * the time to the first token (measured by the server, reported in usage), to the first streamed
 * text (measured here) and of the whole request.
 *
 *   node --import tsx bench/serve-throughput.ts                                  CPU smoke run: the tiny fixture model
 *   node --import tsx bench/serve-throughput.ts --model DIR [--adapter DIR]      a real checkpoint (CUDA when present)
 *   node --import tsx bench/serve-throughput.ts --size 3b --backend cuda         random bf16 weights of the 3B architecture
 *   node --import tsx bench/serve-throughput.ts --url http://127.0.0.1:8000      a server already running (any model)
 *
 * Every request asks for exactly --max-tokens tokens (ignore_eos, vLLM's extension), greedy, so
 * random weights do the same work as a trained model. With --size, the model has the size's
 * architecture (random weights, the tutorial's LoRA attached unmerged) and the tiny tokenizer
 * (assets/tiny-tokenizer): ids past its 1,500 are never generated, which leaves the compute of the
 * head unchanged. The clients run in the same process as the server unless --url is given; they
 * only parse SSE, which is small next to a forward pass. One warm-up request first.
 * Prints one JSON line per concurrency level (appended to --out).
 */
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createGraph } from "../src/autograd/tape.ts";
import { detectBackend, type BackendPreference } from "../src/backends/cuda/detect.ts";
import { synthesizeImagePng } from "../src/data/synth.ts";
import { initAdapter } from "../src/lora/adapter.ts";
import { parseMistral3Config } from "../src/models/mistral3/config.ts";
import { buildMistral3 } from "../src/models/mistral3/model.ts";
import { Engine } from "../src/serve/engine.ts";
import { ModelPool } from "../src/serve/models.ts";
import { createApp, listen } from "../src/serve/server.ts";
import { parseMatmulPrecision } from "../src/cli/matmul-flag.ts";
import { silentProgress, type Output } from "../src/util/output.ts";
import { Rng } from "../src/util/rng.ts";
import { hfConfig, LORA, randomWeights, SIZES, type Size } from "./workload.ts";

const REPO = join(import.meta.dirname, "..");
const log = (msg: string) => process.stderr.write(`[serve-throughput] ${msg}\n`);
const quiet: Output = { json: false, log, result() {}, progress: () => silentProgress };

interface Sample {
  /** Client-side: to the first streamed text (null when every token decoded to nothing, as random weights' special tokens do). */
  firstTextMs: number | null;
  /** Server-side (usage.time_to_first_token_ms): from the request's arrival to its first token. */
  firstTokenMs: number | null;
  totalMs: number;
  tokens: number;
}

function percentile(xs: readonly number[], q: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}

/** One streamed request: times to the first text and to [DONE], and the tokens usage reports. */
async function oneRequest(url: string, body: unknown, apiKey: string | undefined): Promise<Sample> {
  const started = performance.now();
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
    body: JSON.stringify(body),
  });
  if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  let firstTextMs: number | null = null;
  let firstTokenMs: number | null = null;
  let tokens = 0;
  let buffer = "";
  const decoder = new TextDecoder();
  for await (const bytes of response.body) {
    buffer += decoder.decode(bytes, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, cut).replace(/^data: ?/, "");
      buffer = buffer.slice(cut + 2);
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data) as { error?: { message: string }; choices: { delta: { content?: string } }[]; usage?: { completion_tokens: number; time_to_first_token_ms?: number } };
      if (chunk.error) throw new Error(chunk.error.message);
      if (firstTextMs === null && chunk.choices[0]?.delta.content) firstTextMs = performance.now() - started;
      if (chunk.usage) {
        tokens = chunk.usage.completion_tokens;
        firstTokenMs = chunk.usage.time_to_first_token_ms ?? null;
      }
    }
  }
  return { firstTextMs, firstTokenMs, totalMs: performance.now() - started, tokens };
}

/** A model folder for --size: the size's config.json, the tiny tokenizer, a processor for --image-size. */
async function sizeFolder(size: Size, imageSize: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `splint-serve-bench-${size}-`));
  await writeFile(join(dir, "config.json"), JSON.stringify(hfConfig(size)));
  for (const f of ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]) await copyFile(join(REPO, "assets/tiny-tokenizer", f), join(dir, f));
  await writeFile(join(dir, "generation_config.json"), JSON.stringify({ bos_token_id: 1, eos_token_id: 2, pad_token_id: 11 }));
  const processor = {
    image_processor: { do_convert_rgb: true, do_normalize: true, do_rescale: true, do_resize: true, image_mean: [0.48145466, 0.4578275, 0.40821073], image_std: [0.26862954, 0.26130258, 0.27577711], patch_size: { height: 14, width: 14 }, resample: 3, rescale_factor: 1 / 255, size: { longest_edge: imageSize } },
    image_token: "[IMG]",
    image_break_token: "[IMG_BREAK]",
    image_end_token: "[IMG_END]",
    patch_size: 14,
    spatial_merge_size: 2,
  };
  await writeFile(join(dir, "processor_config.json"), JSON.stringify(processor));
  return dir;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: "string" },
      adapter: { type: "string" },
      size: { type: "string" },
      url: { type: "string" },
      "api-key": { type: "string" },
      backend: { type: "string", default: "auto" },
      matmul: { type: "string", default: "f32" },
      concurrency: { type: "string", default: "1,8,32" },
      requests: { type: "string" },
      "max-tokens": { type: "string", default: "16" },
      "image-size": { type: "string", default: "56" },
      "max-batch": { type: "string", default: "32" },
      out: { type: "string" },
    },
  });
  const levels = values.concurrency.split(",").map(Number);
  if (levels.some((c) => !Number.isInteger(c) || c < 1)) throw new Error("--concurrency takes positive integers, comma-separated");
  const maxTokens = Number(values["max-tokens"]);
  const imageSize = Number(values["image-size"]);
  const maxBatch = Number(values["max-batch"]);

  let url = values.url;
  let close = async () => undefined as void;
  let engine: Engine | undefined;
  let described = url ?? "";
  if (!url) {
    let pool: ModelPool;
    let cleanup: string | null = null;
    if (values.size !== undefined) {
      const size = values.size as Size;
      if (!SIZES.includes(size)) throw new Error(`--size must be one of ${SIZES.join(", ")}`);
      const dir = await sizeFolder(size, imageSize);
      cleanup = dir;
      const { backend, reason } = detectBackend({ prefer: values.backend as BackendPreference });
      log(reason);
      const raw = hfConfig(size);
      const config = parseMistral3Config(raw, `${size} config`);
      const tied = raw.tie_word_embeddings === true;
      log(`random ${size} weights on ${backend.name}…`);
      const model = buildMistral3(config, randomWeights(backend, config, tied, 1), tied, parseMatmulPrecision(values.matmul));
      // The fine-tuned model's shape of work: the tutorial's LoRA pairs on, unmerged. (The pool
      // never swaps them off: its only model is this base, active from the start.)
      initAdapter(LORA, model.linears, backend, new Rng(2));
      pool = await ModelPool.fromModel({ modelDir: dir, baseId: size, model, backendName: backend.name, newGraph: () => createGraph(backend, { recording: false }) });
      described = `${size} (random weights, LoRA r=${LORA.r}) on ${backend.name}`;
    } else {
      const modelDir = values.model ?? join(REPO, "test/fixtures/models/tiny");
      pool = await ModelPool.open({ modelDir, adapters: values.adapter ? [{ id: "adapter", dir: values.adapter }] : [], backend: values.backend as BackendPreference, matmulPrecision: parseMatmulPrecision(values.matmul), output: quiet });
      described = `${modelDir}${values.adapter ? ` + ${values.adapter}` : ""} on ${pool.backendName}`;
    }
    engine = new Engine(pool, { maxBatch, maxQueue: 4096, batchWaitMs: 2, maxTokensLimit: maxTokens, maxPromptTokens: 1 << 20, chatTemplate: "model" });
    const server = await listen(createApp({ engine, maxBodyBytes: 64 << 20, requestTimeoutMs: 3_600_000, allowRemoteImages: false, log }), "127.0.0.1", 0);
    url = server.url;
    close = async () => {
      engine!.close();
      await server.close();
      if (cleanup) await rm(cleanup, { recursive: true, force: true });
    };
  }
  const png = await synthesizeImagePng({ seed: 1, size: imageSize }, 3, "Test", 0);
  const image = `data:image/png;base64,${png.toString("base64")}`;
  const body = (i: number) => ({
    model: engine?.pool.served[engine.pool.served.length - 1]!.id,
    messages: [{ role: "user", content: [{ type: "text", text: `Classify this X-ray (${i}).` }, { type: "image_url", image_url: { url: image } }] }],
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
  });
  log(`${described}; warm-up`);
  await oneRequest(url, body(-1), values["api-key"]);

  for (const concurrency of levels) {
    const requests = values.requests ? Number(values.requests) : Math.max(16, 2 * concurrency);
    const samples: Sample[] = [];
    let next = 0;
    const before = engine?.stats;
    const started = performance.now();
    // `concurrency` clients, each sending its next request as soon as its last one finished.
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < requests) samples.push(await oneRequest(url!, body(next++), values["api-key"]));
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const tokens = samples.reduce((n, s) => n + s.tokens, 0);
    const first = samples.flatMap((s) => (s.firstTextMs === null ? [] : [s.firstTextMs]));
    const firstToken = samples.flatMap((s) => (s.firstTokenMs === null ? [] : [s.firstTokenMs]));
    const total = samples.map((s) => s.totalMs);
    const result = {
      bench: "serve-throughput",
      model: described,
      concurrency,
      requests,
      maxTokens,
      imageSize,
      maxBatch,
      seconds,
      requestsPerSecond: requests / seconds,
      tokensPerSecond: tokens / seconds,
      firstTokenMs: { p50: percentile(firstToken, 0.5), p95: percentile(firstToken, 0.95) },
      firstTextMs: { p50: percentile(first, 0.5), p95: percentile(first, 0.95) },
      latencyMs: { p50: percentile(total, 0.5), p95: percentile(total, 0.95) },
      ...(engine && before ? { batches: engine.stats.batches - before.batches, largestBatch: engine.stats.largestBatch } : {}),
    };
    const line = JSON.stringify(result);
    process.stdout.write(`${line}\n`);
    if (values.out) await writeFile(values.out, `${line}\n`, { flag: "a" });
    log(`c=${concurrency}: ${result.requestsPerSecond.toFixed(2)} req/s, ${result.tokensPerSecond.toFixed(1)} tok/s, first token p50 ${result.firstTokenMs.p50?.toFixed(0)} ms p95 ${result.firstTokenMs.p95?.toFixed(0)} ms, latency p50 ${result.latencyMs.p50?.toFixed(0)} ms p95 ${result.latencyMs.p95?.toFixed(0)} ms`);
  }
  await close();
}

await main();
