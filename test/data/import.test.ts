import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadDatasetDict } from "../../src/data/hf-dataset.ts";
import { importImageFolder, stratifiedSplit, type ImportSummary } from "../../src/data/import.ts";
import { detectLayout } from "../../src/data/layout.ts";
import type { DatasetRow } from "../../src/data/types.ts";
import { createOutput } from "../../src/cli/output.ts";
import { InputError, SplintError } from "../../src/util/errors.ts";
import { jpegBytes, pngBytes, writeTree } from "./import-fixtures.ts";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const quiet = createOutput(true);

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "splint-import-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function splitSizes(summary: ImportSummary): Record<string, number> {
  return Object.fromEntries(summary.splits.map((s) => [s.name, s.total]));
}

test("Kaggle nested layout under wrapper folders: classes sorted, Train/Test split, images stored as bytes", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  const wrap = "Bone Break Classification/Bone Break Classification";
  const images: Record<string, Uint8Array> = {};
  // Class folders in non-sorted creation order, lower/upper case names as in the real set.
  const classes = ["Spiral Fracture", "Avulsion fracture", "Hairline Fracture"];
  let seed = 1;
  for (const c of classes) {
    for (let i = 0; i < 3; i++) images[`${wrap}/${c}/Train/t${i}.jpg`] = await jpegBytes(seed++);
    images[`${wrap}/${c}/Test/x.png`] = await pngBytes(seed++);
  }
  images[`${wrap}/Avulsion fracture/Train/UPPER.JPEG`] = await jpegBytes(seed++);
  await writeTree(src, images);
  const out = path.join(dir, "ds");
  const summary = await importImageFolder(src, { out, format: "arrow", valFraction: 0, seed: 0, output: quiet });

  assert.equal(summary.layout, "class-split");
  assert.deepEqual(summary.classNames, ["Avulsion fracture", "Hairline Fracture", "Spiral Fracture"]);
  assert.deepEqual(splitSizes(summary), { train: 10, test: 3 });
  assert.deepEqual(summary.splits[0]!.perClass, { "Avulsion fracture": 4, "Hairline Fracture": 3, "Spiral Fracture": 3 });
  assert.deepEqual(summary.skipped, []);

  const ds = await loadDatasetDict(out);
  assert.deepEqual(ds.classNames, summary.classNames);
  for (const [split, rows] of ds.splits) {
    for (const row of rows) {
      const original = images[row.image.path!];
      assert.ok(original, `${split}: ${row.image.path} is a path relative to the imported folder`);
      assert.deepEqual(Buffer.from(row.image.bytes), Buffer.from(original), "bytes stored exactly as the file");
      assert.equal(ds.classNames[row.label], row.image.path!.split("/")[2], "label id matches the class folder");
    }
  }
});

test("{train,test}/<Class> layout with mixed-case split names, written as parquet", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  await writeTree(src, {
    "TRAIN/cat/a.png": await pngBytes(1),
    "TRAIN/cat/b.png": await pngBytes(2),
    "TRAIN/dog/c.jpg": await jpegBytes(3),
    "Test/cat/d.png": await pngBytes(4),
    "Test/dog/e.jpeg": await jpegBytes(5),
    "Val/dog/f.png": await pngBytes(6),
  });
  const out = path.join(dir, "ds");
  const summary = await importImageFolder(src, { out, format: "parquet", valFraction: 0, seed: 0, output: quiet });
  assert.equal(summary.layout, "split-class");
  assert.deepEqual(splitSizes(summary), { train: 3, validation: 1, test: 2 });
  assert.ok(summary.warnings.some((w) => w.includes('"cat"') && w.includes('"validation"')), "class missing from a split is reported");
  const ds = await loadDatasetDict(out);
  assert.deepEqual(ds.classNames, ["cat", "dog"]);
  assert.deepEqual(ds.splits.get("train")!.map((r) => r.label), [0, 0, 1]);
  assert.ok((await readdir(path.join(out, "data"))).includes("train-00000-of-00001.parquet"));
});

