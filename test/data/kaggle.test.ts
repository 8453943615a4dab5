import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { loadDatasetDict } from "../../src/data/hf-dataset.ts";
import { importFromKaggle } from "../../src/data/import.ts";
import { downloadKaggleDataset, md5FromGoogHash, parseKaggleRef, resolveKaggleCredentials, type KaggleCredentials } from "../../src/data/kaggle.ts";
import { createOutput } from "../../src/cli/output.ts";
import { InputError, SplintError } from "../../src/util/errors.ts";
import { buildZip, jpegBytes, pngBytes } from "./import-fixtures.ts";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const quiet = createOutput(true);
const USER = "alice";
const KEY = "k3y-SECRET-0123456789";
const TOKEN = "kgat_TOKEN-SECRET";
const basicAuth: KaggleCredentials = { authorization: `Basic ${Buffer.from(`${USER}:${KEY}`).toString("base64")}`, source: "test" };

interface ServerOptions {
  /** Archive served for every dataset. */
  body: Buffer;
  /** Cut the connection after this many bytes on the first body request. */
  cutAfter?: number;
  /** Ignore Range headers (answer 200 with the whole body). */
  noRanges?: boolean;
  /** Send this MD5 (base64) instead of the real one; null sends no x-goog-hash. */
  md5?: string | null;
}

interface MockKaggle {
  base: string;
  requests: { path: string; range?: string; authorization?: string }[];
  close(): Promise<void>;
}

