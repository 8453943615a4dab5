import { readdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Output, Progress } from "../util/output.ts";
import { InputError, SplintError } from "../util/errors.ts";
import { timedFetch } from "../util/net.ts";
import { RepoCache } from "./cache.ts";
import { downloadBlob } from "./download.ts";
import { hubResponseError, networkError } from "./errors.ts";
import { matchesAny } from "./glob.ts";
import { hubSettings, type HubSettings } from "./settings.ts";

/** What a model needs: configs, tokenizer, chat template, HF-layout weights (not Mistral's consolidated copy). */
export const DEFAULT_INCLUDE: readonly string[] = ["*.json", "*.jinja", "*.safetensors", "tokenizer.model", "merges.txt"];
export const DEFAULT_EXCLUDE: readonly string[] = ["consolidated*.safetensors"];

export interface DownloadOptions {
  /** Branch, tag or commit; default "main". */
  readonly revision?: string;
  /** fnmatch patterns of files to fetch (default DEFAULT_INCLUDE). */
  readonly include?: readonly string[];
  /** fnmatch patterns to skip even when included (default DEFAULT_EXCLUDE). */
  readonly exclude?: readonly string[];
  /** Overrides of what the environment says (endpoint, token, offline, cache folder). */
  readonly settings?: Partial<HubSettings>;
  /** For the progress bar and notes; silent without it. */
  readonly output?: Output;
  readonly retries?: number;
  readonly retryDelayMs?: number;
}

export interface Snapshot {
  readonly repo: string;
  readonly revision: string;
  readonly commit: string;
  /** The local folder: `<cache>/models--owner--name/snapshots/<commit>`. */
  readonly path: string;
  /** Files of the snapshot that matched, relative to `path`. */
  readonly files: readonly string[];
  readonly downloadedBytes: number;
  /** True when no request was made (offline mode, or the Hub unreachable and the snapshot cached). */
  readonly fromCacheOnly: boolean;
}

interface Sibling {
  readonly rfilename: string;
  readonly size?: number;
  readonly blobId?: string;
  readonly lfs?: { readonly sha256?: string; readonly size?: number };
}

const COMMIT = /^[0-9a-f]{40}$/;
/** huggingface_hub's repo id rule: optional namespace, names of word characters, dots and dashes. */
const REPO_ID = /^(?:[\w.-]+\/)?[\w.-]{1,96}$/;

export function isHubRepoId(value: string): boolean {
  return REPO_ID.test(value) && !value.includes("--") && !value.includes("..") && !/^[.-]|[.-]$/.test(value);
}

/**
 * `--model` and friends: a local folder is used as it is; anything else must be a Hub repo id,
 * downloaded into (or found in) the shared Hugging Face cache. Returns the local folder.
 */
export async function resolveModel(idOrDir: string, options: DownloadOptions = {}): Promise<string> {
  const local = await stat(idOrDir).catch(() => undefined);
  if (local?.isDirectory()) return resolve(idOrDir);
  if (local) throw new InputError(idOrDir, "is a file; expected a model folder or a Hub repo id (owner/name)");
  const looksLikePath = /^(\.{1,2}|~)?\//.test(idOrDir) || idOrDir.includes("\\") || idOrDir.split("/").length > 2;
  if (looksLikePath || !isHubRepoId(idOrDir)) {
    throw new InputError(idOrDir, "no such folder, and not a Hub repo id (owner/name)");
  }
  return (await downloadSnapshot(idOrDir, options)).path;
}

