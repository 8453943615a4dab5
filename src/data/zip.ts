/**
 * Extracts a zip archive into a folder, refusing anything that could write outside it: entries
 * with absolute paths or `..` components, and symbolic links. One bad entry refuses the whole
 * archive (the caller extracts into a fresh temp folder and deletes it on failure).
 */
import { createWriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import yauzl from "yauzl";
import { FileSystemError, InputError, isDiskFull, SplintError } from "../util/errors.ts";

/**
 * Bounds against zip bombs (a few KB that inflate to terabytes, or millions of entries). The
 * declared sizes can be trusted because yauzl checks each entry's inflated size against them
 * (validateEntrySizes) and fails the stream on a lie.
 */
export interface ZipLimits {
  /** Most entries (files and folders). */
  readonly maxEntries: number;
  /** Most bytes once inflated, all entries together. */
  readonly maxBytes: number;
  /** Highest inflated/compressed ratio of one entry larger than 1 MiB (real images stay far below). */
  readonly maxRatio: number;
}

export const DEFAULT_ZIP_LIMITS: ZipLimits = { maxEntries: 500_000, maxBytes: 64 * 1024 ** 3, maxRatio: 1000 };

export interface ExtractResult {
  readonly files: number;
  readonly bytes: number;
}

const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;

/** Why an entry name is unsafe, or null when it stays inside the target. */
export function unsafeEntryReason(name: string, target: string): string | null {
  if (name.includes("\u0000")) return "contains a NUL character";
  if (name.startsWith("/") || name.startsWith("\\") || /^[A-Za-z]:/.test(name)) return "is an absolute path";
  if (name.split(/[\\/]/).includes("..")) return "escapes the target folder (..)";
  const resolved = path.resolve(target, name);
  if (resolved !== target && !resolved.startsWith(target + path.sep)) return "escapes the target folder";
  return null;
}

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    // strictFileNames off: Windows archivers write backslashes, which yauzl then turns into "/".
    yauzl.open(file, { lazyEntries: true, autoClose: true, validateEntrySizes: true, decodeStrings: true }, (error, zip) => {
      if (error) reject(new InputError(file, `is not a readable zip archive (${error.message})`));
      else resolve(zip);
    });
  });
}

function openEntry(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<NodeJS.ReadableStream> {
  return new Promise((resolve, reject) => {
    zip.openReadStream(entry, (error, stream) => (error ? reject(error) : resolve(stream)));
  });
}

/** Extracts every entry of `zipFile` under `targetDir` (created if missing). */
export async function extractZip(zipFile: string, targetDir: string, onEntry?: (done: number, total: number) => void, limits: ZipLimits = DEFAULT_ZIP_LIMITS): Promise<ExtractResult> {
  const target = path.resolve(targetDir);
  await mkdir(target, { recursive: true });
  const zip = await openZip(zipFile);
  const total = zip.entryCount;
  if (total > limits.maxEntries) {
    zip.close();
    throw new InputError(zipFile, `has ${total} entries, more than the ${limits.maxEntries} splint extracts (a zip bomb?); refusing the archive`);
  }
  let declared = 0;
  let files = 0;
  let bytes = 0;
  let seen = 0;
  return new Promise<ExtractResult>((resolve, reject) => {
    let settled = false;
    const fail = (error: unknown) => {
      if (settled) return;
      settled = true;
      zip.close();
      reject(wrapError(zipFile, target, error));
    };
    zip.on("error", fail);
    zip.on("end", () => {
      if (settled) return;
      settled = true;
      resolve({ files, bytes });
    });
    zip.on("entry", (entry: yauzl.Entry) => {
      void (async () => {
        const name = entry.fileName;
        const unsafe = unsafeEntryReason(name, target);
        if (unsafe) throw new InputError(zipFile, `entry "${name}" ${unsafe}; refusing the archive`);
        const mode = (entry.externalFileAttributes >>> 16) & S_IFMT;
        if (mode === S_IFLNK) throw new InputError(zipFile, `entry "${name}" is a symbolic link; refusing the archive`);
        declared += entry.uncompressedSize;
        if (declared > limits.maxBytes) {
          throw new InputError(zipFile, `inflates to more than ${formatBytes(limits.maxBytes)} (at entry "${name}"; a zip bomb?); refusing the archive`);
        }
        if (entry.uncompressedSize > 1024 ** 2 && entry.uncompressedSize > limits.maxRatio * Math.max(1, entry.compressedSize)) {
          throw new InputError(zipFile, `entry "${name}" inflates ${Math.round(entry.uncompressedSize / Math.max(1, entry.compressedSize))}:1 (${formatBytes(entry.uncompressedSize)} from ${formatBytes(entry.compressedSize)}; a zip bomb?); refusing the archive`);
        }
        const destination = path.resolve(target, name);
        if (name.endsWith("/")) {
          await mkdir(destination, { recursive: true });
        } else {
          await mkdir(path.dirname(destination), { recursive: true });
          await pipeline(await openEntry(zip, entry), createWriteStream(destination, { flags: "wx" }));
          files++;
          bytes += entry.uncompressedSize;
        }
        onEntry?.(++seen, total);
        zip.readEntry();
      })().catch(fail);
    });
    zip.readEntry();
  });
}

function formatBytes(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)} GiB` : n >= 1024 ** 2 ? `${(n / 1024 ** 2).toFixed(1)} MiB` : `${n} bytes`;
}

function wrapError(zipFile: string, target: string, error: unknown): Error {
  if (error instanceof SplintError) return error;
  const err = error as NodeJS.ErrnoException;
  if (isDiskFull(err)) {
    return new FileSystemError(target, err.code ?? "ENOSPC", `disk full while extracting ${zipFile} into ${target}`, "free some space and run the command again");
  }
  if (err.code === "EEXIST") return new InputError(zipFile, `has the same entry twice (${err.path ?? "?"}); refusing the archive`);
  // yauzl's own name checks ("invalid relative path", "absolute path") and corrupt-data errors.
  return new InputError(zipFile, `cannot be extracted safely (${err.message})`);
}
