import { InputError } from "../util/errors.ts";

/**
 * The key names of TRL's SFTConfig (transformers' TrainingArguments) and PEFT's LoraConfig that are
 * not splint settings of the same name. Most SFTConfig/LoraConfig keys already are (learning_rate,
 * r, …, see config.ts); the rest fall in three groups, so that a config copied from a Python
 * notebook either means the same thing here or fails with a message naming what to do instead:
 *
 * - alias: another name for a splint setting (TRL renamed max_seq_length to max_length, …);
 * - inert: plumbing of the Hugging Face Trainer that has no counterpart in splint, accepted with the
 *   values under which it changes nothing (any other value is refused, since it would mean
 *   something splint does not do);
 * - elsewhere: a real option that splint takes somewhere else (a flag, the recipe, an environment
 *   variable), refused with that place named.
 */
export type TrlKey =
  | { readonly kind: "alias"; readonly to: string }
  | { readonly kind: "inert"; readonly why: string; readonly values: readonly unknown[] | "any" }
  | { readonly kind: "elsewhere"; readonly equivalent: string };

/** Whether an inert key's value is one of those under which it changes nothing. */
export function inertAccepts(values: readonly unknown[] | "any", value: unknown): boolean {
  return values === "any" || values.some((v) => JSON.stringify(v) === JSON.stringify(value));
}

export function describeValues(values: readonly unknown[] | "any"): string {
  return values === "any" ? "any value" : values.map((v) => JSON.stringify(v)).join(" or ");
}

export const TRL_KEYS: Readonly<Record<string, TrlKey>> = {
  // Renamed keys
  max_length: { kind: "alias", to: "max_seq_len" },
  max_seq_length: { kind: "alias", to: "max_seq_len" },
  evaluation_strategy: { kind: "alias", to: "eval_strategy" },
  // Trainer plumbing with no meaning here
  gradient_checkpointing_kwargs: { kind: "inert", why: "splint recomputes checkpointed layers itself (there is no reentrant autograd)", values: "any" },
  dataset_kwargs: { kind: "inert", why: "splint's collator always prepares the examples itself", values: "any" },
  remove_unused_columns: { kind: "inert", why: "splint reads only the image and label columns", values: "any" },
  label_names: { kind: "inert", why: "the labels are always the collator's", values: "any" },
  dataloader_num_workers: { kind: "inert", why: "examples are decoded on the training thread", values: "any" },
  logging_strategy: { kind: "inert", why: "splint logs every logging_steps", values: ["steps"] },
  logging_first_step: { kind: "inert", why: "", values: [false] },
  tf32: { kind: "inert", why: "splint's f32 matmuls are full f32", values: [false, null] },
  fp16: { kind: "inert", why: "splint's mixed precision is bf16 (the tutorial's): use bf16: true", values: [false] },
  overwrite_output_dir: { kind: "inert", why: "splint never overwrites a run folder", values: [false] },
  load_best_model_at_end: { kind: "inert", why: "the final adapter is the last step's", values: [false] },
  // LoraConfig fields splint fixes
  task_type: { kind: "inert", why: "", values: ["CAUSAL_LM", null] },
  bias: { kind: "inert", why: "splint trains the LoRA pairs only", values: ["none"] },
  modules_to_save: { kind: "inert", why: "splint trains the LoRA pairs only", values: [null, []] },
  use_dora: { kind: "inert", why: "DoRA is not implemented", values: [false] },
  init_lora_weights: { kind: "inert", why: "splint uses PEFT's default init (Kaiming-uniform A, zero B)", values: [true] },
  fan_in_fan_out: { kind: "inert", why: "", values: [false] },
  inference_mode: { kind: "inert", why: "adapters are saved for inference anyway", values: "any" },
  // Options splint takes elsewhere
  output_dir: { kind: "elsewhere", equivalent: "the run folder is `splint train --out DIR`, or run_dir in a recipe" },
  logging_dir: { kind: "elsewhere", equivalent: "TensorBoard files go to RUN/tensorboard (report_to: tensorboard)" },
  push_to_hub: { kind: "elsewhere", equivalent: "`splint train --push-to-hub OWNER/NAME` (needs HF_TOKEN)" },
  hub_model_id: { kind: "elsewhere", equivalent: "`splint train --push-to-hub OWNER/NAME`" },
  hub_token: { kind: "elsewhere", equivalent: "the HF_TOKEN environment variable" },
  resume_from_checkpoint: { kind: "elsewhere", equivalent: "`splint train --resume` (continues from the run folder's newest checkpoint)" },
  save_total_limit: { kind: "elsewhere", equivalent: "nothing yet: every checkpoint is kept (delete RUN/checkpoints/checkpoint-N by hand)" },
};

/**
 * `overrides` with TRL/PEFT aliases renamed to splint's settings and inert keys dropped; every
 * other key must be in `known`. Errors name the source, the key, and what to write instead.
 */
export function normalizeKeys(overrides: Record<string, unknown>, source: string, known: readonly string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const from = new Map<string, string>();
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    const trl = TRL_KEYS[key];
    let target = key;
    if (trl?.kind === "alias") {
      target = trl.to;
    } else if (trl?.kind === "inert") {
      if (!inertAccepts(trl.values, value)) {
        throw new InputError(source, `"${key}" ${JSON.stringify(value)} is not supported${trl.why ? ` (${trl.why})` : ""}`, `leave it out, or set it to ${describeValues(trl.values)}`);
      }
      continue;
    } else if (trl?.kind === "elsewhere") {
      throw new InputError(source, `"${key}" is not a setting in splint`, `instead: ${trl.equivalent}`);
    } else if (!known.includes(key)) {
      const guess = closest(key, [...known, ...Object.keys(TRL_KEYS)]);
      throw new InputError(source, `unknown setting "${key}"`, guess ? `did you mean "${guess}"? (all settings: \`splint init --config\` writes them with comments)` : `known settings: ${known.join(", ")}`);
    }
    const earlier = from.get(target);
    if (earlier !== undefined) throw new InputError(source, `"${key}" and "${earlier}" both set ${target}`, "keep one of them");
    from.set(target, key);
    out[target] = value;
  }
  return out;
}

/** The candidate nearest to `key` in edit distance, if near enough to be a likely typo. */
export function closest(key: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = editDistance(key.toLowerCase(), c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  // A third of the key's length: "learning_rte" finds learning_rate, "lr" finds nothing.
  return bestDistance <= Math.max(1, Math.floor(key.length / 3)) ? best : null;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}
