import { readdir } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { pathToFileURL } from "node:url";
import { createRepo, HubApiError, uploadFiles } from "@huggingface/hub";
import { InputError, NetworkError, SplintError } from "../util/errors.ts";
import { fetchWithTimeouts, isTransientNetworkError, netTimeouts, networkReason, sleep, type NetTimeouts } from "../util/net.ts";
import { networkError } from "./errors.ts";
import { isHubRepoId } from "./snapshot.ts";
import { hubSettings } from "./settings.ts";

export interface PushOptions {
  /** Default: HF_TOKEN (or the token file). A write token is needed. */
  readonly token?: string;
  /** Default: HF_ENDPOINT or https://huggingface.co. */
  readonly endpoint?: string;
  /** Visibility when the repo is created; an existing repo keeps its own. */
  readonly private?: boolean;
  readonly commitMessage?: string;
  /**
   * Timeouts per request. An upload's answer comes only after its body is sent, so the default
   * allows ten times the download connect timeout for it (the idle limit is the same).
   */
  readonly timeouts?: NetTimeouts;
  /** Tries per request on timeouts and dropped connections (default 3). */
  readonly attempts?: number;
  readonly retryDelayMs?: number;
}

export interface PushResult {
  readonly repo: string;
  readonly url: string;
  readonly commit: string | undefined;
  readonly files: readonly string[];
}

/**
 * Uploads every file of an adapter folder to a model repo in one commit, creating the repo when it
 * does not exist. Goes through @huggingface/hub, which speaks the Hub's preupload / LFS / commit
 * protocol (and Xet storage where the Hub asks for it).
 */
export async function pushAdapterToHub(repo: string, folder: string, options: PushOptions = {}): Promise<PushResult> {
  if (!isHubRepoId(repo) || !repo.includes("/")) throw new InputError(repo, "not a Hub repo id of the form owner/name");
  const env = hubSettings();
  const token = options.token ?? env.token;
  if (!token) throw new InputError("HF_TOKEN", "not set; pushing to the Hub needs a token with write access", "create one at https://huggingface.co/settings/tokens and export HF_TOKEN=hf_…");
  const endpoint = (options.endpoint ?? env.endpoint).replace(/\/+$/, "");
  const files = await listUploadable(folder);
  if (files.length === 0) throw new InputError(folder, "has no files to upload");

  const repoDesignation = { type: "model" as const, name: repo };
  const base = netTimeouts();
  const fetch = fetchWithTimeouts(options.timeouts ?? { connectMs: base.connectMs * 10, idleMs: base.idleMs });
  const attempts = options.attempts ?? 3;
  // Both calls are safe to repeat: creating an existing repo answers 409, and a commit of the same
  // files again changes nothing.
  const withRetries = async <T>(body: () => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await body();
      } catch (error) {
        if (!isTransientNetworkError(error)) throw error;
        if (attempt >= attempts) {
          throw new NetworkError(`${repo}: upload to ${endpoint} failed after ${attempts} attempts (${networkReason(error)})`, "check the network connection and run the push again; the run folder is unchanged");
        }
        await sleep((options.retryDelayMs ?? 1000) * 2 ** (attempt - 1));
      }
    }
  };
  try {
    await withRetries(() => createRepo({ repo: repoDesignation, accessToken: token, hubUrl: endpoint, fetch, ...(options.private !== undefined ? { private: options.private } : {}) }));
  } catch (error) {
    if (!(error instanceof HubApiError && error.statusCode === 409)) throw pushError(error, repo, endpoint);
  }
  try {
    const output = await withRetries(() =>
      uploadFiles({
        repo: repoDesignation,
        accessToken: token,
        hubUrl: endpoint,
        fetch,
        commitTitle: options.commitMessage ?? "Upload LoRA adapter trained with splint",
        files: files.map((path) => ({ path, content: pathToFileURL(join(folder, ...path.split("/"))) })),
      }),
    );
    return { repo, url: `${endpoint}/${repo}`, commit: output?.commit.oid, files };
  } catch (error) {
    throw pushError(error, repo, endpoint);
  }
}

function pushError(error: unknown, repo: string, endpoint: string): SplintError {
  if (error instanceof SplintError) return error;
  if (error instanceof HubApiError) {
    if (error.statusCode === 401) return new InputError("HF_TOKEN", `the Hub rejected the token (401): ${error.message}`, "check HF_TOKEN");
    if (error.statusCode === 403) {
      return new InputError(repo, `no write access (403): ${error.message}`, "use a token with write permission for this namespace");
    }
    if (error.statusCode >= 500 || error.statusCode === 429) return new NetworkError(`${repo}: upload failed (${error.statusCode}): ${error.message}`, "the Hub is having trouble; run the push again later");
    return new SplintError(`${repo}: upload failed (${error.statusCode}): ${error.message}`);
  }
  if (isTransientNetworkError(error)) return networkError(endpoint, error);
  return new SplintError(`${repo}: upload failed: ${(error as Error).message}`);
}

/** Files of the folder, relative with forward slashes; hidden files and temp files stay home. */
async function listUploadable(folder: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(folder, { recursive: true, withFileTypes: true });
  } catch (error) {
    throw new InputError(folder, `cannot read the adapter folder (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(folder, join(e.parentPath, e.name)).split(sep).join("/"))
    .filter((p) => !p.split("/").some((part) => part.startsWith(".")) && !p.endsWith(".tmp"))
    .sort();
}
