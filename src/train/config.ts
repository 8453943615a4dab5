import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { modulePattern } from "../lora/module-pattern.ts";
import { InputError } from "../util/errors.ts";
import type { ScheduleKind } from "./schedule.ts";
import { normalizeKeys } from "./trl-keys.ts";

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
  /**
   * true / false as TRL; "selective": every product's output kept, the norms' and SwiGLU's remade
   * in the backward; "auto": the first of false, "selective", true that fits the card (the same
   * arithmetic, each slower than the one before).
   */
  gradient_checkpointing: boolean | "auto" | "selective";
  optim: "adamw_torch" | "adamw_8bit";
  learning_rate: number;
  weight_decay: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_epsilon: number;
  max_grad_norm: number;
  warmup_steps: number;
  /** Warm-up as a fraction of the optimizer steps, used when warmup_steps is 0 (transformers' rule). */
  warmup_ratio: number;
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
  // Evaluation during training (TrainingArguments' eval_* and EarlyStoppingCallback)
  eval_strategy: "no" | "steps" | "epoch";
  /** Evaluate every N optimizer steps (a value below 1 is a fraction of the total; 0: logging_steps). */
  eval_steps: number;
  per_device_eval_batch_size: number;
  /** The split evaluated during training (splint's own: the Trainer takes an eval_dataset). */
  eval_split: string;
  /** Stop after this many evaluations without improvement of metric_for_best_model; 0: never. */
  early_stopping_patience: number;
  metric_for_best_model: "eval_loss" | "eval_accuracy";
  /** Where metrics go besides metrics.jsonl: ["tensorboard"], or [] (the tutorial's "none"). */
  report_to: string[];
  // The collator
  template: string;
  /** "completion" masks the prompt (the right thing); "all" reproduces the tutorial's loss. */
  loss_on: "completion" | "all";
  max_seq_len: number;
  max_image_edge: number | null;
  /**
   * The user turn's text; "{classes}" stands for the class names joined by ", ". null: the
   * tutorial's strict radiology prompt.
   */
  prompt: string | null;
  /** The answers the model is taught, in label order, instead of the dataset's ClassLabel names. */
  class_names: string[] | null;
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
  gradient_checkpointing: "auto",
  optim: "adamw_torch",
  learning_rate: 2e-4,
  weight_decay: 0,
  adam_beta1: 0.9,
  adam_beta2: 0.999,
  adam_epsilon: 1e-8,
  max_grad_norm: 0.3,
  warmup_steps: 25,
  warmup_ratio: 0,
  lr_scheduler_type: "linear",
  logging_steps: 0.1,
  save_strategy: "epoch",
  save_steps: 0,
  seed: 42,
  bf16: true,
  max_steps: -1,
  eval_strategy: "no",
  eval_steps: 0,
  per_device_eval_batch_size: 2,
  eval_split: "validation",
  early_stopping_patience: 0,
  metric_for_best_model: "eval_loss",
  report_to: ["tensorboard"],
  template: "short",
  loss_on: "completion",
  max_seq_len: 2048,
  max_image_edge: null,
  prompt: null,
  class_names: null,
  on_nan: "stop",
};

/** "modules": a list of module names, or one string that is a regex (PEFT's target_modules). */
export type SettingKind = "number" | "integer" | "boolean" | "boolean|auto|selective" | "string" | "string[]" | "modules" | readonly string[] | "number|null" | "string|null" | "string[]|null";

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
  gradient_checkpointing: "boolean|auto|selective",
  optim: ["adamw_torch", "adamw_8bit"],
  learning_rate: "number",
  weight_decay: "number",
  adam_beta1: "number",
  adam_beta2: "number",
  adam_epsilon: "number",
  max_grad_norm: "number",
  warmup_steps: "integer",
  warmup_ratio: "number",
  lr_scheduler_type: ["linear", "constant", "cosine"],
  logging_steps: "number",
  save_strategy: ["epoch", "steps", "no"],
  save_steps: "integer",
  seed: "integer",
  bf16: "boolean",
  max_steps: "integer",
  eval_strategy: ["no", "steps", "epoch"],
  eval_steps: "number",
  per_device_eval_batch_size: "integer",
  eval_split: "string",
  early_stopping_patience: "integer",
  metric_for_best_model: ["eval_loss", "eval_accuracy"],
  report_to: "string[]",
  template: "string",
  loss_on: ["completion", "all"],
  max_seq_len: "integer",
  max_image_edge: "number|null",
  prompt: "string|null",
  class_names: "string[]|null",
  on_nan: ["stop", "skip-step"],
};

export type SettingRange = "positive" | "nonNegative" | "unit";

