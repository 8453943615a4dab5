import { stat } from "node:fs/promises";
import type { Command } from "commander";
import { resolveClassNames } from "../../eval/predict.ts";
import { resolveModel } from "../../hub/snapshot.ts";
import { Engine } from "../../serve/engine.ts";
import { ModelPool, type AdapterSpec } from "../../serve/models.ts";
import { createApp, listen, type RunningServer } from "../../serve/server.ts";
import { InputError } from "../../util/errors.ts";
import { MATMUL_FLAG, MATMUL_FLAG_HELP, parseMatmulPrecision } from "../matmul-flag.ts";
import { createOutput } from "../output.ts";
import { positiveInteger } from "./eval.ts";

interface NetworkFlags {
  host: string;
  port: string;
  apiKey?: string;
}

interface ServeFlags extends NetworkFlags {
  model: string;
  adapter: string[];
  name?: string;
  runs?: string;
  classes?: string;
  dataset?: string;
  template?: string;
  chatTemplate: string;
  maxBatch: string;
  maxQueue: string;
  batchWaitMs: string;
  maxTokens: string;
  maxPromptTokens: string;
  timeout: string;
  maxBodyMb: string;
  allowRemoteImages?: boolean;
  maxImageEdge?: string;
  matmul: string;
}

interface DashboardFlags extends NetworkFlags {
  runs: string;
}

const SERVE_HELP = `
Speaks OpenAI's chat-completions API (POST /v1/chat/completions, GET /v1/models), so the openai
client libraries and curl work against it; POST /v1/classify returns the class and each class's
probability (the scoring of \`splint eval --mode score\`). GET /health reports the queue. The web
UI is at / (drop an X-ray, see the class and its probabilities; before/after with an adapter),
the training dashboard at /dashboard with --runs. Images come as data: URLs; http(s) URLs only
with --allow-remote-images. Binds to 127.0.0.1 unless --host says otherwise; --api-key (or
SPLINT_API_KEY) makes /v1 and /api ask for "Authorization: Bearer KEY".

Examples:
  splint serve --model runs/demo/model --adapter tuned=runs/demo/train/adapter
  splint serve --model M --adapter A --runs runs/ --port 8080
  curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "tuned", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20}'`;

const DASHBOARD_HELP = `
Lists every run under DIR (a folder holding train_log.jsonl or metrics.jsonl, up to four levels
down) and draws its loss, learning rate, gradient norm and any eval_* series, redrawn every
two seconds while the run trains. No model is loaded.

Examples:
  splint dashboard --runs runs/
  splint dashboard --runs runs/ --host 0.0.0.0 --api-key "$KEY"`;

/** The flags `serve` and `dashboard` share: where to listen, and the optional key. */
function networkOptions(command: Command): Command {
  return command
    .option("--host <host>", "address to bind (0.0.0.0: every interface; use an --api-key then)", "127.0.0.1")
    .option("--port <n>", "port to listen on (0: any free one)", "8000")
    .option("--api-key <key>", "require Authorization: Bearer KEY on /v1 and /api (default: $SPLINT_API_KEY, else none)");
}

