import type { Command } from "commander";
import { writeRunReport } from "../../report/report.ts";
import { createOutput } from "../output.ts";

const HELP = `
Reads the run folder of \`splint demo\` or \`splint run\`, or one assembled from single commands:
  eval-before/, eval-after/          metrics.json (+ predictions.jsonl): model, dataset, metrics
  train/config.resolved.json         the training settings; train/adapter/ its base model
  train/train_log.jsonl              loss, learning rate and gradient norm per step
  stats/stats.json + samples.png     dataset counts and a sample grid
  audit/audit.json (or audit.json)   the leakage audit (\`splint data audit DATASET --report\`)
  compare/comparison.json            the paired comparison
Gallery images come from RUN/dataset/, else from the dataset the evaluation read. Writes
RUN/report.html: one file, figures embedded, opens offline, with a not-for-clinical-use notice.
Missing steps are named.

Examples:
  splint report runs/demo
  splint eval --model M --dataset data/bones --out runs/mine/eval-before
  splint train --model M --dataset data/bones --out runs/mine/train
  splint eval --model M --adapter runs/mine/train/adapter --dataset data/bones --out runs/mine/eval-after
  splint data audit data/bones --report runs/mine/audit/audit.json
  splint compare runs/mine/eval-before runs/mine/eval-after --out runs/mine/compare
  splint report runs/mine --title "Bone fractures, run 1"`;

/** `splint report RUN_DIR`: the run as one self-contained HTML page. */
export function registerReport(program: Command): void {
  program
    .command("report")
    .description("Write one self-contained HTML report of a run folder (data, training curves, before/after)")
    .argument("<run>", "run folder (from `splint demo` or `splint run`)")
    .option("--out <file>", "where to write the page (default RUN/report.html)")
    .option("--title <text>", "page title")
    .option("--json", "print the result as JSON")
    .addHelpText("after", HELP)
    .action(async (run: string, flags: { out?: string; title?: string; json?: boolean }) => {
      const output = createOutput(Boolean(flags.json));
      const summary = await writeRunReport(run, { out: flags.out, title: flags.title });
      output.result(summary, () =>
        [
          `Wrote ${summary.file} (${summary.figures} figures; sections: ${summary.sections.join(", ") || "none"})`,
          ...summary.missing.map((m) => `  missing ${m}`),
        ].join("\n"),
      );
    });
}