/** Numeric ranges, checked by resolveConfig and written into the JSON Schema ("unit": [0, 1)). */
export const SETTING_RANGES: Readonly<Partial<Record<keyof TrainConfig, SettingRange>>> = {
  r: "positive",
  lora_alpha: "positive",
  per_device_train_batch_size: "positive",
  gradient_accumulation_steps: "positive",
  learning_rate: "positive",
  max_seq_len: "positive",
  num_train_epochs: "positive",
  logging_steps: "positive",
  adam_epsilon: "positive",
  per_device_eval_batch_size: "positive",
  weight_decay: "nonNegative",
  max_grad_norm: "nonNegative",
  warmup_steps: "nonNegative",
  save_steps: "nonNegative",
  eval_steps: "nonNegative",
  early_stopping_patience: "nonNegative",
  lora_dropout: "unit",
  adam_beta1: "unit",
  adam_beta2: "unit",
  warmup_ratio: "unit",
};

/** What each setting means: the JSON Schema's descriptions and the comments of `splint init`. */
export const SETTING_HELP: Readonly<Record<keyof TrainConfig, string>> = {
  r: "LoRA rank (peft LoraConfig.r)",
  lora_alpha: "LoRA scaling numerator: updates are scaled by lora_alpha / r (or / sqrt(r) with use_rslora)",
  lora_dropout: "dropout on the LoRA branch's input while training, in [0, 1)",
  target_modules: "as PEFT: a list of module names matched by suffix (q_proj hits every ...q_proj), or one regex string matched against the whole module name",
  lora_scope: "which tower target_modules may hit: all (PEFT's behaviour), language or vision",
  use_rslora: "rank-stabilised LoRA: scale by lora_alpha / sqrt(r)",
  num_train_epochs: "passes over the training split (fractions allowed); max_steps > 0 wins",
  per_device_train_batch_size: "examples per micro-batch",
  gradient_accumulation_steps: "micro-batches per optimizer step",
  gradient_checkpointing:
    "recompute each layer in the backward pass instead of keeping its activations; selective: keep every product's output and remake the norms' and SwiGLU's outputs where the backward reads them (less memory than false for a few cheap kernels); auto (the default): the fastest of false, selective and true that the memory plan says fits the card (the tutorial sets true)",
  optim: "adamw_torch (fp32 moments) or adamw_8bit (block-wise 8-bit moments, as bitsandbytes)",
  learning_rate: "peak learning rate of AdamW",
  weight_decay: "AdamW's decoupled weight decay",
  adam_beta1: "AdamW beta1",
  adam_beta2: "AdamW beta2",
  adam_epsilon: "AdamW epsilon",
  max_grad_norm: "clip the total gradient norm to this (0: no clipping)",
  warmup_steps: "optimizer steps of linear warm-up from 0; wins over warmup_ratio when above 0",
  warmup_ratio: "warm-up as a fraction of all optimizer steps, used when warmup_steps is 0",
  lr_scheduler_type: "learning-rate schedule after warm-up: linear (to 0), cosine or constant",
  logging_steps: "write metrics every N optimizer steps (below 1: a fraction of all steps)",
  save_strategy: "checkpoint at each epoch's end, every save_steps, or never (the final adapter is always saved)",
  save_steps: "checkpoint every N optimizer steps with save_strategy steps",
  seed: "seed of the adapter's init, the data order and dropout",
  bf16: "the tutorial's mixed precision: weights as stored, bf16 matmuls with f32 accumulation; false: f32 throughout",
  max_steps: "optimizer steps to run; -1: from num_train_epochs",
  eval_strategy: "evaluate on eval_split during training: no, every eval_steps, or at each epoch's end",
  eval_steps: "evaluate every N optimizer steps with eval_strategy steps (below 1: a fraction of all steps; 0: logging_steps)",
  per_device_eval_batch_size: "examples per forward pass when evaluating during training",
  eval_split: "the dataset split evaluated during training (loss and score-mode accuracy)",
  early_stopping_patience: "stop after this many evaluations without improvement of metric_for_best_model (0: never stop early)",
  metric_for_best_model: "what early stopping watches: eval_loss (lower is better) or eval_accuracy (higher is better)",
  report_to: "metric writers besides metrics.jsonl: [tensorboard] (event files in RUN/tensorboard) or none",
  template: "chat template: short (the tutorial's), model (the checkpoint's own) or a Jinja file",
  loss_on: "completion: loss on the answer only; all: on every non-image token, the tutorial's collator",
  max_seq_len: "longest tokenized example (the tutorial's MAX_SEQ_LEN; TRL's max_length)",
  max_image_edge: "cap on the longer image side in pixels, below the processor's own; null: the processor's",
  prompt: "the user turn's text; {classes} stands for the class names joined by ', '; null: the tutorial's prompt",
  class_names: "the answers taught, in label order, instead of the dataset's class names; null: the dataset's",
  on_nan: "what a NaN/Inf loss or gradient does: stop (name the step and tensor, keep the last checkpoint) or skip-step (drop that update)",
};

