import { Command, CommanderError } from "commander";
import { EXIT, fileSystemError, InputError, SplintError } from "../util/errors.ts";
import { installStopHandlers } from "../util/interrupt.ts";
// command imports (one line each)
import { registerTrain } from "./commands/train.ts";
import { registerMerge } from "./commands/merge.ts";
import { registerExport } from "./commands/export.ts";
import { registerModel } from "./commands/model.ts";
import { registerForward } from "./commands/forward.ts";
import { registerGenerate } from "./commands/generate.ts";
import { registerRender } from "./commands/render.ts";
import { registerPreprocess } from "./commands/preprocess.ts";
import { registerData } from "./commands/data.ts";
import { registerEval } from "./commands/eval.ts";
import { registerCompare } from "./commands/compare.ts";
import { registerReport } from "./commands/report.ts";
import { registerPredict } from "./commands/predict.ts";
import { registerCalibrate } from "./commands/calibrate.ts";
import { registerRun } from "./commands/run.ts";
import { registerDemo } from "./commands/demo.ts";
import { registerServe } from "./commands/serve.ts";
import { registerInit } from "./commands/init.ts";

// A reader that closes early (`splint … | head`) is not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

// Ctrl-C and SIGTERM: commands that can stop at a safe point ask for a stop signal; the rest stop
// at once. Either way the cursor comes back and the status is 130 / 143.
installStopHandlers();

/**
 * The splint command line. Each command lives in ./commands/<name>.ts and exports a function that
 * adds itself to the program; this file only assembles them and turns errors into messages.
 */
const program = new Command("splint")
  .description(
    "Fine-tune vision-language models (Ministral 3) with LoRA and measure what the fine-tuning changed.",
  )
  .version("0.1.0")
  .showHelpAfterError("(add --help for usage)")
  .exitOverride();

const commands: ((p: Command) => void)[] = [
  // one entry per line
  registerTrain,
  registerMerge,
  registerExport,
  registerModel,
  registerForward,
  registerGenerate,
  registerRender,
  registerPreprocess,
  registerData,
  registerEval,
  registerCompare,
  registerReport,
  registerPredict,
  registerCalibrate,
  registerRun,
  registerDemo,
  registerServe,
  registerInit,
];
for (const register of commands) register(program);

// Read from argv rather than from the parsed options so that errors in parsing itself are answered
// in JSON too. (A literal "--json" given as another option's value, or after "--", also counts:
// no command takes such a value.)
const jsonRequested = process.argv.slice(2).includes("--json");

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.exitCode = exitCodeFor(error);
}

/** Prints the error for a person on stderr and, with --json, as `{"error": …}` on stdout. */
function exitCodeFor(error: unknown): number {
  if (error instanceof CommanderError) {
    // Commander has already written its message to stderr; --help and --version are not errors.
    if (error.exitCode === 0) return 0;
    reportJson({ kind: "usage", message: error.message.replace(/^error: /, ""), exitCode: EXIT.usage });
    return EXIT.usage;
  }
  // A file-system refusal from anywhere (disk full, permission, read-only) is the machine's state,
  // not a bug: said as such, with the path.
  const refused = error instanceof SplintError ? error : fileSystemError(error);
  if (refused) {
    process.stderr.write(`error: ${refused.message}\n`);
    if (refused.hint) process.stderr.write(`hint: ${refused.hint}\n`);
    reportJson({
      kind: refused instanceof InputError ? "input" : "error",
      message: refused.message,
      ...(refused instanceof InputError ? { file: refused.file } : {}),
      ...(refused.hint ? { hint: refused.hint } : {}),
      exitCode: refused.exitCode,
    });
    return refused.exitCode;
  }
  if (process.env.SPLINT_DEBUG) throw error;
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`internal error: ${message}\n(set SPLINT_DEBUG=1 for the stack trace; this is a bug, please report it with the command that caused it)\n`);
  reportJson({ kind: "internal", message, exitCode: EXIT.internal });
  return EXIT.internal;
}

interface ErrorReport {
  kind: "usage" | "input" | "error" | "internal";
  message: string;
  file?: string;
  hint?: string;
  exitCode: number;
}

function reportJson(report: ErrorReport): void {
  if (jsonRequested) process.stdout.write(`${JSON.stringify({ error: report }, null, 2)}\n`);
}
