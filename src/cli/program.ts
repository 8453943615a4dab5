import { Command } from "commander";
import { createRequire } from "node:module";

const OVERVIEW_HELP = `
Every command has its own --help with examples. Models and adapters are local folders or Hub ids
(owner/name[@revision]); --json prints a command's result as one JSON document on stdout.

Examples:
  splint demo
  splint train --model mistralai/Ministral-3-3B-Instruct-2512-BF16 --dataset data/bones --out runs/bones
  splint train --help`;

/** The program with the commands `args` (argv after the script) needs registered on it. */
export async function createProgram(args: readonly string[]): Promise<Command> {
  const program = new Command("splint")
    .description(
      "Fine-tune vision-language models (Ministral 3) with LoRA and measure what the fine-tuning changed.",
    )
    .version(packageVersion())
    .showHelpAfterError("(add --help for usage)")
    .addHelpText("after", OVERVIEW_HELP)
    .exitOverride();
  for (const register of await commandsFor(args)) register(program);
  return program;
}

type Register = (p: Command) => void;

/**
 * Every command, loaded only when asked for: a command module pulls in the model, image and
 * plotting code (sharp, koffi, vega), which would make `splint --version` take over a second.
 */
export const COMMANDS: readonly (readonly [string, () => Promise<Register>])[] = [
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
  ["init", async () => (await import("./commands/init.ts")).registerInit],
  ["export", async () => (await import("./commands/export.ts")).registerExport],
  ["serve", async () => (await import("./commands/serve.ts")).registerServe],
  ["dashboard", async () => (await import("./commands/serve.ts")).registerDashboard],
];

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
export function packageVersion(): string {
  const pkg = createRequire(import.meta.url)("../../package.json") as { version?: unknown };
  return typeof pkg.version === "string" ? pkg.version : "0.0.0";
}

