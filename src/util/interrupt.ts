/**
 * SIGINT / SIGTERM handling. A command that can stop at a safe point (training saves a checkpoint,
 * a recipe finishes writing its current file) asks for `stopSignal()` and checks it; the first
 * signal then only aborts that signal and says so, a second one stops at once. Commands that never
 * ask are stopped at once by the first signal (they write atomically, so nothing half-written is
 * left). Either way the terminal cursor, which progress bars hide, is shown again and the exit
 * status is 130 (SIGINT) or 143 (SIGTERM).
 */
import { EXIT, type StopSignal } from "./errors.ts";

const SHOW_CURSOR = "\u001b[?25h";

/** Shows the terminal cursor again (progress bars hide it while they draw). */
export function restoreTerminal(): void {
  if (process.stderr.isTTY) process.stderr.write(SHOW_CURSOR);
}

interface StopState {
  controller: AbortController;
  /** Users of the signal; the signal stays armed while any is active. */
  holders: number;
}

let state: StopState | null = null;
let installed = false;
let log: (message: string) => void = (message) => process.stderr.write(`${message}\n`);

export function exitCodeForSignal(signal: StopSignal): number {
  return signal === "SIGINT" ? EXIT.sigint : EXIT.sigterm;
}

/**
 * Installs the process-wide handlers (once, from the CLI's entry point). Library callers that do
 * not install them keep Node's default behaviour and pass their own AbortSignal.
 */
export function installStopHandlers(options: { log?: (message: string) => void } = {}): void {
  if (options.log) log = options.log;
  if (installed) return;
  installed = true;
  process.on("exit", restoreTerminal);
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => onSignal(signal));
}

function onSignal(signal: StopSignal): void {
  const current = state;
  if (current && current.holders > 0 && !current.controller.signal.aborted) {
    current.controller.abort(signal);
    restoreTerminal();
    log(`\n${signal === "SIGINT" ? "Ctrl-C" : "SIGTERM"}: stopping at the next safe point (saving what can be resumed); ${signal === "SIGINT" ? "press Ctrl-C again" : "send it again"} to stop at once`);
    return;
  }
  restoreTerminal();
  log(`\n${signal === "SIGINT" ? "interrupted" : "terminated"}${current?.controller.signal.aborted ? " before the safe point" : ""}`);
  process.exit(exitCodeForSignal(signal));
}

/**
 * An AbortSignal that a SIGINT/SIGTERM aborts (its reason is the signal's name), for a command that
 * stops at a safe point; call `release()` when the command no longer checks it.
 */
export function stopSignal(): { signal: AbortSignal; release: () => void } {
  state ??= { controller: new AbortController(), holders: 0 };
  const held = state;
  held.holders++;
  let released = false;
  return {
    signal: held.controller.signal,
    release() {
      if (released) return;
      released = true;
      held.holders--;
    },
  };
}

/** The signal that aborted `signal`, or SIGINT when it was aborted some other way (a library caller's abort()). */
export function stopReason(signal: AbortSignal): StopSignal {
  return signal.reason === "SIGTERM" ? "SIGTERM" : "SIGINT";
}
