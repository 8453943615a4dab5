import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "../helpers/cli.ts";
import type { MockHub } from "./mock-hub.ts";

/**
 * bin/splint.js run against a MockHub in this process, with the Hub cache and home under `dir`
 * (both given as getters: suites create them in before()).
 * Asynchronous (unlike helpers/cli.ts's runSplint): the mock Hub answers from this event loop.
 */
export function hubCli(hub: () => MockHub, dir: () => string) {
  function splint(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const env = { ...process.env, SPLINT_NO_PROGRESS: "1", SPLINT_BACKEND: "cpu", HF_ENDPOINT: hub().endpoint, HF_HUB_CACHE: join(dir(), "cache"), HF_HOME: join(dir(), "home"), HF_TOKEN: "", HF_HUB_OFFLINE: "" };
    return new Promise((resolve) => {
      execFile(process.execPath, [join(REPO_ROOT, "bin/splint.js"), ...args], { env, cwd: dir(), maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
        resolve({ code: error ? Number(error.code) : 0, stdout, stderr });
      });
    });
  }
  /** Runs splint and asserts it exited 0; returns its stdout. */
  async function ok(...args: string[]): Promise<string> {
    const run = await splint(...args);
    assert.equal(run.code, 0, `splint ${args.join(" ")}:\n${run.stderr}`);
    return run.stdout;
  }
  return { splint, ok };
}