/**
 * Layers a partial config (from a file or flags) over the defaults, checking every key and type;
 * `source` names where the values came from in error messages.
 */
export function resolveConfig(base: Readonly<TrainConfig>, overrides: Record<string, unknown>, source: string): TrainConfig {
  const out: Record<string, unknown> = { ...base };
  // TRL/PEFT names become splint's (or fail with splint's equivalent named); unknown keys fail here.
  const given = normalizeKeys(overrides, source, Object.keys(SETTING_KINDS));
  for (const [key, value] of Object.entries(given)) {
    if (value === undefined) continue;
    out[key] = checkValue(source, key, SETTING_KINDS[key as keyof TrainConfig], value);
  }
  // transformers uses warmup_ratio only when warmup_steps is 0; a file that asks for a ratio means
  // it, so it replaces the tutorial's default of 25 steps unless the same file also sets steps.
  if (typeof given.warmup_ratio === "number" && given.warmup_ratio > 0 && given.warmup_steps === undefined) out.warmup_steps = 0;
  if (out.report_to !== undefined) out.report_to = normalizeReportTo(source, out.report_to as string[]);
  const config = out as unknown as TrainConfig;
  for (const [key, range] of Object.entries(SETTING_RANGES) as [keyof TrainConfig, SettingRange][]) {
    const v = config[key] as number;
    if (range === "positive" && !(v > 0)) throw new InputError(source, `"${key}" must be positive (got ${String(v)})`);
    if (range === "nonNegative" && !(v >= 0)) throw new InputError(source, `"${key}" must not be negative (got ${String(v)})`);
    if (range === "unit" && !(v >= 0 && v < 1)) throw new InputError(source, `"${key}" must be in [0, 1) (got ${String(v)})`);
  }
  if (config.save_strategy === "steps" && config.save_steps === 0) throw new InputError(source, `save_strategy "steps" needs "save_steps" above 0`);
  if (config.target_modules.length === 0) throw new InputError(source, `"target_modules" is empty`);
  if (typeof config.target_modules === "string" && config.target_modules !== "all-linear") modulePattern(config.target_modules, `${source} (target_modules)`);
  if (config.warmup_steps > 0 && config.warmup_ratio > 0 && given.warmup_steps !== undefined && given.warmup_ratio !== undefined) {
    throw new InputError(source, `"warmup_steps" (${config.warmup_steps}) and "warmup_ratio" (${config.warmup_ratio}) are both set`, "give one of them (transformers would silently use warmup_steps)");
  }
  if (config.early_stopping_patience > 0 && config.eval_strategy === "no") {
    throw new InputError(source, `"early_stopping_patience" needs evaluations to watch`, `set eval_strategy: steps (with eval_steps) or epoch`);
  }
  if (config.class_names !== null) {
    if (config.class_names.length < 2) throw new InputError(source, `"class_names" needs at least two names (got ${config.class_names.length})`);
    const dup = config.class_names.find((n, i) => config.class_names!.indexOf(n) !== i);
    if (dup !== undefined) throw new InputError(source, `"class_names" lists "${dup}" twice`);
  }
  if (config.prompt !== null && config.prompt.trim() === "") throw new InputError(source, `"prompt" is empty`, "leave it out (or null) for the tutorial's prompt");
  return config;
}

/** report_to as TrainingArguments takes it ("none", "all", one name or a list), as a list. */
function normalizeReportTo(source: string, value: readonly string[]): string[] {
  const names = value.flatMap((v) => (v === "none" ? [] : v === "all" ? ["tensorboard"] : [v]));
  for (const name of names) {
    if (name !== "tensorboard") {
      throw new InputError(
        source,
        `report_to "${name}" is not supported: splint writes metrics.jsonl and TensorBoard event files`,
        name === "wandb" ? "report_to: tensorboard, then `wandb sync --sync-tensorboard RUN/tensorboard` imports them" : "use report_to: tensorboard or none",
      );
    }
  }
  return [...new Set(names)];
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
    case "boolean|auto|selective":
      if (typeof value !== "boolean" && value !== "auto" && value !== "selective") throw fail("true, false, selective or auto");
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
    case "string|null":
      if (value === null) return null;
      if (typeof value !== "string") throw fail("a string or null");
      return value;
    case "string[]|null":
      if (value === null) return null;
      return checkValue(source, key, "string[]", value);
    case "string[]":
      if (typeof value === "string") return value.split(",").map((s) => s.trim()).filter(Boolean);
      if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) throw fail("a list of strings");
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
