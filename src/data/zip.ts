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
import { InputError, SplintError } from "../util/errors.ts";

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
export async function extractZip(zipFile: string, targetDir: string, onEntry?: (done: number, total: number) => void): Promise<ExtractResult> {
  const target = path.resolve(targetDir);
  await mkdir(target, { recursive: true });
  const zip = await openZip(zipFile);
  const total = zip.entryCount;
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

function wrapError(zipFile: string, target: string, error: unknown): Error {
  if (error instanceof SplintError) return error;
  const err = error as NodeJS.ErrnoException;
  if (err.code === "ENOSPC" || err.code === "EDQUOT") {
    return new SplintError(`disk full while extracting ${zipFile} into ${target}`, "free some space and run the command again");
  }
  if (err.code === "EEXIST") return new InputError(zipFile, `has the same entry twice (${err.path ?? "?"}); refusing the archive`);
  // yauzl's own name checks ("invalid relative path", "absolute path") and corrupt-data errors.
  return new InputError(zipFile, `cannot be extracted safely (${err.message})`);
}
