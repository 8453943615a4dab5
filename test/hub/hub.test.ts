import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { globToRegExp } from "../../src/hub/glob.ts";
import { hubSettings } from "../../src/hub/settings.ts";
import { downloadSnapshot, type DownloadOptions } from "../../src/hub/snapshot.ts";
import { resolveModel } from "../../src/hub/resolve.ts";
import { pushAdapterToHub } from "../../src/hub/upload.ts";
import { InputError, SplintError } from "../../src/util/errors.ts";
import { gitBlobId, MockHub, sha256 } from "./mock-hub.ts";

let hub: MockHub;
let root: string;
let n = 0;

before(async () => {
  hub = new MockHub();
  await hub.start();
  root = await mkdtemp(join(tmpdir(), "splint-hub-"));
});
after(async () => {
  await hub.stop();
  await rm(root, { recursive: true, force: true });
});

/** A fresh cache folder per test, settings independent of the developer's environment. */
function options(extra: Partial<DownloadOptions["settings"]> = {}, rest: Omit<DownloadOptions, "settings"> = {}): DownloadOptions & { cacheDir: string } {
  const cacheDir = join(root, `cache-${n++}`);
  return { ...rest, cacheDir, retryDelayMs: 1, settings: { endpoint: hub.endpoint, token: undefined, offline: false, cacheDir, ...extra } };
}

const shard1 = randomBytes(300_000);
const shard2 = randomBytes(70_000);
const config = Buffer.from(JSON.stringify({ model_type: "mistral3" }));

function addModel(id: string, readToken?: string): void {
  hub.addRepo(
    id,
    {
      "config.json": { content: config },
      "tokenizer.json": { content: '{"model":{}}' },
      "chat_template.jinja": { content: "{{ messages }}" },
      "model-00001-of-00002.safetensors": { content: shard1, lfs: true },
      "model-00002-of-00002.safetensors": { content: shard2, lfs: true },
      "model.safetensors.index.json": { content: "{}" },
      "consolidated.safetensors": { content: randomBytes(1000), lfs: true },
      "README.md": { content: "# card" },
      "sub/params.json": { content: "{}" },
    },
    readToken,
  );
}

