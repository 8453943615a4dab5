import { createHash } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../util/atomic.ts";

/**
 * What each step of a recipe run was made from, so an edited recipe reruns exactly the steps it
 * affects. A step's hash covers its own resolved settings and the hashes of the steps it reads, so
 * a change flows downstream (a new learning rate reruns train, calibrate, eval-after and compare,
 * but not the data or eval-before). The record, RUN/.splint/steps/<step>.json, is written as
 * incomplete before the step runs and complete after: an incomplete record with the same hash is
 * an interrupted step to continue (training resumes from its checkpoints), a different hash is
 * stale output to throw away.
 *
 * Only settings are hashed, not the contents of folders a recipe points at (data.dir, model.dir):
 * changing the images in place is not seen; `--from data` redoes it.
 */

export interface StepRecord {
  readonly step: string;
  readonly hash: string;
  readonly complete: boolean;
  /** The settings hashed (without upstream hashes), to say what changed. */
  readonly inputs: unknown;
}

/** JSON with sorted object keys, so equal settings hash equally whatever their order in the file. */
export function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

export function stepHash(step: string, inputs: unknown, upstream: readonly string[]): string {
  return createHash("sha256").update(stableJson({ step, inputs, upstream })).digest("hex");
}

const recordFile = (root: string, step: string) => join(root, ".splint", "steps", `${step}.json`);

export async function readStepRecord(root: string, step: string): Promise<StepRecord | null> {
  try {
    const r = JSON.parse(await readFile(recordFile(root, step), "utf8")) as StepRecord;
    return typeof r.hash === "string" ? r : null;
  } catch {
    return null;
  }
}

export async function writeStepRecord(root: string, record: StepRecord): Promise<void> {
  await writeFileAtomic(recordFile(root, record.step), `${JSON.stringify(record, null, 2)}\n`);
}

export async function removeStepRecord(root: string, step: string): Promise<void> {
  await rm(recordFile(root, step), { force: true });
}

/** Top-level keys whose values differ between two recorded input objects (for the log line). */
export function changedKeys(before: unknown, after: unknown, prefix = ""): string[] {
  if (before === null || after === null || typeof before !== "object" || typeof after !== "object" || Array.isArray(before) || Array.isArray(after)) {
    return stableJson(before) === stableJson(after) ? [] : [prefix || "settings"];
  }
  const a = before as Record<string, unknown>;
  const b = after as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  return keys.flatMap((k) => {
    if (stableJson(a[k]) === stableJson(b[k])) return [];
    const path = prefix ? `${prefix}.${k}` : k;
    const nested = a[k] !== null && b[k] !== null && typeof a[k] === "object" && typeof b[k] === "object" && !Array.isArray(a[k]) && !Array.isArray(b[k]);
    return nested ? changedKeys(a[k], b[k], path) : [path];
  });
}
