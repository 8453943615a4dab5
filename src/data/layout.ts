/**
 * Finds the images of an image-classification folder and which split and class each belongs to.
 *
 * Two layouts are recognised, with split names matched case-insensitively (Train, TEST, val…):
 * - "class-split": `<Class>/{Train,Test}/*` — the Kaggle bone-break archive, whose classes sit
 *   under wrapper folders ("Bone Break Classification/Bone Break Classification/");
 * - "split-class": `{train,test}/<Class>/*` — the common ImageFolder-with-splits layout.
 * Single-folder wrappers are descended automatically. Every file that is not used is returned in
 * `skipped` with the reason, so nothing disappears silently.
 */
import { readdir } from "node:fs/promises";
import path from "node:path";
import { InputError } from "../util/errors.ts";
import { hasImageExtension, IMAGE_EXTENSIONS } from "./image-check.ts";

export type LayoutKind = "class-split" | "split-class";

export interface SkippedFile {
  /** Path relative to the folder given to the import. */
  readonly file: string;
  readonly reason: string;
}

export interface DetectedLayout {
  readonly kind: LayoutKind;
  /** The folder holding the class (or split) folders, after any wrapper folders. */
  readonly root: string;
  /** Canonical split name ("train", "validation", "test") → class folder name → absolute image paths, sorted. */
  readonly files: ReadonlyMap<string, ReadonlyMap<string, readonly string[]>>;
  /** Every class folder name found, in code-point order (Python's `sorted`). */
  readonly classNames: readonly string[];
  readonly skipped: readonly SkippedFile[];
}

const SPLIT_ALIASES: Record<string, string> = {
  train: "train",
  training: "train",
  test: "test",
  testing: "test",
  val: "validation",
  valid: "validation",
  validation: "validation",
};

/** The canonical split for a folder name, or null when the name is not a split. */
export function canonicalSplit(name: string): string | null {
  return SPLIT_ALIASES[name.toLowerCase()] ?? null;
}

/** Code-point order, as Python's `sorted()` orders the class names (not locale order). */
export function codePointCompare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Wrappers deeper than this are not a layout we know; stop instead of walking a whole disk. */
const MAX_WRAPPER_DEPTH = 4;

interface Listing {
  dirs: string[];
  files: string[];
  /** Hidden or OS metadata entries (".DS_Store", "__MACOSX", "Thumbs.db"). */
  system: string[];
}

function isSystemEntry(name: string): boolean {
  return name.startsWith(".") || name === "__MACOSX" || name === "Thumbs.db" || name === "desktop.ini";
}

async function list(dir: string): Promise<Listing> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new InputError(dir, "does not exist");
    if (code === "ENOTDIR") throw new InputError(dir, "is not a folder");
    throw new InputError(dir, `cannot be read (${(error as Error).message})`);
  }
  const result: Listing = { dirs: [], files: [], system: [] };
  for (const entry of entries) {
    if (isSystemEntry(entry.name)) result.system.push(entry.name);
    else if (entry.isDirectory()) result.dirs.push(entry.name);
    else result.files.push(entry.name);
  }
  result.dirs.sort(codePointCompare);
  result.files.sort(codePointCompare);
  result.system.sort(codePointCompare);
  return result;
}

/** All files under `dir` (recursively), system entries reported separately. */
async function walk(dir: string): Promise<{ files: string[]; system: string[] }> {
  const listing = await list(dir);
  const files = listing.files.map((f) => path.join(dir, f));
  const system = listing.system.map((f) => path.join(dir, f));
  for (const sub of listing.dirs) {
    const inner = await walk(path.join(dir, sub));
    files.push(...inner.files);
    system.push(...inner.system);
  }
  return { files, system };
}

class LayoutBuilder {
  readonly files = new Map<string, Map<string, string[]>>();
  readonly classes = new Set<string>();
  readonly skipped: SkippedFile[] = [];

  constructor(private readonly importRoot: string) {}

  relative(file: string): string {
    return path.relative(this.importRoot, file).split(path.sep).join("/");
  }

  skip(file: string, reason: string): void {
    this.skipped.push({ file: this.relative(file), reason });
  }

  /** Skips every file under `dir` (or `dir` itself when it is a file entry) with one reason. */
  async skipAll(entry: string, isDir: boolean, reason: string): Promise<void> {
    if (!isDir) return this.skip(entry, reason);
    const { files, system } = await walk(entry);
    for (const f of [...files, ...system]) this.skip(f, reason);
  }

  /** Adds the images under a class folder of one split; other files are skipped with the reason. */
  async addClassFolder(split: string, className: string, dir: string): Promise<void> {
    this.classes.add(className);
    const byClass = this.files.get(split) ?? new Map<string, string[]>();
    this.files.set(split, byClass);
    const images = byClass.get(className) ?? [];
    byClass.set(className, images);
    const { files, system } = await walk(dir);
    for (const f of system) this.skip(f, "hidden or system file");
    for (const f of files) {
      if (hasImageExtension(f)) images.push(f);
      else this.skip(f, `not an image file (expected ${IMAGE_EXTENSIONS.join(", ")})`);
    }
    images.sort(codePointCompare);
  }
}

