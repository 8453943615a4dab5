import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Comparison } from "../eval/compare.ts";
import type { EvalSummary } from "../eval/records.ts";
import { evaluationMarkdown } from "../eval/summary-markdown.ts";
import type { EvalMetrics } from "../metrics/run-metrics.ts";
import type { TrainConfig } from "../train/config.ts";
import { writeFileAtomic } from "../util/atomic.ts";
import { stringify as yamlStringify } from "yaml";

/**
 * The adapter's README.md, the model card the Hub shows: YAML front matter with the keys PEFT's
 * save_pretrained and TRL's trainer write (base_model, library_name: peft, pipeline_tag, tags with
 * base_model:adapter:<id>, lora, sft; datasets when the data has a Hub id; license), then how it
 * was trained, the evaluation (src/eval/summary-markdown.ts) when there is one, and the intended
 * use with the not-for-clinical-use line.
 */

export const MODEL_CARD_FILE = "README.md";

export interface ModelCardInfo {
  /** The base model's Hub id when known (else its folder's name, as PEFT writes a local path). */
  readonly baseModel: string;
  /** Hub id of the training data, when it has one. */
  readonly datasetId: string | null;
  /** How the training data is named in the text (a Hub id, a Kaggle ref, a folder). */
  readonly datasetName: string;
  readonly split: string;
  readonly examples: number;
  readonly classNames: readonly string[];
  readonly config: TrainConfig;
  readonly steps: number;
  readonly stoppedEarly: number | null;
  readonly finalLoss: number | null;
  readonly evaluations: readonly EvalMetrics[];
  readonly prompt: string;
  readonly template: string;
  /** The test-split evaluation of this adapter, and the base model's with their comparison. */
  readonly evaluation?: { readonly after: EvalSummary; readonly before?: EvalSummary | null; readonly comparison?: Comparison | null } | null;
  readonly license?: string;
}

/** A Hub id from a folder of the Hub cache (…/models--owner--name/snapshots/<commit>), else null. */
export function hubIdOfCachedFolder(dir: string): string | null {
  const m = /models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]/.exec(`${dir}/`);
  return m ? `${m[1]}/${m[2]}` : null;
}

