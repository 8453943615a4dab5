import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { modulePattern } from "../lora/module-pattern.ts";
import { InputError } from "../util/errors.ts";
import type { ScheduleKind } from "./schedule.ts";

/**
 * Everything that decides a training run. Names and defaults mirror the tutorial's LoraConfig and
 * SFTConfig (snake_case, as in the Python it replaces), so a recipe reads like the notebook.
 */
export interface TrainConfig {
  // LoRA (peft.LoraConfig)
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  /**
   * PEFT's semantics: a list matches module names by suffix ("q_proj" hits "…self_attn.q_proj"),
   * a string is a regex that must match the whole module name ("all-linear": every linear but
   * lm_head).
   */
  target_modules: string[] | string;
  /** Which tower the suffix match may hit: PEFT's own behaviour is "all". */
  lora_scope: "all" | "language" | "vision";
  use_rslora: boolean;
  // SFTConfig
  num_train_epochs: number;
  per_device_train_batch_size: number;
  gradient_accumulation_steps: number;
  gradient_checkpointing: boolean;
  optim: "adamw_torch" | "adamw_8bit";
  learning_rate: number;
  weight_decay: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_epsilon: number;
  max_grad_norm: number;
  warmup_steps: number;
  lr_scheduler_type: ScheduleKind;
  /** Log every N optimizer steps; a value below 1 is a fraction of the total, as in transformers. */
  logging_steps: number;
  save_strategy: "epoch" | "steps" | "no";
  save_steps: number;
  seed: number;
  /**
   * The tutorial's mixed precision: weights stay as stored (bf16 or fp8) and the linear layers
   * multiply them by activations rounded to bf16 (f32 LoRA weights, f32 everything else); false
   * loads the weights as f32 and multiplies in f32.
   */
  bf16: boolean;
  max_steps: number;
  // The collator
  template: string;
  /** "completion" masks the prompt (the right thing); "all" reproduces the tutorial's loss. */
  loss_on: "completion" | "all";
  max_seq_len: number;
  max_image_edge: number | null;
  /**
   * What a non-finite loss or gradient does: "stop" ends the run naming the step and the tensor
   * (the last checkpoint stays good); "skip-step" drops that step's update and goes on.
   */
  on_nan: "stop" | "skip-step";
}

export const TUTORIAL_DEFAULTS: Readonly<TrainConfig> = {
  r: 16,
  lora_alpha: 32,
  lora_dropout: 0.05,
  target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
  lora_scope: "all",
  use_rslora: false,
  num_train_epochs: 1,
  per_device_train_batch_size: 2,
  gradient_accumulation_steps: 4,
  gradient_checkpointing: true,
  optim: "adamw_torch",
  learning_rate: 2e-4,
  weight_decay: 0,
  adam_beta1: 0.9,
  adam_beta2: 0.999,
  adam_epsilon: 1e-8,
  max_grad_norm: 0.3,
  warmup_steps: 25,
  lr_scheduler_type: "linear",
  logging_steps: 0.1,
  save_strategy: "epoch",
  save_steps: 0,
  seed: 42,
  bf16: true,
  max_steps: -1,
  template: "short",
  loss_on: "completion",
  max_seq_len: 2048,
  max_image_edge: null,
  on_nan: "stop",
};

/** "modules": a list of module names, or one string that is a regex (PEFT's target_modules). */
export type SettingKind = "number" | "integer" | "boolean" | "string" | "modules" | readonly string[] | "number|null";

/** The type of every setting (what the CLI turns flags into and config files are checked against). */
export const SETTING_KINDS: Readonly<Record<keyof TrainConfig, SettingKind>> = {
  r: "integer",
  lora_alpha: "number",
  lora_dropout: "number",
  target_modules: "modules",
  lora_scope: ["all", "language", "vision"],
  use_rslora: "boolean",
  num_train_epochs: "number",
  per_device_train_batch_size: "integer",
  gradient_accumulation_steps: "integer",
  gradient_checkpointing: "boolean",
  optim: ["adamw_torch", "adamw_8bit"],
  learning_rate: "number",
  weight_decay: "number",
  adam_beta1: "number",
  adam_beta2: "number",
  adam_epsilon: "number",
  max_grad_norm: "number",
  warmup_steps: "integer",
  lr_scheduler_type: ["linear", "constant", "cosine"],
  logging_steps: "number",
  save_strategy: ["epoch", "steps", "no"],
  save_steps: "integer",
  seed: "integer",
  bf16: "boolean",
  max_steps: "integer",
  template: "string",
  loss_on: ["completion", "all"],
  max_seq_len: "integer",
  max_image_edge: "number|null",
  on_nan: ["stop", "skip-step"],
};

