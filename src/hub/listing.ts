import { datasetInfo, listFiles, modelInfo } from "@huggingface/hub";
import type { RepoType } from "./cache.ts";
import { NetworkError, SplintError } from "../util/errors.ts";
import { hubResponseError, networkError } from "./errors.ts";
import { timedFetch } from "../util/net.ts";

/**
 * What a repo holds at a revision, asked through @huggingface/hub (`modelInfo` / `datasetInfo` for
 * the commit the revision points at, `listFiles` for the paginated tree with sizes, git blob ids and LFS sha256s).
 * The library's own errors say only "Api error with status 404"; the fetch it is given here turns a
 * failed answer into splint's message first (reading X-Error-Code as huggingface_hub does), and a
 * request that never got an answer into a network error, so callers can tell the two apart.
 */

export interface RepoFile {
  readonly path: string;
  readonly size: number;
  /** The git blob id (for an LFS file: of its pointer). */
  readonly oid: string | undefined;
  /** LFS (and Xet-backed) files: the sha256 of the content, also its blob name in the cache. */
  readonly sha256: string | undefined;
}

export interface RepoListing {
  readonly commit: string;
  readonly files: readonly RepoFile[];
}

/** A request the Hub never answered (refused, DNS, reset); the caller may fall back to the cache. */
/** The Hub could not be reached (a network error, exit 69): the caller may fall back to the cache. */
export class HubUnreachable extends NetworkError {}

export interface ListingOptions {
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly userAgent: string;
}

const COMMIT = /^[0-9a-f]{40}$/;

export async function listRepo(repo: string, type: RepoType, revision: string, what: string, options: ListingOptions): Promise<RepoListing> {
  const common = {
    hubUrl: options.endpoint,
    fetch: answeredOrThrow(what, options),
    ...(options.token !== undefined ? { accessToken: options.token } : {}),
  };
  const info = type === "dataset" ? await datasetInfo({ ...common, name: repo, revision, additionalFields: ["sha"] }) : await modelInfo({ ...common, name: repo, revision, additionalFields: ["sha"] });
  const commit: unknown = info.sha;
  if (typeof commit !== "string" || !COMMIT.test(commit)) {
    throw new SplintError(`${what}: unexpected answer from the Hub's ${type} info API (no commit sha)`, "check HF_ENDPOINT");
  }
  const files: RepoFile[] = [];
  // Listed at the commit, not the branch, so a push between the two requests cannot mix revisions.
  for await (const entry of listFiles({ ...common, repo: { type, name: repo }, revision: commit, recursive: true })) {
    if (entry.type !== "file") continue;
    files.push({ path: safePath(what, entry.path), size: entry.lfs?.size ?? entry.size, oid: entry.oid, sha256: entry.lfs?.oid });
  }
  return { commit, files };
}

/**
 * Repo file names become paths under the cache folder: refuse any that could leave it. (The library
 * checks this in its own downloader, which splint does not use; see snapshot.ts.)
 */
function safePath(what: string, path: unknown): string {
  if (typeof path !== "string" || path === "" || path.startsWith("/") || path.includes("\\") || path.split("/").some((p) => p === ".." || p === "." || p === "")) {
    throw new SplintError(`${what}: the Hub listed an unsafe file name ${JSON.stringify(path)}`, "check HF_ENDPOINT: the Hub never lists such names");
  }
  return path;
}

function answeredOrThrow(what: string, options: ListingOptions): typeof fetch {
  return async (input, init) => {
    const headers = new Headers(init?.headers);
    headers.set("user-agent", options.userAgent);
    let response: Response;
    try {
      // With splint's connect and idle timeouts, so a stalled Hub never hangs the listing.
      response = await timedFetch(input instanceof Request ? input.url : String(input), { ...init, headers });
    } catch (error) {
      const url = input instanceof Request ? input.url : String(input);
      throw new HubUnreachable(networkError(url, error).message, networkError(url, error).hint);
    }
    if (!response.ok) throw await hubResponseError(response, what, options.token !== undefined);
    return response;
  };
}
