import { test } from "node:test";
import assert from "node:assert/strict";
import { lstat, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { extractZip, unsafeEntryReason } from "../../src/data/zip.ts";
import { InputError } from "../../src/util/errors.ts";
import { buildZip, type ZipEntry } from "./import-fixtures.ts";

async function setup(t: { after(fn: () => Promise<void>): void }, entries: readonly ZipEntry[]) {
  const dir = await mkdtemp(path.join(tmpdir(), "splint-zip-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const zip = path.join(dir, "archive.zip");
  await writeFile(zip, buildZip(entries));
  return { dir, zip, target: path.join(dir, "sandbox", "out") };
}

test("extracts files and folders, keeping names with spaces and nested folders", async (t) => {
  const { zip, target } = await setup(t, [
    { name: "Bone Break Classification/", data: "" },
    { name: "Bone Break Classification/Spiral Fracture/Train/a b.txt", data: "hello" },
    { name: "top.txt", data: "x".repeat(5000) },
  ]);
  const result = await extractZip(zip, target);
  assert.deepEqual(result, { files: 2, bytes: 5005 });
  assert.equal(await readFile(path.join(target, "Bone Break Classification/Spiral Fracture/Train/a b.txt"), "utf8"), "hello");
  assert.equal((await readFile(path.join(target, "top.txt"), "utf8")).length, 5000);
});

for (const [label, name] of [
  ["a ../ entry", "../evil.txt"],
  ["a nested ../../ entry", "sub/../../evil.txt"],
  ["an absolute path", "/tmp/splint-evil-absolute.txt"],
] as const) {
  test(`refuses an archive with ${label} and writes nothing outside the target`, async (t) => {
    const { dir, zip, target } = await setup(t, [
      { name: "good.txt", data: "ok" },
      { name, data: "pwned" },
    ]);
    await assert.rejects(extractZip(zip, target), (e) => e instanceof InputError && e.message.includes("archive.zip"));
    assert.deepEqual((await readdir(path.join(dir, "sandbox"))).sort(), ["out"]);
    await assert.rejects(lstat("/tmp/splint-evil-absolute.txt"));
  });
}

test("refuses a symbolic-link entry", async (t) => {
  const { dir, zip, target } = await setup(t, [{ name: "link", data: "/etc/passwd", mode: 0o120777 }]);
  await assert.rejects(extractZip(zip, target), (e) => e instanceof InputError && /symbolic link/.test(e.message));
  assert.deepEqual(await readdir(path.join(dir, "sandbox", "out")), []);
});

test("a file that is not a zip is an InputError naming it", async (t) => {
  const { dir, target } = await setup(t, []);
  const bogus = path.join(dir, "bogus.zip");
  await writeFile(bogus, "this is not a zip archive at all, just text");
  await assert.rejects(extractZip(bogus, target), (e) => e instanceof InputError && e.message.startsWith(bogus));
});

test("unsafeEntryReason flags escapes, absolute and drive paths, and allows ordinary names", () => {
  const target = path.resolve("/x/y");
  assert.equal(unsafeEntryReason("a/b.png", target), null);
  assert.equal(unsafeEntryReason("a/..b/c", target), null);
  assert.match(unsafeEntryReason("a/../../b", target)!, /escapes/);
  assert.match(unsafeEntryReason("/etc/passwd", target)!, /absolute/);
  assert.match(unsafeEntryReason("C:/Windows/x", target)!, /absolute/);
  assert.match(unsafeEntryReason("..\\evil", target)!, /escapes/);
});
