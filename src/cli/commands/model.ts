import type { Command } from "commander";
import { DEFAULT_EXCLUDE, DEFAULT_INCLUDE, downloadSnapshot } from "../../hub/snapshot.ts";
import { createOutput } from "../output.ts";
// model subcommand imports (one line each)
import { registerModelInit } from "./model-init.ts";

/** `splint model …`: get and make checkpoints. */
export function registerModel(program: Command): void {
  const model = program.command("model").description("Download or create model checkpoints");
  const subcommands: ((model: Command) => void)[] = [
    // one entry per line
    registerModelDownload,
    registerModelInit,
  ];
  for (const register of subcommands) register(model);
  model.addHelpText(
    "after",
    `
Examples:
  splint model download mistralai/Ministral-3-3B-Instruct-2512-BF16
  splint model init models/tiny --preset tiny --seed 0`,
  );
}

const DOWNLOAD_HELP = `
Files land in the Hugging Face cache that Python's huggingface_hub uses (HF_HUB_CACHE, else
$HF_HOME/hub, else ~/.cache/huggingface/hub), so both tools share one copy. Interrupted downloads
resume; every file is checked against the Hub's sha256 (LFS) or git blob id.

Environment: HF_TOKEN (private or gated repos), HF_ENDPOINT (a mirror), HF_HUB_OFFLINE=1 (cache only).
Default --include: ${DEFAULT_INCLUDE.join(" ")} (never ${DEFAULT_EXCLUDE.join(" ")}).

Examples:
  splint model download mistralai/Ministral-3-3B-Instruct-2512-BF16
  splint model download mistralai/Ministral-3-3B-Instruct-2512-BF16 --include config.json "*.jinja"`;

function registerModelDownload(model: Command): void {
  model
    .command("download")
    .description("Download a model from the Hugging Face Hub into the shared cache and print its folder")
    .argument("<repo>", "Hub repo id, e.g. mistralai/Ministral-3-3B-Instruct-2512-BF16")
    .option("--revision <rev>", "branch, tag or commit", "main")
    .option("--include <glob...>", "only files matching these patterns (fnmatch, as huggingface_hub)")
    .option("--json", "print the result as JSON")
    .addHelpText("after", DOWNLOAD_HELP)
    .action(async (repo: string, flags: { revision: string; include?: string[]; json?: boolean }) => {
      const output = createOutput(Boolean(flags.json));
      const snapshot = await downloadSnapshot(repo, {
        revision: flags.revision,
        output,
        ...(flags.include ? { include: flags.include } : {}),
      });
      output.result(snapshot, () => snapshot.path);
    });
}
