import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs bin/splint.js with args in cwd (progress bars off), as a user's shell would. */
export function runSplint(args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliRun {
  const run = spawnSync(process.execPath, [path.join(REPO_ROOT, "bin/splint.js"), ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    encoding: "utf8",
    env: { ...process.env, SPLINT_NO_PROGRESS: "1", ...options.env },
  });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}
