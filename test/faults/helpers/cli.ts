import { spawn } from "node:child_process";
import path from "node:path";
import { REPO_ROOT, type CliRun } from "../../helpers/cli.ts";

export const SPLINT_BIN = path.join(REPO_ROOT, "bin/splint.js");

/**
 * Runs bin/splint.js without blocking the test process (so in-process fault servers keep
 * answering), with progress bars off; `preload` modules are loaded with --import first.
 */
export function runSplintAsync(args: readonly string[], options: { env?: NodeJS.ProcessEnv; preload?: readonly string[]; cwd?: string } = {}): Promise<CliRun> {
  const preload = (options.preload ?? []).flatMap((p) => ["--import", p]);
  const child = spawn(process.execPath, [...preload, SPLINT_BIN, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, SPLINT_NO_PROGRESS: "1", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise((resolve) => child.on("close", (status) => resolve({ status, stdout, stderr })));
}
