/**
 * Every error splint means to show a user is a SplintError: the CLI prints its message (and hint)
 * without a stack trace and exits with its code. Anything else reaching the top is a bug.
 */

/**
 * Exit statuses, documented in the README ("Reliability"). The numbers follow sysexits.h where one
 * fits (EX_UNAVAILABLE 69, EX_SOFTWARE 70, EX_IOERR 74, EX_TEMPFAIL 75) and the shell's 128 + signal
 * for interruptions, so scripts can tell "retry later" from "fix the input" from "report a bug".
 */
export const EXIT = {
  ok: 0,
  /** The command ran and failed (a NaN loss, a corrupt download, a server refusal). */
  failure: 1,
  /** A flag, file or value given to the command is wrong; nothing was changed. */
  usage: 2,
  /** The network failed (unreachable, timed out, stalled) after retries; running again resumes. */
  network: 69,
  /** A bug in splint. */
  internal: 70,
  /** The file system refused a read or write (disk full, permission, read-only). */
  filesystem: 74,
  /** Another splint process holds the run folder. */
  busy: 75,
  /** Stopped by Ctrl-C (SIGINT), after saving what can be resumed. */
  sigint: 130,
  /** Stopped by SIGTERM, after saving what can be resumed. */
  sigterm: 143,
} as const;

export class SplintError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
    readonly exitCode: number = EXIT.failure,
  ) {
    super(message);
    this.name = "SplintError";
  }
}

/** Bad input from the user: names the file (or flag) and the problem. */
export class InputError extends SplintError {
  constructor(
    readonly file: string,
    problem: string,
    hint?: string,
  ) {
    super(`${file}: ${problem}`, hint, EXIT.usage);
    this.name = "InputError";
  }
}

/** The network failed in a way a later retry may cure (timeouts, stalls, resets, refusals). */
export class NetworkError extends SplintError {
  constructor(message: string, hint?: string) {
    super(message, hint, EXIT.network);
    this.name = "NetworkError";
  }
}

/** The file system refused an operation on `path` (disk full, permission denied, read-only…). */
export class FileSystemError extends SplintError {
  constructor(
    readonly path: string,
    readonly code: string,
    message: string,
    hint?: string,
  ) {
    super(message, hint, EXIT.filesystem);
    this.name = "FileSystemError";
  }
}

/** Another process holds a lock this command needs. */
export class BusyError extends SplintError {
  constructor(message: string, hint?: string) {
    super(message, hint, EXIT.busy);
    this.name = "BusyError";
  }
}

export type StopSignal = "SIGINT" | "SIGTERM";

/** The command stopped at a safe point because it was asked to (Ctrl-C or SIGTERM). */
export class InterruptedError extends SplintError {
  constructor(
    readonly signal: StopSignal,
    message: string,
    hint?: string,
  ) {
    super(message, hint, signal === "SIGINT" ? EXIT.sigint : EXIT.sigterm);
    this.name = "InterruptedError";
  }
}

/** The errno code of an error or of any error in its `cause` chain (ENOSPC, EACCES…). */
export function errnoCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = (e as Error & { cause?: unknown }).cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string" && /^E[A-Z0-9]+$/.test(code)) return code;
  }
  return undefined;
}

const DISK_FULL = new Set(["ENOSPC", "EDQUOT", "EFBIG"]);

/** What each file-system errno means for a person, and what to do about it. */
const FILE_SYSTEM_ERRORS: Readonly<Record<string, { problem: string; hint: string }>> = {
  ENOSPC: { problem: "disk full", hint: "free some space (or point the output elsewhere) and run the same command again; finished work was kept" },
  EDQUOT: { problem: "disk full (quota exceeded)", hint: "free some space within your quota and run the same command again" },
  EFBIG: { problem: "disk full (file too large for this file system)", hint: "write to a file system that allows larger files" },
  EACCES: { problem: "permission denied", hint: "check the owner and permissions of the path" },
  EPERM: { problem: "operation not permitted", hint: "check the owner and permissions of the path" },
  EROFS: { problem: "read-only file system", hint: "write to a writable location" },
  EIO: { problem: "input/output error (failing disk or network file system?)", hint: "check the disk, then run again" },
  EMFILE: { problem: "too many open files", hint: "raise the limit (ulimit -n) and run again" },
  ENFILE: { problem: "too many open files in the system", hint: "close other programs and run again" },
};

export function isDiskFull(error: unknown): boolean {
  const code = errnoCode(error);
  return code !== undefined && DISK_FULL.has(code);
}

/**
 * A file-system failure as a FileSystemError naming the path and the problem ("disk full"), or
 * undefined when `error` is not one. ENOENT/ENOTDIR/EISDIR are left alone: where they come from a
 * user's path, the code that opened it gives a better message, and elsewhere they are bugs.
 */
export function fileSystemError(error: unknown, fallbackPath?: string): FileSystemError | undefined {
  if (error instanceof FileSystemError) return error;
  const code = errnoCode(error);
  if (code === undefined) return undefined;
  const known = FILE_SYSTEM_ERRORS[code];
  if (!known) return undefined;
  const raw = pathOf(error) ?? fallbackPath;
  const path = raw === undefined ? undefined : finalPathOf(raw);
  const where = !path ? known.problem : DISK_FULL.has(code) ? `${known.problem} while writing ${path}` : `${known.problem}: ${path}`;
  return new FileSystemError(path ?? "", code, `${where} (${code})`, known.hint);
}

/**
 * The path a temporary file stands for: atomic writes go to `.<name>.<8 hex>.tmp` beside the
 * target (util/atomic.ts), and a person wants to hear about the target, not the temp name.
 */
export function finalPathOf(path: string): string {
  return path
    .split("/")
    .map((part) => /^\.(.+)\.[0-9a-f]{8}\.tmp$/.exec(part)?.[1] ?? part)
    .join("/");
}

function pathOf(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = (e as Error & { cause?: unknown }).cause, depth++) {
    const path = (e as NodeJS.ErrnoException).path;
    if (typeof path === "string") return path;
  }
  return undefined;
}
