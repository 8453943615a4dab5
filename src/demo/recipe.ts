import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { EVAL_MODES, type EvalMode } from "../eval/classify.ts";
import { DEFAULT_MAX_NEW_TOKENS } from "../eval/evaluate.ts";
import { resolveConfig, TUTORIAL_DEFAULTS, type TrainConfig } from "../train/config.ts";
import { closest } from "../train/trl-keys.ts";
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

/**
 * The recipe's fields, for the parser's unknown-key check, the JSON Schema (schema.ts) and
 * `splint init`. The parser below checks types and ranges; a test checks it and the schema agree.
 */
export type RecipeField =
  | {
      readonly type: "string" | "integer" | "positive" | "number" | "boolean";
      readonly help: string;
      readonly default?: unknown;
      readonly enum?: readonly string[];
      /** null stands for the default (the parser's `?? default`); default: whether there is a default. */
      readonly nullable?: boolean;
    }
  | {
      readonly type: "object";
      readonly help: string;
      readonly fields: Readonly<Record<string, RecipeField>>;
      readonly exactlyOne?: readonly string[];
      readonly required?: readonly string[];
      /** Whether the section may be null or absent (treated as empty). */
      readonly nullable?: boolean;
    }
  | { readonly type: "train"; readonly help: string };

const synthFields: Record<string, RecipeField> = {
  per_class: { type: "positive", help: "training images per class" },
  test_per_class: { type: "integer", help: "test images per class (default: a quarter of per_class)", nullable: true },
  size: { type: "positive", help: "image side in pixels", default: 64 },
  seed: { type: "integer", help: "seed of the generated images", default: 0 },
};

export const RECIPE_FIELDS: Readonly<Record<string, RecipeField>> = {
  run_dir: { type: "string", help: "the run folder (--out overrides); relative to the current folder" },
  data: {
    type: "object",
    help: "where the images come from: exactly one of synth, kaggle, dir",
    exactlyOne: ["synth", "kaggle", "dir"],
    fields: {
      synth: { type: "object", nullable: false, help: "procedural radiograph-like images of the tutorial's ten classes", fields: synthFields, required: ["per_class"] },
      kaggle: { type: "string", help: "a Kaggle dataset OWNER/SLUG (KAGGLE_API_TOKEN or KAGGLE_USERNAME + KAGGLE_KEY)" },
      dir: { type: "string", help: "a folder of images in the Kaggle <Class>/{Train,Test} or {train,test}/<Class> layout" },
      val_fraction: { type: "number", help: "fraction of train held out as the validation split", default: 0 },
      seed: { type: "integer", help: "seed of the validation split", default: 0 },
    },
  },
  model: {
    type: "object",
    help: "which model: exactly one of init, hub, dir",
    exactlyOne: ["init", "hub", "dir"],
    fields: {
      init: {
        type: "object",
        help: "a small random-weight model of the Ministral 3 architecture (offline demos)",
        fields: { preset: { type: "string", help: "size preset", default: "tiny" }, seed: { type: "integer", help: "seed of the weights", default: 0 } },
      },
      hub: { type: "string", help: "a Hugging Face Hub model id, e.g. mistralai/Ministral-3-14B-Instruct-2512-BF16" },
      revision: { type: "string", help: "branch, tag or commit of the hub model", default: "main" },
      dir: { type: "string", help: "a local model folder (Hugging Face layout)" },
    },
  },
  stats: {
    type: "object",
    nullable: true,
    help: "class counts, image sizes and a sample grid",
    fields: { samples: { type: "integer", help: "images in the sample grid", default: 8 }, seed: { type: "integer", help: "seed of the sample grid", default: 420 } },
  },
  audit: { type: "boolean", help: "look for duplicates and train→test leaks", default: true, nullable: false },
  eval: {
    type: "object",
    nullable: true,
    help: "how the model is measured before and after training",
    fields: {
      split: { type: "string", help: "split to evaluate", default: "test" },
      mode: { type: "string", help: "generate (free text), constrained (trie of class names) or score (log-likelihood ranking, probabilities)", default: "generate", enum: EVAL_MODES },
      batch: { type: "positive", help: "images per forward pass", default: 8 },
      limit: { type: "positive", help: "only the first N images (default: all)", nullable: true },
      max_new_tokens: { type: "positive", help: "generate mode's token budget", default: DEFAULT_MAX_NEW_TOKENS },
    },
  },
  train: { type: "train", help: "the settings of `splint train` (TRL SFTConfig / PEFT LoraConfig names)" },
};

const keysOf = (field: RecipeField | undefined): string[] => (field?.type === "object" ? Object.keys(field.fields) : []);
const sub = (field: RecipeField | undefined, key: string): RecipeField | undefined => (field?.type === "object" ? field.fields[key] : undefined);

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
  allowOnly(top, file, "", Object.keys(RECIPE_FIELDS));
  const data = object(top.data, file, "data");
  allowOnly(data, file, "data.", keysOf(RECIPE_FIELDS.data));
  const model = object(top.model, file, "model");
  allowOnly(model, file, "model.", keysOf(RECIPE_FIELDS.model));
  const stats = optionalObject(top.stats, file, "stats");
  allowOnly(stats, file, "stats.", keysOf(RECIPE_FIELDS.stats));
  const evalSection = optionalObject(top.eval, file, "eval");
  allowOnly(evalSection, file, "eval.", keysOf(RECIPE_FIELDS.eval));
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
  allowOnly(s, file, "data.synth.", keysOf(sub(RECIPE_FIELDS.data, "synth")));
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
  allowOnly(init, file, "model.init.", keysOf(sub(RECIPE_FIELDS.model, "init")));
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
    if (!keys.includes(key)) {
      const guess = closest(key, keys);
      throw new InputError(file, `unknown setting "${prefix}${key}"`, `${guess ? `did you mean "${prefix}${guess}"? ` : ""}known here: ${keys.map((k) => prefix + k).join(", ")}`);
    }
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
