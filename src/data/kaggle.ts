/**
 * A small Kaggle API client: credentials as the official tools find them, and a resumable,
 * verified download of a dataset archive.
 *
 * Endpoint (from Kaggle's kagglesdk): GET {base}/api/v1/datasets/download/{owner}/{slug} answers
 * with a 302 to signed storage. fetch follows it and drops Authorization on a cross-origin
 * redirect, so the key never reaches the storage host. Integrity follows kagglehub: the size from
 * Content-Length / Content-Range and the MD5 from `x-goog-hash` when the storage sends it.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileSystemError, InputError, isDiskFull as isDiskFullError, NetworkError, SplintError } from "../util/errors.ts";
import { isTransientNetworkError, isUnreachable, networkReason, sleep, timedFetch, type NetTimeouts } from "../util/net.ts";
import type { Progress } from "../util/output.ts";
import { readSecretFile } from "../util/secret-file.ts";

export const DEFAULT_KAGGLE_API = "https://www.kaggle.com";

export interface KaggleDatasetRef {
  readonly owner: string;
  readonly slug: string;
}

/** Parses "OWNER/DATASET" (as on the dataset's Kaggle URL). */
export function parseKaggleRef(text: string): KaggleDatasetRef {
  const match = /^([A-Za-z0-9][\w.-]*)\/([A-Za-z0-9][\w.-]*)$/.exec(text.trim());
  if (!match) throw new InputError("--kaggle", `"${text}" is not OWNER/DATASET`, "e.g. --kaggle pkdarabi/bone-break-classification-image-dataset");
  return { owner: match[1]!, slug: match[2]! };
}

export interface KaggleCredentials {
  /** The Authorization header value. Never print it. */
  readonly authorization: string;
  /** Where the credentials came from, safe to show ("KAGGLE_USERNAME/KAGGLE_KEY", a file path…). */
  readonly source: string;
}

/**
 * Finds credentials in kagglehub's order: KAGGLE_API_TOKEN (the token, or a file holding it),
 * an access_token file, KAGGLE_USERNAME + KAGGLE_KEY, then kaggle.json in KAGGLE_CONFIG_DIR or
 * ~/.kaggle. A kaggle.json that other users can read is refused, as the official client warns.
 */
