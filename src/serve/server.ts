import { timingSafeEqual, randomUUID } from "node:crypto";
import type { AddressInfo } from "node:net";
import { serve, type ServerType } from "@hono/node-server";
import { Hono, type Context } from "hono";
import { bodyLimit } from "hono/body-limit";
import { streamSSE } from "hono/streaming";
import type { Engine } from "./engine.ts";
import { fetchImage, type ImageFetchOptions } from "./images.ts";
import {
  ApiError,
  parseChatRequest,
  parseClassifyRequest,
  type ChatCompletion,
  type ChatCompletionChunk,
  type Classification,
  type FinishReason,
  type ModelCard,
  type Usage,
} from "./openai-schema.ts";
import type { ServedModel } from "./models.ts";
import { listRuns, readRunMetrics } from "./runs.ts";
import { staticAsset } from "./ui.ts";

/**
 * The HTTP side of `splint serve` / `splint dashboard`, on hono: OpenAI's chat-completions and
 * models endpoints, the classify extension, health, the training dashboard's JSON, and the web
 * UI's static files. Every error leaves as OpenAI's error JSON with a 4xx/5xx status and the
 * server keeps serving; a stack trace never reaches a client.
 */
export interface ServerOptions {
  /** Absent: dashboard only (`splint dashboard`). */
  readonly engine?: Engine;
  /** The folder of training runs the dashboard shows; absent: no dashboard. */
  readonly runsDir?: string;
  /** When set, /v1/* and /api/* need `Authorization: Bearer KEY`. */
  readonly apiKey?: string;
  /** Largest request body (bytes). */
  readonly maxBodyBytes: number;
  /** How long a request may wait and run before it is answered 504. */
  readonly requestTimeoutMs: number;
  readonly allowRemoteImages: boolean;
  /** Where server-side problems are told (stderr in the CLI). */
  readonly log: (message: string) => void;
}

const created = () => Math.floor(Date.now() / 1000);

/** Thrown inside a handler when the client went away: there is nobody to answer. */
class ClientGone extends Error {}