test("bad files are skipped with their reason, in the summary and the report file", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  const good = await pngBytes(7, 40, 40);
  const jpeg = await jpegBytes(8, 40, 40);
  await writeTree(src, {
    "train/a/good.png": good,
    "train/a/truncated.jpg": jpeg.subarray(0, Math.floor(jpeg.length / 2)),
    "train/a/corrupt.png": Buffer.concat([good.subarray(0, 60), Buffer.alloc(40, 7), good.subarray(100)]),
    "train/a/empty.png": new Uint8Array(0),
    "train/a/text.jpg": "just some text, not an image",
    "train/a/notes.txt": "a note",
    "train/a/.DS_Store": "x",
    "train/b/only-bad.png": "garbage",
    "test/a/t.png": await pngBytes(9),
    "stray.csv": "x,y",
  });
  const out = path.join(dir, "ds");
  const summary = await importImageFolder(src, { out, format: "arrow", valFraction: 0, seed: 0, output: quiet });
  const reasons = Object.fromEntries(summary.skipped.map((s) => [s.file, s.reason]));
  assert.match(reasons["train/a/truncated.jpg"]!, /truncated|corrupt/);
  assert.match(reasons["train/a/corrupt.png"]!, /corrupt/);
  assert.match(reasons["train/a/empty.png"]!, /empty file/);
  assert.match(reasons["train/a/text.jpg"]!, /not an image/);
  assert.match(reasons["train/a/notes.txt"]!, /not an image file/);
  assert.match(reasons["train/a/.DS_Store"]!, /hidden/);
  assert.match(reasons["train/b/only-bad.png"]!, /not an image/);
  assert.match(reasons["stray.csv"]!, /outside the class folders/);
  assert.equal(summary.skipped.length, 8);
  // Class b has no usable image at all: dropped from the ClassLabel names, with a warning.
  assert.deepEqual(summary.classNames, ["a"]);
  assert.ok(summary.warnings.some((w) => w.includes('class "b" has no usable images')));
  assert.deepEqual(splitSizes(summary), { train: 1, test: 1 });

  const report = JSON.parse(await readFile(summary.report, "utf8"));
  assert.equal(summary.report, `${out}.import-report.json`);
  assert.deepEqual(report.skipped, summary.skipped);
});

test("a class folder with no files is an empty class: reported and left out", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  await writeTree(src, { "a/Train/1.png": await pngBytes(1), "a/Test/2.png": await pngBytes(2), "b/Train/.keep": "" });
  const summary = await importImageFolder(src, { out: path.join(dir, "ds"), format: "arrow", valFraction: 0, seed: 0, output: quiet });
  assert.deepEqual(summary.classNames, ["a"]);
  assert.ok(summary.warnings.some((w) => w.includes('"b"')));
});

test("nothing usable: exits with an error, writes the report and no dataset", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  await writeTree(src, { "train/a/x.png": "nope", "test/a/y.jpg": new Uint8Array(0) });
  const out = path.join(dir, "ds");
  await assert.rejects(importImageFolder(src, { out, format: "arrow", valFraction: 0, seed: 0, output: quiet }), (e) => e instanceof SplintError && /no usable images/.test(e.message));
  assert.deepEqual((await readdir(dir)).sort(), ["ds.import-report.json", "src"]);
  const report = JSON.parse(await readFile(path.join(dir, "ds.import-report.json"), "utf8"));
  assert.equal(report.skipped.length, 2);
});

test("unknown layouts are an InputError that says what was found and what is expected", async (t) => {
  const dir = await tempDir(t);
  await writeTree(dir, { "flat/a.png": await pngBytes(1), "flat/b.png": await pngBytes(2) });
  await assert.rejects(detectLayout(path.join(dir, "flat")), (e) => e instanceof InputError && /unknown layout/.test(e.message) && /Train,Test/.test(e.hint ?? ""));
  await writeTree(dir, { "classes/cat/a.png": await pngBytes(1), "classes/dog/b.png": await pngBytes(2) });
  await assert.rejects(detectLayout(path.join(dir, "classes")), (e) => e instanceof InputError && /"cat", "dog"/.test(e.message));
  await assert.rejects(detectLayout(path.join(dir, "missing")), (e) => e instanceof InputError && /does not exist/.test(e.message));
});

