/**
 * An exclusive lock on a folder (a training run, a recipe run), so two processes never interleave
 * their writes there. The lock is a file created with O_EXCL holding the owner's pid, host and start
 * time; it is removed on release and on any normal exit. After a crash (SIGKILL, power loss) the
 * file stays behind: a lock whose pid no longer runs on this host is stale and is taken over.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmdirSync, rmSync, statSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { BusyError } from "./errors.ts";

export const LOCK_FILE = ".splint.lock";

export interface LockOwner {
  readonly pid: number;
  readonly host: string;
  /** ISO time the lock was taken. */
  readonly since: string;
  /** The command that holds it, for the message another process shows. */
  readonly command: string;
}

export interface FolderLock {
  readonly file: string;
  /** True when a stale lock of a crashed process was taken over. */
  readonly recoveredStale: LockOwner | null;
  release(): void;
}

/** Locks held by this process, released on exit even when the command throws. */
const held = new Set<string>();
let exitHookInstalled = false;

function releaseAllOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const file of held) rmSync(file, { force: true });
  });
}

/**
 * Takes the lock on `dir` (created when missing). Throws BusyError naming the holder when a live
 * process has it; a lock from this same process is refused too (a library caller running two
 * trainings into one folder at once).
 */
export async function lockFolder(dir: string, command: string): Promise<FolderLock> {
  // A folder made only to hold the lock is removed again if the command leaves it empty (bad
  // input found after locking must not leave a trace).
  const existed = existsSync(dir);
  // Synchronous up to taking the lock: a caller's lock is then held from the moment it calls, so
  // of two calls made one after the other the first always wins (an awaited mkdir let the second
  // overtake it when the thread pool finished its mkdir first).
  mkdirSync(dir, { recursive: true });
  const file = join(dir, LOCK_FILE);
  const owner: LockOwner = { pid: process.pid, host: hostname(), since: new Date().toISOString(), command };
  let recoveredStale: LockOwner | null = null;
  for (let tries = 0; tries < 3; tries++) {
    try {
      const fd = openSync(file, "wx", 0o644);
      try {
        writeSync(fd, `${JSON.stringify(owner)}\n`);
      } finally {
        closeSync(fd);
      }
      held.add(file);
      releaseAllOnExit();
      return {
        file,
        recoveredStale,
        release() {
          if (!held.delete(file)) return;
          rmSync(file, { force: true });
          if (!existed) removeIfEmpty(dir);
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const current = readOwner(file);
    if (current && isAlive(current, file)) {
      throw new BusyError(
        `${dir} is in use by another splint process (pid ${current.pid} on ${current.host}, ${current.command}, since ${current.since})`,
        `wait for it to finish or stop it; if no such process runs, delete ${file}`,
      );
    }
    if (!current && Date.now() - mtimeOf(file) < UNREADABLE_GRACE_MS) {
      // Empty or half-written: most likely another process between creating and filling it.
      throw new BusyError(`${dir} is being locked by another splint process`, "run again in a moment");
    }
    // Stale (or unreadable for a while: a crash between create and write). Move it aside rather than delete it,
    // so that of two processes recovering at once only one wins the rename and the other retries.
    const aside = `${file}.stale-${process.pid}`;
    try {
      renameSync(file, aside);
      rmSync(aside, { force: true });
      recoveredStale = current ?? { pid: 0, host: "?", since: "?", command: "unknown (unreadable lock file)" };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }
  throw new BusyError(`${dir}: could not take the lock ${file} (other processes keep taking it)`, "run again once the other processes are done");
}

/** How long an unreadable lock file is taken for one being written rather than a crash's leftover. */
const UNREADABLE_GRACE_MS = 10_000;

function mtimeOf(file: string): number {
  try {
    return statSync(file).mtimeMs;
  } catch {
    return 0;
  }
}

function removeIfEmpty(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // not empty (the command wrote something), or gone: either way, leave it
  }
}

function readOwner(file: string): LockOwner | null {
  try {
    const parsed = JSON.parse(readFileSync(file, "utf8")) as Partial<LockOwner>;
    if (typeof parsed.pid !== "number" || typeof parsed.host !== "string") return null;
    return { pid: parsed.pid, host: parsed.host, since: String(parsed.since ?? "?"), command: String(parsed.command ?? "?") };
  } catch {
    return null;
  }
}

/**
 * Whether the owner still runs. A lock from another host cannot be checked and counts as alive
 * (a shared network folder); the message says how to remove it by hand.
 */
function isAlive(owner: LockOwner, file: string): boolean {
  if (owner.host !== hostname()) return true;
  // Our own pid: alive only if we really hold it (else a crashed process's pid was reused).
  if (owner.pid === process.pid) return held.has(file);
  try {
    process.kill(owner.pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
