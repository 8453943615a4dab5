import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { EVAL_MODES, type EvalMode } from "../eval/classify.ts";
import { DEFAULT_MAX_NEW_TOKENS } from "../eval/evaluate.ts";
import { resolveConfig, TUTORIAL_DEFAULTS, type TrainConfig } from "../train/config.ts";
import { InputError } from "../util/errors.ts";

/**
 * A recipe: the tutorial as data. Where the images come from, which model, how to measure and how
 * to train; `splint run` turns it into the steps of a run folder (see ../report/run-layout.ts).
 *
 *   run_dir: runs/demo                       # default output folder (--out overrides)
 *   data:    { synth: {per_class, test_per_class, size, seed} } | { kaggle: OWNER/SLUG } | { dir: PATH }
 *            (+ val_fraction, seed)
 *   model:   { init: {preset, seed} } | { hub: OWNER/NAME, revision } | { dir: PATH }
 *   stats:   { samples, seed }
 *   audit:   true | false
 *   eval:    { split, mode, batch, limit, max_new_tokens }
 *   train:   the settings of `splint train` (LoraConfig / SFTConfig names)
 *
 * Relative paths (run_dir, data.dir, model.dir) are taken from the current folder, as on the
 * command line.
 */

export type DataSource =
  | { readonly kind: "synth"; readonly perClass: number; readonly testPerClass: number; readonly size: number; readonly seed: number }
  | { readonly kind: "kaggle"; readonly ref: string }
  | { readonly kind: "dir"; readonly path: string };

export type ModelSource =
  | { readonly kind: "init"; readonly preset: string; readonly seed: number }
  | { readonly kind: "hub"; readonly repo: string; readonly revision: string }
  | { readonly kind: "dir"; readonly path: string };

export interface Recipe {
  readonly file: string;
  readonly runDir: string | null;
  readonly data: { readonly source: DataSource; readonly valFraction: number; readonly seed: number };
  readonly model: ModelSource;
  readonly stats: { readonly samples: number; readonly seed: number };
  readonly audit: boolean;
  readonly eval: { readonly split: string; readonly mode: EvalMode; readonly batch: number; readonly limit: number | null; readonly maxNewTokens: number };
  readonly train: TrainConfig;
}

type Json = Record<string, unknown>;

