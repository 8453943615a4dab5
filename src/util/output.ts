/**
 * How library code reports to a person without knowing who listens: the CLI passes a terminal
 * implementation (`src/cli/output.ts`), library callers pass their own or use `plainOutput`.
 */
export interface Output {
  readonly json: boolean;
  /** A line for a person (stderr). */
  log(message: string): void;
  /** The command's result: pretty text to stdout normally, one JSON document with --json. */
  result(value: unknown, text: () => string): void;
  /** A progress indicator for `total` units of work. */
  progress(label: string, total: number, unit?: string): Progress;
}

export interface Progress {
  update(done: number, extra?: Record<string, string | number>): void;
  increment(by?: number): void;
  stop(): void;
}

export const silentProgress: Progress = { update() {}, increment() {}, stop() {} };

/** Log lines to stderr, results as text to stdout, no progress bars: the default for library calls. */
export const plainOutput: Output = {
  json: false,
  log(message) {
    process.stderr.write(`${message}\n`);
  },
  result(_value, text) {
    process.stdout.write(`${text()}\n`);
  },
  progress() {
    return silentProgress;
  },
};
