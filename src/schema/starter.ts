import { stat } from "node:fs/promises";
import { dirname, join, relative, resolve, sep } from "node:path";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import { RECIPE_FIELDS, type RecipeField } from "../demo/recipe.ts";
import { SETTING_HELP, TUTORIAL_DEFAULTS, type TrainConfig } from "../train/config.ts";

/**
 * What `splint init` writes: a training config or a recipe with every key, its default and a
 * comment saying what it does, from the same definitions as the validators and the JSON Schema
 * (so the starter always parses, and shows the defaults exactly). A first-line
 * `yaml-language-server` comment points editors at the schema.
 */

const GROUPS: Partial<Record<keyof TrainConfig, string>> = {
  r: "LoRA (peft LoraConfig)",
  num_train_epochs: "Training (trl SFTConfig)",
  eval_strategy: "Evaluation during training (needs a validation split: splint data import --val-fraction)",
  template: "Prompt and collator",
};

/** YAML for one value in flow style (JSON is YAML; plain words need no quotes). */
function flow(value: unknown): string {
  if (typeof value === "string" && /^[A-Za-z_][\w./-]*$/.test(value) && !["null", "true", "false", "yes", "no", "on", "off", "none"].includes(value.toLowerCase())) return value;
  if (Array.isArray(value)) return `[${value.map(flow).join(", ")}]`;
  if (value !== null && typeof value === "object") return `{ ${Object.entries(value).map(([k, v]) => `${k}: ${flow(v)}`).join(", ")} }`;
  return JSON.stringify(value);
}

function trainLines(indent: string): string[] {
  const lines: string[] = [];
  for (const key of Object.keys(TUTORIAL_DEFAULTS) as (keyof TrainConfig)[]) {
    const group = GROUPS[key];
    if (group) lines.push(...(lines.length > 0 ? [""] : []), `${indent}# --- ${group}`);
    lines.push(`${indent}# ${SETTING_HELP[key]}`, `${indent}${key}: ${flow(TUTORIAL_DEFAULTS[key])}`);
  }
  return lines;
}

const schemaLine = (schemaPath: string | null) => (schemaPath ? [`# yaml-language-server: $schema=${schemaPath}`] : []);

export function starterConfig(schemaPath: string | null): string {
  return [
    ...schemaLine(schemaPath),
    "# splint training settings, used as:",
    "#   splint train --model MODEL --dataset DATA --out RUN --config THIS_FILE",
    "# Every setting is listed with its default (the tutorial's LoraConfig and SFTConfig). Delete what you",
    "# do not change. The TRL/PEFT names the tutorial uses are accepted too (task_type, bias,",
    "# modules_to_save, max_length, report_to, fp16: false, …); output_dir and push_to_hub are",
    "# `splint train --out` and `--push-to-hub`. Flags override this file.",
    "",
    ...trainLines(""),
    "",
  ].join("\n");
}

/** Example values for recipe keys that have no default. */
const EXAMPLES: Record<string, unknown> = {
  run_dir: "runs/my-run",
  "data.synth": { per_class: 40, test_per_class: 10, size: 64, seed: 0 },
  "data.kaggle": "pkdarabi/bone-break-classification-image-dataset",
  "data.dir": "path/to/images",
  "data.val_fraction": 0.1,
  "model.init": { preset: "tiny", seed: 0 },
  "model.hub": "mistralai/Ministral-3-14B-Instruct-2512-BF16",
  "model.dir": "path/to/model",
  "eval.mode": "score",
};

function recipeLines(fields: Readonly<Record<string, RecipeField>>, indent: string, prefix: string, exactlyOne: readonly string[] = []): string[] {
  const lines: string[] = [];
  for (const [key, field] of Object.entries(fields)) {
    const path = prefix + key;
    // Of exactly-one alternatives the first is written, the others shown commented out.
    const off = exactlyOne.includes(key) && key !== exactlyOne[0];
    const hash = off ? "# " : "";
    if (field.type === "train") {
      lines.push(`${indent}# ${field.help}`, `${indent}train:`, ...trainLines(`${indent}  `));
      continue;
    }
    lines.push(`${indent}# ${field.help}`);
    const example = EXAMPLES[path];
    if (field.type === "object" && example === undefined) {
      lines.push(`${indent}${hash}${key}:`, ...recipeLines(field.fields, `${indent}  `, `${path}.`, field.exactlyOne));
      continue;
    }
    const value = example ?? (field.type === "object" ? undefined : field.default);
    // Keys without a default or example stay commented: leaving them out means "the default".
    if (value === undefined) lines.push(`${indent}# ${key}: …`);
    else lines.push(`${indent}${hash}${key}: ${flow(value)}`);
  }
  return lines;
}

export function starterRecipe(schemaPath: string | null): string {
  return [
    ...schemaLine(schemaPath),
    "# A splint recipe, run with:  splint run THIS_FILE",
    "# Steps: data → model → stats → audit → eval-before → train → calibrate → eval-after → compare → report.",
    "# Each step's output is kept with a hash of the settings it was made from: edit this file and run",
    "# again, and only the steps the edit affects run again. As written it runs offline on synthetic",
    "# X-rays and a tiny random model; switch data to kaggle and model to hub for the real tutorial.",
    "",
    ...recipeLines(RECIPE_FIELDS, "", ""),
    "",
  ].join("\n");
}

/**
 * Writes a starter file, refusing to replace an existing one unless `force`; the schema comment
 * points from the file's folder to `schemaDir` (the schema/ folder of this splint).
 */
export async function writeStarter(file: string, kind: "recipe" | "config", opts: { schemaDir: string; force?: boolean }): Promise<string> {
  const target = resolve(file);
  if (!opts.force && (await stat(target).then(() => true, () => false))) {
    throw new InputError(file, "already exists", "pass --force to replace it, or give another file name");
  }
  const rel = relative(dirname(target), join(opts.schemaDir, `${kind}.schema.json`)).split(sep).join("/");
  const text = kind === "recipe" ? starterRecipe(rel) : starterConfig(rel);
  await writeFileAtomic(target, text);
  return target;
}
