import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { AuditReport } from "../data/audit.ts";
import type { EvalSummary } from "../eval/records.ts";
import { InputError } from "../util/errors.ts";
import { escapeHtml, table } from "./html.ts";
import type { RunLayout } from "./run-layout.ts";

/**
 * The report's opening facts: what was trained and measured, with which settings, and whether the
 * test images leak from train. A reader of the figures needs these to judge them, and they must not
 * depend on the run having been made by a recipe: every file read here is one the single commands
 * (`splint train`, `eval`, `data audit --report`) write too.
 */

export const CLINICAL_DISCLAIMER =
  "Not for clinical use. splint and the models it fine-tunes are research tools: nothing in this report is a diagnosis, " +
  "and no model here has been validated for medical decisions.";

/** Where an audit may be: the recipe's step folder, or a `splint data audit --report RUN/audit.json`. */
export function auditFiles(run: RunLayout): string[] {
  return [join(run.audit, "audit.json"), join(run.root, "audit.json")];
}

interface AdapterConfig {
  readonly base_model_name_or_path?: unknown;
  readonly r?: unknown;
  readonly lora_alpha?: unknown;
}

/** The Run section's HTML, or null when the folder holds no record of a model or its settings. */
export async function runSection(run: RunLayout, before: EvalSummary | null, after: EvalSummary | null): Promise<string | null> {
  const settings = await readJson<Record<string, unknown>>(join(run.train, "config.resolved.json"));
  const adapter = await readJson<AdapterConfig>(join(run.adapter, "adapter_config.json"));
  const evaluated = after ?? before;
  const facts: [string, string][] = [];
  const base = typeof adapter?.base_model_name_or_path === "string" ? adapter.base_model_name_or_path : null;
  if (evaluated) facts.push(["model", evaluated.model]);
  if (base && base !== evaluated?.model) facts.push(["base model of the adapter", base]);
  if (after?.adapter) facts.push(["adapter", after.adapter]);
  else if (adapter) facts.push(["adapter", run.adapter]);
  if (evaluated) {
    facts.push(["dataset", evaluated.dataset], ["evaluated split", evaluated.split], ["classes", evaluated.classNames.join(", ")]);
    const modes = [before && `before: ${before.mode}`, after && `after: ${after.mode}`].filter(Boolean).join(", ");
    facts.push(["evaluation mode", modes], ["chat template", evaluated.template], ["backend", evaluated.backend]);
  }
  if (facts.length === 0 && !settings) return null;
  const parts = [facts.length > 0 ? table(["", ""], facts) : "<p>No evaluation record (metrics.json) names the model.</p>"];
  if (settings) {
    const rows = Object.entries(settings).map(([key, value]) => [key, typeof value === "string" ? value : JSON.stringify(value)]);
    parts.push(`<h3>Training settings</h3>\n<p>From <code>${escapeHtml(join(run.train, "config.resolved.json"))}</code> (pass it to <code>splint train --config</code> to repeat the run).</p>`, table(["setting", "value"], rows));
  } else {
    parts.push(`<p class="missing">No training settings: <code>${escapeHtml(join(run.train, "config.resolved.json"))}</code> is missing.</p>`);
  }
  return parts.join("\n");
}

/** The Leakage audit section's HTML, or null when no audit file exists. */
export async function auditSection(run: RunLayout, evaluatedSplit: string): Promise<string | null> {
  let file: string | undefined;
  let report: AuditReport | null = null;
  for (const candidate of auditFiles(run)) {
    report = await readJson<AuditReport>(candidate);
    if (report) {
      file = candidate;
      break;
    }
  }
  if (!report || !file) return null;
  if (typeof report.summary?.leakedFromTrain !== "object" || typeof report.images !== "object") {
    throw new InputError(file, "is not an audit report (no summary.leakedFromTrain)", "write it with `splint data audit DATASET --report FILE`");
  }
  const s = report.summary;
  const leaked = s.leakedFromTrain[evaluatedSplit];
  const total = report.images[evaluatedSplit];
  let verdict: string;
  if (leaked === undefined || total === undefined) {
    verdict = `<p class="missing">The audit did not cover the evaluated split "${escapeHtml(evaluatedSplit)}".</p>`;
  } else if (leaked === 0) {
    verdict = `<p class="headline">No ${escapeHtml(evaluatedSplit)} image matches a train image (same bytes, same pixels, or a perceptual hash within ${report.threshold} bits).</p>`;
  } else {
    verdict =
      `<p class="headline missing">${leaked} of ${total} ${escapeHtml(evaluatedSplit)} images (${((100 * leaked) / total).toFixed(1)}%) also appear in train: ` +
      `the ${escapeHtml(evaluatedSplit)} figures above overstate how the model does on images it has not seen. ` +
      `<code>splint data audit --dedupe</code> writes a cleaned dataset.</p>`;
  }
  const rows = [
    ["duplicate groups", `${s.groups} (${s.exactGroups} exact, ${s.nearGroups} near)`],
    ["images in duplicate groups", String(s.imagesInGroups)],
    ["groups across splits", String(s.crossSplitGroups)],
    ["groups with conflicting labels", String(s.conflictingGroups)],
    ...Object.entries(s.leakedFromTrain).map(([split, n]) => [`${split} images also in train`, `${n} of ${report.images[split] ?? 0}`]),
  ];
  return [verdict, table(["", ""], rows), `<p>From <code>${escapeHtml(file)}</code>.</p>`].join("\n");
}

async function readJson<T>(file: string): Promise<T | null> {
  const found = await stat(file).then(
    (s) => s.isFile(),
    () => false,
  );
  if (!found) return null;
  try {
    return JSON.parse(await readFile(file, "utf8")) as T;
  } catch (error) {
    throw new InputError(file, `invalid JSON: ${(error as Error).message}`);
  }
}
