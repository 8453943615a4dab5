import type { Command } from "commander";
import { loadDataset } from "../../data/load-dataset.ts";
import { formatStats, writeStatsReport } from "../../data/stats.ts";
import { InputError } from "../../util/errors.ts";
import { createOutput } from "../output.ts";

interface StatsFlags {
  out: string;
  samples: string;
  seed: string;
  split?: string;
  json?: boolean;
}

const EXAMPLES = `
Writes into --out: stats.json (all numbers), class-counts.png (bar chart per split) and
samples.png (seeded random images of one split with their labels, as the tutorial's cell).

Examples:
  splint data stats data/bone-break --out runs/stats
  splint data stats data/bone-break --out runs/stats --samples 4 --seed 420 --json`;

/** `splint data stats DATASET`: class balance, image sizes and modes, a labelled sample grid. */
export function registerDataStats(data: Command): void {
  data
    .command("stats")
    .description("Class counts per split, image sizes and colour modes, and a sample grid")
    .argument("<dataset>", "dataset folder (from `splint data import`, or Python save_to_disk / Hub Parquet) or Hub dataset id")
    .requiredOption("--out <dir>", "folder for stats.json, class-counts.png and samples.png")
    .option("--samples <n>", "images in the sample grid (0 for none)", "8")
    .option("--seed <s>", "seed of the sample choice", "420")
    .option("--split <name>", "split to sample from (default: train)")
    .option("--json", "print the numbers as JSON")
    .addHelpText("after", EXAMPLES)
    .action(async (datasetDir: string, flags: StatsFlags) => {
      const output = createOutput(Boolean(flags.json));
      const samples = parseCount("--samples", flags.samples);
      const seed = parseCount("--seed", flags.seed);
      const dataset = (await loadDataset(datasetDir, { output })).dataset;
      if (flags.split !== undefined && !dataset.splits.has(flags.split)) {
        throw new InputError("--split", `no split "${flags.split}" in ${datasetDir} (it has ${[...dataset.splits.keys()].join(", ")})`);
      }
      const total = [...dataset.splits.values()].reduce((s, rows) => s + rows.length, 0);
      const progress = output.progress("stats", total, "images");
      let report;
      try {
        report = await writeStatsReport(dataset, flags.out, {
          samples,
          seed,
          onImage: (done) => progress.update(done),
          ...(flags.split !== undefined ? { sampleSplit: flags.split } : {}),
        });
      } finally {
        progress.stop();
      }
      const { stats, files } = report;
      output.result({ ...stats, samples: report.samples, files }, () =>
        [formatStats(stats), "", `Wrote ${[files.json, files.chart, files.grid].filter((f) => f !== null).join(", ")}`].join("\n"),
      );
    });
}

function parseCount(flag: string, text: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isInteger(value) || value < 0) throw new InputError(flag, `${JSON.stringify(text)} is not a non-negative integer`);
  return value;
}
