import { Option, type Command } from "commander";
import type { DatasetFormat } from "../../data/hf-dataset.ts";
import { importFromKaggle, importImageFolder, type ImportSummary } from "../../data/import.ts";
import { DEFAULT_KAGGLE_API } from "../../data/kaggle.ts";
import { InputError } from "../../util/errors.ts";
import { createOutput } from "../output.ts";

interface ImportFlags {
  kaggle?: string;
  dir?: string;
  out: string;
  format: DatasetFormat;
  valFraction: string;
  seed: string;
  kaggleApi?: string;
  report?: string;
  json?: boolean;
}

const EXAMPLES = `
Layouts recognised under --dir (split names case-insensitive; wrapper folders are skipped):
  <Class>/{Train,Test}/*.png|jpg|jpeg    the Kaggle bone-break archive layout
  {train,test[,val]}/<Class>/*.png|jpg   the common layout

Kaggle credentials, first found wins: KAGGLE_API_TOKEN (token, or a file holding it),
KAGGLE_USERNAME + KAGGLE_KEY, kaggle.json in KAGGLE_CONFIG_DIR or ~/.kaggle (must be chmod 600).
Downloads are kept in $SPLINT_CACHE_DIR (default ~/.cache/splint) and resume when interrupted.

Examples:
  splint data import --kaggle pkdarabi/bone-break-classification-image-dataset --out data/bone-break
  splint data import --dir ./xrays --out data/xrays --val-fraction 0.1 --seed 42
  splint data import --dir ./xrays --out data/xrays-hub --format parquet`;

/** `splint data import`: a Kaggle dataset or a local folder → a Hugging Face DatasetDict folder. */
export function registerDataImport(data: Command): void {
  data
    .command("import")
    .description("Import an image-classification set (Kaggle or a local folder) as a Hugging Face dataset")
    .option("--kaggle <owner/dataset>", "download this Kaggle dataset, e.g. pkdarabi/bone-break-classification-image-dataset")
    .option("--dir <path>", "import this local folder")
    .requiredOption("--out <dir>", "output dataset folder (written atomically; an earlier dataset there is replaced)")
    .addOption(new Option("--format <format>", "arrow: save_to_disk folder for load_from_disk(); parquet: Hub layout").choices(["arrow", "parquet"]).default("arrow"))
    .option("--val-fraction <f>", "move this fraction of each train class to a validation split", "0")
    .option("--seed <n>", "seed of the validation split", "0")
    .option("--kaggle-api <url>", `Kaggle API base URL (env KAGGLE_API_BASE; default ${DEFAULT_KAGGLE_API})`)
    .option("--report <file>", "where to write the JSON report of skipped files (default <out>.import-report.json)")
    .option("--json", "print the result as JSON")
    .addHelpText("after", EXAMPLES)
    .action(async (flags: ImportFlags) => {
      const output = createOutput(Boolean(flags.json));
      if ((flags.kaggle === undefined) === (flags.dir === undefined)) {
        throw new InputError("--kaggle/--dir", "give exactly one of --kaggle OWNER/DATASET or --dir PATH");
      }
      const options = {
        out: flags.out,
        format: flags.format,
        valFraction: parseNumber("--val-fraction", flags.valFraction),
        seed: parseNumber("--seed", flags.seed),
        output,
        ...(flags.report !== undefined ? { reportFile: flags.report } : {}),
      };
      const summary =
        flags.kaggle !== undefined
          ? await importFromKaggle(flags.kaggle, { ...options, apiBase: flags.kaggleApi ?? process.env.KAGGLE_API_BASE ?? DEFAULT_KAGGLE_API })
          : await importImageFolder(flags.dir!, options);
      output.result(summary, () => formatSummary(summary));
    });
}

function parseNumber(flag: string, text: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value)) throw new InputError(flag, `${JSON.stringify(text)} is not a number`);
  return value;
}

function formatSummary(summary: ImportSummary): string {
  const names = summary.splits.map((s) => s.name);
  const width = Math.max(5, ...summary.classNames.map((c) => c.length));
  const column = Math.max(6, ...names.map((n) => n.length)) + 2;
  const header = `${"id".padStart(2)}  ${"class".padEnd(width)}${names.map((n) => n.padStart(column)).join("")}`;
  const lines = [
    `Imported ${summary.source} (${summary.layout} layout) → ${summary.out} (${summary.format})`,
    `${summary.classNames.length} classes; ${summary.splits.map((s) => `${s.name} ${s.total}`).join(", ")}`,
    "",
    header,
    ...summary.classNames.map(
      (c, i) => `${String(i).padStart(2)}  ${c.padEnd(width)}${summary.splits.map((s) => String(s.perClass[c] ?? 0).padStart(column)).join("")}`,
    ),
    `${"".padStart(2)}  ${"total".padEnd(width)}${summary.splits.map((s) => String(s.total).padStart(column)).join("")}`,
  ];
  if (summary.warnings.length > 0) lines.push("", "Warnings:", ...summary.warnings.map((w) => `  ${w}`));
  lines.push("", summary.skipped.length === 0 ? "Skipped: none" : `Skipped ${summary.skipped.length} file(s):`);
  for (const s of summary.skipped) lines.push(`  ${s.file}: ${s.reason}`);
  lines.push(`Report: ${summary.report}`);
  return lines.join("\n");
}
