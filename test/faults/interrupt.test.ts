// The process-wide SIGINT/SIGTERM handlers (src/util/interrupt.ts), in a child process so real
// signals are delivered: a command holding a stop signal gets one warning and a safe-point stop; a
// second signal, or one with no holder, exits at once with 130/143; the cursor is always restored.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../helpers/cli.ts";

const MODULE = join(REPO_ROOT, "src", "util", "interrupt.ts");

/** Runs a script that imports interrupt.ts with stderr posing as a terminal; `signals` are sent one by one. */
async function withSignals(body: string, signals: readonly NodeJS.Signals[]): Promise<{ code: number | null; stderr: string }> {
  const script = `
    Object.defineProperty(process.stderr, "isTTY", { value: true });
    const { installStopHandlers, stopSignal } = await import(${JSON.stringify(MODULE)});
    installStopHandlers();
    ${body}
    process.stderr.write("ready\\n");
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  while (!stderr.includes("ready")) await new Promise((r) => setTimeout(r, 10));
  for (const signal of signals) {
    child.kill(signal);
    await new Promise((r) => setTimeout(r, 150));
  }
  return { code: await exited, stderr };
}

test("with no command holding a stop signal, Ctrl-C exits 130 at once and shows the cursor", async () => {
  const { code, stderr } = await withSignals("", ["SIGINT"]);
  assert.equal(code, 130);
  assert.ok(stderr.includes("\u001b[?25h"), JSON.stringify(stderr));
  assert.match(stderr, /interrupted/);
});

test("a held stop signal: the first SIGTERM aborts it (reason SIGTERM) and warns; the command then exits 143 itself", async () => {
  const body = `
    const stop = stopSignal();
    stop.signal.addEventListener("abort", () => {
      process.stderr.write("aborted with " + stop.signal.reason + "\\n");
      setTimeout(() => process.exit(143), 50);
    });
  `;
  const { code, stderr } = await withSignals(body, ["SIGTERM"]);
  assert.equal(code, 143);
  assert.match(stderr, /SIGTERM: stopping at the next safe point/);
  assert.match(stderr, /aborted with SIGTERM/);
  assert.ok(stderr.includes("\u001b[?25h"));
});

test("a second Ctrl-C while the first waits for the safe point stops at once with 130", async () => {
  const { code, stderr } = await withSignals("const stop = stopSignal();", ["SIGINT", "SIGINT"]);
  assert.equal(code, 130);
  assert.match(stderr, /Ctrl-C: stopping at the next safe point/);
  assert.match(stderr, /interrupted before the safe point/);
});
