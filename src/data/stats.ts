import { join } from "node:path";
import sharp, { type Metadata, type OverlayOptions } from "sharp";
import { barChart, writeChart, type ChartSpec } from "../util/charts.ts";
import { writeFileAtomic } from "../util/atomic.ts";
import { Random } from "./synth-random.ts";
import type { DatasetDict, DatasetRow } from "./types.ts";

/**
 * What the tutorial's exploration cells show, for any DatasetDict: per-split class counts, the
 * distribution of image sizes, colour modes and formats, and a grid of seeded random samples with
 * their labels.
 */
export interface SplitStats {
  readonly split: string;
  readonly total: number;
  /** counts[label] = rows of that class. */
  readonly counts: readonly number[];
}

export interface Tally {
  readonly value: string;
  readonly count: number;
}

export interface DatasetStats {
  readonly classNames: readonly string[];
  readonly splits: readonly SplitStats[];
  /** "WIDTHxHEIGHT" → images, most common first. */
  readonly sizes: readonly Tally[];
  readonly sizeRange: { readonly minWidth: number; readonly maxWidth: number; readonly minHeight: number; readonly maxHeight: number } | null;
  /** PIL-style mode (L, LA, RGB, RGBA, P, CMYK, I;16) → images. */
  readonly modes: readonly Tally[];
  /** Encoded format (png, jpeg, …) → images. */
  readonly formats: readonly Tally[];
  readonly undecodable: readonly { readonly split: string; readonly index: number; readonly path: string | null; readonly error: string }[];
}

function pilMode(meta: Metadata): string {
  if (meta.isPalette) return "P";
  if (meta.space === "cmyk") return "CMYK";
  const wide = meta.depth === "ushort";
  switch (meta.channels) {
    case 1:
      return wide ? "I;16" : "L";
    case 2:
      return "LA";
    case 3:
      return wide ? "RGB;16" : "RGB";
    default:
      return wide ? "RGBA;16" : "RGBA";
  }
}

function tallies(values: readonly string[]): Tally[] {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].map(([value, count]) => ({ value, count })).sort((a, b) => b.count - a.count || a.value.localeCompare(b.value));
}

export interface StatsOptions {
  readonly concurrency?: number;
  readonly onImage?: (done: number, total: number) => void;
}

/** Reads every image's header (no full decode) and counts. */
export async function computeDatasetStats(dataset: DatasetDict, options: StatsOptions = {}): Promise<DatasetStats> {
  const splits: SplitStats[] = [];
  const jobs: { split: string; index: number; row: DatasetRow }[] = [];
  for (const [split, rows] of dataset.splits) {
    const counts = new Array<number>(dataset.classNames.length).fill(0);
    rows.forEach((row, index) => {
      counts[row.label] = (counts[row.label] ?? 0) + 1;
      jobs.push({ split, index, row });
    });
    splits.push({ split, total: rows.length, counts });
  }
  const metas = new Array<Metadata | Error>(jobs.length);
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = next++;
      const { row } = jobs[job] as (typeof jobs)[number];
      metas[job] = await sharp(row.image.bytes)
        .metadata()
        .catch((error: unknown) => (error instanceof Error ? error : new Error(String(error))));
      options.onImage?.(++done, jobs.length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 4) }, worker));

  const sizes: string[] = [];
  const modes: string[] = [];
  const formats: string[] = [];
  const undecodable: DatasetStats["undecodable"][number][] = [];
  let range: { minWidth: number; maxWidth: number; minHeight: number; maxHeight: number } | null = null;
  metas.forEach((meta, k) => {
    const { split, index, row } = jobs[k] as (typeof jobs)[number];
    if (meta instanceof Error) {
      undecodable.push({ split, index, path: row.image.path, error: meta.message });
      return;
    }
    sizes.push(`${meta.width}x${meta.height}`);
    modes.push(pilMode(meta));
    formats.push(meta.format);
    range = range === null
      ? { minWidth: meta.width, maxWidth: meta.width, minHeight: meta.height, maxHeight: meta.height }
      : {
          minWidth: Math.min(range.minWidth, meta.width),
          maxWidth: Math.max(range.maxWidth, meta.width),
          minHeight: Math.min(range.minHeight, meta.height),
          maxHeight: Math.max(range.maxHeight, meta.height),
        };
  });
  return {
    classNames: dataset.classNames,
    splits,
    sizes: tallies(sizes),
    sizeRange: range,
    modes: tallies(modes),
    formats: tallies(formats),
    undecodable,
  };
}

