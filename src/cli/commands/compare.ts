import type { Command } from "commander";
import { compareEvalDirs } from "../../eval/compare-dirs.ts";
import { formatComparison } from "../../eval/format.ts";
import { createOutput } from "../output.ts";

const HELP = `
Pairs the two evaluations image by image (same dataset split, same images) and reports the
accuracy and macro-F1 change, McNemar's exact test on the images whose correctness changed,
per-class recall/F1 deltas, and which images flipped right→wrong and wrong→right.
With --out, writes OUT/comparison.json.

Example:
  splint compare runs/demo/eval-before runs/demo/eval-after --out runs/demo/compare`;

/** `splint compare BEFORE AFTER`: what fine-tuning changed, with a paired test. */
export function registerCompare(program: Command): void {
  program
    .command("compare")
    .description("Compare two `splint eval` folders on the same images (McNemar's exact test, per-class deltas, flips)")
    .argument("<before>", "eval folder of the base model")
    .argument("<after>", "eval folder of the fine-tuned model")
    .option("--out <dir>", "also write comparison.json here")
    .option("--json", "print the comparison as JSON")
    .addHelpText("after", HELP)
    .action(async (before: string, after: string, flags: { out?: string; json?: boolean }) => {
      const output = createOutput(Boolean(flags.json));
      const comparison = await compareEvalDirs(before, after, flags.out);
      output.result(comparison, () => `${formatComparison(comparison)}${flags.out ? `\nWrote ${flags.out}/comparison.json` : ""}`);
    });
}
