/**
 * Reading a file that holds a credential (an API token, kaggle.json). A key that other users of the
 * machine can read is a leaked key: such a file is refused with the chmod that fixes it, as the
 * official Kaggle client warns about kaggle.json.
 */
import { readFileSync, statSync } from "node:fs";
import { InputError } from "./errors.ts";

export interface SecretFileOptions {
  /**
   * Permission bits that must be clear. Default 0o077 (no access for group or others); the
   * Hugging Face token file, which `hf auth login` itself writes with the umask (often 0644), is
   * read with 0o022: refused only when others could replace the token.
   */
  readonly forbiddenMode?: number;
  /** What the file is, for the message ("Kaggle access token"). */
  readonly what: string;
}

/** The file's trimmed content, null when it does not exist (or is not a file); throws when it is too open. */
export function readSecretFile(file: string, options: SecretFileOptions): string | null {
  let mode: number;
  try {
    const info = statSync(file);
    if (!info.isFile()) return null;
    mode = info.mode;
  } catch {
    return null;
  }
  const forbidden = options.forbiddenMode ?? 0o077;
  // Windows has no Unix permission bits to check (every file reports 0o666).
  if (process.platform !== "win32" && (mode & forbidden) !== 0) {
    const how = (mode & forbidden & 0o022) !== 0 ? "writable" : "readable";
    throw new InputError(
      file,
      `${options.what} file is ${how} by other users (mode ${(mode & 0o777).toString(8)}); refusing to use it`,
      `run: chmod 600 ${file}`,
    );
  }
  try {
    return readFileSync(file, "utf8").trim();
  } catch (error) {
    throw new InputError(file, `cannot read the ${options.what} file (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}