describe("downloadSnapshot", () => {
  before(() => {
    addModel("acme/tiny");
    addModel("acme/private", "hf_read");
  });

  test("lays files out as Python's cache does and skips what the model does not need", async () => {
    const opts = options();
    const snap = await downloadSnapshot("acme/tiny", opts);
    const repo = hub.repos.get("acme/tiny")!;
    const repoDir = join(opts.cacheDir, "models--acme--tiny");
    assert.equal(snap.commit, repo.commit);
    assert.equal(snap.path, join(repoDir, "snapshots", repo.commit));
    assert.equal((await readFile(join(repoDir, "refs", "main"), "utf8")), repo.commit);
    assert.deepEqual(
      [...snap.files].sort(),
      ["chat_template.jinja", "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "sub/params.json", "tokenizer.json"],
    );
    // LFS blobs are named by sha256, git files by their blob id; snapshot entries are relative links.
    assert.equal(await readlink(join(snap.path, "model-00001-of-00002.safetensors")), join("..", "..", "blobs", sha256(shard1)));
    assert.equal(await readlink(join(snap.path, "config.json")), join("..", "..", "blobs", gitBlobId(config)));
    assert.equal(await readlink(join(snap.path, "sub", "params.json")), join("..", "..", "..", "blobs", gitBlobId(Buffer.from("{}"))));
    assert.ok((await lstat(join(snap.path, "config.json"))).isSymbolicLink());
    assert.deepEqual(await readFile(join(snap.path, "model-00001-of-00002.safetensors")), shard1);
    assert.deepEqual(await readFile(join(snap.path, "model-00002-of-00002.safetensors")), shard2);
    await assert.rejects(lstat(join(snap.path, "consolidated.safetensors")));
    await assert.rejects(lstat(join(snap.path, "README.md")));
    assert.ok(!(await readdir(join(repoDir, "blobs"))).some((f) => f.endsWith(".incomplete")));
    // index.json and sub/params.json hold the same bytes, hence one blob, downloaded once.
    assert.equal(snap.downloadedBytes, [config, shard1, shard2].reduce((s, b) => s + b.byteLength, 0) + '{"model":{}}'.length + "{{ messages }}".length + 2);

    // A second run finds everything in the cache and fetches no file.
    const before = hub.log.length;
    const again = await downloadSnapshot("acme/tiny", opts);
    assert.equal(again.path, snap.path);
    assert.equal(again.downloadedBytes, 0);
    // Two API answers (the revision's commit, then its file tree), and no file request at all.
    assert.deepEqual(hub.log.slice(before).map((r) => `${r.server} ${r.method} ${r.url.split("?")[0]}`), [
      "hub GET /api/models/acme/tiny/revision/main",
      `hub GET /api/models/acme/tiny/tree/${repo.commit}`,
    ]);
  });

  test("LFS bytes come from the storage host without the token", async () => {
    const opts = options({ token: "hf_read" });
    await downloadSnapshot("acme/private", opts);
    const cdn = hub.requests("cdn", "GET");
    assert.ok(cdn.length >= 2);
    assert.ok(cdn.every((r) => r.authorization === undefined));
    assert.ok(hub.requests("hub").filter((r) => r.url.includes("acme/private")).every((r) => r.authorization === "Bearer hf_read"));
  });

  test("a dropped connection is resumed with a Range request", async () => {
    const oid = sha256(shard1);
    hub.cutAfter.set(oid, 100_000);
    const start = hub.log.length;
    const snap = await downloadSnapshot("acme/tiny", options());
    const gets = hub.log.slice(start).filter((r) => r.server === "cdn" && r.url === `/lfs/${oid}`);
    assert.equal(gets.length, 2);
    assert.equal(gets[0]?.range, undefined);
    assert.match(gets[1]?.range ?? "", /^bytes=\d+-$/);
    assert.ok(Number(gets[1]?.range?.slice(6, -1)) > 0);
    assert.deepEqual(await readFile(join(snap.path, "model-00001-of-00002.safetensors")), shard1);
  });

  test("a partial file from an earlier run is resumed, not restarted", async () => {
    const opts = options();
    const oid = sha256(shard1);
    const blobs = join(opts.cacheDir, "models--acme--tiny", "blobs");
    await mkdir(blobs, { recursive: true });
    await writeFile(join(blobs, `${oid}.incomplete`), shard1.subarray(0, 123_456));
    const start = hub.log.length;
    const snap = await downloadSnapshot("acme/tiny", opts);
    const get = hub.log.slice(start).find((r) => r.server === "cdn" && r.url === `/lfs/${oid}`);
    assert.equal(get?.range, "bytes=123456-");
    assert.deepEqual(await readFile(join(snap.path, "model-00001-of-00002.safetensors")), shard1);
  });

  test("a server that ignores Range restarts the file from byte 0", async () => {
    const opts = options();
    const oid = sha256(shard1);
    const blobs = join(opts.cacheDir, "models--acme--tiny", "blobs");
    await mkdir(blobs, { recursive: true });
    // A wrong prefix: if it were kept, the sha256 check would fail.
    await writeFile(join(blobs, `${oid}.incomplete`), randomBytes(5000));
    hub.ignoreRange.add(oid);
    try {
      const snap = await downloadSnapshot("acme/tiny", opts);
      assert.deepEqual(await readFile(join(snap.path, "model-00001-of-00002.safetensors")), shard1);
    } finally {
      hub.ignoreRange.delete(oid);
    }
  });

  test("a complete .incomplete file from an interrupted run is verified and kept without a request", async () => {
    const opts = options();
    const oid = sha256(shard2);
    const blobs = join(opts.cacheDir, "models--acme--tiny", "blobs");
    await mkdir(blobs, { recursive: true });
    await writeFile(join(blobs, `${oid}.incomplete`), shard2);
    const start = hub.log.length;
    const snap = await downloadSnapshot("acme/tiny", opts);
    assert.ok(!hub.log.slice(start).some((r) => r.server === "cdn" && r.url === `/lfs/${oid}`));
    assert.deepEqual(await readFile(join(snap.path, "model-00002-of-00002.safetensors")), shard2);
  });

  test("a corrupted download fails the checksum and is not kept", async () => {
    const opts = options();
    const oid = sha256(shard2);
    hub.corrupt.add(oid);
    try {
      await assert.rejects(downloadSnapshot("acme/tiny", opts), (e: unknown) => {
        assert.ok(e instanceof SplintError);
        assert.match(e.message, /acme\/tiny\/model-00002-of-00002\.safetensors: sha256 mismatch/);
        return true;
      });
    } finally {
      hub.corrupt.delete(oid);
    }
    const blobs = await readdir(join(opts.cacheDir, "models--acme--tiny", "blobs"));
    assert.ok(!blobs.some((b) => b.startsWith(oid)));
  });

  test("401: private repo without a token says to set HF_TOKEN", async () => {
    await assert.rejects(downloadSnapshot("acme/private", options()), (e: unknown) => {
      assert.ok(e instanceof InputError);
      assert.match(e.message, /^acme\/private: repository not found or not accessible \(401\)/);
      assert.match(e.hint ?? "", /HF_TOKEN/);
      return true;
    });
    await assert.rejects(downloadSnapshot("acme/private", options({ token: "hf_bad" })), /HF_TOKEN: the Hub rejected the token \(401\)/);
  });

  test("403: gated repo the token has not been granted", async () => {
    const repo = hub.addRepo("acme/gated", { "config.json": { content: "{}" } });
    repo.gatedExcept = "hf_write";
    await assert.rejects(downloadSnapshot("acme/gated", options({ token: "hf_read" })), (e: unknown) => {
      assert.ok(e instanceof InputError);
      assert.match(e.message, /^acme\/gated: gated repo: access not granted \(403\)/);
      assert.match(e.hint ?? "", /accept the model's conditions/);
      return true;
    });
    const snap = await downloadSnapshot("acme/gated", options({ token: "hf_write" }));
    assert.deepEqual(snap.files, ["config.json"]);
  });

  test("a renamed repo is followed through relative redirects", async () => {
    hub.addRepo("acme/new-name", { "config.json": { content: '{"renamed":true}' } });
    hub.renamed.set("acme/old-name", "acme/new-name");
    const snap = await downloadSnapshot("acme/old-name", options());
    assert.equal(await readFile(join(snap.path, "config.json"), "utf8"), '{"renamed":true}');
    assert.ok(snap.path.includes("models--acme--old-name"));
  });

  test("404: unknown repo, revision or pattern", async () => {
    await assert.rejects(downloadSnapshot("acme/nothing", options({ token: "hf_read" })), (e: unknown) => e instanceof InputError && /acme\/nothing: repository not found/.test(e.message));
    await assert.rejects(downloadSnapshot("acme/tiny", options({}, { revision: "v9" })), /acme\/tiny@v9: no such revision \(404\)/);
    await assert.rejects(downloadSnapshot("acme/tiny", options({}, { include: ["*.gguf"] })), /no files match \*\.gguf/);
  });

  test("a file listed but gone from the resolve endpoint answers EntryNotFound", async () => {
    const repo = hub.addRepo("acme/racy", { "config.json": { content: "{}" } });
    repo.ghosts = new Set(["tokenizer.json"]);
    await assert.rejects(downloadSnapshot("acme/racy", options()), (e: unknown) => e instanceof InputError && /^acme\/racy\/tokenizer\.json: no such file in the repo \(404\)/.test(e.message));
  });

  test("a listed file name that would leave the cache folder is refused before anything is written", async () => {
    const repo = hub.addRepo("acme/evil", { "config.json": { content: "{}" } });
    repo.ghosts = new Set(["../../outside.json"]);
    const opts = options();
    await assert.rejects(downloadSnapshot("acme/evil", opts), (e: unknown) => e instanceof SplintError && /acme\/evil: the Hub listed an unsafe file name "\.\.\/\.\.\/outside\.json"/.test(e.message));
    await assert.rejects(lstat(join(opts.cacheDir, "outside.json")));
    await assert.rejects(lstat(join(opts.cacheDir, "models--acme--evil", "outside.json")));
  });

  test("offline mode uses the cache only, and names what is missing", async () => {
    const opts = options();
    const online = await downloadSnapshot("acme/tiny", opts);
    const start = hub.log.length;
    const offline = await downloadSnapshot("acme/tiny", { ...opts, settings: { ...opts.settings, offline: true } });
    assert.equal(hub.log.length, start);
    assert.equal(offline.path, online.path);
    assert.equal(offline.fromCacheOnly, true);
    assert.ok(offline.files.includes("config.json"));
    await assert.rejects(downloadSnapshot("acme/other", { ...opts, settings: { ...opts.settings, offline: true } }), (e: unknown) => e instanceof InputError && /HF_HUB_OFFLINE/.test(e.message));
  });

  test("an unreachable endpoint is a clear error, or falls back to the cached snapshot", async () => {
    const dead = await closedPort();
    const opts = options({ endpoint: `http://127.0.0.1:${dead}` });
    await assert.rejects(downloadSnapshot("acme/tiny", opts), (e: unknown) => {
      assert.ok(e instanceof SplintError);
      assert.match(e.message, /cannot reach http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
      assert.match(e.hint ?? "", /HF_HUB_OFFLINE/);
      return true;
    });
    const cached = await downloadSnapshot("acme/tiny", { ...opts, settings: { ...opts.settings, endpoint: hub.endpoint } });
    const fallback = await downloadSnapshot("acme/tiny", opts);
    assert.equal(fallback.path, cached.path);
    assert.equal(fallback.fromCacheOnly, true);
  });
});

describe("resolveModel", () => {
  test("a local folder is used as it is; a Hub id is downloaded", async () => {
    const local = join(root, "local-model");
    await mkdir(local, { recursive: true });
    assert.equal(await resolveModel(local), local);
    const path = await resolveModel("acme/tiny", options());
    assert.ok(path.endsWith(join("snapshots", hub.repos.get("acme/tiny")!.commit)));
    await assert.rejects(resolveModel("./no/such/dir", options()), (e: unknown) => e instanceof InputError && /no such folder/.test(e.message));
    await assert.rejects(resolveModel("not a repo", options()), InputError);
  });
});

describe("pushAdapterToHub", () => {
  test("creates the repo, uploads LFS and regular files in one commit, and updates it later", async () => {
    const adapter = join(root, "adapter");
    await mkdir(adapter, { recursive: true });
    const weights = randomBytes(50_000);
    await writeFile(join(adapter, "adapter_model.safetensors"), weights);
    await writeFile(join(adapter, "adapter_config.json"), '{"peft_type":"LORA"}');
    await writeFile(join(adapter, ".hidden"), "no");
    const start = hub.log.length;
    const result = await pushAdapterToHub("me/my-adapter", adapter, { token: "hf_write", endpoint: hub.endpoint, private: true });
    const sequence = hub.log.slice(start).map((r) => `${r.server} ${r.method} ${r.url.replace(/[0-9a-f]{64}/, "<oid>")}`);
    assert.deepEqual(sequence, [
      "hub POST /api/repos/create",
      "hub POST /api/models/me/my-adapter/preupload/main",
      "hub POST /me/my-adapter.git/info/lfs/objects/batch",
      "cdn PUT /upload/<oid>",
      "hub POST /api/models/me/my-adapter/commit/main",
    ]);
    const repo = hub.repos.get("me/my-adapter")!;
    assert.equal(result.commit, repo.commit);
    assert.deepEqual(result.files, ["adapter_config.json", "adapter_model.safetensors"]);
    assert.deepEqual(repo.files.get("adapter_model.safetensors")?.content, weights);
    assert.equal(repo.files.get("adapter_model.safetensors")?.lfs, true);
    assert.equal(repo.files.get("adapter_config.json")?.content.toString(), '{"peft_type":"LORA"}');
    assert.equal(repo.readToken, "hf_write");

    // Pushing again to the existing repo (409 on create) still commits, and a download gets the bytes back.
    await writeFile(join(adapter, "adapter_config.json"), '{"peft_type":"LORA","r":8}');
    await pushAdapterToHub("me/my-adapter", adapter, { token: "hf_write", endpoint: hub.endpoint });
    const snap = await downloadSnapshot("me/my-adapter", options({ token: "hf_write" }, { include: ["adapter_*"] }));
    assert.deepEqual(await readFile(join(snap.path, "adapter_model.safetensors")), weights);
    assert.equal(await readFile(join(snap.path, "adapter_config.json"), "utf8"), '{"peft_type":"LORA","r":8}');
  });

  test("a missing or rejected token is a clear error", async () => {
    const adapter = join(root, "adapter2");
    await mkdir(adapter, { recursive: true });
    await writeFile(join(adapter, "adapter_config.json"), "{}");
    const saved = process.env.HF_TOKEN;
    const savedHome = process.env.HF_HOME;
    process.env.HF_HOME = join(root, "empty-home");
    delete process.env.HF_TOKEN;
    try {
      await assert.rejects(pushAdapterToHub("me/x", adapter, { endpoint: hub.endpoint }), (e: unknown) => e instanceof InputError && /^HF_TOKEN: not set/.test(e.message));
    } finally {
      if (saved !== undefined) process.env.HF_TOKEN = saved;
      if (savedHome !== undefined) process.env.HF_HOME = savedHome;
      else delete process.env.HF_HOME;
    }
    await assert.rejects(pushAdapterToHub("me/x", adapter, { token: "hf_nope", endpoint: hub.endpoint }), (e: unknown) => e instanceof InputError && /HF_TOKEN: the Hub rejected the token \(401\)/.test(e.message));
  });
});

describe("settings and patterns", () => {
  test("environment variables are read as huggingface_hub reads them", () => {
    const a = hubSettings({ HF_HOME: "/h", HF_ENDPOINT: "https://mirror.example/", HF_HUB_OFFLINE: "yes", HF_TOKEN: " hf_x " });
    assert.deepEqual(a, { endpoint: "https://mirror.example", token: "hf_x", offline: true, cacheDir: join("/h", "hub") });
    const b = hubSettings({ HF_HOME: "/h", HF_HUB_CACHE: "/c", HF_HUB_OFFLINE: "0", XDG_CACHE_HOME: "/x" });
    assert.equal(b.cacheDir, "/c");
    assert.equal(b.offline, false);
    assert.equal(b.endpoint, "https://huggingface.co");
    assert.equal(hubSettings({ XDG_CACHE_HOME: "/x" }).cacheDir, join("/x", "huggingface", "hub"));
  });

  test("token file written by `hf auth login` is used when HF_TOKEN is unset", async () => {
    const home = join(root, "hf-home");
    await mkdir(home, { recursive: true });
    await writeFile(join(home, "token"), "hf_from_file\n");
    assert.equal(hubSettings({ HF_HOME: home }).token, "hf_from_file");
  });

  test("patterns follow fnmatch", () => {
    assert.ok(globToRegExp("*.json").test("sub/config.json"));
    assert.ok(!globToRegExp("*.json").test("config.jsonl"));
    assert.ok(globToRegExp("model-0000?-of-*.safetensors").test("model-00001-of-00002.safetensors"));
    assert.ok(globToRegExp("consolidated*.safetensors").test("consolidated.safetensors"));
    assert.ok(globToRegExp("[!c]*.safetensors").test("model.safetensors"));
    assert.ok(!globToRegExp("[!c]*.safetensors").test("consolidated.safetensors"));
    assert.ok(globToRegExp("a.b").test("a.b") && !globToRegExp("a.b").test("axb"));
  });
});

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}