/** A local stand-in for Kaggle: the API answers 302 to a storage path that serves the archive. */
async function startKaggle(options: ServerOptions): Promise<MockKaggle> {
  const requests: MockKaggle["requests"] = [];
  let cut = options.cutAfter !== undefined;
  const md5 = options.md5 === undefined ? createHash("md5").update(options.body).digest("base64") : options.md5;
  const server: Server = createServer((req: IncomingMessage, res) => {
    const url = new URL(req.url!, "http://x");
    requests.push({ path: url.pathname, ...(req.headers.range ? { range: req.headers.range } : {}), ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    const api = /^\/api\/v1\/datasets\/download\/([^/]+)\/([^/]+)$/.exec(url.pathname);
    if (api) {
      const auth = req.headers.authorization;
      if (auth !== basicAuth.authorization && auth !== `Bearer ${TOKEN}`) return void res.writeHead(401).end('{"message":"Unauthenticated"}');
      if (api[1] === "private") return void res.writeHead(403).end();
      if (api[1] === "nobody") return void res.writeHead(404).end();
      return void res.writeHead(302, { location: `/storage/${api[2]}.zip?sig=abc` }).end();
    }
    if (!url.pathname.startsWith("/storage/")) return void res.writeHead(404).end();
    const headers: Record<string, string> = { "content-type": "application/zip" };
    if (!options.noRanges) headers["accept-ranges"] = "bytes";
    if (md5 !== null) headers["x-goog-hash"] = `crc32c=AAAAAA==,md5=${md5}`;
    const total = options.body.length;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (range && !options.noRanges) {
      const start = Number(range[1]);
      if (start >= total) return void res.writeHead(416, { "content-range": `bytes */${total}` }).end();
      res.writeHead(206, { ...headers, "content-length": String(total - start), "content-range": `bytes ${start}-${total - 1}/${total}` });
      return void res.end(options.body.subarray(start));
    }
    res.writeHead(200, { ...headers, "content-length": String(total) });
    if (cut) {
      cut = false;
      res.write(options.body.subarray(0, options.cutAfter), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(options.body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "splint-kaggle-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const archive = Buffer.concat(Array.from({ length: 64 }, (_, i) => Buffer.alloc(1000, i)));
const ref = parseKaggleRef("pkdarabi/bone-break");

test("downloads through the 302 redirect, verifies size and MD5", async (t) => {
  const dir = await tempDir(t);
  const kaggle = await startKaggle({ body: archive });
  t.after(() => kaggle.close());
  const destination = path.join(dir, "a.zip");
  const result = await downloadKaggleDataset(ref, { apiBase: kaggle.base, credentials: basicAuth, destination });
  assert.deepEqual(await readFile(destination), archive);
  assert.equal(result.bytes, archive.length);
  assert.equal(result.md5Verified, true);
  assert.equal(result.resumed, false);
  assert.deepEqual(kaggle.requests.map((r) => r.path), ["/api/v1/datasets/download/pkdarabi/bone-break", "/storage/bone-break.zip"]);
  assert.deepEqual(await readdir(dir), ["a.zip"], "no .part left behind");
});

test("a connection cut mid-body resumes with Range from where it stopped", async (t) => {
  const dir = await tempDir(t);
  const kaggle = await startKaggle({ body: archive, cutAfter: 20_000 });
  t.after(() => kaggle.close());
  const logs: string[] = [];
  const destination = path.join(dir, "a.zip");
  const result = await downloadKaggleDataset(ref, { apiBase: kaggle.base, credentials: basicAuth, destination, log: (m) => logs.push(m) });
  assert.deepEqual(await readFile(destination), archive);
  assert.equal(result.resumed, true);
  assert.equal(result.md5Verified, true);
  const ranged = kaggle.requests.filter((r) => r.path.startsWith("/storage/") && r.range);
  assert.equal(ranged.length, 1);
  const resumedAt = Number(/^bytes=(\d+)-$/.exec(ranged[0]!.range!)![1]);
  assert.ok(resumedAt >= 20_000 && resumedAt < archive.length, `resumed at ${resumedAt}`);
  assert.ok(logs.some((m) => /connection lost/.test(m)));
});

test("a .part left by an earlier run is resumed; a server without ranges restarts it", async (t) => {
  const dir = await tempDir(t);
  const destination = path.join(dir, "a.zip");
  await writeFile(`${destination}.part`, archive.subarray(0, 30_000));
  const kaggle = await startKaggle({ body: archive });
  t.after(() => kaggle.close());
  const resumed = await downloadKaggleDataset(ref, { apiBase: kaggle.base, credentials: basicAuth, destination });
  assert.deepEqual(await readFile(destination), archive);
  assert.equal(resumed.resumed, true);
  assert.deepEqual(kaggle.requests.filter((r) => r.range).map((r) => r.range), ["bytes=30000-", "bytes=30000-"], "Range kept across the redirect");

  const plain = await startKaggle({ body: archive, noRanges: true });
  t.after(() => plain.close());
  const second = path.join(dir, "b.zip");
  await writeFile(`${second}.part`, Buffer.alloc(30_000, 0xee));
  const restarted = await downloadKaggleDataset(ref, { apiBase: plain.base, credentials: basicAuth, destination: second });
  assert.deepEqual(await readFile(second), archive, "stale bytes replaced, not appended to");
  assert.equal(restarted.resumed, false);
});

test("an MD5 mismatch is an error and the bad file is removed", async (t) => {
  const dir = await tempDir(t);
  const kaggle = await startKaggle({ body: archive, md5: createHash("md5").update("other").digest("base64") });
  t.after(() => kaggle.close());
  const destination = path.join(dir, "a.zip");
  await assert.rejects(downloadKaggleDataset(ref, { apiBase: kaggle.base, credentials: basicAuth, destination }), (e) => e instanceof SplintError && /MD5/.test(e.message));
  assert.deepEqual(await readdir(dir), []);
});

test("without x-goog-hash the size is still verified", async (t) => {
  const dir = await tempDir(t);
  const kaggle = await startKaggle({ body: archive, md5: null });
  t.after(() => kaggle.close());
  const result = await downloadKaggleDataset(ref, { apiBase: kaggle.base, credentials: basicAuth, destination: path.join(dir, "a.zip") });
  assert.equal(result.md5Verified, false);
  assert.equal((await stat(path.join(dir, "a.zip"))).size, archive.length);
});

test("401, 403 and 404 are clear errors that never show the key", async (t) => {
  const dir = await tempDir(t);
  const kaggle = await startKaggle({ body: archive });
  t.after(() => kaggle.close());
  const destination = path.join(dir, "a.zip");
  const wrong: KaggleCredentials = { authorization: `Basic ${Buffer.from(`${USER}:wrong-${KEY}`).toString("base64")}`, source: "KAGGLE_USERNAME/KAGGLE_KEY" };
  const cases: [KaggleCredentials, string, RegExp][] = [
    [wrong, "pkdarabi/bone-break", /credentials from KAGGLE_USERNAME\/KAGGLE_KEY \(401/],
    [basicAuth, "private/set", /403/],
    [basicAuth, "nobody/set", /not found \(404\)/],
  ];
  for (const [credentials, name, pattern] of cases) {
    await assert.rejects(downloadKaggleDataset(parseKaggleRef(name), { apiBase: kaggle.base, credentials, destination }), (e) => {
      assert.ok(e instanceof SplintError);
      assert.match(e.message, pattern);
      assert.ok(!`${e.message} ${e.hint}`.includes(KEY), "key not printed");
      assert.ok(e.hint, "has a hint");
      return true;
    });
  }
});

test("network failure (connection refused) is a clear error", async (t) => {
  const dir = await tempDir(t);
  const closed = await startKaggle({ body: archive });
  const base = closed.base;
  await closed.close();
  await assert.rejects(
    downloadKaggleDataset(ref, { apiBase: base, credentials: basicAuth, destination: path.join(dir, "a.zip") }),
    (e) => e instanceof SplintError && /network error \(ECONNREFUSED\)/.test(e.message),
  );
});

test("a full disk (ENOSPC) is reported as such", async (t) => {
  const dir = await tempDir(t);
  const kaggle = await startKaggle({ body: archive });
  t.after(() => kaggle.close());
  const destination = path.join(dir, "a.zip");
  // /dev/full accepts open() and fails every write with ENOSPC.
  await symlink("/dev/full", `${destination}.part`);
  await assert.rejects(downloadKaggleDataset(ref, { apiBase: kaggle.base, credentials: basicAuth, destination }), (e) => e instanceof SplintError && /disk full/.test(e.message));
});

test("credentials: token, token file, username/key, kaggle.json (refused when others can read it)", async (t) => {
  const home = await tempDir(t);
  const none = resolveKaggleCredentials({}, home);
  await assert.rejects(none, (e) => e instanceof SplintError && /no Kaggle credentials/.test(e.message));

  assert.deepEqual(await resolveKaggleCredentials({ KAGGLE_API_TOKEN: TOKEN }, home), { authorization: `Bearer ${TOKEN}`, source: "KAGGLE_API_TOKEN" });
  const tokenFile = path.join(home, "token.txt");
  await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  assert.equal((await resolveKaggleCredentials({ KAGGLE_API_TOKEN: tokenFile }, home)).authorization, `Bearer ${TOKEN}`);
  const env = await resolveKaggleCredentials({ KAGGLE_USERNAME: USER, KAGGLE_KEY: KEY }, home);
  assert.equal(env.authorization, basicAuth.authorization);
  assert.ok(!env.source.includes(KEY));

  const kaggleDir = path.join(home, ".kaggle");
  await mkdir(kaggleDir);
  const json = path.join(kaggleDir, "kaggle.json");
  await writeFile(json, JSON.stringify({ username: USER, key: KEY }));
  await chmod(json, 0o644);
  await assert.rejects(resolveKaggleCredentials({}, home), (e) => {
    assert.ok(e instanceof InputError);
    assert.match(e.message, /readable by other users \(mode 644\)/);
    assert.match(e.hint ?? "", /chmod 600/);
    assert.ok(!e.message.includes(KEY));
    return true;
  });
  await chmod(json, 0o600);
  assert.deepEqual(await resolveKaggleCredentials({}, home), { authorization: basicAuth.authorization, source: json });
  // KAGGLE_CONFIG_DIR takes the place of ~/.kaggle.
  const other = path.join(home, "cfg");
  await mkdir(other);
  await writeFile(path.join(other, "kaggle.json"), JSON.stringify({ username: USER }), { mode: 0o600 });
  await assert.rejects(resolveKaggleCredentials({ KAGGLE_CONFIG_DIR: other }, home), /lacks "username" and "key"/);
});

test("parseKaggleRef and md5FromGoogHash", () => {
  assert.deepEqual(parseKaggleRef("pkdarabi/bone-break-classification-image-dataset"), { owner: "pkdarabi", slug: "bone-break-classification-image-dataset" });
  assert.throws(() => parseKaggleRef("no-slash"), InputError);
  assert.throws(() => parseKaggleRef("a/../b"), InputError);
  const md5 = createHash("md5").update("abc").digest();
  assert.equal(md5FromGoogHash(`crc32c=n03x6A==,md5=${md5.toString("base64")}`), md5.toString("hex"));
  assert.equal(md5FromGoogHash("crc32c=n03x6A=="), null);
});

async function kaggleArchive(): Promise<Buffer> {
  const wrap = "Bone Break Classification/Bone Break Classification";
  return buildZip([
    { name: `${wrap}/`, data: "" },
    { name: `${wrap}/Spiral Fracture/Train/a.jpg`, data: await jpegBytes(1) },
    { name: `${wrap}/Spiral Fracture/Train/b.jpg`, data: await jpegBytes(2) },
    { name: `${wrap}/Spiral Fracture/Test/c.jpg`, data: await jpegBytes(3) },
    { name: `${wrap}/Avulsion fracture/Train/d.png`, data: await pngBytes(4) },
    { name: `${wrap}/Avulsion fracture/Test/e.png`, data: await pngBytes(5) },
    { name: `${wrap}/Avulsion fracture/Test/broken.png`, data: "not a png" },
  ]);
}

test("importFromKaggle: download, extract, import; a second run reuses the verified archive", async (t) => {
  const dir = await tempDir(t);
  const kaggle = await startKaggle({ body: await kaggleArchive() });
  t.after(() => kaggle.close());
  const saved = { ...process.env };
  t.after(() => {
    process.env = saved;
  });
  process.env.KAGGLE_API_TOKEN = TOKEN;
  const options = { format: "arrow" as const, valFraction: 0, seed: 0, output: quiet, apiBase: kaggle.base, cacheDir: path.join(dir, "cache") };
  const summary = await importFromKaggle("pkdarabi/bone-break", { ...options, out: path.join(dir, "ds") });
  assert.equal(summary.source, "kaggle:pkdarabi/bone-break");
  assert.deepEqual(summary.classNames, ["Avulsion fracture", "Spiral Fracture"]);
  assert.deepEqual(summary.splits.map((s) => [s.name, s.total]), [["train", 3], ["test", 2]]);
  assert.deepEqual(summary.skipped.map((s) => s.file), ["Bone Break Classification/Bone Break Classification/Avulsion fracture/Test/broken.png"]);
  assert.equal((await loadDatasetDict(path.join(dir, "ds"))).splits.get("test")!.length, 2);
  assert.deepEqual(await readdir(path.join(dir, "cache", "kaggle", "pkdarabi", "bone-break")), ["bone-break.zip"], "extraction folder removed");

  const before = kaggle.requests.length;
  await importFromKaggle("pkdarabi/bone-break", { ...options, out: path.join(dir, "ds2") });
  assert.equal(kaggle.requests.length, before, "no second download");
});

test("importFromKaggle refuses an archive that tries to escape, and writes no dataset", async (t) => {
  const dir = await tempDir(t);
  const kaggle = await startKaggle({
    body: buildZip([
      { name: "a/Train/x.png", data: await pngBytes(1) },
      { name: "../../../escaped.txt", data: "pwned" },
    ]),
  });
  t.after(() => kaggle.close());
  const saved = { ...process.env };
  t.after(() => {
    process.env = saved;
  });
  process.env.KAGGLE_API_TOKEN = TOKEN;
  const cacheDir = path.join(dir, "cache");
  await assert.rejects(
    importFromKaggle("evil/set", { out: path.join(dir, "ds"), format: "arrow", valFraction: 0, seed: 0, output: quiet, apiBase: kaggle.base, cacheDir }),
    (e) => e instanceof InputError && /set\.zip/.test(e.message),
  );
  assert.deepEqual((await readdir(dir)).sort(), ["cache"]);
  assert.deepEqual(await readdir(path.join(cacheDir, "kaggle", "evil", "set")), [], "refused archive and extraction folder removed");
  await assert.rejects(stat(path.join(dir, "escaped.txt")));
});

test("CLI: `splint data import --kaggle … --kaggle-api URL --json` against the local server", async (t) => {
  const dir = await tempDir(t);
  const kaggle = await startKaggle({ body: await kaggleArchive() });
  t.after(() => kaggle.close());
  const env = { ...process.env, KAGGLE_USERNAME: USER, KAGGLE_KEY: KEY, SPLINT_CACHE_DIR: path.join(dir, "cache"), KAGGLE_API_TOKEN: "" };
  const run = promisify(execFile);
  const { stdout, stderr } = await run(process.execPath, [path.join(repoRoot, "bin/splint.js"), "data", "import", "--kaggle", "pkdarabi/bone-break", "--kaggle-api", kaggle.base, "--out", path.join(dir, "ds"), "--format", "parquet", "--json"], { env });
  const summary = JSON.parse(stdout);
  assert.deepEqual(summary.classNames, ["Avulsion fracture", "Spiral Fracture"]);
  assert.equal(summary.format, "parquet");
  assert.ok(!stderr.includes(KEY) && !stdout.includes(KEY), "key never printed");
  assert.deepEqual((await loadDatasetDict(path.join(dir, "ds"))).classNames, summary.classNames);
});
