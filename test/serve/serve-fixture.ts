import path from "node:path";
import { synthesizeImagePng } from "../../src/data/synth.ts";
import { Engine, type EngineOptions } from "../../src/serve/engine.ts";
import { ModelPool } from "../../src/serve/models.ts";
import { createApp, listen, type RunningServer, type ServerOptions } from "../../src/serve/server.ts";
import { silentProgress, type Output } from "../../src/util/output.ts";
import { REPO_ROOT } from "../helpers/cli.ts";

export const TINY_MODEL = path.join(REPO_ROOT, "test/fixtures/models/tiny");
export const TINY_ADAPTER = path.join(REPO_ROOT, "test/fixtures/lora/tiny/adapter");

/** Model loading logs go nowhere: the tests read responses, not the server's words. */
export const quietOutput: Output = { json: false, log() {}, result() {}, progress: () => silentProgress };

export interface TestServer extends RunningServer {
  readonly engine: Engine;
  readonly logs: string[];
}

/** The tiny fixture model (plus its adapter as "tuned") behind a server on 127.0.0.1, any free port. */
export async function startTestServer(engineOptions: Partial<EngineOptions> = {}, serverOptions: Partial<ServerOptions> = {}): Promise<TestServer> {
  const pool = await ModelPool.open({ modelDir: TINY_MODEL, baseId: "tiny", adapters: [{ id: "tuned", dir: TINY_ADAPTER }], backend: "cpu", output: quietOutput });
  const engine = new Engine(pool, {
    maxBatch: 8,
    maxQueue: 64,
    batchWaitMs: 2,
    maxTokensLimit: 64,
    maxPromptTokens: 4096,
    chatTemplate: "model",
    ...engineOptions,
  });
  await engine.warm();
  const logs: string[] = [];
  const app = createApp({ engine, maxBodyBytes: 4 << 20, requestTimeoutMs: 60_000, allowRemoteImages: false, log: (m) => logs.push(m), ...serverOptions });
  const server = await listen(app, "127.0.0.1", 0);
  return {
    ...server,
    engine,
    logs,
    close: async () => {
      engine.close();
      await server.close();
    },
  };
}

/** A synthetic X-ray as a data: URL, as a client would send a file. */
export async function xrayDataUrl(index = 0, size = 40): Promise<string> {
  const png = await synthesizeImagePng({ seed: 3, size }, index % 10, "Test", index);
  return `data:image/png;base64,${Buffer.from(png).toString("base64")}`;
}
