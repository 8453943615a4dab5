import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import {
  KAGGLE_WRAPPER,
  SYNTH_CLASS_NAMES,
  synthesizeDatasetDict,
  synthesizeImagePng,
  writeSyntheticDataset,
} from "../../src/data/synth.ts";
import { InputError } from "../../src/util/errors.ts";

async function treeDigest(root: string): Promise<Map<string, string>> {
  const digests = new Map<string, string>();
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    const file = join(entry.parentPath, entry.name);
    digests.set(file.slice(root.length), createHash("sha256").update(await readFile(file)).digest("hex"));
  }
  return digests;
}

test("writes the Kaggle nested layout with every class, both splits and decodable PNGs", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-synth-"));
  try {
    const out = join(dir, "bones");
    const summary = await writeSyntheticDataset(out, { perClass: 3, testPerClass: 2, seed: 5, size: 48 });
    assert.equal(summary.counts.Train, 30);
    assert.equal(summary.counts.Test, 20);
    const inner = join(out, KAGGLE_WRAPPER);
    assert.deepEqual((await readdir(inner)).sort(), [...SYNTH_CLASS_NAMES].sort());
    assert.equal(SYNTH_CLASS_NAMES.length, 10);
    for (const className of SYNTH_CLASS_NAMES) {
      assert.deepEqual((await readdir(join(inner, className))).sort(), ["Test", "Train"]);
      const train = await readdir(join(inner, className, "Train"));
      const testFiles = await readdir(join(inner, className, "Test"));
      assert.equal(train.length, 3);
      assert.equal(testFiles.length, 2);
      const meta = await sharp(join(inner, className, "Train", train[0] ?? "")).metadata();
      assert.equal(meta.format, "png");
      assert.equal(meta.width, 48);
      assert.equal(meta.height, 48);
      assert.equal(meta.channels, 1);
    }
    // Nothing is left behind beside the output (the staging folder was renamed away).
    assert.deepEqual(await readdir(dir), ["bones"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("the same seed gives identical bytes, another seed different images", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-synth-"));
  try {
    const options = { perClass: 2, testPerClass: 1, seed: 11, size: 40 };
    await writeSyntheticDataset(join(dir, "a"), options);
    await writeSyntheticDataset(join(dir, "b"), options);
    await writeSyntheticDataset(join(dir, "c"), { ...options, seed: 12 });
    const a = await treeDigest(join(dir, "a"));
    const b = await treeDigest(join(dir, "b"));
    const c = await treeDigest(join(dir, "c"));
    assert.equal(a.size, 30);
    assert.deepEqual(a, b);
    for (const [file, digest] of a) assert.notEqual(c.get(file), digest, file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("image k does not depend on how many images were asked for", async () => {
  const small = await synthesizeDatasetDict({ perClass: 1, testPerClass: 1, seed: 3, size: 32 });
  const large = await synthesizeDatasetDict({ perClass: 3, testPerClass: 2, seed: 3, size: 32 });
  const first = small.splits.get("train")?.[0];
  const same = large.splits.get("train")?.[0];
  assert.ok(first && same);
  assert.deepEqual(Buffer.from(first.image.bytes), Buffer.from(same.image.bytes));
  assert.equal(large.splits.get("train")?.length, 30);
  assert.equal(large.splits.get("test")?.length, 20);
});

test("refuses a non-empty output folder and bad options", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-synth-"));
  try {
    await mkdir(join(dir, "full"));
    await writeFile(join(dir, "full", "keep.txt"), "mine");
    await assert.rejects(writeSyntheticDataset(join(dir, "full"), { perClass: 1, testPerClass: 0, seed: 1, size: 32 }), InputError);
    assert.equal(await readFile(join(dir, "full", "keep.txt"), "utf8"), "mine");
    await assert.rejects(writeSyntheticDataset(join(dir, "x"), { perClass: 0, testPerClass: 0, seed: 1, size: 32 }), /--per-class/);
    await assert.rejects(writeSyntheticDataset(join(dir, "x"), { perClass: 1, testPerClass: 0, seed: 1, size: 4 }), /--size/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("any size renders", async () => {
  const png = await synthesizeImagePng({ seed: 1, size: 200 }, 9, "Test", 0);
  const meta = await sharp(png).metadata();
  assert.equal(meta.width, 200);
  assert.equal(meta.height, 200);
});

/** 16×16 downsampled pixels in [0, 1]. */
async function thumbnail(png: Uint8Array): Promise<number[]> {
  return Array.from(await sharp(png).resize(16, 16).raw().toBuffer(), (v) => v / 255);
}

test("classes are learnable: nearest-centroid on train beats chance on test, yet images within a class vary", async () => {
  const perClass = 20;
  const testPerClass = 10;
  const dataset = await synthesizeDatasetDict({ perClass, testPerClass, seed: 2024, size: 64 });
  const classes = SYNTH_CLASS_NAMES.length;
  const train = await Promise.all((dataset.splits.get("train") ?? []).map(async (r) => ({ x: await thumbnail(r.image.bytes), y: r.label })));
  const heldOut = await Promise.all((dataset.splits.get("test") ?? []).map(async (r) => ({ x: await thumbnail(r.image.bytes), y: r.label })));
  const dims = train[0]?.x.length ?? 0;
  const centroids = Array.from({ length: classes }, () => new Array<number>(dims).fill(0));
  for (const { x, y } of train) x.forEach((v, k) => (centroids[y]![k]! += v / perClass));
  const distance = (a: number[], b: number[]): number => a.reduce((s, v, k) => s + (v - (b[k] ?? 0)) ** 2, 0);
  let correct = 0;
  for (const { x, y } of heldOut) {
    const scores = centroids.map((c) => distance(x, c));
    if (scores.indexOf(Math.min(...scores)) === y) correct++;
  }
  const accuracy = correct / heldOut.length;
  // Chance is 0.1; with 100 held-out images 0.25 is five standard deviations above it (this seed
  // gives 0.33).
  // (This pixel-space baseline is deliberately weak: the breaks are small local structures.)
  assert.ok(accuracy >= 0.25, `nearest-centroid accuracy ${accuracy}`);
  // Not trivial: no two images are identical, and within-class spread is comparable to the
  // distance between class centroids.
  const seen = new Set(train.map((r) => r.x.join(",")));
  assert.equal(seen.size, train.length);
  const within = train.reduce((s, { x, y }) => s + distance(x, centroids[y]!), 0) / train.length;
  let between = 0;
  for (let a = 0; a < classes; a++) for (let b = a + 1; b < classes; b++) between += distance(centroids[a]!, centroids[b]!);
  between /= (classes * (classes - 1)) / 2;
  assert.ok(within > between, `within-class spread ${within} vs between-centroid ${between}`);
});
