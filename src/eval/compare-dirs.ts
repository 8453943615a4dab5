import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import { compareRuns, type Comparison } from "./compare.ts";
import { readEvalRun } from "./records.ts";

export const COMPARISON_FILE = "comparison.json";

/** Reads two eval folders, pairs them, and (with `out`) writes comparison.json. */
export async function compareEvalDirs(beforeDir: string, afterDir: string, out?: string): Promise<Comparison> {
  const before = await readEvalRun(beforeDir);
  const after = await readEvalRun(afterDir);
  if (before.summary.split !== after.summary.split || before.summary.dataset !== after.summary.dataset) {
    throw new InputError(
      afterDir,
      `evaluated ${after.summary.dataset} split "${after.summary.split}", the first run ${before.summary.dataset} split "${before.summary.split}"`,
      "compare two evaluations of the same dataset split",
    );
  }
  const comparison = compareRuns({ ...before, source: beforeDir }, { ...after, source: afterDir });
  if (out !== undefined) await writeFileAtomic(join(out, COMPARISON_FILE), `${JSON.stringify(comparison, null, 2)}\n`);
  return comparison;
}

export async function readComparison(dir: string): Promise<Comparison> {
  const file = join(dir, COMPARISON_FILE);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new InputError(file, `cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})`, "write it with `splint compare BEFORE AFTER --out DIR`");
  }
  try {
    return JSON.parse(text) as Comparison;
  } catch (error) {
    throw new InputError(file, `invalid JSON: ${(error as Error).message}`);
  }
}
