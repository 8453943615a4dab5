import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { writeStarter } from "../../schema/starter.ts";
import { createOutput } from "../output.ts";

const SCHEMA_DIR = fileURLToPath(new URL("../../../schema/", import.meta.url));

const HELP = `
Writes a starter file with every setting, its default and a comment on what it does:
  a recipe (default)   for \`splint run FILE\`: data, model, stats, audit, eval and train sections;
                       as written it runs offline (synthetic X-rays, tiny random model)
  --config             for \`splint train --config FILE\`: the training settings alone
The first line points YAML editors (yaml-language-server) at splint's JSON Schema, so keys are
completed and checked as you type. TRL SFTConfig / PEFT LoraConfig key names are accepted too.

Examples:
  splint init                       # writes recipe.yaml
  splint init runs/bone.yaml
  splint init --config train.yaml
  splint run recipe.yaml`;

/** `splint init [FILE]`: a commented starter recipe or training config. */
export function registerInit(program: Command): void {
  program
    .command("init")
    .description("Write a commented starter recipe (or, with --config, a training config)")
    .argument("[file]", "file to write (default recipe.yaml, or train.yaml with --config)")
    .option("--config", "write a training config for `splint train --config` instead of a recipe")
    .option("--force", "replace the file if it exists")
    .option("--json", "print the result as JSON")
    .addHelpText("after", HELP)
    .action(async (file: string | undefined, flags: { config?: boolean; force?: boolean; json?: boolean }) => {
      const output = createOutput(Boolean(flags.json));
      const kind = flags.config ? "config" : "recipe";
      const written = await writeStarter(file ?? (kind === "config" ? "train.yaml" : "recipe.yaml"), kind, { schemaDir: SCHEMA_DIR, force: flags.force });
      output.result({ file: written, kind }, () => `wrote ${written}\nnext: ${kind === "recipe" ? `splint run ${file ?? "recipe.yaml"}` : `splint train --model M --dataset D --out RUN --config ${file ?? "train.yaml"}`}`);
    });
}
