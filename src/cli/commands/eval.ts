import { Option, type Command } from "commander";
import { EVAL_MODES, type EvalMode } from "../../eval/classify.ts";
import { DEFAULT_MAX_NEW_TOKENS, runEvaluation } from "../../eval/evaluate.ts";
import { formatEvalSummary } from "../../eval/format.ts";
import { InputError } from "../../util/errors.ts";
import { MATMUL_FLAG, MATMUL_FLAG_HELP, parseMatmulPrecision } from "../matmul-flag.ts";
import { createOutput } from "../output.ts";
import { ADAPTER_FLAG, ADAPTER_HELP, MODEL_FLAG, MODEL_HELP, REVISION_FLAG, REVISION_HELP, revisionOption } from "../model-flags.ts";

interface EvalFlags {
  model: string;
  revision?: string;
  adapter?: string;
  dataset: string;
  split: string;
  mode: EvalMode;
  batch: string;
  limit?: string;
  maxNewTokens: string;
  template?: string;
  maxImageEdge?: string;
  matmul: string;
  calibration?: string;
  out: string;
  json?: boolean;
}

const HELP = `
Modes:
  generate      greedy free text, as the tutorial; the answer must be a class name exactly, or after
                case/space/punctuation folding; anything else counts as invalid (and wrong)
  constrained   greedy decoding that may only spell a class name (a walk down their token trie)
  score         every class answer scored by its log-likelihood after the prompt; gives probabilities

Writes OUT/predictions.jsonl (one line per image) and OUT/metrics.json (accuracy with a 95% Wilson
interval, macro-F1, per-class precision/recall/F1, confusion matrix, invalid rate, images/s, seeded
bootstrap intervals). Score mode adds calibration (ECE, Brier, NLL, reliability bins) and selective
prediction (risk–coverage curve, accuracy at coverages), at the temperature of the adapter's
calibration.json when it has one (see \`splint calibrate\`).
With --adapter, the chat template, prompt, class names and max_image_edge default to those the
adapter was trained with (its training_prompt.json and chat_template.jinja); else short, as the
tutorial.

Examples:
  splint eval --model models/tiny --dataset data/synth --out runs/eval-before
  splint eval --model M --adapter runs/train/adapter --dataset data/bone-break --mode generate --out runs/eval-after
  splint compare runs/eval-before runs/eval-after`;

/** `splint eval`: measure a model (plus adapter) on one split of a dataset. */
export function registerEval(program: Command): void {
  program
    .command("eval")
    .description("Classify every image of a dataset split and measure accuracy, macro-F1 and more")
    .requiredOption(MODEL_FLAG, MODEL_HELP)
    .option(REVISION_FLAG, REVISION_HELP)
    .option(ADAPTER_FLAG, ADAPTER_HELP)
    .requiredOption("--dataset <dir|id>", "dataset folder (from `splint data import`) or Hub dataset id owner/name[@revision]")
    .option("--split <name>", "split to evaluate", "test")
    .addOption(new Option("--mode <mode>", "how an image becomes a class").choices([...EVAL_MODES]).default("generate"))
    .option("--batch <n>", "images per forward pass", "8")
    .option("--limit <n>", "only the first N images of the split")
    .option("--max-new-tokens <n>", "generate mode: most tokens per answer", String(DEFAULT_MAX_NEW_TOKENS))
    .option("--template <spec>", "chat template: short (the tutorial's), model, or a Jinja file (default: the adapter's recorded one, else short)")
    .option("--max-image-edge <px>", "cap the longer image side (default: the adapter's recorded max_image_edge)")
    .requiredOption("--out <dir>", "folder for predictions.jsonl and metrics.json")
    .option(MATMUL_FLAG, MATMUL_FLAG_HELP, "f32")
    .option("--calibration <file>", "score mode: calibration.json to apply, or none (default: the adapter's, if any)")
    .option("--json", "print the summary as JSON")
    .addHelpText("after", HELP)
    .action(async (flags: EvalFlags) => {
      const output = createOutput(Boolean(flags.json));
      const run = await runEvaluation({
        model: flags.model,
        ...revisionOption(flags.revision),
        adapter: flags.adapter,
        dataset: flags.dataset,
        split: flags.split,
        mode: flags.mode,
        batchSize: positiveInteger("--batch", flags.batch),
        limit: flags.limit === undefined ? undefined : positiveInteger("--limit", flags.limit),
        maxNewTokens: positiveInteger("--max-new-tokens", flags.maxNewTokens),
        template: flags.template,
        maxImageEdge: flags.maxImageEdge === undefined ? undefined : positiveInteger("--max-image-edge", flags.maxImageEdge),
        matmulPrecision: parseMatmulPrecision(flags.matmul),
        calibration: calibrationFlag(flags.calibration),
        out: flags.out,
        output,
      });
      output.result({ out: flags.out, ...run.summary }, () => `${formatEvalSummary(run.summary)}\nWrote ${flags.out}/predictions.jsonl and metrics.json`);
    });
}

/** --calibration: a file, "none" for no temperature, or absent for the adapter's own. */
export function calibrationFlag(value: string | undefined): string | null | undefined {
  return value === "none" ? null : value;
}

export function positiveInteger(flag: string, text: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isInteger(value) || value < 1) throw new InputError(flag, `${JSON.stringify(text)} is not a positive integer`);
  return value;
}