export function createApp(opts: ServerOptions): Hono {
  const app = new Hono();
  const engine = opts.engine;
  const imageOptions = (signal: AbortSignal): ImageFetchOptions => ({ allowRemote: opts.allowRemoteImages, maxBytes: opts.maxBodyBytes, timeoutMs: Math.min(opts.requestTimeoutMs, 30_000), signal });

  app.onError((error, c) => {
    if (error instanceof ApiError) return c.json(error.body(), error.status);
    // Nobody reads this answer; 499 is what nginx logs for a client that closed first.
    if (error instanceof ClientGone) return new Response(null, { status: 499 });
    opts.log(`internal error on ${c.req.method} ${c.req.path}: ${error.message}`);
    return c.json(new ApiError(500, "internal server error (see the server's log)", "server_error").body(), 500);
  });
  app.notFound((c) => c.json(new ApiError(404, `no route ${c.req.method} ${c.req.path}`, "not_found_error").body(), 404));

  if (opts.apiKey) {
    const expected = Buffer.from(opts.apiKey);
    const guard = async (c: Context, next: () => Promise<void>) => {
      const given = Buffer.from(/^Bearer\s+(.+)$/i.exec(c.req.header("authorization") ?? "")?.[1]?.trim() ?? "");
      // Constant-time, so the key cannot be guessed a byte at a time from response times.
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        throw new ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)", "authentication_error", null, "invalid_api_key");
      }
      await next();
    };
    app.use("/v1/*", guard);
    app.use("/api/*", guard);
  }
  const limit = bodyLimit({
    maxSize: opts.maxBodyBytes,
    onError: (c) => c.json(new ApiError(413, `the request body is larger than this server's limit of ${(opts.maxBodyBytes / 2 ** 20).toFixed(1)} MiB`, "invalid_request_error", null, "request_too_large").body(), 413),
  });
  app.use("/v1/*", limit);

  app.get("/health", (c) =>
    c.json({
      status: "ok",
      models: engine ? engine.pool.served.map((m) => m.id) : [],
      backend: engine?.pool.backendName ?? null,
      ...(engine ? { engine: engine.stats } : {}),
      dashboard: opts.runsDir !== undefined,
    }),
  );

  app.get("/v1/models", (c) => {
    const data: ModelCard[] = (engine?.pool.served ?? []).map((m) => ({ id: m.id, object: "model", created: created(), owned_by: "splint", kind: m.kind, path: m.path }));
    return c.json({ object: "list", data });
  });

  /** What the web UI needs to draw itself. */
  app.get("/api/info", (c) =>
    c.json({
      models: (engine?.pool.served ?? []).map((m) => ({ id: m.id, kind: m.kind, temperature: m.temperature })),
      dashboard: opts.runsDir !== undefined,
      auth: opts.apiKey !== undefined,
    }),
  );

  const needEngine = (): Engine => {
    if (!engine) throw new ApiError(404, "this server has no model loaded (splint dashboard); start splint serve --model DIR", "not_found_error", "model", "model_not_found");
    return engine;
  };
  const findModel = (e: Engine, id: string | undefined): ServedModel => {
    const model = e.pool.find(id);
    if (!model) throw new ApiError(404, `the model ${JSON.stringify(id)} does not exist; GET /v1/models lists this server's`, "invalid_request_error", "model", "model_not_found");
    return model;
  };
  /** The request's signal: the client going away, or its deadline. */
  const requestSignal = (c: Context) => {
    const timeout = AbortSignal.timeout(opts.requestTimeoutMs);
    return { timeout, signal: AbortSignal.any([c.req.raw.signal, timeout]) };
  };
  const failure = (error: unknown, timeout: AbortSignal, client: AbortSignal): unknown => {
    if (timeout.aborted) return new ApiError(504, `the request did not finish within ${opts.requestTimeoutMs / 1000} s`, "timeout_error", null, "timeout");
    if (client.aborted) return new ClientGone();
    return error;
  };

  app.post("/v1/chat/completions", async (c) => {
    const e = needEngine();
    const request = parseChatRequest(await jsonBody(c));
    const model = findModel(e, request.model);
    const arrived = performance.now();
    let firstTokenMs: number | undefined;
    const onFirstToken = () => {
      firstTokenMs = performance.now() - arrived;
    };
    const { timeout, signal } = requestSignal(c);
    const urls = request.messages.flatMap((m, i) => m.parts.flatMap((p, j) => (p.type === "image_url" ? [{ url: p.url, param: `messages[${i}].content[${j}].image_url` }] : [])));
    const id = `chatcmpl-${randomUUID()}`;
    const work = {
      model,
      messages: request.messages,
      maxTokens: request.maxTokens,
      temperature: request.temperature,
      topP: request.topP,
      topK: request.topK,
      seed: request.seed,
      stop: request.stop,
      ignoreEos: request.ignoreEos,
      signal,
      onFirstToken,
    };
    let images: Uint8Array[];
    try {
      images = await Promise.all(urls.map((u) => fetchImage(u.url, u.param, imageOptions(signal))));
    } catch (error) {
      throw failure(error, timeout, c.req.raw.signal);
    }

    if (!request.stream) {
      let outcome;
      try {
        outcome = await e.chat({ ...work, images });
      } catch (error) {
        throw failure(error, timeout, c.req.raw.signal);
      }
      const body: ChatCompletion = {
        id,
        object: "chat.completion",
        created: created(),
        model: model.id,
        choices: [{ index: 0, message: { role: "assistant", content: outcome.text }, finish_reason: outcome.finishReason, logprobs: null }],
        usage: usage(outcome.promptTokens, outcome.completionTokens, firstTokenMs),
      };
      return c.json(body);
    }

    // Streaming: the status line goes out with the first event, so a request that is refused
    // (400, 429) is refused before the stream starts, once the engine has queued it or not.
    const chunk = (delta: ChatCompletionChunk["choices"][0]["delta"], finish: FinishReason | null, u?: Usage): ChatCompletionChunk => ({
      id,
      object: "chat.completion.chunk",
      created: created(),
      model: model.id,
      choices: u ? [] : [{ index: 0, delta, finish_reason: finish, logprobs: null }],
      ...(u ? { usage: u } : {}),
    });
    const pending: string[] = [];
    let push: ((data: string) => void) | null = null;
    const send = (data: string) => (push ? push(data) : pending.push(data));
    let onQueued!: () => void;
    const queued = new Promise<void>((resolve) => (onQueued = resolve));
    const done = e.chat({ ...work, images, onQueued, onText: (text) => send(JSON.stringify(chunk({ content: text }, null))) });
    try {
      await Promise.race([queued, done]);
    } catch (error) {
      throw failure(error, timeout, c.req.raw.signal);
    }
    return streamSSE(c, async (stream) => {
      let chain = Promise.resolve();
      push = (data) => {
        chain = chain.then(() => stream.writeSSE({ data })).catch(() => undefined);
      };
      push(JSON.stringify(chunk({ role: "assistant", content: "" }, null)));
      for (const data of pending.splice(0)) push(data);
      try {
        const outcome = await done;
        push(JSON.stringify(chunk({}, outcome.finishReason)));
        if (request.includeUsage) push(JSON.stringify(chunk({}, null, usage(outcome.promptTokens, outcome.completionTokens, firstTokenMs))));
        push("[DONE]");
      } catch (error) {
        const reason = failure(error, timeout, c.req.raw.signal);
        if (reason instanceof ClientGone) return;
        const api = reason instanceof ApiError ? reason : new ApiError(500, "internal server error (see the server's log)", "server_error");
        if (!(reason instanceof ApiError)) opts.log(`internal error while streaming: ${(reason as Error).message}`);
        // Mid-stream the status is already 200: the error travels as an event, as OpenAI's does.
        push(JSON.stringify(api.body()));
      }
      await chain;
    });
  });

  app.post("/v1/classify", async (c) => {
    const e = needEngine();
    const request = parseClassifyRequest(await jsonBody(c));
    const model = findModel(e, request.model);
    const { timeout, signal } = requestSignal(c);
    let outcome;
    try {
      const image = await fetchImage(request.image, "image", imageOptions(signal));
      outcome = await e.classify({ model, image, classes: request.classes, signal });
    } catch (error) {
      throw failure(error, timeout, c.req.raw.signal);
    }
    const body: Classification = {
      id: `classify-${randomUUID()}`,
      object: "classification",
      created: created(),
      model: model.id,
      class: outcome.className,
      probabilities: outcome.probabilities,
      temperature: outcome.temperature,
    };
    return c.json(body);
  });

  app.get("/api/runs", async (c) => {
    if (opts.runsDir === undefined) throw new ApiError(404, "no runs folder: start with --runs DIR", "not_found_error");
    return c.json({ root: opts.runsDir, runs: await listRuns(opts.runsDir) });
  });
  app.get("/api/runs/metrics", async (c) => {
    if (opts.runsDir === undefined) throw new ApiError(404, "no runs folder: start with --runs DIR", "not_found_error");
    const id = c.req.query("id");
    if (!id) throw new ApiError(400, "give the run as ?id=RUN (GET /api/runs lists them)", "invalid_request_error", "id");
    const metrics = await readRunMetrics(opts.runsDir, id);
    if (!metrics) throw new ApiError(404, `no run ${JSON.stringify(id)} with a metrics log under the runs folder`, "not_found_error", "id");
    return c.json(metrics);
  });

  app.get("*", async (c) => {
    // A dashboard-only server has no classifier page: its front page is the dashboard.
    if (c.req.path === "/" && !engine && opts.runsDir !== undefined) return c.redirect("/dashboard");
    const asset = await staticAsset(c.req.path);
    if (!asset) return c.json(new ApiError(404, `no route GET ${c.req.path}`, "not_found_error").body(), 404);
    return c.body(asset.body, 200, { "content-type": asset.type, "cache-control": "no-cache" });
  });
  return app;
}

function usage(prompt: number, completion: number, firstTokenMs?: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, ...(firstTokenMs === undefined ? {} : { time_to_first_token_ms: firstTokenMs }) };
}

async function jsonBody(c: Context): Promise<unknown> {
  const text = await c.req.text();
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new ApiError(400, `the request body is not valid JSON (${(error as Error).message})`, "invalid_request_error", "body");
  }
}

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Listens on host:port (port 0: any free one) and resolves once it accepts connections. */
export function listen(app: Hono, host: string, port: number): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    let server: ServerType;
    const onError = (error: Error) => reject(error);
    server = serve({ fetch: app.fetch, hostname: host, port }, (info: AddressInfo) => {
      server.off("error", onError);
      const shown = info.family === "IPv6" ? `[${info.address}]` : info.address;
      resolve({
        url: `http://${shown}:${info.port}`,
        port: info.port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            // Streams still open (a client that never reads) must not keep the process alive.
            if ("closeAllConnections" in server) server.closeAllConnections();
          }),
      });
    });
    server.on("error", onError);
  });
}
