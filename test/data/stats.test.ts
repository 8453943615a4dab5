import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { computeDatasetStats, formatClassTable, renderSampleGrid, sampleIndices, writeStatsReport } from "../../src/data/stats.ts";
import type { DatasetDict, DatasetRow } from "../../src/data/types.ts";

async function image(width: number, height: number, channels: 1 | 3 | 4, format: "png" | "jpeg"): Promise<Buffer> {
  const base = channels === 1
    ? sharp({ create: { width, height, channels: 3, background: "#777" } }).toColourspace("b-w")
    : sharp({ create: { width, height, channels: channels === 4 ? 4 : 3, background: { r: 200, g: 10, b: 10, alpha: 0.5 } } });
  return format === "png" ? base.png().toBuffer() : base.jpeg().toBuffer();
}

async function mixedDataset(): Promise<DatasetDict> {
  const row = async (label: number, w: number, h: number, c: 1 | 3 | 4, f: "png" | "jpeg"): Promise<DatasetRow> => ({
    image: { bytes: await image(w, h, c, f), path: `${label}-${w}x${h}.${f}` },
    label,
  });
  return {
    classNames: ["alpha", "beta", "gamma"],
    splits: new Map([
      ["train", [await row(0, 40, 30, 1, "png"), await row(0, 40, 30, 3, "jpeg"), await row(1, 50, 20, 4, "png"), await row(2, 40, 30, 1, "png")]],
      ["test", [await row(2, 64, 64, 3, "png"), { image: { bytes: new Uint8Array([0, 1, 2]), path: "broken.png" }, label: 1 }]],
    ]),
  };
}

test("counts classes per split, sizes, modes and formats, and lists unreadable images", async () => {
  const stats = await computeDatasetStats(await mixedDataset());
  assert.deepEqual(stats.splits.map((s) => [s.split, s.total, [...s.counts]]), [
    ["train", 4, [2, 1, 1]],
    ["test", 2, [0, 1, 1]],
  ]);
  assert.deepEqual(stats.sizes[0], { value: "40x30", count: 3 });
  assert.deepEqual(new Set(stats.sizes.map((s) => s.value)), new Set(["40x30", "50x20", "64x64"]));
  assert.deepEqual(stats.sizeRange, { minWidth: 40, maxWidth: 64, minHeight: 20, maxHeight: 64 });
  assert.deepEqual(Object.fromEntries(stats.modes.map((m) => [m.value, m.count])), { L: 2, RGB: 2, RGBA: 1 });
  assert.deepEqual(Object.fromEntries(stats.formats.map((m) => [m.value, m.count])), { png: 4, jpeg: 1 });
  assert.deepEqual(stats.undecodable.map((u) => [u.split, u.index, u.path]), [["test", 1, "broken.png"]]);
  const table = formatClassTable(stats);
  assert.match(table, /^id\s+class\s+train\s+test$/m);
  assert.match(table, /^ 0\s+alpha\s+2\s+0$/m);
  assert.match(table, /total\s+4\s+2$/m);
});

test("sample indices are seeded, distinct and in range", () => {
  assert.deepEqual(sampleIndices(50, 6, 420), sampleIndices(50, 6, 420));
  assert.notDeepEqual(sampleIndices(50, 6, 420), sampleIndices(50, 6, 421));
  const picked = sampleIndices(10, 20, 1);
  assert.equal(picked.length, 10);
  assert.deepEqual([...picked].sort((a, b) => a - b), [...Array(10).keys()]);
});

test("sample grid has one tile per sample, with their labels, and survives an unreadable image", async () => {
  const dataset = await mixedDataset();
  const grid = await renderSampleGrid(dataset, { split: "test", count: 2, seed: 3, tile: 64, columns: 2 });
  const meta = await sharp(grid.png).metadata();
  assert.ok((meta.width ?? 0) >= 128 && (meta.height ?? 0) >= 64);
  assert.deepEqual(grid.samples.map((s) => s.labelName).sort(), ["beta", "gamma"]);
  await assert.rejects(renderSampleGrid(dataset, { split: "validation", count: 2, seed: 3 }), /validation/);
});

test("writes stats.json, the class-count chart and the sample grid", async () => {
  const dir = await mkdtemp(join(tmpdir(), "splint-stats-"));
  try {
    const report = await writeStatsReport(await mixedDataset(), dir, { samples: 3, seed: 420 });
    assert.deepEqual((await readdir(dir)).sort(), ["class-counts.png", "samples.png", "stats.json"]);
    const json = JSON.parse(await readFile(join(dir, "stats.json"), "utf8")) as { splits: { split: string; counts: number[] }[]; samples: unknown[] };
    assert.deepEqual(json.splits[0]?.counts, [2, 1, 1]);
    assert.equal(json.samples.length, 3);
    assert.equal(report.samples.length, 3);
    assert.equal((await sharp(join(dir, "class-counts.png")).metadata()).format, "png");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