test("--val-fraction carves a stratified, seeded validation split from train", async (t) => {
  const dir = await tempDir(t);
  const src = path.join(dir, "src");
  const files: Record<string, Uint8Array> = {};
  for (let i = 0; i < 20; i++) files[`a/Train/${i}.png`] = await pngBytes(100 + i, 8, 8);
  for (let i = 0; i < 10; i++) files[`b/Train/${i}.png`] = await pngBytes(200 + i, 8, 8);
  files["c/Train/only.png"] = await pngBytes(300, 8, 8);
  files["a/Test/t.png"] = await pngBytes(400, 8, 8);
  await writeTree(src, files);
  const run = (out: string, seed: number) => importImageFolder(src, { out: path.join(dir, out), format: "arrow", valFraction: 0.2, seed, output: quiet });
  const s1 = await run("ds1", 7);
  assert.deepEqual(splitSizes(s1), { train: 25, validation: 6, test: 1 });
  assert.deepEqual(s1.splits[1]!.perClass, { a: 4, b: 2, c: 0 }, "20% of each class; a one-image class stays in train");
  const paths = async (out: string) => (await loadDatasetDict(path.join(dir, out))).splits.get("validation")!.map((r) => r.image.path);
  await run("ds2", 7);
  assert.deepEqual(await paths("ds1"), await paths("ds2"), "same seed, same split");
  await run("ds3", 8);
  assert.notDeepEqual(await paths("ds1"), await paths("ds3"), "another seed, another split");
  const train = new Set((await loadDatasetDict(path.join(dir, "ds1"))).splits.get("train")!.map((r) => r.image.path));
  for (const p of await paths("ds1")) assert.ok(!train.has(p), "validation and train are disjoint");
});

test("stratifiedSplit keeps every row exactly once", () => {
  const rows: DatasetRow[] = Array.from({ length: 37 }, (_, i) => ({ image: { bytes: new Uint8Array([i]), path: String(i) }, label: i % 4 }));
  const { kept, carved } = stratifiedSplit(rows, 0.3, 1);
  assert.equal(kept.length + carved.length, rows.length);
  assert.deepEqual(new Set([...kept, ...carved]).size, rows.length);
  for (let label = 0; label < 4; label++) {
    const n = rows.filter((r) => r.label === label).length;
    assert.equal(carved.filter((r) => r.label === label).length, Math.round(n * 0.3));
  }
});

test("CLI: `splint data import --dir … --json` prints the summary; exit code 1 when nothing is usable", async (t) => {
  const dir = await tempDir(t);
  await writeTree(dir, { "src/train/a/x.png": await pngBytes(1), "src/test/a/y.png": await pngBytes(2), "bad/train/a/z.png": "bad" });
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(repoRoot, "bin/splint.js"), "data", "import", ...args], { cwd: dir, encoding: "utf8" });
  const ok = cli("--dir", "src", "--out", "ds", "--json");
  assert.equal(ok.status, 0, ok.stderr);
  const summary = JSON.parse(ok.stdout);
  assert.deepEqual(summary.classNames, ["a"]);
  assert.deepEqual(summary.splits.map((s: { name: string; total: number }) => [s.name, s.total]), [["train", 1], ["test", 1]]);
  const text = cli("--dir", "src", "--out", "ds");
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /1 classes; train 1, test 1/);
  const bad = cli("--dir", "bad", "--out", "ds-bad");
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /no usable images/);
  const both = cli("--dir", "src", "--kaggle", "a/b", "--out", "x");
  assert.equal(both.status, 2);
  assert.match(both.stderr, /exactly one of --kaggle/);
});