/** `splint serve` and `splint dashboard`. */
export function registerServe(program: Command): void {
  networkOptions(
    program
      .command("serve")
      .description("Serve a model (and LoRA adapters) over an OpenAI-compatible API, with a web UI and a training dashboard")
      .requiredOption("--model <dir>", "model folder (Hugging Face layout) or Hub repo id")
      .option("--adapter <[name=]dir...>", "LoRA adapter folder(s) to serve on the base, each as a model id (default id: the folder as given)", [])
      .option("--name <id>", "the base model's id (default: its folder's name)"),
  )
    .option("--runs <dir>", "also show the training dashboard of the runs in this folder")
    .option("--classes <names>", "classify: comma-separated class names, in label order (default: the adapter's, else the tutorial's ten)")
    .option("--dataset <dir>", "classify: take the class names from this dataset")
    .option("--template <spec>", "classify: chat template: short, model or a Jinja file (default: the adapter's training_prompt.json, else short)")
    .option("--chat-template <spec>", "chat: chat template: model, short or a Jinja file", "model")
    .option("--max-batch <n>", "most requests decoded together", "8")
    .option("--max-queue <n>", "most requests waiting; more get 429", "64")
    .option("--batch-wait-ms <n>", "how long an idle engine waits to fill a batch", "5")
    .option("--max-tokens <n>", "the largest max_tokens a request may ask for (and the default)", "512")
    .option("--max-prompt-tokens <n>", "the longest prompt accepted, images included", "8192")
    .option("--timeout <s>", "seconds a request may wait and run before it gets 504", "120")
    .option("--max-body-mb <n>", "largest request body (and image) in MiB; more gets 413", "20")
    .option("--allow-remote-images", "fetch http(s) image URLs (off: only data: URLs)")
    .option("--max-image-edge <px>", "cap the longer image side (default: classify as the adapter was trained; chat: no cap)")
    .option(MATMUL_FLAG, MATMUL_FLAG_HELP, "f32")
    .addHelpText("after", SERVE_HELP)
    .action(async (flags: ServeFlags) => {
      const output = createOutput(false);
      const adapters: AdapterSpec[] = [];
      for (const spec of flags.adapter) {
        const eq = spec.indexOf("=");
        const id = eq > 0 ? spec.slice(0, eq) : spec;
        adapters.push({ id, dir: await resolveModel(eq > 0 ? spec.slice(eq + 1) : spec, { output }) });
      }
      const modelDir = await resolveModel(flags.model, { output });
      const classes = await resolveClassNames(flags.classes, flags.dataset);
      const runsDir = flags.runs === undefined ? undefined : await existingDir("--runs", flags.runs);
      const pool = await ModelPool.open({ modelDir, baseId: flags.name, adapters, matmulPrecision: parseMatmulPrecision(flags.matmul), output });
      const engine = new Engine(pool, {
        maxBatch: positiveInteger("--max-batch", flags.maxBatch),
        maxQueue: positiveInteger("--max-queue", flags.maxQueue),
        batchWaitMs: nonNegative("--batch-wait-ms", flags.batchWaitMs),
        maxTokensLimit: positiveInteger("--max-tokens", flags.maxTokens),
        maxPromptTokens: positiveInteger("--max-prompt-tokens", flags.maxPromptTokens),
        chatTemplate: flags.chatTemplate,
        classifyTemplate: flags.template,
        ...classes,
        maxImageEdge: flags.maxImageEdge === undefined ? undefined : positiveInteger("--max-image-edge", flags.maxImageEdge),
      });
      await engine.warm();
      const app = createApp({
        engine,
        runsDir,
        apiKey: apiKey(flags),
        maxBodyBytes: positiveNumber("--max-body-mb", flags.maxBodyMb) * 2 ** 20,
        requestTimeoutMs: positiveNumber("--timeout", flags.timeout) * 1000,
        allowRemoteImages: Boolean(flags.allowRemoteImages),
        log: output.log,
      });
      const server = await start(app, flags, output.log);
      output.log(`models: ${pool.served.map((m) => m.id).join(", ")}; UI ${server.url}/${runsDir ? `, dashboard ${server.url}/dashboard` : ""}; API ${server.url}/v1`);
      await untilSignal(server, () => engine.close(), output.log);
    });

  networkOptions(
    program
      .command("dashboard")
      .description("Watch training runs live: loss, learning rate, gradient norm and eval curves in the browser")
      .requiredOption("--runs <dir>", "folder of training runs (searched for train_log.jsonl / metrics.jsonl)"),
  )
    .addHelpText("after", DASHBOARD_HELP)
    .action(async (flags: DashboardFlags) => {
      const output = createOutput(false);
      const runsDir = await existingDir("--runs", flags.runs);
      const app = createApp({ runsDir, apiKey: apiKey(flags), maxBodyBytes: 1 << 20, requestTimeoutMs: 30_000, allowRemoteImages: false, log: output.log });
      const server = await start(app, flags, output.log);
      output.log(`dashboard of ${runsDir}: ${server.url}/dashboard`);
      await untilSignal(server, () => undefined, output.log);
    });
}

function apiKey(flags: NetworkFlags): string | undefined {
  const key = flags.apiKey ?? process.env.SPLINT_API_KEY;
  return key === undefined || key === "" ? undefined : key;
}

async function start(app: ReturnType<typeof createApp>, flags: NetworkFlags, log: (m: string) => void): Promise<RunningServer> {
  const port = Number(flags.port);
  if (flags.port.trim() === "" || !Number.isInteger(port) || port < 0 || port > 65535) throw new InputError("--port", `${JSON.stringify(flags.port)} is not a port number`);
  const loopback = flags.host === "127.0.0.1" || flags.host === "localhost" || flags.host === "::1";
  if (!loopback && !apiKey(flags)) log(`warning: listening on ${flags.host} without an API key: anyone who can reach this machine can use the server`);
  try {
    const server = await listen(app, flags.host, port);
    log(`listening on ${server.url}`);
    return server;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") throw new InputError("--port", `${port} is already in use on ${flags.host}`, "pick another with --port, or --port 0 for any free one");
    if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND") throw new InputError("--host", `cannot bind to ${flags.host} (${code})`);
    throw error;
  }
}

/** Serves until Ctrl-C or SIGTERM, then stops taking requests and closes. */
function untilSignal(server: RunningServer, stop: () => void, log: (m: string) => void): Promise<void> {
  return new Promise((resolve) => {
    const shutdown = (signal: string) => {
      log(`${signal}: shutting down`);
      stop();
      void server.close().then(resolve);
    };
    process.once("SIGINT", () => shutdown("SIGINT"));
    process.once("SIGTERM", () => shutdown("SIGTERM"));
  });
}

async function existingDir(flag: string, dir: string): Promise<string> {
  const s = await stat(dir).catch(() => undefined);
  if (!s?.isDirectory()) throw new InputError(flag, `${dir} is not a folder`);
  return dir;
}

function positiveNumber(flag: string, text: string): number {
  const v = Number(text);
  if (text.trim() === "" || !Number.isFinite(v) || v <= 0) throw new InputError(flag, `${JSON.stringify(text)} is not a positive number`);
  return v;
}

function nonNegative(flag: string, text: string): number {
  const v = Number(text);
  if (text.trim() === "" || !Number.isFinite(v) || v < 0) throw new InputError(flag, `${JSON.stringify(text)} is not a number ≥ 0`);
  return v;
}