async function readClassSplit(root: string, listing: Listing, builder: LayoutBuilder): Promise<void> {
  for (const className of listing.dirs) {
    const classDir = path.join(root, className);
    const inner = await list(classDir);
    builder.classes.add(className);
    for (const sub of inner.dirs) {
      const split = canonicalSplit(sub);
      if (split) await builder.addClassFolder(split, className, path.join(classDir, sub));
      else await builder.skipAll(path.join(classDir, sub), true, `folder "${sub}" is not a split (Train, Test or Validation)`);
    }
    for (const f of inner.files) builder.skip(path.join(classDir, f), "not inside a Train/Test folder of its class");
    for (const f of inner.system) await builder.skipAll(path.join(classDir, f), false, "hidden or system file");
  }
}

async function readSplitClass(root: string, listing: Listing, builder: LayoutBuilder): Promise<void> {
  for (const sub of listing.dirs) {
    const split = canonicalSplit(sub);
    const splitDir = path.join(root, sub);
    if (!split) {
      await builder.skipAll(splitDir, true, `folder "${sub}" is not a split (train, test or validation)`);
      continue;
    }
    const inner = await list(splitDir);
    for (const className of inner.dirs) await builder.addClassFolder(split, className, path.join(splitDir, className));
    for (const f of inner.files) builder.skip(path.join(splitDir, f), "not inside a class folder");
    for (const f of inner.system) builder.skip(path.join(splitDir, f), "hidden or system file");
  }
}

/**
 * Whether `dir` is a class folder of the class-split layout: it has a split subfolder, and its
 * split subfolders are not themselves holders of class folders only. A folder like
 * `wrapper/{train,test}/<Class>/` is a wrapper around the split-class layout; taking it for one
 * class named "wrapper" would import every image under a single label.
 */
async function isClassWithSplits(dir: string): Promise<boolean> {
  const listing = await list(dir);
  const splits = listing.dirs.filter((d) => canonicalSplit(d) !== null);
  if (splits.length === 0) return false;
  for (const split of splits) {
    const inner = await list(path.join(dir, split));
    if (inner.files.some(hasImageExtension) || inner.dirs.length === 0) return true;
  }
  return false;
}

/**
 * Detects the layout under `dir` and lists its images by split and class. Throws InputError when
 * the folder matches neither layout (naming what it found and what was expected).
 */
export async function detectLayout(dir: string): Promise<DetectedLayout> {
  const importRoot = path.resolve(dir);
  const builder = new LayoutBuilder(importRoot);
  let root = importRoot;
  for (let depth = 0; ; depth++) {
    const listing = await list(root);
    const splitDirs = listing.dirs.filter((d) => canonicalSplit(d) !== null);
    let kind: LayoutKind | null = null;
    if (splitDirs.length > 0) kind = "split-class";
    else {
      for (const d of listing.dirs) {
        if (await isClassWithSplits(path.join(root, d))) {
          kind = "class-split";
          break;
        }
      }
    }
    if (kind) {
      for (const f of listing.files) builder.skip(path.join(root, f), "outside the class folders");
      for (const f of listing.system) await builder.skipAll(path.join(root, f), false, "hidden or system file");
      if (kind === "split-class") await readSplitClass(root, listing, builder);
      else await readClassSplit(root, listing, builder);
      return {
        kind,
        root,
        files: builder.files,
        classNames: [...builder.classes].sort(codePointCompare),
        skipped: builder.skipped,
      };
    }
    if (listing.dirs.length === 1 && listing.files.length === 0 && depth < MAX_WRAPPER_DEPTH) {
      for (const f of listing.system) await builder.skipAll(path.join(root, f), false, "hidden or system file");
      root = path.join(root, listing.dirs[0]!);
      continue;
    }
    throw new InputError(dir, `unknown layout: ${describe(importRoot, root, listing)}`, LAYOUT_HINT);
  }
}

const LAYOUT_HINT =
  "expected <Class>/{Train,Test}/*.png|jpg (the Kaggle bone-break layout, wrapper folders allowed) or {train,test}/<Class>/*.png|jpg";

function describe(importRoot: string, root: string, listing: Listing): string {
  const where = root === importRoot ? "at the top" : `in ${path.relative(importRoot, root)}`;
  const dirs = listing.dirs.length === 0 ? "no folders" : `folders ${preview(listing.dirs)} without Train/Test subfolders`;
  const files = listing.files.length === 0 ? "" : ` and ${listing.files.length} file(s) (${preview(listing.files)})`;
  return `found ${dirs}${files} ${where}`;
}

function preview(names: readonly string[]): string {
  const shown = names.slice(0, 4).map((n) => JSON.stringify(n));
  return names.length > 4 ? `${shown.join(", ")}, … (${names.length} in all)` : shown.join(", ");
}
