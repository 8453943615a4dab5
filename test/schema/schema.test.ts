import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { parse as parseYaml } from "yaml";
import { parseRecipe } from "../../src/demo/recipe.ts";
import { configSchema, recipeSchema, schemaFiles } from "../../src/schema/json-schema.ts";
import { resolveConfig, TUTORIAL_DEFAULTS } from "../../src/train/config.ts";

/**
 * The committed JSON Schemas are what the generator makes now, and they accept and refuse the same
 * files as splint's validators (checked with Ajv, an independent JSON Schema implementation).
 * Rules between fields (save_strategy steps needs save_steps, class_names must match the
 * dataset, …) are beyond a schema and only in the validators.
 */

const ROOT = join(import.meta.dirname, "..", "..");

test("schema/*.schema.json are up to date (node --import tsx tools/schema/write.ts rewrites them)", () => {
  for (const [name, text] of Object.entries(schemaFiles())) assert.equal(readFileSync(join(ROOT, "schema", name), "utf8"), text, `schema/${name} is stale`);
});

const ajv = new Ajv2020({ strict: true, strictRequired: false, allowUnionTypes: true, allErrors: true });
const checkConfig = ajv.compile(configSchema());
const checkRecipe = ajv.compile(recipeSchema());

const validatorAccepts = (f: () => unknown) => {
  try {
    f();
    return true;
  } catch {
    return false;
  }
};

const configCases: [string, Record<string, unknown>, boolean][] = [
  ["empty", {}, true],
  ["the defaults", { ...TUTORIAL_DEFAULTS }, true],
  ["comma list", { target_modules: "q_proj, v_proj" }, true],
  ["TRL plumbing", { task_type: "CAUSAL_LM", bias: "none", modules_to_save: null, fp16: false, gradient_checkpointing_kwargs: { use_reentrant: false }, report_to: "none", max_length: 1024 }, true],
  ["report_to list", { report_to: ["tensorboard"] }, true],
  ["prompt and names", { prompt: "Name it: {classes}", class_names: ["a", "b"] }, true],
  ["eval", { eval_strategy: "steps", eval_steps: 0.25, early_stopping_patience: 2, metric_for_best_model: "eval_accuracy" }, true],
  ["max_image_edge null", { max_image_edge: null }, true],
  ["unknown key", { lr: 1 }, false],
  ["typo", { learning_rte: 1 }, false],
  ["fractional rank", { r: 2.5 }, false],
  ["zero rank", { r: 0 }, false],
  ["dropout 1", { lora_dropout: 1 }, false],
  ["negative warm-up", { warmup_steps: -1 }, false],
  ["warmup_ratio 1", { warmup_ratio: 1 }, false],
  ["bad enum", { loss_on: "prompt" }, false],
  ["output_dir", { output_dir: "x" }, false],
  ["push_to_hub", { push_to_hub: true }, false],
  ["bias all", { bias: "all" }, false],
  ["fp16", { fp16: true }, false],
  ["modules_to_save", { modules_to_save: ["lm_head"] }, false],
  ["wandb", { report_to: "wandb" }, false],
  ["image edge 0", { max_image_edge: 0 }, false],
  ["prompt number", { prompt: 3 }, false],
  ["boolean as string", { bf16: "yes" }, false],
];

for (const [name, doc, expected] of configCases) {
  test(`config schema and validator agree: ${name} (${expected ? "accepted" : "refused"})`, () => {
    assert.equal(validatorAccepts(() => resolveConfig(TUTORIAL_DEFAULTS, doc, "case")), expected, "validator");
    assert.equal(checkConfig(doc), expected, `schema: ${JSON.stringify(checkConfig.errors)}`);
  });
}

const minimal = { data: { synth: { per_class: 1 } }, model: { init: {} } };
const recipeCases: [string, unknown, boolean][] = [
  ["demo recipe", parseYaml(readFileSync(join(ROOT, "recipes/demo.yaml"), "utf8")), true],
  ["tutorial recipe", parseYaml(readFileSync(join(ROOT, "recipes/ministral3-14b-bone-fracture.yaml"), "utf8")), true],
  ["minimal", minimal, true],
  ["null sections", { ...minimal, stats: null, eval: null, train: null }, true],
  ["hub model", { data: { kaggle: "a/b", val_fraction: 0.1 }, model: { hub: "a/b", revision: "v1" }, eval: { mode: "score", limit: null } }, true],
  ["train with TRL keys", { ...minimal, train: { bias: "none", warmup_ratio: 0.1 } }, true],
  ["unknown top key", { ...minimal, evaluate: {} }, false],
  ["two data sources", { data: { synth: { per_class: 1 }, kaggle: "a/b" }, model: { init: {} } }, false],
  ["no data source", { data: { val_fraction: 0.1 }, model: { init: {} } }, false],
  ["no model", { data: { synth: { per_class: 1 } } }, false],
  ["synth without per_class", { data: { synth: {} }, model: { init: {} } }, false],
  ["bad eval mode", { ...minimal, eval: { mode: "vote" } }, false],
  ["zero batch", { ...minimal, eval: { batch: 0 } }, false],
  ["unknown train key", { ...minimal, train: { lr: 1 } }, false],
  ["train output_dir", { ...minimal, train: { output_dir: "x" } }, false],
  ["audit as text", { ...minimal, audit: "yes" }, false],
  ["empty run_dir", { ...minimal, run_dir: "" }, false],
  ["revision number", { data: { kaggle: "a/b" }, model: { hub: "a/b", revision: 3 } }, false],
  ["unknown synth key", { data: { synth: { per_class: 1, colour: true } }, model: { init: {} } }, false],
];

for (const [name, doc, expected] of recipeCases) {
  test(`recipe schema and validator agree: ${name} (${expected ? "accepted" : "refused"})`, () => {
    assert.equal(validatorAccepts(() => parseRecipe(doc, "case.yaml")), expected, "validator");
    assert.equal(checkRecipe(doc), expected, `schema: ${JSON.stringify(checkRecipe.errors)}`);
  });
}

test("every setting is in the config schema with a description and its default", () => {
  const props = (configSchema().properties ?? {}) as Record<string, { description?: string; default?: unknown }>;
  for (const [key, value] of Object.entries(TUTORIAL_DEFAULTS)) {
    assert.ok(props[key]?.description, `${key} has a description`);
    assert.deepEqual(props[key]!.default, value);
  }
});
