import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { MockHub } from "./mock-hub.ts";

let hub: MockHub;
let cache: string;
const weights = randomBytes(20_000);

before(async () => {
  hub = new MockHub();
  await hub.start();
  hub.addRepo("acme/cli", { "config.json": { content: "{}" }, "model.safetensors": { content: weights, lfs: true }, "README.md": { content: "x" } });
  cache = await mkdtemp(join(tmpdir(), "splint-model-cli-"));
});
after(async () => {
  await hub.stop();
  await rm(cache, { recursive: true, force: true });
});

function splint(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cache, HF_HOME: join(cache, "home"), HF_TOKEN: "", HF_HUB_OFFLINE: "" };
  return new Promise((resolve) => {
    execFile(process.execPath, ["bin/splint.js", ...args], { env }, (error, stdout, stderr) => {
      resolve({ code: error ? Number(error.code) : 0, stdout, stderr });
    });
  });
}

test("splint model download prints the snapshot folder (plain and --json)", async () => {
  const commit = hub.repos.get("acme/cli")!.commit;
  const expected = join(cache, "models--acme--cli", "snapshots", commit);
  const plain = await splint("model", "download", "acme/cli");
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(plain.stdout, `${expected}\n`);
  assert.deepEqual(await readFile(join(expected, "model.safetensors")), weights);

  const json = await splint("model", "download", "acme/cli", "--include", "config.json", "--json");
  assert.equal(json.code, 0, json.stderr);
  const result = JSON.parse(json.stdout) as { path: string; commit: string; files: string[] };
  assert.equal(result.path, expected);
  assert.equal(result.commit, commit);
  assert.deepEqual(result.files, ["config.json"]);
});

test("a missing repo exits 2 with the error on stderr", async () => {
  const run = await splint("model", "download", "acme/missing");
  assert.equal(run.code, 2);
  assert.equal(run.stdout, "");
  assert.match(run.stderr, /error: acme\/missing: repository not found or not accessible \(401\)/);
  assert.match(run.stderr, /hint: .*HF_TOKEN/);
});
