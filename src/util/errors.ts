/**
 * Every error splint means to show a user is a SplintError: the CLI prints its message (and hint)
 * without a stack trace and exits with its code. Anything else reaching the top is a bug.
 */
export class SplintError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
    readonly exitCode = 1,
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
    super(`${file}: ${problem}`, hint, 2);
    this.name = "InputError";
  }
}
