// Defect 6 and the network half of the fault suite: every read has a connect and an idle timeout,
// retries resume, a 416 never loops, and the final message names the problem with exit 69.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { downloadKaggleDataset, type KaggleCredentials } from "../../src/data/kaggle.ts";
import { downloadBlob } from "../../src/hub/download.ts";
import { pushAdapterToHub } from "../../src/hub/upload.ts";
import { EXIT, NetworkError, SplintError } from "../../src/util/errors.ts";
import { timedFetch, TimeoutError } from "../../src/util/net.ts";
import { runSplintAsync } from "./helpers/cli.ts";
import { faultServer, neverAnswer, resetAfter, shortBody, stallAfter, status } from "./helpers/http.ts";
import { withTempDir } from "../helpers/temp-dir.ts";

const credentials: KaggleCredentials = { authorization: "Bearer kgat_test", source: "test" };
const ref = { owner: "someone", slug: "bones" };
const fast = { connectMs: 300, idleMs: 300 };
const body = Buffer.from("0123456789".repeat(1000));

test("timedFetch: a server that never answers fails with a connect timeout, not a hang", async () => {
  const server = await faultServer(neverAnswer);
  try {
    const started = performance.now();
    await assert.rejects(timedFetch(server.url, { timeouts: fast }), (e) => e instanceof TimeoutError && e.phase === "connect");
    assert.ok(performance.now() - started < 3000);
  } finally {
    await server.close();
  }
});

test("timedFetch: a body that stalls mid-way fails with an idle timeout", async () => {
  const server = await faultServer(stallAfter(body, 100));
  try {
    const response = await timedFetch(server.url, { timeouts: fast });
    await assert.rejects(response.arrayBuffer(), (e) => e instanceof TimeoutError && e.phase === "idle");
  } finally {
    await server.close();
  }
});

test("Kaggle download over a stalled connection gives up after its attempts with a network error (exit 69), keeping the partial file", async () => {
  const server = await faultServer(stallAfter(body, 100));
  try {
    await withTempDir("splint-faults-net-", async (dir) => {
      const destination = join(dir, "bones.zip");
      await assert.rejects(
        downloadKaggleDataset(ref, { apiBase: server.url, credentials, destination, timeouts: fast, attempts: 3, retryDelayMs: 10 }),
        (e) => e instanceof NetworkError && e.exitCode === EXIT.network && /stalled/.test(e.message) && /3 attempts/.test(e.message),
      );
      assert.equal(server.requests.length, 3, "one request per attempt, then it stops");
      assert.ok(server.requests.slice(1).every((r) => r.range === "bytes=100-"), "each retry resumes where the last stopped");
      assert.equal((await readFile(`${destination}.part`)).length, 100, "the bytes received are kept for the next run");
      assert.ok(!existsSync(destination));
    });
  } finally {
    await server.close();
  }
});

test("Kaggle download: a server answering 416 to everything ends with a message instead of looping forever", async () => {
  const server = await faultServer(status(416));
  try {
    await withTempDir("splint-faults-net-", async (dir) => {
      const destination = join(dir, "bones.zip");
      // With a stale .part: one restart from zero, then the refusal is final.
      await writeFile(`${destination}.part`, "stale");
      await assert.rejects(downloadKaggleDataset(ref, { apiBase: server.url, credentials, destination, timeouts: fast, retryDelayMs: 10 }), (e) => e instanceof SplintError && /416/.test(e.message));
      assert.equal(server.requests.length, 2);
    });
  } finally {
    await server.close();
  }
});

