import type { Command } from "commander";
import { writeRunReport } from "../../report/report.ts";
import { createOutput } from "../output.ts";

const HELP = `
Reads the run folder of \`splint demo\` or \`splint run\`:
  stats/stats.json + samples.png     dataset counts and a sample grid
  train/train_log.jsonl              loss, learning rate and gradient norm per step
  eval-before/, eval-after/          metrics.json (+ predictions.jsonl) of each evaluation
  compare/comparison.json            the paired comparison (flipped images come from dataset/)
and writes RUN/report.html: one file, figures embedded, opens offline. Missing steps are named.

Example:
  splint report runs/demo`;

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
