import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, stat, truncate, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { fileSystemError, NetworkError, SplintError } from "../util/errors.ts";
import { networkReason, timedFetch, type NetTimeouts } from "../util/net.ts";
import { hubResponseError, networkError } from "./errors.ts";

/** What the finished file must be; checks with an undefined value are skipped. */
export interface ExpectedBlob {
  readonly size?: number;
  /** LFS files: the sha256 the Hub lists (also their etag). */
  readonly sha256?: string;
  /** Regular git files: the git blob id, sha1("blob <size>\0" + content). */
  readonly gitSha1?: string;
}

export interface BlobDownload {
  /** Where the bytes come from (the resolve URL, or where it redirected). */
  readonly url: string;
  /** The final blob path; bytes collect in `<dest>.incomplete` first. */
  readonly dest: string;
  /** Repo/file, for messages. */
  readonly what: string;
  readonly expected: ExpectedBlob;
  readonly headers: Readonly<Record<string, string>>;
  readonly hasToken: boolean;
  /** Called with each chunk's length as it is written (resumed bytes are reported once, up front). */
  readonly onBytes?: (n: number) => void;
  /** How many times a dropped connection is resumed before giving up. */
  readonly retries?: number;
  readonly retryDelayMs?: number;
  /** Connect and idle timeouts (default: netTimeouts()). */
  readonly timeouts?: NetTimeouts;
}

const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/** Raised inside an attempt for failures a retry may cure (dropped connection, 5xx). */
class TransientError extends Error {}

/**
 * Downloads one blob resumably: bytes are appended to `<dest>.incomplete`, a later attempt (in this
 * process after a dropped connection, or in a later run) continues from its length with a Range
 * request, and the file is renamed into place only after its size and checksum match.
 */
export async function downloadBlob(job: BlobDownload): Promise<void> {
  const partial = `${job.dest}.incomplete`;
  await mkdir(dirname(job.dest), { recursive: true });
  const hasher = new ResumableHash(job.expected);
  const retries = job.retries ?? 5;
  let reported = 0;
  for (let attempt = 0; ; attempt++) {
    let have = await sizeOf(partial);
    if (job.expected.size !== undefined && have > job.expected.size) {
      await truncate(partial, 0);
      have = 0;
    }
    if (have > reported) {
      job.onBytes?.(have - reported);
      reported = have;
    }
    if (job.expected.size !== undefined && have === job.expected.size && have > 0) break;
    try {
      reported = await fetchInto(job, partial, have, hasher, reported);
      break;
    } catch (error) {
      if (!(error instanceof TransientError) || attempt >= retries) {
        if (error instanceof TransientError) {
          throw new NetworkError(`${job.what}: download failed after ${attempt + 1} attempts (${error.message})`, "run the same command again: the download resumes where it stopped");
        }
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, (job.retryDelayMs ?? 1000) * 2 ** attempt));
    }
  }
  await verify(job, partial, hasher);
  await rename(partial, job.dest);
}

