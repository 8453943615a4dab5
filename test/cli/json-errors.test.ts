// With --json, a failing command still answers in JSON on stdout: {"error": {kind, message, …}}.
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { runSplint } from "../helpers/cli.ts";
import { withTempDir } from "../helpers/temp-dir.ts";

interface ErrorBody {
  error: { kind: string; message: string; file?: string; hint?: string; exitCode: number };
}

test("an input error names the file in the JSON error, with the exit status it reports", async () => {
  await withTempDir("splint-json-errors-", async (dir) => {
    const notADataset = path.join(dir, "not-a-dataset");
    await writeFile(notADataset, "plain text");
    const run = runSplint(["data", "stats", notADataset, "--out", path.join(dir, "stats"), "--json"]);
    assert.notEqual(run.status, 0);
    const body = JSON.parse(run.stdout) as ErrorBody;
    assert.equal(body.error.kind, "input");
    assert.equal(body.error.file, notADataset);
    assert.equal(body.error.exitCode, run.status);
    assert.match(run.stderr, /^error: /m, "the person-readable message still goes to stderr");
  });
});

test("a usage error (a required option left out) is answered in JSON too", () => {
  const run = runSplint(["data", "stats", "some-dataset", "--json"]);
  assert.notEqual(run.status, 0);
  const body = JSON.parse(run.stdout) as ErrorBody;
  assert.equal(body.error.kind, "usage");
  assert.match(body.error.message, /--out/);
  assert.equal(body.error.exitCode, run.status);
});

test("without --json an error writes nothing to stdout", async () => {
  await withTempDir("splint-json-errors-", async (dir) => {
    const run = runSplint(["data", "stats", path.join(dir, "missing"), "--out", path.join(dir, "stats")]);
    assert.notEqual(run.status, 0);
    assert.equal(run.stdout, "");
    assert.match(run.stderr, /missing/);
  });
});

test("a --matmul value other than f32 or bf16 is refused, naming the flag", () => {
  const run = runSplint(["eval", "--model", "m", "--dataset", "d", "--out", "o", "--matmul", "f16", "--json"]);
  assert.equal(run.status, 2);
  const body = JSON.parse(run.stdout) as ErrorBody;
  assert.equal(body.error.file, "--matmul");
  assert.match(body.error.message, /f32 or bf16/);
});
