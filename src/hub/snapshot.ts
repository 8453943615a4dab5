import { readdir } from "node:fs/promises";
import { join } from "node:path";
import type { Output, Progress } from "../util/output.ts";
import { InputError, SplintError } from "../util/errors.ts";
import { RepoCache, type RepoType } from "./cache.ts";
import { downloadBlob } from "./download.ts";
import { HubUnreachable, listRepo, type RepoFile, type RepoListing } from "./listing.ts";
import { matchesAny } from "./glob.ts";
import { hubSettings, type HubSettings } from "./settings.ts";

/** What a model needs: configs, tokenizer, chat template, HF-layout weights (not Mistral's consolidated copy). */
export const DEFAULT_INCLUDE: readonly string[] = ["*.json", "*.jinja", "*.safetensors", "tokenizer.model", "merges.txt"];
export const DEFAULT_EXCLUDE: readonly string[] = ["consolidated*.safetensors"];
/** What a dataset needs: Parquet shards (the Hub layout) or save_to_disk Arrow files, and their JSON. */
export const DATASET_INCLUDE: readonly string[] = ["*.parquet", "*.arrow", "*.json"];

export interface DownloadOptions {
  /** A model repo (default) or a dataset repo. */
  readonly repoType?: RepoType;
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
  readonly repoType: RepoType;
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

const COMMIT = /^[0-9a-f]{40}$/;
/** huggingface_hub's repo id rule: optional namespace, names of word characters, dots and dashes. */
const REPO_ID = /^(?:[\w.-]+\/)?[\w.-]{1,96}$/;

export function isHubRepoId(value: string): boolean {
  return REPO_ID.test(value) && !value.includes("--") && !value.includes("..") && !/^[.-]|[.-]$/.test(value);
}

/**
 * Python's `snapshot_download`, resumable and checksum-verified; same cache layout.
 *
 * What @huggingface/hub does here: the model info and the paginated file tree (listing.ts), the
 * cache folder's name (cache.ts), and the upload side (upload.ts). What splint keeps of its own, and
 * why: the library's `snapshotDownload` / `downloadFileToCacheDir` (2.17) neither resume a dropped
 * download (they rewrite `.incomplete` from byte 0), nor check the bytes against the sha256 / git
 * blob id, nor write `refs/<branch>`, nor work offline from the cache, and they print to the
 * console; so download.ts (Range resume, checksums) and the cache bookkeeping (cache.ts) stay.
 */
export async function downloadSnapshot(repo: string, options: DownloadOptions = {}): Promise<Snapshot> {
  if (!isHubRepoId(repo)) throw new InputError(repo, "not a Hub repo id (owner/name)");
  const settings = { ...hubSettings(), ...options.settings };
  const revision = options.revision ?? "main";
  checkRevision(revision);
  const type = options.repoType ?? "model";
  const cache = new RepoCache(settings.cacheDir, repo, type);
  const what = revision === "main" ? repo : `${repo}@${revision}`;

  if (settings.offline) {
    const cached = await cachedSnapshot(cache, revision);
    if (!cached) {
      throw new InputError(what, `not in the Hugging Face cache (${cache.root}) and HF_HUB_OFFLINE is set`, "unset HF_HUB_OFFLINE to download it");
    }
    return cached;
  }

  let listing: RepoListing;
  try {
    listing = await listRepo(repo, type, revision, what, { endpoint: settings.endpoint, token: settings.token, userAgent: USER_AGENT });
  } catch (error) {
    if (!(error instanceof HubUnreachable)) throw error;
    const cached = await cachedSnapshot(cache, revision);
    if (!cached) throw error;
    options.output?.log(`${error.message}; using the cached snapshot ${cached.commit.slice(0, 12)} of ${what}`);
    return cached;
  }
  const { commit, files: siblings } = listing;
  const auth: Record<string, string> = settings.token ? { authorization: `Bearer ${settings.token}` } : {};

  const include = options.include ?? (type === "dataset" ? DATASET_INCLUDE : DEFAULT_INCLUDE);
  const exclude = options.exclude ?? DEFAULT_EXCLUDE;
  const wanted = siblings.filter((s) => matchesAny(s.path, include) && !matchesAny(s.path, exclude));
  if (wanted.length === 0) {
    throw new InputError(what, `no files match ${include.join(" ")} (the repo has ${siblings.length} files)`);
  }
  if (revision !== commit) await cache.writeRef(revision, commit);

  const missing: RepoFile[] = [];
  for (const s of wanted) if (!(await cache.hasSnapshotFile(commit, s.path))) missing.push(s);
  const totalBytes = missing.reduce((sum, s) => sum + s.size, 0);
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
    repoType: type,
    revision,
    commit,
    path: cache.snapshotDir(commit),
    files: wanted.map((s) => s.path),
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

/**
 * Fetches one file into blobs/ (unless that blob is already there) and links it; returns bytes
 * downloaded. The blob is named as huggingface_hub names it: the sha256 for LFS files, the git blob
 * id otherwise, both known from the listing, so no HEAD request is needed. The bytes come from the
 * resolve URL at the commit; fetch follows its redirect to the storage host and, the origin being
 * another, drops the Authorization header on the way, as the Hub expects.
 */
async function fetchFile(
  repo: string,
  commit: string,
  file: RepoFile,
  cache: RepoCache,
  settings: HubSettings,
  auth: Record<string, string>,
  options: DownloadOptions,
  progress: Progress | undefined,
): Promise<number> {
  const what = `${repo}/${file.path}`;
  const prefix = cache.type === "dataset" ? `datasets/${repo}` : repo;
  const url = `${settings.endpoint}/${prefix}/resolve/${commit}/${file.path.split("/").map(encodeURIComponent).join("/")}`;
  const blob = file.sha256 ?? file.oid;
  if (!blob || !/^[0-9a-f]{40,64}$/.test(blob)) {
    throw new SplintError(`${what}: the Hub listed no usable blob id (${JSON.stringify(blob)}), so the file cannot be cached`, "check HF_ENDPOINT");
  }
  let downloaded = 0;
  if (await cache.hasBlob(blob)) {
    progress?.increment(file.size);
  } else {
    await downloadBlob({
      url,
      dest: cache.blobPath(blob),
      what,
      expected: { size: file.size, sha256: file.sha256, gitSha1: file.sha256 ? undefined : file.oid },
      headers: { ...auth, "user-agent": USER_AGENT },
      hasToken: settings.token !== undefined,
      onBytes: (n) => {
        downloaded += n;
        progress?.increment(n);
      },
      retries: options.retries,
      retryDelayMs: options.retryDelayMs,
    });
  }
  await cache.linkSnapshotFile(commit, file.path, blob);
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
  return { repo: cache.repo, repoType: cache.type, revision, commit, path, files, downloadedBytes: 0, fromCacheOnly: true };
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