/** The per-class count table, one column per split, as fixed-width text. */
export function formatClassTable(stats: DatasetStats): string {
  const header = ["id", "class", ...stats.splits.map((s) => s.split)];
  const body = stats.classNames.map((name, label) => [String(label), name, ...stats.splits.map((s) => String(s.counts[label] ?? 0))]);
  const total = ["", "total", ...stats.splits.map((s) => String(s.total))];
  const rows = [header, ...body, total];
  const widths = header.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  const numeric = (c: number): boolean => c !== 1;
  const line = (r: string[]): string => r.map((cell, c) => (numeric(c) ? cell.padStart(widths[c] ?? 0) : cell.padEnd(widths[c] ?? 0))).join("  ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(header), rule, ...body.map(line), rule, line(total)].join("\n");
}

export function formatStats(stats: DatasetStats): string {
  const list = (t: readonly Tally[], limit = 8): string =>
    t.slice(0, limit).map((x) => `${x.value} (${x.count})`).join(", ") + (t.length > limit ? `, … ${t.length - limit} more` : "");
  const r = stats.sizeRange;
  const lines = [
    formatClassTable(stats),
    "",
    `image sizes: ${list(stats.sizes)}`,
    r ? `size range:  width ${r.minWidth}–${r.maxWidth}, height ${r.minHeight}–${r.maxHeight}` : "size range:  (no readable images)",
    `modes:       ${list(stats.modes)}`,
    `formats:     ${list(stats.formats)}`,
  ];
  if (stats.undecodable.length > 0) lines.push(`unreadable:  ${stats.undecodable.length} (${stats.undecodable.slice(0, 3).map((u) => `${u.split}[${u.index}]`).join(", ")})`);
  return lines.join("\n");
}

export function classCountsChart(stats: DatasetStats): ChartSpec {
  return barChart(
    stats.splits.flatMap((s) => stats.classNames.map((category, label) => ({ category, value: s.counts[label] ?? 0, series: s.split }))),
    { title: "Images per class", valueTitle: "images", categoryOrder: stats.classNames },
  );
}

/** `count` distinct row indices of a split of length n, chosen by a seeded shuffle. */
export function sampleIndices(n: number, count: number, seed: number): number[] {
  const random = new Random(seed);
  const indices = Array.from({ length: n }, (_, i) => i);
  const take = Math.min(count, n);
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(random.next() * (n - i));
    [indices[i], indices[j]] = [indices[j] as number, indices[i] as number];
  }
  return indices.slice(0, take);
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export interface SampleGridOptions {
  readonly split: string;
  readonly count: number;
  readonly seed: number;
  /** Tile side in pixels. */
  readonly tile?: number;
  readonly columns?: number;
}

export interface SampleGrid {
  readonly png: Buffer;
  readonly samples: readonly { readonly index: number; readonly label: number; readonly labelName: string; readonly path: string | null }[];
}

/**
 * Seeded random rows of one split side by side, each titled "Label: <class>" as in the
 * tutorial's matplotlib cell. Images keep their aspect ratio on a black tile; an unreadable image
 * shows as a grey tile so the grid never silently shrinks.
 */
export async function renderSampleGrid(dataset: DatasetDict, options: SampleGridOptions): Promise<SampleGrid> {
  const rows = dataset.splits.get(options.split);
  if (!rows || rows.length === 0) throw new RangeError(`split "${options.split}" is missing or empty`);
  const tile = options.tile ?? 224;
  const chosen = sampleIndices(rows.length, options.count, options.seed);
  const columns = Math.max(1, Math.min(options.columns ?? 4, chosen.length));
  const gridRows = Math.ceil(chosen.length / columns);
  const band = Math.round(tile * 0.14);
  const gap = 8;
  const width = columns * tile + (columns + 1) * gap;
  const height = gridRows * (tile + band) + (gridRows + 1) * gap;
  const layers: OverlayOptions[] = [];
  const texts: string[] = [];
  const samples: SampleGrid["samples"][number][] = [];
  for (const [k, index] of chosen.entries()) {
    const row = rows[index] as DatasetRow;
    const labelName = dataset.classNames[row.label] ?? String(row.label);
    samples.push({ index, label: row.label, labelName, path: row.image.path });
    const left = gap + (k % columns) * (tile + gap);
    const top = gap + Math.floor(k / columns) * (tile + band + gap);
    const image = await sharp(row.image.bytes)
      .resize(tile, tile, { fit: "contain", background: "#000000" })
      .flatten({ background: "#000000" })
      .png()
      .toBuffer()
      .catch(() => sharp({ create: { width: tile, height: tile, channels: 3, background: "#888888" } }).png().toBuffer());
    layers.push({ input: image, left, top: top + band });
    const title = `Label: ${labelName}`;
    // DejaVu Sans averages ~0.6 em per character: shrink long labels to fit the tile.
    const fontSize = Math.max(8, Math.min(Math.round(band * 0.55), Math.floor(tile / (0.62 * title.length))));
    texts.push(`<text x="${left + tile / 2}" y="${top + band * 0.72}" font-size="${fontSize}" text-anchor="middle">${escapeXml(title)}</text>`);
  }
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><g font-family="DejaVu Sans" fill="#000">${texts.join("")}</g></svg>`;
  layers.push({ input: Buffer.from(svg), left: 0, top: 0 });
  const png = await sharp({ create: { width, height, channels: 3, background: "#ffffff" } }).composite(layers).png().toBuffer();
  return { png, samples };
}

export interface StatsReportOptions extends StatsOptions {
  readonly sampleSplit?: string;
  readonly samples: number;
  readonly seed: number;
}

export interface StatsReport {
  readonly stats: DatasetStats;
  readonly samples: SampleGrid["samples"];
  readonly files: { readonly json: string; readonly chart: string; readonly grid: string | null };
}

/** Computes the stats and writes stats.json, class-counts.png and samples.png into outDir. */
export async function writeStatsReport(dataset: DatasetDict, outDir: string, options: StatsReportOptions): Promise<StatsReport> {
  const stats = await computeDatasetStats(dataset, options);
  const files = { json: join(outDir, "stats.json"), chart: join(outDir, "class-counts.png"), grid: join(outDir, "samples.png") };
  await writeChart(files.chart, classCountsChart(stats));
  const split = options.sampleSplit ?? (dataset.splits.has("train") ? "train" : [...dataset.splits.keys()][0]);
  let samples: SampleGrid["samples"] = [];
  const haveRows = split !== undefined && (dataset.splits.get(split)?.length ?? 0) > 0;
  if (haveRows && options.samples > 0) {
    const grid = await renderSampleGrid(dataset, { split, count: options.samples, seed: options.seed });
    await writeFileAtomic(files.grid, grid.png);
    samples = grid.samples;
  }
  const written = { ...files, grid: samples.length > 0 ? files.grid : null };
  await writeFileAtomic(files.json, `${JSON.stringify({ ...stats, samples, files: written }, null, 2)}\n`);
  return { stats, samples, files: written };
}
