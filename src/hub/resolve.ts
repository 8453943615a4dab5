import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import { InputError, SplintError } from "../util/errors.ts";
import { downloadSnapshot, isHubRepoId, type DownloadOptions, type Snapshot } from "./snapshot.ts";

/** A `--model` / `--adapter` / `--dataset` value made local: the folder to read, and what to call it in records. */
export interface ResolvedModel {
  /** The local folder (the given one, or the snapshot in the Hugging Face cache). */
  readonly dir: string;
  /** What to record as the source: the absolute folder, or `owner/name` (with `@revision` unless main). */
  readonly name: string;
  /** Set when the value was a Hub id. */
  readonly snapshot?: Snapshot;
}

/**
 * Splits `owner/name@revision` (the revision may be a branch, tag or commit; branches with a slash
 * such as `refs/pr/1` are allowed after the @). Returns undefined when the text is not a Hub id.
 */
export function parseHubRef(text: string): { repo: string; revision?: string } | undefined {
  const at = text.indexOf("@");
  const repo = at === -1 ? text : text.slice(0, at);
  const revision = at === -1 ? undefined : text.slice(at + 1);
  if (revision !== undefined && (revision === "" || /\s|\.\./.test(revision))) return undefined;
  // A path-looking value (./x, ../x, /x, ~/x, a\b, a/b/c) is never a Hub id, even when missing.
  if (/^(\.{1,2}|~)?\//.test(repo) || repo.includes("\\") || repo.split("/").length > 2 || !isHubRepoId(repo)) return undefined;
  return revision === undefined ? { repo } : { repo, revision };
}

/**
 * `--model` and friends: a local folder is used as it is; anything else must be a Hub repo id
 * (`owner/name`, optionally `@revision`), downloaded into (or found in) the shared Hugging Face cache.
 * `options.revision` (the `--revision` flag) applies when the id carries none.
 */
export async function resolveModelRef(idOrDir: string, options: DownloadOptions = {}): Promise<ResolvedModel> {
  return resolveRef(idOrDir, { ...options, repoType: "model" });
}

/** `--dataset`: a dataset folder, or a Hub dataset repo id (`owner/name[@revision]`). */
export async function resolveDatasetRef(idOrDir: string, options: DownloadOptions = {}): Promise<ResolvedModel> {
  return resolveRef(idOrDir, { ...options, repoType: "dataset" });
}

async function resolveRef(idOrDir: string, options: DownloadOptions): Promise<ResolvedModel> {
  const kind = options.repoType === "dataset" ? "dataset" : "model";
  const local = await stat(idOrDir).catch(() => undefined);
  if (local?.isDirectory()) return { dir: resolve(idOrDir), name: resolve(idOrDir) };
  if (local) throw new InputError(idOrDir, `is a file; expected a ${kind} folder or a Hub repo id (owner/name)`);
  const ref = parseHubRef(idOrDir);
  if (!ref) throw new InputError(idOrDir, `does not exist (no such folder, and not a Hub ${kind === "dataset" ? "dataset " : ""}repo id owner/name[@revision])`);
  if (ref.revision !== undefined && options.revision !== undefined && options.revision !== ref.revision) {
    throw new InputError(idOrDir, `names revision ${ref.revision} but --revision says ${options.revision}`, "give the revision once");
  }
  const revision = ref.revision ?? options.revision;
  let snapshot: Snapshot;
  try {
    snapshot = await downloadSnapshot(ref.repo, { ...options, ...(revision !== undefined ? { revision } : {}) });
  } catch (error) {
    // `data/bones` may be a mistyped folder as well as a repo id: say that no folder exists either.
    if (error instanceof SplintError && /repository not found|not found on the Hub|cannot reach/.test(error.message)) {
      const detail = error.message.startsWith(`${ref.repo}: `) ? error.message.slice(ref.repo.length + 2) : error.message;
      throw new InputError(idOrDir, `no such folder, and as a Hub ${kind} id: ${detail}`, error.hint);
    }
    throw error;
  }
  const name = snapshot.revision === "main" ? ref.repo : `${ref.repo}@${snapshot.revision}`;
  return { dir: snapshot.path, name, snapshot };
}

/** As resolveModelRef, returning only the local folder. */
export async function resolveModel(idOrDir: string, options: DownloadOptions = {}): Promise<string> {
  return (await resolveModelRef(idOrDir, options)).dir;
}

/** A model and, optionally, an adapter, each a folder or a Hub id; the revision applies to the model. */
export async function resolveModelAndAdapter(
  model: string,
  adapter: string | undefined,
  options: DownloadOptions = {},
): Promise<{ model: ResolvedModel; adapter: ResolvedModel | undefined }> {
  const { revision, ...rest } = options;
  const base = await resolveModelRef(model, options);
  return { model: base, adapter: adapter === undefined ? undefined : await resolveModelRef(adapter, rest) };
}