test("Kaggle download: reset connections are resumed, 5xx is a network error, a short body is not taken for the archive", async () => {
  let calls = 0;
  // First answer cut after 3000 bytes, then proper 206 answers from the asked offset.
  const resuming = await faultServer((req, res, index) => {
    calls++;
    if (index === 0) return resetAfter(body, 3000)(req, res, index);
    const start = Number(/bytes=(\d+)-/.exec(req.headers.range ?? "")?.[1] ?? 0);
    res.writeHead(206, { "content-range": `bytes ${start}-${body.length - 1}/${body.length}`, "content-length": String(body.length - start) });
    res.end(body.subarray(start));
  });
  const failing = await faultServer(status(503));
  const short = await faultServer(shortBody(body.subarray(0, 500), body.length));
  try {
    await withTempDir("splint-faults-net-", async (dir) => {
      const ok = await downloadKaggleDataset(ref, { apiBase: resuming.url, credentials, destination: join(dir, "a.zip"), timeouts: fast, retryDelayMs: 10 });
      assert.ok(ok.resumed);
      assert.ok((await readFile(ok.file)).equals(body), "the resumed file is byte-identical");
      assert.ok(calls >= 2);
      await assert.rejects(downloadKaggleDataset(ref, { apiBase: failing.url, credentials, destination: join(dir, "b.zip"), timeouts: fast }), (e) => e instanceof NetworkError && /503/.test(e.message));
      await assert.rejects(
        downloadKaggleDataset(ref, { apiBase: short.url, credentials, destination: join(dir, "c.zip"), timeouts: fast, attempts: 2, retryDelayMs: 10 }),
        (e) => e instanceof SplintError && /(ended at 500|connection lost|terminated)/.test(e.message),
      );
      assert.ok(!existsSync(join(dir, "c.zip")), "a short download is never renamed into place");
    });
  } finally {
    await Promise.all([resuming.close(), failing.close(), short.close()]);
  }
});

test("Hub blob download over a stalled connection retries, then fails with exit 69 and keeps the .incomplete", async () => {
  const server = await faultServer(stallAfter(body, 200));
  try {
    await withTempDir("splint-faults-net-", async (dir) => {
      const dest = join(dir, "blobs", "abc");
      await assert.rejects(
        downloadBlob({ url: `${server.url}/file`, dest, what: "owner/repo/model.safetensors", expected: { size: body.length }, headers: {}, hasToken: false, retries: 2, retryDelayMs: 10, timeouts: fast }),
        (e) => e instanceof NetworkError && /3 attempts/.test(e.message) && /stalled/.test(e.message),
      );
      assert.equal(server.requests.length, 3);
      assert.equal((await readFile(`${dest}.incomplete`)).length, 200);
    });
  } finally {
    await server.close();
  }
});

test("Hub upload to a server that never answers times out and retries, then names the network problem", async () => {
  const server = await faultServer(neverAnswer);
  try {
    await withTempDir("splint-faults-net-", async (dir) => {
      await mkdir(join(dir, "adapter"));
      await writeFile(join(dir, "adapter", "adapter_config.json"), "{}");
      await assert.rejects(
        pushAdapterToHub("me/adapter", join(dir, "adapter"), { token: "hf_write", endpoint: server.url, timeouts: fast, attempts: 2, retryDelayMs: 10 }),
        (e) => e instanceof NetworkError && e.exitCode === EXIT.network && /upload/.test(e.message) && /no answer/.test(e.message),
      );
      assert.equal(server.requests.length, 2, "two attempts, then it stops");
    });
  } finally {
    await server.close();
  }
});

test("CLI: `model download` against a stalled Hub exits 69 with the reason (timeouts from SPLINT_*_TIMEOUT_S)", async () => {
  const server = await faultServer(neverAnswer);
  try {
    await withTempDir("splint-faults-net-", async (dir) => {
      const run = await runSplintAsync(["model", "download", "owner/model"], {
        env: { HF_ENDPOINT: server.url, HF_HUB_CACHE: join(dir, "cache"), HF_HOME: join(dir, "hf"), HF_TOKEN: "", SPLINT_CONNECT_TIMEOUT_S: "0.3", SPLINT_IDLE_TIMEOUT_S: "0.3" },
      });
      assert.equal(run.status, EXIT.network, run.stderr);
      assert.match(run.stderr, /no answer within 0\.3 s/);
      assert.doesNotMatch(run.stderr, /internal error|\n\s+at /);
    });
  } finally {
    await server.close();
  }
});
