import { Option, type Command } from "commander";
import { EVAL_MODES, type EvalMode } from "../../eval/classify.ts";
import { DEFAULT_MAX_NEW_TOKENS } from "../../eval/evaluate.ts";
import { predictImages, resolveClassNames, UNCERTAIN, type ImagePrediction } from "../../eval/predict.ts";
import { MATMUL_FLAG, MATMUL_FLAG_HELP, parseMatmulPrecision } from "../matmul-flag.ts";
import { createOutput } from "../output.ts";
import { InputError } from "../../util/errors.ts";
import { calibrationFlag, positiveInteger } from "./eval.ts";
import { ADAPTER_FLAG, ADAPTER_HELP, MODEL_FLAG, MODEL_HELP, REVISION_FLAG, REVISION_HELP, revisionOption } from "../model-flags.ts";

interface PredictFlags {
  model: string;
  revision?: string;
  adapter?: string;
  mode: EvalMode;
  classes?: string;
  dataset?: string;
  template?: string;
  maxNewTokens: string;
  maxImageEdge?: string;
  batch: string;
  matmul: string;
  calibration?: string;
  abstainBelow?: string | true;
  json?: boolean;
}

const HELP = `
The prompt offers --classes (comma-separated), or the class names of --dataset, or by default the
classes the adapter was trained on (with its prompt and chat template), else the tutorial's ten
fracture classes. Score mode prints each class's probability; generate mode prints
the model's own words and the class they name (or none). Score mode applies the temperature of the
adapter's calibration.json when it has one (\`splint calibrate\`). With --abstain-below P it answers
"uncertain" when the top probability is below P; --abstain-below alone takes the threshold
\`splint calibrate --target-accuracy A\` picked on validation.

Examples:
  splint predict --model runs/demo/model --adapter runs/demo/train/adapter xray1.png xray2.png
  splint predict --model M --adapter A --mode generate --json xray.png
  splint predict --model M --adapter A --abstain-below 0.6 xray.png`;

/** `splint predict IMAGE…`: classify image files with a model (plus adapter). */
export function registerPredict(program: Command): void {
  program
    .command("predict")
    .description("Classify image files with a model (and LoRA adapter); probabilities in score mode")
    .argument("<images...>", "image files (PNG or JPEG)")
    .requiredOption(MODEL_FLAG, MODEL_HELP)
    .option(REVISION_FLAG, REVISION_HELP)
    .option(ADAPTER_FLAG, ADAPTER_HELP)
    .addOption(new Option("--mode <mode>", "how an image becomes a class").choices([...EVAL_MODES]).default("score"))
    .option("--classes <names>", "comma-separated class names, in label order")
    .option("--dataset <dir|id>", "take the class names from this dataset (folder or Hub dataset id)")
    .option("--template <spec>", "chat template: short (the tutorial's), model, or a Jinja file (default: the adapter's recorded one, else short)")
    .option("--max-new-tokens <n>", "generate mode: most tokens per answer", String(DEFAULT_MAX_NEW_TOKENS))
    .option("--max-image-edge <px>", "cap the longer image side (default: the adapter's recorded max_image_edge)")
    .option("--batch <n>", "images per forward pass", "8")
    .option(MATMUL_FLAG, MATMUL_FLAG_HELP, "f32")
    .option("--calibration <file>", "score mode: calibration.json to apply, or none (default: the adapter's, if any)")
    .option("--abstain-below [p]", "score mode: answer uncertain below this top probability (alone: the calibrated threshold)")
    .option("--json", "print the predictions as JSON")
    .addHelpText("after", HELP)
    .action(async (images: string[], flags: PredictFlags) => {
      const output = createOutput(Boolean(flags.json));
      const predictions = await predictImages({
        model: flags.model,
        ...revisionOption(flags.revision),
        adapter: flags.adapter,
        images,
        mode: flags.mode,
        ...(await resolveClassNames(flags.classes, flags.dataset)),
        template: flags.template,
        maxNewTokens: positiveInteger("--max-new-tokens", flags.maxNewTokens),
        maxImageEdge: flags.maxImageEdge === undefined ? undefined : positiveInteger("--max-image-edge", flags.maxImageEdge),
        batchSize: positiveInteger("--batch", flags.batch),
        matmulPrecision: parseMatmulPrecision(flags.matmul),
        calibration: calibrationFlag(flags.calibration),
        abstainBelow: abstainFlag(flags.abstainBelow),
        output,
      });
      output.result(predictions, () => predictions.map(formatPrediction).join("\n"));
    });
}

function abstainFlag(value: string | true | undefined): number | "calibrated" | undefined {
  if (value === undefined) return undefined;
  if (value === true) return "calibrated";
  const p = Number(value);
  if (value.trim() === "" || !(p >= 0 && p <= 1)) throw new InputError("--abstain-below", `${JSON.stringify(value)} is not a probability in [0, 1]`);
  return p;
}

function formatPrediction(p: ImagePrediction): string {
  if (p.probabilities) {
    const top = Object.entries(p.probabilities)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([name, prob]) => `${name} ${(100 * prob).toFixed(1)}%`);
    return `${p.image}: ${p.abstained ? UNCERTAIN : p.class}  (${top.join(", ")}${p.temperature !== 1 ? `; T = ${p.temperature?.toFixed(3)}` : ""})`;
  }
  return `${p.image}: ${p.class ?? "(no class)"}  answer: ${JSON.stringify(p.answer)}`;
}
