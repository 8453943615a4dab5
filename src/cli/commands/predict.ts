import { Option, type Command } from "commander";
import { EVAL_MODES, type EvalMode } from "../../eval/classify.ts";
import { DEFAULT_MAX_NEW_TOKENS } from "../../eval/evaluate.ts";
import { predictImages, resolveClassNames, type ImagePrediction } from "../../eval/predict.ts";
import { MATMUL_FLAG, MATMUL_FLAG_HELP, parseMatmulPrecision } from "../matmul-flag.ts";
import { createOutput } from "../output.ts";
import { positiveInteger } from "./eval.ts";

interface PredictFlags {
  model: string;
  adapter?: string;
  mode: EvalMode;
  classes?: string;
  dataset?: string;
  template: string;
  maxNewTokens: string;
  maxImageEdge?: string;
  batch: string;
  matmul: string;
  json?: boolean;
}

const HELP = `
The prompt offers --classes (comma-separated), or the class names of --dataset, or by default the
tutorial's ten fracture classes. Score mode prints each class's probability; generate mode prints
the model's own words and the class they name (or none).

Examples:
  splint predict --model runs/demo/model --adapter runs/demo/train/adapter xray1.png xray2.png
  splint predict --model M --adapter A --mode generate --json xray.png`;

/** `splint predict IMAGE…`: classify image files with a model (plus adapter). */
export function registerPredict(program: Command): void {
  program
    .command("predict")
    .description("Classify image files with a model (and LoRA adapter); probabilities in score mode")
    .argument("<images...>", "image files (PNG or JPEG)")
    .requiredOption("--model <dir>", "model folder (Hugging Face layout)")
    .option("--adapter <dir>", "PEFT LoRA adapter folder")
    .addOption(new Option("--mode <mode>", "how an image becomes a class").choices([...EVAL_MODES]).default("score"))
    .option("--classes <names>", "comma-separated class names, in label order")
    .option("--dataset <dir>", "take the class names from this dataset")
    .option("--template <spec>", "chat template: short (the tutorial's), model, or a Jinja file", "short")
    .option("--max-new-tokens <n>", "generate mode: most tokens per answer", String(DEFAULT_MAX_NEW_TOKENS))
    .option("--max-image-edge <px>", "cap the longer image side (use training's max_image_edge)")
    .option("--batch <n>", "images per forward pass", "8")
    .option(MATMUL_FLAG, MATMUL_FLAG_HELP, "f32")
    .option("--json", "print the predictions as JSON")
    .addHelpText("after", HELP)
    .action(async (images: string[], flags: PredictFlags) => {
      const output = createOutput(Boolean(flags.json));
      const predictions = await predictImages({
        model: flags.model,
        adapter: flags.adapter,
        images,
        mode: flags.mode,
        classNames: await resolveClassNames(flags.classes, flags.dataset),
        template: flags.template,
        maxNewTokens: positiveInteger("--max-new-tokens", flags.maxNewTokens),
        maxImageEdge: flags.maxImageEdge === undefined ? null : positiveInteger("--max-image-edge", flags.maxImageEdge),
        batchSize: positiveInteger("--batch", flags.batch),
        matmulPrecision: parseMatmulPrecision(flags.matmul),
        output,
      });
      output.result(predictions, () => predictions.map(formatPrediction).join("\n"));
    });
}

function formatPrediction(p: ImagePrediction): string {
  if (p.probabilities) {
    const top = Object.entries(p.probabilities)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([name, prob]) => `${name} ${(100 * prob).toFixed(1)}%`);
    return `${p.image}: ${p.class}  (${top.join(", ")})`;
  }
  return `${p.image}: ${p.class ?? "(no class)"}  answer: ${JSON.stringify(p.answer)}`;
}
