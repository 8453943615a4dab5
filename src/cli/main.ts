import { Command, CommanderError } from "commander";
import { InputError, SplintError } from "../util/errors.ts";
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

// A reader that closes early (`splint … | head`) is not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

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
    if (error.exitCode !== 0) reportJson({ kind: "usage", message: error.message.replace(/^error: /, ""), exitCode: error.exitCode });
    return error.exitCode;
  }
  if (error instanceof SplintError) {
    process.stderr.write(`error: ${error.message}\n`);
    if (error.hint) process.stderr.write(`hint: ${error.hint}\n`);
    reportJson({
      kind: error instanceof InputError ? "input" : "error",
      message: error.message,
      ...(error instanceof InputError ? { file: error.file } : {}),
      ...(error.hint ? { hint: error.hint } : {}),
      exitCode: error.exitCode,
    });
    return error.exitCode;
  }
  if (process.env.SPLINT_DEBUG) throw error;
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`internal error: ${message}\n(set SPLINT_DEBUG=1 for the stack trace; this is a bug, please report it)\n`);
  reportJson({ kind: "internal", message, exitCode: 70 });
  return 70;
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
