/**
 * The import job behind `splint data import`: a folder of class images (or a Kaggle archive) →
 * a Hugging Face DatasetDict folder with features {image: Image(), label: ClassLabel(names)}.
 *
 * Every file is decoded once; unusable ones are listed with the reason in the summary and in a
 * JSON report next to the output. The dataset is written to a temp folder and renamed into place,
 * and nothing is written when no usable image remains.
 */
import { randomBytes } from "node:crypto";
import { readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Rng } from "../util/rng.ts";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError, SplintError } from "../util/errors.ts";
import type { Output, Progress } from "../util/output.ts";
import { saveDatasetDict, type DatasetFormat } from "./hf-dataset.ts";
import { checkImageBytes } from "./image-check.ts";
import { DEFAULT_KAGGLE_API, downloadKaggleDataset, parseKaggleRef, resolveKaggleCredentials } from "./kaggle.ts";
import { codePointCompare, detectLayout, type LayoutKind, type SkippedFile } from "./layout.ts";
import type { DatasetRow } from "./types.ts";
import { extractZip } from "./zip.ts";

export interface ImportOptions {
  /** Output dataset folder. */
  readonly out: string;
  readonly format: DatasetFormat;
  /** Fraction of each train class moved to a new "validation" split (0 = none). */
  readonly valFraction: number;
  readonly seed: number;
  /** Where the JSON report goes; default `<out>.import-report.json`. */
  readonly reportFile?: string;
  readonly output: Output;
}

export interface SplitSummary {
  readonly name: string;
  readonly total: number;
  /** Class name → number of images, for every class. */
  readonly perClass: Readonly<Record<string, number>>;
}

export interface ImportSummary {
  /** The folder or Kaggle dataset imported. */
  readonly source: string;
  readonly layout: LayoutKind;
  readonly out: string;
  readonly format: DatasetFormat;
  readonly report: string;
  readonly classNames: readonly string[];
  readonly splits: readonly SplitSummary[];
  readonly skipped: readonly SkippedFile[];
  readonly warnings: readonly string[];
}

const SPLIT_ORDER = ["train", "validation", "test"];
/** Images decoded at once; sharp decodes on libuv's thread pool. */
const DECODE_CONCURRENCY = 4;

interface Candidate {
  readonly split: string;
  readonly className: string;
  readonly file: string;
}

interface Usable {
  readonly split: string;
  readonly className: string;
  readonly bytes: Uint8Array;
  readonly relativePath: string;
}

function checkOptions(options: ImportOptions): void {
  const f = options.valFraction;
  if (!Number.isFinite(f) || f < 0 || f >= 1) throw new InputError("--val-fraction", `${f} is not in [0, 1)`);
  if (!Number.isSafeInteger(options.seed)) throw new InputError("--seed", `${options.seed} is not an integer`);
}

/** Imports a local folder in one of the layouts `detectLayout` knows. */
export async function importImageFolder(dir: string, options: ImportOptions, source = dir): Promise<ImportSummary> {
  checkOptions(options);
  const layout = await detectLayout(dir);
  const importRoot = path.resolve(dir);
  const relative = (file: string) => path.relative(importRoot, file).split(path.sep).join("/");
  const skipped: SkippedFile[] = [...layout.skipped];
  const warnings: string[] = [];

  const candidates: Candidate[] = [];
  for (const [split, byClass] of layout.files) {
    for (const [className, files] of byClass) for (const file of files) candidates.push({ split, className, file });
  }
  const usable = await checkAll(candidates, relative, skipped, options.output);

  const present = new Set(usable.map((u) => u.className));
  const classNames = layout.classNames.filter((c) => present.has(c));
  for (const c of layout.classNames) {
    if (!present.has(c)) warnings.push(`class "${c}" has no usable images; it is left out of the class list`);
  }
  const label = new Map(classNames.map((c, i) => [c, i]));

  const splits = new Map<string, DatasetRow[]>();
  const splitNames = [...new Set(candidates.map((c) => c.split).concat([...layout.files.keys()]))].sort(
    (a, b) => SPLIT_ORDER.indexOf(a) - SPLIT_ORDER.indexOf(b),
  );
  for (const split of splitNames) splits.set(split, []);
  for (const u of usable) {
    splits.get(u.split)!.push({ image: { bytes: u.bytes, path: u.relativePath }, label: label.get(u.className)! });
  }
  for (const rows of splits.values()) rows.sort((a, b) => a.label - b.label || codePointCompare(a.image.path ?? "", b.image.path ?? ""));

  if (options.valFraction > 0) {
    if (splits.has("validation")) {
      throw new InputError("--val-fraction", `${dir} already has a validation split`, "drop --val-fraction to keep the folder's own split");
    }
    const train = splits.get("train");
    if (!train || train.length === 0) throw new InputError("--val-fraction", `${dir} has no train images to carve a validation split from`);
    const { kept, carved } = stratifiedSplit(train, options.valFraction, options.seed);
    splits.set("train", kept);
    splits.set("validation", carved);
    const ordered = new Map<string, DatasetRow[]>();
    for (const name of SPLIT_ORDER) if (splits.has(name)) ordered.set(name, splits.get(name)!);
    splits.clear();
    for (const [k, v] of ordered) splits.set(k, v);
  }

  for (const [split, rows] of splits) {
    if (rows.length === 0) {
      warnings.push(`split "${split}" has no usable images`);
      continue;
    }
    const seen = new Set(rows.map((r) => r.label));
    for (const c of classNames) if (!seen.has(label.get(c)!)) warnings.push(`class "${c}" has no images in split "${split}"`);
  }
  if (!splits.has("train")) warnings.push('there is no "train" split');

  const summary: ImportSummary = {
    source,
    layout: layout.kind,
    out: options.out,
    format: options.format,
    report: options.reportFile ?? `${path.resolve(options.out)}.import-report.json`,
    classNames,
    splits: [...splits].map(([name, rows]) => ({ name, total: rows.length, perClass: countPerClass(rows, classNames) })),
    skipped,
    warnings,
  };
  await writeFileAtomic(summary.report, `${JSON.stringify(summary, null, 2)}\n`);
  if (usable.length === 0) {
    throw new SplintError(
      `no usable images in ${source}: ${skipped.length} file(s) skipped; nothing was written to ${options.out}`,
      `the reasons are listed in ${summary.report}`,
    );
  }
  await saveDatasetDict(options.out, { classNames, splits }, options.format);
  return summary;
}