/** Python's `snapshot_download`, resumable and checksum-verified; same cache layout. */
export async function downloadSnapshot(repo: string, options: DownloadOptions = {}): Promise<Snapshot> {
  if (!isHubRepoId(repo)) throw new InputError(repo, "not a Hub repo id (owner/name)");
  const settings = { ...hubSettings(), ...options.settings };
  const revision = options.revision ?? "main";
  checkRevision(revision);
  const cache = new RepoCache(settings.cacheDir, repo);
  const what = revision === "main" ? repo : `${repo}@${revision}`;

  if (settings.offline) {
    const cached = await cachedSnapshot(cache, revision);
    if (!cached) {
      throw new InputError(what, `not in the Hugging Face cache (${cache.root}) and HF_HUB_OFFLINE is set`, "unset HF_HUB_OFFLINE to download it");
    }
    return cached;
  }

  const auth: Record<string, string> = settings.token ? { authorization: `Bearer ${settings.token}` } : {};
  const infoUrl = `${settings.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
  let response: Response;
  try {
    response = await timedFetch(infoUrl, { headers: { ...auth, "user-agent": USER_AGENT } });
  } catch (error) {
    const cached = await cachedSnapshot(cache, revision);
    if (!cached) throw networkError(infoUrl, error);
    options.output?.log(`${networkError(infoUrl, error).message}; using the cached snapshot ${cached.commit.slice(0, 12)} of ${what}`);
    return cached;
  }
  if (!response.ok) throw await hubResponseError(response, what, settings.token !== undefined);
  let info: unknown;
  try {
    info = await response.json();
  } catch (error) {
    if (error instanceof SyntaxError) throw new SplintError(`${what}: the Hub's model info answer is not JSON`, "check HF_ENDPOINT");
    throw networkError(infoUrl, error);
  }
  const { commit, siblings } = parseRepoInfo(what, info);

  const include = options.include ?? DEFAULT_INCLUDE;
  const exclude = options.exclude ?? DEFAULT_EXCLUDE;
  const wanted = siblings.filter((s) => matchesAny(s.rfilename, include) && !matchesAny(s.rfilename, exclude));
  if (wanted.length === 0) {
    throw new InputError(what, `no files match ${include.join(" ")} (the repo has ${siblings.length} files)`);
  }
  if (revision !== commit) await cache.writeRef(revision, commit);

  const missing: Sibling[] = [];
  for (const s of wanted) if (!(await cache.hasSnapshotFile(commit, s.rfilename))) missing.push(s);
  const totalBytes = missing.reduce((sum, s) => sum + sizeOf(s), 0);
  const progress = totalBytes > 0 ? megabyteProgress(options.output, `${repo}`, totalBytes) : undefined;
  let downloadedBytes = 0;
  try {
    for (const sibling of missing) {
      downloadedBytes += await fetchFile(repo, commit, sibling, cache, settings, auth, options, progress);
    }
  } finally {
    progress?.stop();
  }
  return {
    repo,
    revision,
    commit,
    path: cache.snapshotDir(commit),
    files: wanted.map((s) => s.rfilename),
    downloadedBytes,
    fromCacheOnly: false,
  };
}

const USER_AGENT = "splint/0.1.0";

/**
 * A revision becomes a path under the cache (refs/<revision>), so it must be a git ref name (or a
 * commit): no `..`, no empty, `.`-led or absolute parts, no backslashes or control characters.
 * git check-ref-format's rules, which every branch and tag on the Hub already obeys.
 */
export function checkRevision(revision: string): void {
  const bad = (why: string) => new InputError("--revision", `${JSON.stringify(revision)} is not a branch, tag or commit name (${why})`);
  if (revision === "" || revision.length > 255) throw bad("empty or too long");
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\:?*[~^ ]/.test(revision)) throw bad("contains a character git does not allow in ref names");
  if (revision.includes("..") || revision.includes("@{")) throw bad("contains .. or @{");
  if (revision.startsWith("/") || revision.endsWith("/") || revision.endsWith(".lock") || revision.endsWith(".")) throw bad("starts or ends badly");
  if (revision.split("/").some((part) => part === "" || part.startsWith("."))) throw bad("has an empty part or one starting with a dot");
}

function sizeOf(s: Sibling): number {
  return s.lfs?.size ?? s.size ?? 0;
}

function parseRepoInfo(what: string, json: unknown): { commit: string; siblings: Sibling[] } {
  const info = json as { sha?: unknown; siblings?: unknown };
  if (typeof info?.sha !== "string" || !COMMIT.test(info.sha) || !Array.isArray(info.siblings)) {
    throw new SplintError(`${what}: unexpected answer from the Hub's model info API (no commit sha or file list)`, "check HF_ENDPOINT");
  }
  const siblings: Sibling[] = [];
  for (const s of info.siblings as Sibling[]) {
    const name = s?.rfilename;
    if (typeof name !== "string" || name === "" || name.startsWith("/") || name.split("/").some((p) => p === ".." || p === "." || p === "")) {
      throw new SplintError(`${what}: the Hub listed an unsafe file name ${JSON.stringify(name)}`);
    }
    siblings.push(s);
  }
  return { commit: info.sha, siblings };
}

/** The HEAD answer for one file: where to get its bytes and under which blob name to keep them. */
interface FileMetadata {
  readonly etag: string;
  readonly size?: number;
  readonly location: string;
}

/**
 * HEAD on the resolve URL without following redirects to other hosts, as huggingface_hub does: the
 * first response carries `X-Linked-Etag` / `X-Linked-Size` for LFS files, and its `Location` is
 * the storage URL to download from. Relative redirects (a renamed repo) are followed.
 */