export async function resolveKaggleCredentials(env: NodeJS.ProcessEnv = process.env, home = os.homedir()): Promise<KaggleCredentials> {
  const configDir = env.KAGGLE_CONFIG_DIR || path.join(home, ".kaggle");
  const tokenVar = env.KAGGLE_API_TOKEN?.trim();
  if (tokenVar) {
    // A value that names an existing file is that file's content, as in kagglehub.
    const fromFile = readSecretFile(tokenVar, { what: "Kaggle API token" });
    if (fromFile !== null) {
      if (!fromFile) throw new InputError(tokenVar, "KAGGLE_API_TOKEN points to an empty file");
      return { authorization: `Bearer ${fromFile}`, source: `KAGGLE_API_TOKEN file ${tokenVar}` };
    }
    return { authorization: `Bearer ${tokenVar}`, source: "KAGGLE_API_TOKEN" };
  }
  const accessTokenFile = path.join(configDir, "access_token");
  const accessToken = readSecretFile(accessTokenFile, { what: "Kaggle access token" });
  if (accessToken) return { authorization: `Bearer ${accessToken}`, source: accessTokenFile };
  if (env.KAGGLE_USERNAME && env.KAGGLE_KEY) {
    return { authorization: basic(env.KAGGLE_USERNAME, env.KAGGLE_KEY), source: "KAGGLE_USERNAME/KAGGLE_KEY" };
  }
  const jsonFile = path.join(configDir, "kaggle.json");
  let info;
  try {
    info = await stat(jsonFile);
  } catch {
    throw new SplintError(
      "no Kaggle credentials found",
      `set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json (from kaggle.com → Settings → API) in ${configDir} with chmod 600`,
    );
  }
  if ((info.mode & 0o077) !== 0) {
    throw new InputError(
      jsonFile,
      `is readable by other users (mode ${(info.mode & 0o777).toString(8)}); refusing to use the key in it`,
      `run: chmod 600 ${jsonFile}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(jsonFile, "utf8"));
  } catch {
    throw new InputError(jsonFile, 'is not valid JSON (expected {"username": …, "key": …})');
  }
  const record = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : {};
  if (typeof record.username !== "string" || typeof record.key !== "string" || !record.username || !record.key) {
    throw new InputError(jsonFile, 'lacks "username" and "key"');
  }
  return { authorization: basic(record.username, record.key), source: jsonFile };
}

function basic(user: string, key: string): string {
  return `Basic ${Buffer.from(`${user}:${key}`).toString("base64")}`;
}

export interface DownloadOptions {
  /** API base URL, e.g. https://www.kaggle.com (tests use a local server). */
  readonly apiBase: string;
  readonly credentials: KaggleCredentials;
  /** Final path of the archive; the download goes to `<destination>.part` until verified. */
  readonly destination: string;
  /** Creates the progress bar (total in bytes). */
  readonly progress?: (total: number) => Progress;
  readonly log?: (message: string) => void;
  /** Attempts after a connection drops, stalls or times out (each resumes where the last stopped). */
  readonly attempts?: number;
  /** Connect and idle timeouts (default: netTimeouts(), from SPLINT_*_TIMEOUT_S). */
  readonly timeouts?: NetTimeouts;
  /** Milliseconds before the first retry, doubled for each further one. */
  readonly retryDelayMs?: number;
  readonly signal?: AbortSignal;
}

export interface DownloadResult {
  readonly file: string;
  readonly bytes: number;
  /** True when the storage sent an MD5 (x-goog-hash) and it matched. */
  readonly md5Verified: boolean;
  /** True when some bytes came from an earlier, interrupted attempt. */
  readonly resumed: boolean;
}

/** Downloads the dataset archive with resume and verification; returns the verified zip. */
export async function downloadKaggleDataset(ref: KaggleDatasetRef, options: DownloadOptions): Promise<DownloadResult> {
  const url = `${options.apiBase.replace(/\/+$/, "")}/api/v1/datasets/download/${encodeURIComponent(ref.owner)}/${encodeURIComponent(ref.slug)}`;
  const part = `${options.destination}.part`;
  await mkdir(path.dirname(options.destination), { recursive: true });
  const attempts = options.attempts ?? 5;
  let resumed = false;
  // A 416 means the .part is stale or already complete: start over once; a server that answers
  // 416 to a request without a Range too would otherwise be asked forever.
  let restartedAfter416 = false;
  const retryOrThrow = async (attempt: number, error: unknown, what: string): Promise<void> => {
    if (attempt >= attempts) {
      throw new NetworkError(
        `cannot download ${ref.owner}/${ref.slug} from ${new URL(url).host}: ${what} (${networkReason(error)}), ${attempts} attempts`,
        "check the network connection (or --kaggle-api / KAGGLE_API_BASE) and run again; the partial download resumes",
      );
    }
    options.log?.(`${what} (${networkReason(error)}); retrying (attempt ${attempt + 1} of ${attempts})`);
    await sleep((options.retryDelayMs ?? 1000) * 2 ** (attempt - 1));
  };
  for (let attempt = 1; ; attempt++) {
    const have = await sizeOf(part);
    let response: Response;
    try {
      response = await request(url, options.credentials, have, ref, options);
    } catch (error) {
      if (error instanceof SplintError || isUnreachable(error) || !isTransientNetworkError(error)) throw error instanceof SplintError ? error : networkError(url, error);
      await retryOrThrow(attempt, error, "no answer");
      continue;
    }
    if (response.status === 416) {
      await response.body?.cancel();
      if (have === 0 || restartedAfter416) {
        throw new SplintError(
          `Kaggle download of ${ref.owner}/${ref.slug}: the server answered 416 (Range Not Satisfiable)${have === 0 ? " to a request for the whole file" : " again after starting over"}`,
          "try again later; if it persists, download the archive in a browser and use --dir",
        );
      }
      options.log?.(`the server refused to resume at byte ${have} (416); starting the download over`);
      restartedAfter416 = true;
      await rm(part, { force: true });
      continue;
    }
    const expected = expectedSize(response, have);
    const append = response.status === 206;
    if (append) resumed = true;
    if (!append && have > 0) options.log?.("server does not resume this download; starting from the beginning");
    const start = append ? have : 0;
    try {
      await writeBody(response, part, start, expected, options.progress);
    } catch (error) {
      if (isDiskFullError(error) || isFileSystemError(error)) throw fileSystemError(error, part) ?? new SplintError(`cannot write ${part} (${errorCode(error)})`);
      if (options.signal?.aborted) throw error;
      if (!isConnectionDrop(error)) throw networkError(url, error);
      await retryOrThrow(attempt, error, `connection lost at ${await sizeOf(part)} bytes`);
      continue;
    }
    const got = await sizeOf(part);
    if (expected !== null && got !== expected) {
      if (got > expected) {
        // More bytes than announced: the file is not what the server said it is.
        await rm(part, { force: true });
        throw new SplintError(`download of ${ref.owner}/${ref.slug} sent ${got} bytes, more than the ${expected} announced; the partial file was removed`, "run the command again");
      }
      if (attempt >= attempts) throw new NetworkError(`download of ${ref.owner}/${ref.slug} ended at ${got} of ${expected} bytes after ${attempts} attempts`, "run the command again to resume");
      continue;
    }
    const md5 = md5FromGoogHash(response.headers.get("x-goog-hash"));
    if (md5 !== null) {
      const actual = await md5OfFile(part);
      if (actual !== md5) {
        await rm(part, { force: true });
        throw new SplintError(`download of ${ref.owner}/${ref.slug} is corrupt (MD5 ${actual}, expected ${md5}); the partial file was removed`, "run the command again");
      }
    }
    await rename(part, options.destination);
    return { file: options.destination, bytes: got, md5Verified: md5 !== null, resumed };
  }
}

async function sizeOf(file: string): Promise<number> {
  try {
    const info = await stat(file);
    return info.isFile() ? info.size : 0;
  } catch {
    return 0;
  }
}

async function request(url: string, credentials: KaggleCredentials, have: number, ref: KaggleDatasetRef, options: DownloadOptions): Promise<Response> {
  const headers: Record<string, string> = { authorization: credentials.authorization, "user-agent": "splint" };
  if (have > 0) headers.range = `bytes=${have}-`;
  const response = await timedFetch(url, { headers, redirect: "follow", timeouts: options.timeouts, signal: options.signal });
  if (response.ok || response.status === 416) return response;
  await response.body?.cancel();
  const name = `${ref.owner}/${ref.slug}`;
  switch (response.status) {
    case 401:
      throw new SplintError(`Kaggle rejected the credentials from ${credentials.source} (401 Unauthorized)`, "check the username and key, or create a new API token at kaggle.com → Settings → API");
    case 403:
      throw new SplintError(`Kaggle refused access to ${name} (403 Forbidden)`, "open the dataset page on kaggle.com while logged in and accept its rules, then try again");
    case 404:
      throw new SplintError(`Kaggle dataset ${name} not found (404)`, "check OWNER/DATASET against the dataset URL on kaggle.com");
    default:
      if (response.status >= 500 || response.status === 429) {
        throw new NetworkError(`Kaggle download of ${name} failed: HTTP ${response.status} ${response.statusText}`, "the server is having trouble; try again later");
      }
      throw new SplintError(`Kaggle download of ${name} failed: HTTP ${response.status} ${response.statusText}`);
  }
}

/** Total size of the archive from Content-Range (206) or Content-Length (200), or null when unknown. */
function expectedSize(response: Response, have: number): number | null {
  if (response.status === 206) {
    const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers.get("content-range") ?? "");
    if (!range || Number(range[1]) !== have) {
      throw new SplintError(`the server answered the resume request with an unexpected range (${response.headers.get("content-range")})`, "delete the .part file and try again");
    }
    return range[3] === "*" ? null : Number(range[3]);
  }
  const length = response.headers.get("content-length");
  return length === null ? null : Number(length);
}

async function writeBody(response: Response, part: string, start: number, total: number | null, makeProgress?: (total: number) => Progress): Promise<void> {
  if (!response.body) throw new SplintError("the server sent no body");
  const progress = total !== null ? makeProgress?.(total) : undefined;
  let done = start;
  progress?.update(done);
  // Each chunk is on disk before the next is read, so when the connection drops every byte that
  // arrived is kept and the retry's Range starts right after it (a stream pipeline would discard
  // what it still buffered).
  const handle = await open(part, start > 0 ? "a" : "w");
  try {
    for await (const chunk of response.body) {
      const bytes = chunk as Uint8Array;
      let written = 0;
      while (written < bytes.byteLength) written += (await handle.write(bytes, written, bytes.byteLength - written)).bytesWritten;
      done += bytes.byteLength;
      progress?.update(done);
    }
  } finally {
    await handle.close();
    progress?.stop();
  }
}

function errorCode(error: unknown): string | undefined {
  for (let e: unknown = error; e instanceof Error; e = (e as Error & { cause?: unknown }).cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code && !code.startsWith("ERR_")) return code;
  }
  return undefined;
}

/** A body cut short or stalled: undici reports "terminated" / UND_ERR_SOCKET / ECONNRESET; ours, TimeoutError. */
function isConnectionDrop(error: unknown): boolean {
  return isTransientNetworkError(error);
}

/** Errors from our own file writes carry the failing syscall (open, write…); network ones do not. */
function isFileSystemError(error: unknown): boolean {
  return typeof (error as NodeJS.ErrnoException).syscall === "string" && typeof (error as NodeJS.ErrnoException).path === "string";
}

function networkError(url: string, error: unknown): SplintError {
  if (error instanceof SplintError) return error;
  const code = networkReason(error);
  const host = new URL(url).host;
  return new NetworkError(`cannot download from ${host}: network error (${code})`, "check the network connection (or --kaggle-api / KAGGLE_API_BASE) and run again; a partial download resumes");
}

/** The MD5 from `x-goog-hash: crc32c=…,md5=<base64>`, as hex, or null. */
export function md5FromGoogHash(header: string | null): string | null {
  if (!header) return null;
  for (const part of header.split(",")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === "md5") return Buffer.from(rest.join("="), "base64").toString("hex");
  }
  return null;
}

async function md5OfFile(file: string): Promise<string> {
  const hash = createHash("md5");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
