import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import OpenAI from "openai";
import { REPO_ROOT, runSplint } from "../helpers/cli.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { TINY_ADAPTER, TINY_MODEL } from "./serve-fixture.ts";

/** `splint serve` as a user starts it: a process that says where it listens and stops on SIGTERM. */
async function startServe(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ url: string; stop: () => Promise<number | null>; stderr: () => string }> {
  const child = spawn(process.execPath, [join(REPO_ROOT, "bin/splint.js"), ...args], { env: { ...process.env, SPLINT_NO_PROGRESS: "1", ...env }, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  const exited = new Promise<number | null>((done) => child.on("exit", done));
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      stderr += chunk;
      const m = /listening on (http:\/\/\S+)/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`splint exited (${code}) before listening:\n${stderr}`)));
  });
  return {
    url,
    stderr: () => stderr,
    stop: () => {
      child.kill("SIGTERM");
      return exited;
    },
  };
}

test("splint serve listens on 127.0.0.1, serves the base and named adapter, takes the key from the environment, and stops on SIGTERM", async () => {
  await withTempDir("splint-serve-cli-", async (runs) => {
    const server = await startServe(["serve", "--model", TINY_MODEL, "--adapter", `tuned=${TINY_ADAPTER}`, "--port", "0", "--runs", runs], { SPLINT_API_KEY: "k" });
    try {
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "k", maxRetries: 0 });
      assert.deepEqual((await client.models.list()).data.map((m) => m.id), ["tiny", "tuned"]);
      const reply = await client.chat.completions.create({ model: "tuned", messages: [{ role: "user", content: "hi" }], max_tokens: 3 });
      assert.equal(reply.usage?.completion_tokens, 3);
      assert.equal((await fetch(`${server.url}/v1/models`)).status, 401, "the key from SPLINT_API_KEY is required");
      assert.equal((await fetch(`${server.url}/dashboard`)).status, 200);
    } finally {
      assert.equal(await server.stop(), 0, server.stderr());
    }
  });
});

test("splint serve and dashboard name bad flags without a stack trace", () => {
  const port = runSplint(["serve", "--model", TINY_MODEL, "--port", "http"]);
  assert.equal(port.status, 2);
  assert.match(port.stderr, /--port: "http" is not a port number/);
  const adapter = runSplint(["serve", "--model", TINY_MODEL, "--adapter", join(REPO_ROOT, "nope"), "--port", "0"]);
  assert.notEqual(adapter.status, 0);
  assert.doesNotMatch(adapter.stderr, /\n\s+at /, "no stack trace");
  const runs = runSplint(["dashboard", "--runs", join(REPO_ROOT, "no-such-runs")]);
  assert.equal(runs.status, 2);
  assert.match(runs.stderr, /--runs: .* is not a folder/);
  const help = runSplint(["serve", "--help"]);
  assert.match(help.stdout, /Examples:\n {2}splint serve --model/);
});