export async function readRecipe(file: string): Promise<Recipe> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new InputError(file, `cannot read the recipe (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new InputError(file, `not valid YAML: ${(error as Error).message.split("\n")[0]}`);
  }
  return parseRecipe(raw, file);
}

export function parseRecipe(raw: unknown, file: string): Recipe {
  const top = object(raw, file, "the recipe");
  allowOnly(top, file, "", ["run_dir", "data", "model", "stats", "audit", "eval", "train"]);
  const data = object(top.data, file, "data");
  allowOnly(data, file, "data.", ["synth", "kaggle", "dir", "val_fraction", "seed"]);
  const model = object(top.model, file, "model");
  allowOnly(model, file, "model.", ["init", "hub", "revision", "dir"]);
  const stats = optionalObject(top.stats, file, "stats");
  allowOnly(stats, file, "stats.", ["samples", "seed"]);
  const evalSection = optionalObject(top.eval, file, "eval");
  allowOnly(evalSection, file, "eval.", ["split", "mode", "batch", "limit", "max_new_tokens"]);
  const train = optionalObject(top.train, file, "train");
  const mode = evalSection.mode ?? "generate";
  if (typeof mode !== "string" || !(EVAL_MODES as readonly string[]).includes(mode)) {
    throw new InputError(file, `eval.mode must be one of ${EVAL_MODES.join(", ")} (got ${JSON.stringify(mode)})`);
  }
  const limit = evalSection.limit ?? null;
  return {
    file,
    runDir: top.run_dir === undefined ? null : string(top.run_dir, file, "run_dir"),
    data: { source: dataSource(data, file), valFraction: number(data.val_fraction ?? 0, file, "data.val_fraction"), seed: integer(data.seed ?? 0, file, "data.seed") },
    model: modelSource(model, file),
    stats: { samples: integer(stats.samples ?? 8, file, "stats.samples"), seed: integer(stats.seed ?? 420, file, "stats.seed") },
    audit: top.audit === undefined ? true : boolean(top.audit, file, "audit"),
    eval: {
      split: string(evalSection.split ?? "test", file, "eval.split"),
      mode: mode as EvalMode,
      batch: positive(evalSection.batch ?? 8, file, "eval.batch"),
      limit: limit === null ? null : positive(limit, file, "eval.limit"),
      maxNewTokens: positive(evalSection.max_new_tokens ?? DEFAULT_MAX_NEW_TOKENS, file, "eval.max_new_tokens"),
    },
    train: resolveConfig(TUTORIAL_DEFAULTS, train, `${file} (train)`),
  };
}

function dataSource(data: Json, file: string): DataSource {
  const given = ["synth", "kaggle", "dir"].filter((k) => data[k] !== undefined);
  if (given.length !== 1) throw new InputError(file, "data needs exactly one of synth, kaggle or dir");
  if (data.kaggle !== undefined) return { kind: "kaggle", ref: string(data.kaggle, file, "data.kaggle") };
  if (data.dir !== undefined) return { kind: "dir", path: string(data.dir, file, "data.dir") };
  const s = object(data.synth, file, "data.synth");
  allowOnly(s, file, "data.synth.", ["per_class", "test_per_class", "size", "seed"]);
  const perClass = positive(s.per_class, file, "data.synth.per_class");
  return {
    kind: "synth",
    perClass,
    testPerClass: integer(s.test_per_class ?? Math.max(1, Math.round(perClass / 4)), file, "data.synth.test_per_class"),
    size: positive(s.size ?? 64, file, "data.synth.size"),
    seed: integer(s.seed ?? 0, file, "data.synth.seed"),
  };
}

function modelSource(model: Json, file: string): ModelSource {
  const given = ["init", "hub", "dir"].filter((k) => model[k] !== undefined);
  if (given.length !== 1) throw new InputError(file, "model needs exactly one of init, hub or dir");
  if (model.hub !== undefined) return { kind: "hub", repo: string(model.hub, file, "model.hub"), revision: string(model.revision ?? "main", file, "model.revision") };
  if (model.dir !== undefined) return { kind: "dir", path: string(model.dir, file, "model.dir") };
  const init = object(model.init, file, "model.init");
  allowOnly(init, file, "model.init.", ["preset", "seed"]);
  return { kind: "init", preset: string(init.preset ?? "tiny", file, "model.init.preset"), seed: integer(init.seed ?? 0, file, "model.init.seed") };
}

function object(v: unknown, file: string, what: string): Json {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new InputError(file, `${what} must be a mapping`);
  return v as Json;
}

function optionalObject(v: unknown, file: string, what: string): Json {
  return v === undefined || v === null ? {} : object(v, file, what);
}

function allowOnly(o: Json, file: string, prefix: string, keys: readonly string[]): void {
  for (const key of Object.keys(o)) {
    if (!keys.includes(key)) throw new InputError(file, `unknown setting "${prefix}${key}"`, `known here: ${keys.map((k) => prefix + k).join(", ")}`);
  }
}

function string(v: unknown, file: string, key: string): string {
  if (typeof v !== "string" || v === "") throw new InputError(file, `${key} must be a non-empty string (got ${JSON.stringify(v)})`);
  return v;
}

function number(v: unknown, file: string, key: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new InputError(file, `${key} must be a number (got ${JSON.stringify(v)})`);
  return v;
}

function integer(v: unknown, file: string, key: string): number {
  if (!Number.isSafeInteger(v)) throw new InputError(file, `${key} must be an integer (got ${JSON.stringify(v)})`);
  return v as number;
}

function positive(v: unknown, file: string, key: string): number {
  const n = integer(v, file, key);
  if (n < 1) throw new InputError(file, `${key} must be at least 1 (got ${n})`);
  return n;
}

function boolean(v: unknown, file: string, key: string): boolean {
  if (typeof v !== "boolean") throw new InputError(file, `${key} must be true or false (got ${JSON.stringify(v)})`);
  return v;
}