export function modelCard(info: ModelCardInfo): string {
  const c = info.config;
  const front: Record<string, unknown> = {
    base_model: info.baseModel,
    library_name: "peft",
    pipeline_tag: "image-text-to-text",
    license: info.license ?? "apache-2.0",
    tags: [`base_model:adapter:${info.baseModel}`, "lora", "transformers", "sft", "splint", "image-classification", "medical-imaging", "not-for-clinical-use"],
    ...(info.datasetId ? { datasets: [info.datasetId] } : {}),
  };
  const code = (s: string) => `\`${s.replace(/`/g, "'")}\``;
  const lines: string[] = [
    "---",
    yamlStringify(front).trimEnd(),
    "---",
    "",
    `# LoRA adapter for ${info.baseModel}`,
    "",
    `A LoRA adapter (PEFT format) that classifies an image into one of ${info.classNames.length} classes by answering with the class name: ${info.classNames.map(code).join(", ")}. Trained with splint.`,
    "",
    "> **Not for clinical use.** This adapter is a technical demonstration, not a medical device: it has not been validated for diagnosis, and its answers must not inform the care of any patient.",
    "",
    "## Intended use",
    "",
    "Research and teaching on fine-tuning vision-language models. Ask it the way it was trained (the prompt and chat template below, stored in `training_prompt.json` and `chat_template.jinja` next to this card); `splint eval` and `splint predict` do so by default.",
    "",
    "## Training",
    "",
    `Data: ${code(info.datasetName)}, split ${code(info.split)} (${info.examples} examples). ${info.steps} optimizer steps${info.stoppedEarly !== null ? ` (early stopping at step ${info.stoppedEarly})` : ""}${info.finalLoss !== null ? `, final training loss ${info.finalLoss.toFixed(4)}` : ""}. Loss on ${c.loss_on === "completion" ? "the answer only" : "every non-image token"}.`,
    "",
    "| setting | value |",
    "|---|---|",
    ...(
      [
        ["r / lora_alpha / lora_dropout", `${c.r} / ${c.lora_alpha} / ${c.lora_dropout}${c.use_rslora ? " (rsLoRA)" : ""}`],
        ["target_modules", `${Array.isArray(c.target_modules) ? c.target_modules.join(", ") : `regex ${c.target_modules}`} (scope ${c.lora_scope})`],
        ["learning_rate, schedule", `${c.learning_rate}, ${c.lr_scheduler_type}, warm-up ${c.warmup_steps > 0 ? `${c.warmup_steps} steps` : `ratio ${c.warmup_ratio}`}`],
        ["batch", `${c.per_device_train_batch_size} × ${c.gradient_accumulation_steps} accumulation`],
        ["epochs / max_steps", `${c.num_train_epochs} / ${c.max_steps}`],
        ["optimizer", `${c.optim}, weight decay ${c.weight_decay}, max grad norm ${c.max_grad_norm}`],
        ["precision", c.bf16 ? "bf16 matmuls, f32 LoRA weights" : "f32"],
        ["seed", String(c.seed)],
        ["max_seq_len / max_image_edge", `${c.max_seq_len} / ${c.max_image_edge ?? "processor default"}`],
      ] as const
    ).map(([k, v]) => `| ${k} | ${v.replace(/\|/g, "\\|")} |`),
    "",
    `Chat template: ${code(info.template)}. Prompt:`,
    "",
    "```text",
    info.prompt,
    "```",
  ];
  if (info.evaluations.length > 0) {
    lines.push("", `## Evaluation during training`, "", `On split ${code(c.eval_split)} (loss; accuracy in score mode):`, "", "| step | epoch | eval_loss | eval_accuracy |", "|---:|---:|---:|---:|");
    for (const e of info.evaluations) lines.push(`| ${e.step} | ${e.epoch} | ${e.eval_loss.toFixed(4)} | ${(100 * e.eval_accuracy).toFixed(1)}% |`);
  }
  if (info.evaluation) {
    lines.push("", evaluationMarkdown(info.evaluation.after, { before: info.evaluation.before ?? null, comparison: info.evaluation.comparison ?? null }).trimEnd());
  }
  lines.push("", "## Framework", "", "- splint (TypeScript), adapter files in PEFT's format (`adapter_config.json`, `adapter_model.safetensors`): `PeftModel.from_pretrained(base, this_folder)` loads them.", "");
  return lines.join("\n");
}

export async function writeModelCard(adapterDir: string, info: ModelCardInfo): Promise<string> {
  const file = join(adapterDir, MODEL_CARD_FILE);
  await writeFileAtomic(file, modelCard(info));
  return file;
}

/** What training stored for the card (a hidden .model_card.json beside it), so a later step can add the evaluation. */
// Hidden, so --push-to-hub leaves it home: it only serves to rewrite the card later.
export const CARD_INFO_FILE = ".model_card.json";

export async function saveCardInfo(adapterDir: string, info: ModelCardInfo): Promise<void> {
  await writeFileAtomic(join(adapterDir, CARD_INFO_FILE), `${JSON.stringify({ ...info, evaluation: null }, null, 2)}\n`);
}

/** Rewrites an adapter's README.md with an evaluation added; false when training left no card info. */
export async function addEvaluationToCard(adapterDir: string, evaluation: NonNullable<ModelCardInfo["evaluation"]>): Promise<boolean> {
  let info: ModelCardInfo;
  try {
    info = JSON.parse(await readFile(join(adapterDir, CARD_INFO_FILE), "utf8")) as ModelCardInfo;
  } catch {
    return false;
  }
  await writeModelCard(adapterDir, { ...info, evaluation });
  return true;
}

export function folderName(path: string): string {
  return basename(path.replace(/[/\\]+$/, ""));
}
