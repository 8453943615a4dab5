import { Command, CommanderError } from "commander";
import { InputError, SplintError } from "../util/errors.ts";
import { createRequire } from "node:module";

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
  .version(packageVersion())
  .showHelpAfterError("(add --help for usage)")
  .exitOverride();

type Register = (p: Command) => void;

/**
 * Every command, loaded only when asked for: a command module pulls in the model, image and
 * plotting code (sharp, koffi, vega), which would make `splint --version` take over a second.
 */
const COMMANDS: readonly (readonly [string, () => Promise<Register>])[] = [
  // one entry per line
  ["train", async () => (await import("./commands/train.ts")).registerTrain],
  ["merge", async () => (await import("./commands/merge.ts")).registerMerge],
  ["model", async () => (await import("./commands/model.ts")).registerModel],
  ["forward", async () => (await import("./commands/forward.ts")).registerForward],
  ["generate", async () => (await import("./commands/generate.ts")).registerGenerate],
  ["render", async () => (await import("./commands/render.ts")).registerRender],
  ["preprocess", async () => (await import("./commands/preprocess.ts")).registerPreprocess],
  ["data", async () => (await import("./commands/data.ts")).registerData],
  ["eval", async () => (await import("./commands/eval.ts")).registerEval],
  ["compare", async () => (await import("./commands/compare.ts")).registerCompare],
  ["report", async () => (await import("./commands/report.ts")).registerReport],
  ["predict", async () => (await import("./commands/predict.ts")).registerPredict],
  ["calibrate", async () => (await import("./commands/calibrate.ts")).registerCalibrate],
  ["run", async () => (await import("./commands/run.ts")).registerRun],
  ["demo", async () => (await import("./commands/demo.ts")).registerDemo],
];

for (const register of await commandsFor(process.argv.slice(2))) register(program);

/**
 * The commands this invocation needs: the one named, none for a bare --version, all otherwise
 * (the overview --help, `help`, and the "did you mean" answer to an unknown name list them all).
 */
async function commandsFor(args: readonly string[]): Promise<Register[]> {
  const name = args.find((a) => !a.startsWith("-"));
  const named = COMMANDS.find(([n]) => n === name);
  if (named) return [await named[1]()];
  if (name === undefined && args.length > 0 && args.every((a) => a === "--version" || a === "-V")) return [];
  return Promise.all(COMMANDS.map(([, load]) => load()));
}

/** The version in package.json, which sits two folders up from both src/cli/ and dist/cli/. */
function packageVersion(): string {
  const pkg = createRequire(import.meta.url)("../../package.json") as { version?: unknown };
  return typeof pkg.version === "string" ? pkg.version : "0.0.0";
}

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
