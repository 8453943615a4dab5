import { RECIPE_FIELDS, type RecipeField } from "../demo/recipe.ts";
import { SETTING_HELP, SETTING_KINDS, SETTING_RANGES, TUTORIAL_DEFAULTS, type SettingKind, type TrainConfig } from "../train/config.ts";
import { describeValues, TRL_KEYS } from "../train/trl-keys.ts";

/**
 * JSON Schemas (draft 2020-12) of training configs and recipes, generated from the definitions the
 * validators use (config.ts, trl-keys.ts, recipe.ts), so editors complete and check the files as
 * splint does. They are committed under schema/ (`node --import tsx tools/schema/write.ts` rewrites
 * them); test/schema/schema.test.ts fails when they are out of date, and checks with Ajv that the
 * schemas and the validators accept and refuse the same sample files.
 * A YAML file points at one with a first line `# yaml-language-server: $schema=PATH`.
 */

type Schema = Record<string, unknown>;

function kindSchema(kind: SettingKind): Schema {
  if (Array.isArray(kind)) return { enum: [...kind] };
  const list = { type: "array", items: { type: "string" } };
  switch (kind) {
    case "number":
      return { type: "number" };
    case "integer":
      return { type: "integer" };
    case "boolean":
      return { type: "boolean" };
    case "boolean|auto|selective":
      return { anyOf: [{ type: "boolean" }, { enum: ["auto", "selective"] }] };
    case "string":
      return { type: "string" };
    case "string[]":
      // A list, or one string of comma-separated names (as the flags take them).
      return { anyOf: [list, { type: "string" }] };
    case "modules":
      // PEFT's target_modules: a list of names (suffix match), or one string that is a regex.
      return { anyOf: [list, { type: "string" }] };
    case "number|null":
      return { anyOf: [{ type: "number", exclusiveMinimum: 0 }, { type: "null" }] };
    case "string|null":
      return { type: ["string", "null"] };
    case "string[]|null":
      return { anyOf: [list, { type: "string" }, { type: "null" }] };
  }
  throw new Error(`no schema for setting kind ${String(kind)}`);
}

function settingSchema(key: keyof TrainConfig): Schema {
  const schema: Schema = { description: SETTING_HELP[key], default: TUTORIAL_DEFAULTS[key], ...kindSchema(SETTING_KINDS[key]) };
  const range = SETTING_RANGES[key];
  if (range === "positive") schema.exclusiveMinimum = 0;
  if (range === "nonNegative") schema.minimum = 0;
  if (range === "unit") Object.assign(schema, { minimum: 0, exclusiveMaximum: 1 });
  if (key === "report_to") {
    const names = { enum: ["tensorboard", "none", "all"] };
    delete schema.anyOf;
    schema.anyOf = [names, { type: "array", items: names }];
  }
  return schema;
}

/** The properties of a training config (also a recipe's train section). */
function trainProperties(): Record<string, Schema> {
  const props: Record<string, Schema> = {};
  for (const key of Object.keys(SETTING_KINDS) as (keyof TrainConfig)[]) props[key] = settingSchema(key);
  for (const [key, trl] of Object.entries(TRL_KEYS)) {
    if (trl.kind === "alias") props[key] = { ...settingSchema(trl.to as keyof TrainConfig), description: `TRL/PEFT name of ${trl.to}` };
    else if (trl.kind === "inert") {
      props[key] = { description: `accepted from TRL/PEFT, no effect in splint${trl.why ? ` (${trl.why})` : ""}; only ${describeValues(trl.values)}`, ...(trl.values === "any" ? {} : { enum: [...trl.values] }) };
    }
    // "elsewhere" keys are left out: additionalProperties false refuses them, as the validator does.
  }
  return props;
}

function trainObject(description: string): Schema {
  return { type: "object", description, properties: trainProperties(), additionalProperties: false };
}

export function configSchema(): Schema {
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: "splint training config",
    ...trainObject("Settings of `splint train --config FILE`: splint's names (snake_case, as TRL's SFTConfig and PEFT's LoraConfig) and the TRL/PEFT names splint accepts."),
  };
}

function recipeFieldSchema(field: RecipeField): Schema {
  if (field.type === "train") return { ...trainObject(field.help), type: ["object", "null"] };
  if (field.type === "object") {
    const schema: Schema = {
      type: field.nullable ? ["object", "null"] : "object",
      description: field.help,
      properties: Object.fromEntries(Object.entries(field.fields).map(([k, f]) => [k, recipeFieldSchema(f)])),
      additionalProperties: false,
    };
    if (field.required) schema.required = [...field.required];
    if (field.exactlyOne) schema.oneOf = field.exactlyOne.map((k) => ({ required: [k] }));
    return schema;
  }
  const nullable = field.nullable ?? field.default !== undefined;
  const base: Schema =
    field.type === "positive" ? { type: "integer", minimum: 1 } : field.type === "string" ? { type: "string", minLength: 1 } : { type: field.type };
  if (field.enum) Object.assign(base, { enum: [...field.enum] });
  const schema: Schema = nullable ? { anyOf: [base, { type: "null" }] } : base;
  return { description: field.help, ...(field.default !== undefined ? { default: field.default } : {}), ...schema };
}

export function recipeSchema(): Schema {
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: "splint recipe",
    description: "`splint run RECIPE.yaml`: the tutorial as data (data, model, stats, audit, eval, train).",
    type: "object",
    properties: Object.fromEntries(Object.entries(RECIPE_FIELDS).map(([k, f]) => [k, recipeFieldSchema(f)])),
    required: ["data", "model"],
    additionalProperties: false,
  };
}

/** The committed files: name → text. */
export function schemaFiles(): Record<string, string> {
  return {
    "config.schema.json": `${JSON.stringify(configSchema(), null, 2)}\n`,
    "recipe.schema.json": `${JSON.stringify(recipeSchema(), null, 2)}\n`,
  };
}