async function fetchInto(job: BlobDownload, partial: string, have: number, hasher: ResumableHash, reported: number): Promise<number> {
  let response: Response;
  try {
    response = await timedFetch(job.url, {
      headers: { ...job.headers, "accept-encoding": "identity", ...(have > 0 ? { range: `bytes=${have}-` } : {}) },
      redirect: "follow",
      timeouts: job.timeouts,
    });
  } catch (error) {
    throw new TransientError(networkError(job.url, error).message);
  }
  if (response.status === 416 && have > 0) {
    // The range starts at or past the end: either complete already or the remote file changed.
    await response.body?.cancel();
    if (job.expected.size === have) return reported;
    await truncate(partial, 0);
    throw new TransientError("the server refused to resume (416); restarting from the beginning");
  }
  if (RETRYABLE_STATUS.has(response.status)) {
    await response.body?.cancel();
    throw new TransientError(`HTTP ${response.status}`);
  }
  if (!response.ok) throw await hubResponseError(response, job.what, job.hasToken);
  let position = have;
  if (have > 0 && response.status !== 206) {
    // The server ignored the Range header and sends everything again.
    position = 0;
    job.onBytes?.(-reported);
    reported = 0;
  }
  const handle = await open(partial, position === 0 ? "w" : "r+");
  try {
    await hasher.alignTo(partial, position);
    if (!response.body) throw new TransientError("empty response body");
    try {
      for await (const chunk of response.body) {
        const bytes = chunk as Uint8Array;
        let done = 0;
        while (done < bytes.byteLength) {
          let bytesWritten: number;
          try {
            ({ bytesWritten } = await handle.write(bytes, done, bytes.byteLength - done, position + done));
          } catch (error) {
            // Our own write failing (disk full) is no dropped connection: retrying would not help.
            throw fileSystemError(error, partial) ?? error;
          }
          done += bytesWritten;
        }
        hasher.update(bytes);
        position += bytes.byteLength;
        job.onBytes?.(bytes.byteLength);
        reported += bytes.byteLength;
      }
    } catch (error) {
      if (error instanceof SplintError) throw error;
      throw new TransientError(`connection dropped at byte ${position}: ${networkReason(error)}`);
    }
    if (job.expected.size !== undefined && position < job.expected.size) {
      throw new TransientError(`connection closed at byte ${position} of ${job.expected.size}`);
    }
  } finally {
    await handle.close();
  }
  return reported;
}

async function verify(job: BlobDownload, partial: string, hasher: ResumableHash): Promise<void> {
  const size = await sizeOf(partial);
  const fail = async (problem: string): Promise<never> => {
    await unlink(partial).catch(() => undefined);
    throw new SplintError(`${job.what}: ${problem}; the download was deleted`, "run the command again; if it keeps failing the mirror (HF_ENDPOINT) serves bad data");
  };
  if (job.expected.size !== undefined && size !== job.expected.size) await fail(`size ${size} differs from the expected ${job.expected.size} bytes`);
  await hasher.alignTo(partial, size);
  const digests = hasher.digests();
  if (job.expected.sha256 && digests.sha256 !== job.expected.sha256) {
    await fail(`sha256 mismatch (expected ${job.expected.sha256}, got ${digests.sha256})`);
  }
  if (job.expected.gitSha1 && digests.gitSha1 !== undefined && digests.gitSha1 !== job.expected.gitSha1) {
    await fail(`git blob id mismatch (expected ${job.expected.gitSha1}, got ${digests.gitSha1})`);
  }
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/**
 * The checksums of the bytes written so far, carried across attempts so a 28 GB file is hashed in
 * the same pass that writes it; only when it resumes a file this process did not write does it
 * hash the existing prefix from disk.
 */
class ResumableHash {
  private sha256: Hash | undefined;
  private sha1: Hash | undefined;
  private hashed = 0;

  constructor(private readonly expected: ExpectedBlob) {
    this.reset();
  }

  private reset(): void {
    this.hashed = 0;
    this.sha256 = this.expected.sha256 ? createHash("sha256") : undefined;
    this.sha1 = undefined;
    if (this.expected.gitSha1 && this.expected.size !== undefined) {
      this.sha1 = createHash("sha1").update(`blob ${this.expected.size}\0`);
    }
  }

  update(bytes: Uint8Array): void {
    this.sha256?.update(bytes);
    this.sha1?.update(bytes);
    this.hashed += bytes.byteLength;
  }

  /** Makes the hash state cover exactly the first `length` bytes of `path`. */
  async alignTo(path: string, length: number): Promise<void> {
    if (this.hashed === length) return;
    this.reset();
    if (length === 0) return;
    for await (const chunk of createReadStream(path, { start: 0, end: length - 1 })) this.update(chunk as Buffer);
  }

  digests(): { sha256?: string; gitSha1?: string } {
    return { sha256: this.sha256?.copy().digest("hex"), gitSha1: this.sha1?.copy().digest("hex") };
  }
}
