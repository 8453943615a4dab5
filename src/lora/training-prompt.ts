import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { compileChatTemplate, resolveChatTemplate, type ChatTemplate } from "../text/chat-template.ts";
import { renderPrompt } from "../text/prompt.ts";
import { writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";

/**
 * How an adapter was asked during training, saved in its folder so that eval, predict and
 * calibrate ask it the same way by default: the chat template's text (`chat_template.jinja`, the
 * file name transformers saves a processor's template under) and `training_prompt.json` with the
 * template's name, the prompt (its template with {classes}, and as rendered), the class names in
 * label order, and the image-size cap. An adapter without these files (trained elsewhere, or by
 * an older splint) gets the tutorial's defaults.
 */

export const TRAINING_PROMPT_FILE = "training_prompt.json";
export const CHAT_TEMPLATE_FILE = "chat_template.jinja";

export interface TrainingPrompt {
  readonly format: "splint-training-prompt";
  readonly version: 1;
  /** "short", "model" or the template file's path, as given to training. */
  readonly template: string;
  /** The prompt template (null: the tutorial's) and the text it rendered to. */
  readonly promptTemplate: string | null;
  readonly prompt: string;
  readonly classNames: readonly string[];
  readonly maxImageEdge: number | null;
  readonly lossOn: "completion" | "all";
}

export async function writeTrainingPrompt(adapterDir: string, record: Omit<TrainingPrompt, "format" | "version">, template: ChatTemplate): Promise<void> {
  await writeFileAtomic(join(adapterDir, CHAT_TEMPLATE_FILE), template.text);
  const full: TrainingPrompt = { format: "splint-training-prompt", version: 1, ...record };
  await writeFileAtomic(join(adapterDir, TRAINING_PROMPT_FILE), `${JSON.stringify(full, null, 2)}\n`);
}

/** The adapter's record, or null when it has none (or no adapter is given). */
export async function readTrainingPrompt(adapterDir: string | undefined): Promise<{ record: TrainingPrompt; template: ChatTemplate } | null> {
  if (adapterDir === undefined) return null;
  const file = join(adapterDir, TRAINING_PROMPT_FILE);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return null;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new InputError(file, `not valid JSON (${(error as Error).message})`);
  }
  const r = raw as Partial<TrainingPrompt> | null;
  if (!r || r.format !== "splint-training-prompt" || r.version !== 1) throw new InputError(file, "is not a splint training prompt (format splint-training-prompt, version 1)");
  const names = r.classNames;
  if (typeof r.template !== "string" || typeof r.prompt !== "string" || !Array.isArray(names) || !names.every((n) => typeof n === "string")) {
    throw new InputError(file, "lacks template, prompt or classNames");
  }
  const templateFile = join(adapterDir, CHAT_TEMPLATE_FILE);
  let templateText: string;
  try {
    templateText = await readFile(templateFile, "utf8");
  } catch {
    throw new InputError(templateFile, `missing, though ${TRAINING_PROMPT_FILE} refers to it`, "copy the adapter folder whole");
  }
  const record: TrainingPrompt = {
    format: "splint-training-prompt",
    version: 1,
    template: r.template,
    promptTemplate: typeof r.promptTemplate === "string" ? r.promptTemplate : null,
    prompt: r.prompt,
    classNames: names,
    maxImageEdge: typeof r.maxImageEdge === "number" ? r.maxImageEdge : null,
    lossOn: r.lossOn === "all" ? "all" : "completion",
  };
  return { record, template: compileChatTemplate(r.template, templateFile, templateText) };
}

/** What eval/predict/calibrate ask with: explicit options first, then the adapter's record, then the tutorial's defaults. */
export interface PromptSettings {
  readonly template: ChatTemplate;
  readonly classNames: readonly string[];
  readonly prompt: string;
  readonly maxImageEdge: number | null;
  /** Where the settings came from, for a log line. */
  readonly source: string;
}

export async function resolvePromptSettings(opts: {
  readonly modelDir: string;
  readonly adapterDir?: string;
  /** --template; undefined: the adapter's, else "short". */
  readonly template?: string;
  /** A prompt template ({classes}); null: the tutorial's; undefined: the adapter's, else the tutorial's. */
  readonly promptTemplate?: string | null;
  /** Class names given explicitly (--classes): they win over everything. */
  readonly classes?: readonly string[];
  /**
   * The label names of the data being classified (a dataset's ClassLabel names). The adapter's own
   * names replace them when it has as many: a dataset labels by index, and the adapter was taught
   * its names for those labels (config class_names), which are what it answers with.
   */
  readonly labelNames?: readonly string[];
  /** Without either, and without an adapter record: these. */
  readonly fallbackClasses: readonly string[];
  readonly maxImageEdge?: number | null;
}): Promise<PromptSettings> {
  const trained = await readTrainingPrompt(opts.adapterDir);
  const template = opts.template !== undefined ? resolveChatTemplate(opts.template, opts.modelDir) : (trained?.template ?? resolveChatTemplate("short", opts.modelDir));
  const taught = trained?.record.classNames;
  let classNames: readonly string[];
  if (opts.classes !== undefined) classNames = opts.classes;
  else if (opts.labelNames !== undefined) classNames = taught && taught.length === opts.labelNames.length ? taught : opts.labelNames;
  else classNames = taught ?? opts.fallbackClasses;
  return {
    template,
    classNames,
    prompt: renderPrompt(opts.promptTemplate !== undefined ? opts.promptTemplate : (trained?.record.promptTemplate ?? null), classNames),
    maxImageEdge: opts.maxImageEdge !== undefined ? opts.maxImageEdge : (trained?.record.maxImageEdge ?? null),
    source: trained ? `${join(opts.adapterDir!, TRAINING_PROMPT_FILE)}` : "defaults",
  };
}