async function fileMetadata(url: string, what: string, auth: Record<string, string>, hasToken: boolean): Promise<FileMetadata> {
  let current = url;
  for (let hops = 0; hops < 10; hops++) {
    let response: Response;
    try {
      response = await timedFetch(current, { method: "HEAD", redirect: "manual", headers: { ...auth, "accept-encoding": "identity", "user-agent": USER_AGENT } });
    } catch (error) {
      throw networkError(current, error);
    }
    const location = response.headers.get("location");
    if (response.status >= 300 && response.status < 400 && location) {
      const target = new URL(location, current);
      if (/^\//.test(location) && !location.startsWith("//")) {
        current = target.href;
        continue;
      }
      return metadataFrom(response, what, target.href);
    }
    if (!response.ok) throw await hubResponseError(response, what, hasToken);
    return metadataFrom(response, what, current);
  }
  throw new SplintError(`${what}: too many redirects`);
}

function metadataFrom(response: Response, what: string, location: string): FileMetadata {
  const raw = response.headers.get("x-linked-etag") ?? response.headers.get("etag");
  const etag = raw?.replace(/^W\//, "").replace(/"/g, "");
  if (!etag || !/^[\w.-]+$/.test(etag) || etag.startsWith(".")) {
    throw new SplintError(`${what}: the Hub sent no usable ETag (${JSON.stringify(raw)}), so the file cannot be cached`, "check HF_ENDPOINT");
  }
  const sizeHeader = response.headers.get("x-linked-size") ?? response.headers.get("content-length");
  const size = sizeHeader !== null && /^\d+$/.test(sizeHeader) ? Number(sizeHeader) : undefined;
  return { etag, size, location };
}

/** Fetches one file into blobs/ (unless that blob is already there) and links it; returns bytes downloaded. */
async function fetchFile(
  repo: string,
  commit: string,
  sibling: Sibling,
  cache: RepoCache,
  settings: HubSettings,
  auth: Record<string, string>,
  options: DownloadOptions,
  progress: Progress | undefined,
): Promise<number> {
  const file = sibling.rfilename;
  const what = `${repo}/${file}`;
  const url = `${settings.endpoint}/${repo}/resolve/${commit}/${file.split("/").map(encodeURIComponent).join("/")}`;
  const meta = await fileMetadata(url, what, auth, settings.token !== undefined);
  let downloaded = 0;
  if (await cache.hasBlob(meta.etag)) {
    progress?.increment(sizeOf(sibling));
  } else {
    const sameOrigin = new URL(meta.location).origin === new URL(settings.endpoint).origin;
    const size = meta.size ?? sibling.lfs?.size ?? sibling.size;
    const sha256 = sibling.lfs?.sha256 ?? (/^[0-9a-f]{64}$/.test(meta.etag) ? meta.etag : undefined);
    await downloadBlob({
      url: meta.location,
      dest: cache.blobPath(meta.etag),
      what,
      expected: { size, sha256, gitSha1: sibling.lfs ? undefined : sibling.blobId },
      headers: { ...(sameOrigin ? auth : {}), "user-agent": USER_AGENT },
      hasToken: settings.token !== undefined,
      onBytes: (n) => {
        downloaded += n;
        progress?.increment(n);
      },
      retries: options.retries,
      retryDelayMs: options.retryDelayMs,
    });
  }
  await cache.linkSnapshotFile(commit, file, meta.etag);
  return downloaded;
}

/** A bar in MB: byte counts of a 28 GB checkpoint are unreadable. */
function megabyteProgress(output: Output | undefined, label: string, totalBytes: number): Progress | undefined {
  if (!output) return undefined;
  const bar = output.progress(label, Math.max(1, Math.round(totalBytes / 1e6)), "MB");
  let bytes = 0;
  return {
    update(done, extra) {
      bytes = done;
      bar.update(Math.round(bytes / 1e6), extra);
    },
    increment(by = 1) {
      bytes += by;
      bar.update(Math.round(bytes / 1e6));
    },
    stop() {
      bar.stop();
    },
  };
}

/** The snapshot a revision resolved to last time, when its folder exists. */
async function cachedSnapshot(cache: RepoCache, revision: string): Promise<Snapshot | undefined> {
  const commit = COMMIT.test(revision) ? revision : await cache.readRef(revision);
  if (!commit) return undefined;
  const path = cache.snapshotDir(commit);
  const files = await listFiles(path).catch(() => undefined);
  if (!files || files.length === 0) return undefined;
  return { repo: cache.repo, revision, commit, path, files, downloadedBytes: 0, fromCacheOnly: true };
}

async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await listFiles(join(dir, entry.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}
