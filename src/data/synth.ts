import { mkdir, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { writeDirAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import { Random } from "./synth-random.ts";
import { SYNTH_CLASS_NAMES, renderSyntheticXray } from "./synth-xray.ts";
import type { DatasetDict, DatasetRow } from "./types.ts";

/**
 * The synthetic bone-break data set: procedural X-ray-like PNGs for the tutorial's ten classes,
 * in the Kaggle archive's nested layout. Image k of a class and split depends only on
 * (seed, class, split, k), so asking for more images per class keeps the earlier ones.
 */
export { SYNTH_CLASS_NAMES } from "./synth-xray.ts";

/** The two wrapper folders of the real Kaggle archive. */
export const KAGGLE_WRAPPER = join("Bone Break Classification", "Bone Break Classification");

export type SynthSplit = "Train" | "Test";
const SPLITS: readonly SynthSplit[] = ["Train", "Test"];

export interface SynthOptions {
  readonly perClass: number;
  readonly testPerClass: number;
  readonly seed: number;
  /** Image side in pixels. */
  readonly size: number;
}

export const DEFAULT_SYNTH_SIZE = 64;

export interface SynthSummary {
  readonly root: string;
  readonly classes: readonly string[];
  readonly counts: Record<SynthSplit, number>;
  readonly size: number;
  readonly seed: number;
}

/** One image as PNG bytes (8-bit grayscale). Deterministic: same arguments, same bytes. */
export async function synthesizeImagePng(
  options: Pick<SynthOptions, "seed" | "size">,
  classIndex: number,
  split: SynthSplit,
  index: number,
): Promise<Buffer> {
  const className = SYNTH_CLASS_NAMES[classIndex];
  if (className === undefined) throw new RangeError(`class index ${classIndex} out of range`);
  const random = new Random(options.seed, classIndex, SPLITS.indexOf(split), index);
  const pixels = renderSyntheticXray(className, random, options.size);
  return sharp(pixels, { raw: { width: options.size, height: options.size, channels: 1 } })
    .toColourspace("b-w")
    .png({ compressionLevel: 9, adaptiveFiltering: false })
    .toBuffer();
}

/** File name of image k in a class folder, e.g. "spiral-fracture-train-0007.png". */
export function synthFileName(className: string, split: SynthSplit, index: number): string {
  const slug = className.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return `${slug}-${split.toLowerCase()}-${String(index).padStart(4, "0")}.png`;
}

function countFor(options: SynthOptions, split: SynthSplit): number {
  return split === "Train" ? options.perClass : options.testPerClass;
}

function validate(options: SynthOptions): void {
  const checks: [string, number, number][] = [
    ["--per-class", options.perClass, 1],
    ["--test-per-class", options.testPerClass, 0],
    ["--size", options.size, 16],
  ];
  for (const [flag, value, min] of checks) {
    if (!Number.isInteger(value) || value < min) throw new InputError(flag, `must be an integer ≥ ${min}, got ${value}`);
  }
  if (!Number.isSafeInteger(options.seed) || options.seed < 0) throw new InputError("--seed", `must be a non-negative integer, got ${options.seed}`);
}

/**
 * Writes the data set under `out` as OUT/Bone Break Classification/Bone Break Classification/
 * <Class>/{Train,Test}/*.png. The tree is built in a sibling temp folder and renamed into place,
 * so an interrupted run never leaves a half-written data set; an existing non-empty `out` is
 * refused rather than mixed with.
 */
export async function writeSyntheticDataset(
  out: string,
  options: SynthOptions,
  onImage: (done: number, total: number) => void = () => {},
): Promise<SynthSummary> {
  validate(options);
  const existing = await readdir(out).catch(() => null);
  if (existing !== null && existing.length > 0) {
    throw new InputError(out, "already exists and is not empty", "choose a new output folder or remove this one");
  }
  const total = SYNTH_CLASS_NAMES.length * (options.perClass + options.testPerClass);
  let done = 0;
  await writeDirAtomic(out, async (staging) => {
    for (const [classIndex, className] of SYNTH_CLASS_NAMES.entries()) {
      for (const split of SPLITS) {
        const folder = join(staging, KAGGLE_WRAPPER, className, split);
        await mkdir(folder, { recursive: true });
        for (let index = 0; index < countFor(options, split); index++) {
          const png = await synthesizeImagePng(options, classIndex, split, index);
          await writeFile(join(folder, synthFileName(className, split, index)), png);
          onImage(++done, total);
        }
      }
    }
  });
  return {
    root: join(out, KAGGLE_WRAPPER),
    classes: [...SYNTH_CLASS_NAMES],
    counts: {
      Train: SYNTH_CLASS_NAMES.length * options.perClass,
      Test: SYNTH_CLASS_NAMES.length * options.testPerClass,
    },
    size: options.size,
    seed: options.seed,
  };
}

/**
 * The same images as an in-memory DatasetDict (splits "train" and "test", labels in class-name
 * order, which is already sorted) — what `data import` would make of the written folder; used by
 * tests and the demo without a round trip through the file system.
 */
export async function synthesizeDatasetDict(options: SynthOptions): Promise<DatasetDict> {
  validate(options);
  const splits = new Map<string, DatasetRow[]>();
  for (const split of SPLITS) {
    const rows: DatasetRow[] = [];
    for (const [label, className] of SYNTH_CLASS_NAMES.entries()) {
      for (let index = 0; index < countFor(options, split); index++) {
        const bytes = await synthesizeImagePng(options, label, split, index);
        rows.push({ image: { bytes, path: join(className, split, synthFileName(className, split, index)) }, label });
      }
    }
    splits.set(split.toLowerCase(), rows);
  }
  return { classNames: [...SYNTH_CLASS_NAMES], splits };
}
