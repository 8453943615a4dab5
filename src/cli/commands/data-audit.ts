import { Option, type Command } from "commander";
import { DEFAULT_MIN_CORRELATION, DEFAULT_PHASH_THRESHOLD, auditDataset, dedupeDataset, type AuditReport, type DedupeResult } from "../../data/audit.ts";
import { saveDatasetDict, type DatasetFormat } from "../../data/hf-dataset.ts";
import { loadDataset } from "../../data/load-dataset.ts";
import { writeFileAtomic } from "../../util/atomic.ts";
import { InputError } from "../../util/errors.ts";
import { createOutput } from "../output.ts";

interface AuditFlags {
  threshold: string;
  minCorrelation: string;
  report: string;
  dedupe?: string;
  format: DatasetFormat;
  json?: boolean;
}

const EXAMPLES = `
Exact duplicates: same file bytes, or same decoded pixels. Near duplicates: 64-bit DCT perceptual
hashes (as Python's imagehash.phash) at most --threshold bits apart whose 32×32 grayscale
renditions also correlate at least --min-correlation (pHash alone over-matches look-alike
radiographs; 0 turns the check off). Duplicates are grouped across
all splits; a test/validation image in a group with a train image is a leak.

--dedupe OUT writes a cleaned copy: groups with conflicting labels are dropped, a group touching
train keeps one train image (so no evaluation image repeats a training one), any other group
keeps one image.

Examples:
  splint data audit data/bone-break
  splint data audit data/bone-break --threshold 4 --dedupe data/bone-break-clean`;

/** `splint data audit DATASET`: duplicates, label conflicts and train→test leakage. */
export function registerDataAudit(data: Command): void {
  data
    .command("audit")
    .description("Find exact and near duplicates, label conflicts and test images leaking from train")
    .argument("<dataset>", "dataset folder (from `splint data import`, or Python save_to_disk / Hub Parquet) or Hub dataset id")
    .option("--threshold <bits>", "near-duplicate pHash Hamming distance (0–64)", String(DEFAULT_PHASH_THRESHOLD))
    .option("--min-correlation <r>", "thumbnail correlation a near pair must also reach (0–1)", String(DEFAULT_MIN_CORRELATION))
    .option("--report <file>", "where to write the full audit", "audit.json")
    .option("--dedupe <out>", "also write a cleaned dataset to this folder")
    .addOption(new Option("--format <format>", "layout of the --dedupe dataset").choices(["arrow", "parquet"]).default("arrow"))
    .option("--json", "print the result as JSON")
    .addHelpText("after", EXAMPLES)
    .action(async (datasetDir: string, flags: AuditFlags) => {
      const output = createOutput(Boolean(flags.json));
      const threshold = Number(flags.threshold);
      if (flags.threshold.trim() === "" || !Number.isInteger(threshold) || threshold < 0 || threshold > 64) {
        throw new InputError("--threshold", `${JSON.stringify(flags.threshold)} is not an integer from 0 to 64`);
      }
      const minCorrelation = Number(flags.minCorrelation);
      if (flags.minCorrelation.trim() === "" || !(minCorrelation >= 0 && minCorrelation <= 1)) {
        throw new InputError("--min-correlation", `${JSON.stringify(flags.minCorrelation)} is not a number from 0 to 1`);
      }
      const dataset = (await loadDataset(datasetDir, { output })).dataset;
      const total = [...dataset.splits.values()].reduce((s, rows) => s + rows.length, 0);
      const progress = output.progress("audit", total, "images");
      let report: AuditReport;
      try {
        report = await auditDataset(dataset, { threshold, minCorrelation, onImage: (done) => progress.update(done) });
      } finally {
        progress.stop();
      }
      let dedupe: DedupeResult | null = null;
      if (flags.dedupe !== undefined) {
        dedupe = dedupeDataset(dataset, report);
        await saveDatasetDict(flags.dedupe, dedupe.dataset, flags.format);
      }
      const cleaned = dedupe === null ? null : {
        out: flags.dedupe,
        format: flags.format,
        dropped: dedupe.dropped,
        images: Object.fromEntries([...dedupe.dataset.splits].map(([split, rows]) => [split, rows.length])),
      };
      await writeFileAtomic(flags.report, `${JSON.stringify({ dataset: datasetDir, ...report, dedupe: cleaned }, null, 2)}\n`);
      output.result({ dataset: datasetDir, report: flags.report, threshold, images: report.images, summary: report.summary, leaks: report.leaks, undecodable: report.undecodable.length, dedupe: cleaned }, () =>
        formatAudit(report, flags.report, cleaned),
      );
    });
}

function describe(ref: { split: string; index: number; path: string | null }): string {
  return `${ref.split}[${ref.index}]${ref.path ? ` ${ref.path}` : ""}`;
}

function formatAudit(
  report: AuditReport,
  reportFile: string,
  cleaned: { out: string | undefined; dropped: DedupeResult["dropped"]; images: Record<string, number> } | null,
): string {
  const s = report.summary;
  const lines = [
    `Images: ${Object.entries(report.images).map(([split, n]) => `${split} ${n}`).join(", ")}  (pHash threshold ${report.threshold} bits, correlation ≥ ${report.minCorrelation})`,
    `Duplicate groups: ${s.groups} (${s.exactGroups} exact, ${s.nearGroups} near), ${s.imagesInGroups} images in them`,
    `Across splits: ${s.crossSplitGroups} groups; with conflicting labels: ${s.conflictingGroups}`,
    `Leaking from train: ${Object.entries(s.leakedFromTrain).map(([split, n]) => `${n} of ${report.images[split] ?? 0} ${split}`).join(", ") || "no evaluation split"}`,
  ];
  if (report.undecodable.length > 0) lines.push(`Unreadable images (matched by bytes only): ${report.undecodable.length}`);
  const shown = report.leaks.slice(0, 10);
  if (shown.length > 0) {
    lines.push("", "Leaks (evaluation image ← train images):");
    for (const leak of shown) {
      lines.push(`  ${describe(leak)} [${leak.match}] ← ${leak.trainMatches.map((m) => `${describe(m)} (d=${m.distance})`).join(", ")}`);
    }
    if (report.leaks.length > shown.length) lines.push(`  … ${report.leaks.length - shown.length} more in ${reportFile}`);
  }
  const conflicts = report.groups.filter((g) => g.conflictingLabels).slice(0, 5);
  if (conflicts.length > 0) {
    lines.push("", "Conflicting labels:");
    for (const g of conflicts) lines.push(`  group ${g.id} [${g.match}]: ${g.members.map((m) => `${describe(m)} = ${report.classNames[m.label] ?? m.label}`).join("; ")}`);
  }
  if (cleaned !== null) {
    lines.push("", `Cleaned dataset → ${cleaned.out}: dropped ${cleaned.dropped.length}; kept ${Object.entries(cleaned.images).map(([split, n]) => `${split} ${n}`).join(", ")}`);
  }
  lines.push("", `Full report: ${reportFile}`);
  return lines.join("\n");
}
