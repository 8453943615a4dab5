import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";

/**
 * calibration.json, written by `splint calibrate` beside adapter_config.json: the temperature
 * fitted on a validation split, and optionally the abstention threshold picked there for a target
 * accuracy. `splint eval` and `splint predict` apply it whenever the adapter folder holds one.
 * PEFT ignores files it does not know, so the adapter stays loadable in Python.
 */
export const CALIBRATION_FILE = "calibration.json";
export const CALIBRATION_FORMAT = "splint-calibration";
export const CALIBRATION_VERSION = 1;

export interface AbstainThreshold {
  readonly targetAccuracy: number;
  /** Answer only at confidence ≥ threshold (the temperature-scaled top-class probability). */
  readonly threshold: number;
  /** On the fitting split. */
  readonly coverage: number;
  readonly accuracy: number;
}

export interface CalibrationFile {
  readonly format: typeof CALIBRATION_FORMAT;
  readonly version: typeof CALIBRATION_VERSION;
  readonly temperature: number;
  readonly fittedOn: { readonly dataset: string; readonly split: string; readonly n: number };
  /** Mean NLL and equal-width ECE on the fitting split at T = 1 and at the fitted T. */
  readonly nll: { readonly before: number; readonly after: number };
  readonly ece: { readonly before: number; readonly after: number };
  readonly abstain: AbstainThreshold | null;
}

export interface LoadedCalibration {
  readonly file: string;
  readonly calibration: CalibrationFile;
}

export async function writeCalibrationFile(file: string, calibration: CalibrationFile): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(calibration, null, 2)}\n`);
}

export async function readCalibrationFile(file: string): Promise<CalibrationFile> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new InputError(file, `cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})`, "write it with `splint calibrate`");
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new InputError(file, `invalid JSON: ${(error as Error).message}`);
  }
  const c = raw as Partial<CalibrationFile> | null;
  if (c === null || typeof c !== "object" || c.format !== CALIBRATION_FORMAT) throw new InputError(file, `not a splint calibration file (format is not "${CALIBRATION_FORMAT}")`);
  if (c.version !== CALIBRATION_VERSION) throw new InputError(file, `calibration version ${String(c.version)}; this splint reads version ${CALIBRATION_VERSION}`);
  if (typeof c.temperature !== "number" || !(c.temperature > 0) || !Number.isFinite(c.temperature)) throw new InputError(file, `temperature must be a positive number (got ${JSON.stringify(c.temperature)})`);
  return c as CalibrationFile;
}

/**
 * The calibration to apply: `explicit` names a file (null: none at all); left undefined, the
 * adapter folder's calibration.json when there is one.
 */
export async function resolveCalibration(adapterDir: string | undefined, explicit: string | null | undefined): Promise<LoadedCalibration | null> {
  if (explicit === null) return null;
  if (explicit !== undefined) return { file: explicit, calibration: await readCalibrationFile(explicit) };
  if (adapterDir === undefined) return null;
  const file = join(adapterDir, CALIBRATION_FILE);
  const found = await stat(file).then(
    () => true,
    () => false,
  );
  return found ? { file, calibration: await readCalibrationFile(file) } : null;
}