async function checkAll(candidates: readonly Candidate[], relative: (f: string) => string, skipped: SkippedFile[], output: Output): Promise<Usable[]> {
  const results: (Usable | null)[] = new Array(candidates.length).fill(null);
  const progress = output.progress("checking images", candidates.length, "files");
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < candidates.length; i = next++) {
      const c = candidates[i]!;
      const rel = relative(c.file);
      let bytes: Uint8Array;
      try {
        bytes = await readFile(c.file);
      } catch (error) {
        skipped.push({ file: rel, reason: `cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})` });
        progress.increment();
        continue;
      }
      const check = await checkImageBytes(bytes);
      if (check.ok) results[i] = { split: c.split, className: c.className, bytes, relativePath: rel };
      else skipped.push({ file: rel, reason: check.reason });
      progress.increment();
    }
  };
  try {
    await Promise.all(Array.from({ length: DECODE_CONCURRENCY }, worker));
  } finally {
    progress.stop();
  }
  skipped.sort((a, b) => codePointCompare(a.file, b.file));
  return results.filter((r): r is Usable => r !== null);
}

function countPerClass(rows: readonly DatasetRow[], classNames: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const c of classNames) counts[c] = 0;
  for (const row of rows) counts[classNames[row.label]!]!++;
  return counts;
}

/**
 * Moves round(n·fraction) rows of each class (chosen by a seeded shuffle) into `carved`, keeping
 * at least one row of every class in `kept`. Both keep the input order.
 */
export function stratifiedSplit(rows: readonly DatasetRow[], fraction: number, seed: number): { kept: DatasetRow[]; carved: DatasetRow[] } {
  const rng = new Rng(seed);
  const byLabel = new Map<number, number[]>();
  rows.forEach((row, i) => {
    const list = byLabel.get(row.label) ?? [];
    list.push(i);
    byLabel.set(row.label, list);
  });
  const carvedIndex = new Set<number>();
  for (const label of [...byLabel.keys()].sort((a, b) => a - b)) {
    const indices = byLabel.get(label)!;
    const take = Math.min(Math.round(indices.length * fraction), indices.length - 1);
    const order = rng.permutation(indices.length);
    for (let k = 0; k < take; k++) carvedIndex.add(indices[order[k]!]!);
  }
  const kept: DatasetRow[] = [];
  const carved: DatasetRow[] = [];
  rows.forEach((row, i) => (carvedIndex.has(i) ? carved : kept).push(row));
  return { kept, carved };
}

export interface KaggleImportOptions extends ImportOptions {
  /** Kaggle API base URL (default https://www.kaggle.com). */
  readonly apiBase?: string;
  /** Where archives are kept between runs (default $SPLINT_CACHE_DIR or ~/.cache/splint). */
  readonly cacheDir?: string;
}

export function defaultCacheDir(): string {
  return process.env.SPLINT_CACHE_DIR || path.join(os.homedir(), ".cache", "splint");
}

/**
 * Downloads OWNER/DATASET from Kaggle (or reuses the verified archive from an earlier run),
 * extracts it into a temp folder and imports that.
 */
export async function importFromKaggle(refText: string, options: KaggleImportOptions): Promise<ImportSummary> {
  checkOptions(options);
  const ref = parseKaggleRef(refText);
  const cache = path.join(options.cacheDir ?? defaultCacheDir(), "kaggle", ref.owner, ref.slug);
  const archive = path.join(cache, `${ref.slug}.zip`);
  const { output } = options;
  if (await exists(archive)) {
    output.log(`using the archive downloaded earlier: ${archive}`);
  } else {
    const credentials = await resolveKaggleCredentials();
    output.log(`downloading ${ref.owner}/${ref.slug} (credentials from ${credentials.source})`);
    const result = await downloadKaggleDataset(ref, {
      apiBase: options.apiBase ?? DEFAULT_KAGGLE_API,
      credentials,
      destination: archive,
      progress: (total) => output.progress("download", total, "bytes"),
      log: (m) => output.log(m),
    });
    output.log(`downloaded ${result.bytes} bytes${result.md5Verified ? ", MD5 verified" : " (no MD5 from the server; size verified)"}`);
  }
  const extracted = path.join(cache, `extract-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    let progress: Progress | undefined;
    const { files } = await extractZip(archive, extracted, (done, total) => {
      progress ??= output.progress("extracting", total, "entries");
      progress.update(done);
    }).catch(async (error: unknown) => {
      progress?.stop();
      // A cached archive that cannot be extracted would fail every later run the same way.
      await rm(archive, { force: true });
      throw error;
    });
    progress?.stop();
    output.log(`extracted ${files} files`);
    return await importImageFolder(extracted, options, `kaggle:${ref.owner}/${ref.slug}`);
  } finally {
    await rm(extracted, { recursive: true, force: true });
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}