/**
 * Layers a partial config (from a file or flags) over the defaults, checking every key and type;
 * `source` names where the values came from in error messages.
 */
export function resolveConfig(base: Readonly<TrainConfig>, overrides: Record<string, unknown>, source: string): TrainConfig {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    const kind = SETTING_KINDS[key as keyof TrainConfig];
    if (kind === undefined) {
      throw new InputError(source, `unknown setting "${key}"`, `known settings: ${Object.keys(SETTING_KINDS).join(", ")}`);
    }
    out[key] = checkValue(source, key, kind, value);
  }
  const config = out as unknown as TrainConfig;
  const positive: (keyof TrainConfig)[] = ["r", "lora_alpha", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "max_seq_len", "num_train_epochs", "logging_steps", "adam_epsilon"];
  for (const key of positive) {
    if (!((config[key] as number) > 0)) throw new InputError(source, `"${key}" must be positive (got ${String(config[key])})`);
  }
  const nonNegative: (keyof TrainConfig)[] = ["weight_decay", "max_grad_norm", "warmup_steps", "save_steps"];
  for (const key of nonNegative) {
    if (!((config[key] as number) >= 0)) throw new InputError(source, `"${key}" must not be negative (got ${String(config[key])})`);
  }
  for (const key of ["lora_dropout", "adam_beta1", "adam_beta2"] as const) {
    if (config[key] < 0 || config[key] >= 1) throw new InputError(source, `"${key}" must be in [0, 1) (got ${config[key]})`);
  }
  if (config.save_strategy === "steps" && config.save_steps === 0) throw new InputError(source, `save_strategy "steps" needs "save_steps" above 0`);
  if (config.target_modules.length === 0) throw new InputError(source, `"target_modules" is empty`);
  if (typeof config.target_modules === "string" && config.target_modules !== "all-linear") modulePattern(config.target_modules, `${source} (target_modules)`);
  return config;
}

function checkValue(source: string, key: string, kind: SettingKind, value: unknown): unknown {
  const fail = (expected: string) =>
    new InputError(source, `"${key}" must be ${expected} (got ${JSON.stringify(value)})`);
  if (Array.isArray(kind)) {
    if (typeof value !== "string" || !kind.includes(value)) throw fail(`one of ${kind.join(", ")}`);
    return value;
  }
  switch (kind) {
    case "number":
      if (typeof value !== "number" || !Number.isFinite(value)) throw fail("a number");
      return value;
    case "integer":
      if (!Number.isInteger(value)) throw fail("an integer");
      return value;
    case "number|null":
      if (value === null) return null;
      if (typeof value !== "number" || !(value > 0)) throw fail("a positive number or null");
      return value;
    case "boolean":
      if (typeof value !== "boolean") throw fail("true or false");
      return value;
    case "string":
      if (typeof value !== "string") throw fail("a string");
      return value;
    case "modules":
      // A string stays a string: PEFT reads it as one regex, and splitting it on commas would
      // turn "(q|v)_proj{1,2}" into two broken names.
      if (typeof value === "string") return value;
      if (!Array.isArray(value) || !value.every((v) => typeof v === "string" && v !== "")) throw fail("a list of module names, or a regex string");
      return value;
  }
  throw fail(String(kind));
}

/** Reads a YAML or JSON config file (YAML is a superset of JSON, so one parser serves both). */
export async function readConfigFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new InputError(path, `cannot read config file (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (error) {
    throw new InputError(path, `not valid YAML/JSON: ${(error as Error).message.split("\n")[0]}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new InputError(path, "expected a mapping of setting names to values");
  }
  return parsed as Record<string, unknown>;
}
