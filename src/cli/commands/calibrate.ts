import type { Command } from "commander";
import { runCalibration } from "../../eval/calibrate.ts";
import { DEFAULT_MAX_NEW_TOKENS } from "../../eval/evaluate.ts";
import { InputError } from "../../util/errors.ts";
import { MATMUL_FLAG, MATMUL_FLAG_HELP, parseMatmulPrecision } from "../matmul-flag.ts";
import { createOutput } from "../output.ts";
import { positiveInteger } from "./eval.ts";
import { ADAPTER_FLAG, ADAPTER_HELP, MODEL_FLAG, MODEL_HELP, REVISION_FLAG, REVISION_HELP, revisionOption } from "../model-flags.ts";

interface CalibrateFlags {
  model: string;
  revision?: string;
  adapter?: string;
  dataset: string;
  split: string;
  batch: string;
  limit?: string;
  template?: string;
  maxImageEdge?: string;
  matmul: string;
  targetAccuracy?: string;
  out?: string;
  json?: boolean;
}

const HELP = `
Scores every image of the validation split (score mode), fits the temperature T that minimises the
negative log-likelihood of the true classes (probabilities softmax(scores / T)), and writes it to
ADAPTER/calibration.json, where \`splint eval\` and \`splint predict\` find and apply it. T only
changes confidence, never the predicted class. With --target-accuracy A it also picks the lowest
confidence threshold whose accuracy among answered validation images is at least A, for
\`splint predict --abstain-below\`. The test split is refused: calibrate on images you do not report.

Examples:
  splint data import --dir raw --out data/xray --val-fraction 0.1
  splint calibrate --model M --adapter runs/bone/adapter --dataset data/xray --target-accuracy 0.9
  splint eval --model M --adapter runs/bone/adapter --dataset data/xray --mode score --out runs/eval-after`;

/** `splint calibrate`: temperature scaling and an abstention threshold, fitted on validation. */
export function registerCalibrate(program: Command): void {
  program
    .command("calibrate")
    .description("Fit temperature scaling (and an abstention threshold) on a validation split; stored with the adapter")
    .requiredOption(MODEL_FLAG, MODEL_HELP)
    .option(REVISION_FLAG, REVISION_HELP)
    .option(ADAPTER_FLAG, ADAPTER_HELP + " (calibration.json is written into it)")
    .requiredOption("--dataset <dir|id>", "dataset folder or Hub dataset id, with a validation split")
    .option("--split <name>", "split to fit on", "validation")
    .option("--target-accuracy <a>", "also pick the abstention threshold that reaches this accuracy")
    .option("--batch <n>", "images per forward pass", "8")
    .option("--limit <n>", "only the first N images of the split")
    .option("--template <spec>", "chat template: short (the tutorial's), model, or a Jinja file (default: the adapter's recorded one, else short)")
    .option("--max-image-edge <px>", "cap the longer image side (default: the adapter's recorded max_image_edge)")
    .option("--out <file>", "where to write (default ADAPTER/calibration.json; needed without --adapter)")
    .option(MATMUL_FLAG, MATMUL_FLAG_HELP, "f32")
    .option("--json", "print the calibration as JSON")
    .addHelpText("after", HELP)
    .action(async (flags: CalibrateFlags) => {
      const output = createOutput(Boolean(flags.json));
      let targetAccuracy: number | undefined;
      if (flags.targetAccuracy !== undefined) {
        targetAccuracy = Number(flags.targetAccuracy);
        if (flags.targetAccuracy.trim() === "" || !Number.isFinite(targetAccuracy)) throw new InputError("--target-accuracy", `${JSON.stringify(flags.targetAccuracy)} is not a number`);
      }
      const { file, calibration: c } = await runCalibration({
        model: flags.model,
        ...revisionOption(flags.revision),
        adapter: flags.adapter,
        dataset: flags.dataset,
        split: flags.split,
        batchSize: positiveInteger("--batch", flags.batch),
        limit: flags.limit === undefined ? undefined : positiveInteger("--limit", flags.limit),
        maxNewTokens: DEFAULT_MAX_NEW_TOKENS,
        template: flags.template,
        maxImageEdge: flags.maxImageEdge === undefined ? undefined : positiveInteger("--max-image-edge", flags.maxImageEdge),
        matmulPrecision: parseMatmulPrecision(flags.matmul),
        targetAccuracy,
        out: flags.out,
        output,
      });
      output.result({ file, ...c }, () =>
        [
          `temperature ${c.temperature.toFixed(3)} fitted on ${c.fittedOn.n} images of ${c.fittedOn.split}`,
          `NLL ${c.nll.before.toFixed(3)} → ${c.nll.after.toFixed(3)}, ECE ${c.ece.before.toFixed(3)} → ${c.ece.after.toFixed(3)}`,
          ...(c.abstain
            ? [`abstain below ${c.abstain.threshold.toFixed(3)}: answers ${(100 * c.abstain.coverage).toFixed(1)}% of ${c.fittedOn.split} at ${(100 * c.abstain.accuracy).toFixed(1)}% accuracy (target ${(100 * c.abstain.targetAccuracy).toFixed(1)}%)`]
            : []),
          `Wrote ${file}`,
        ].join("\n"),
      );
    });
}
