import type { Command } from "commander";
import { initTinyModel, PRESETS } from "../../models/mistral3/init.ts";
import { InputError } from "../../util/errors.ts";
import { createOutput } from "../output.ts";

const HELP = `
Writes a Mistral3ForConditionalGeneration checkpoint with random weights in the Hugging Face layout
(config.json, model.safetensors, generation_config.json, processor_config.json, tokenizer files,
chat_template.jinja): what \`splint demo\` fine-tunes. It knows nothing until trained.

Example:
  splint model init models/tiny --preset tiny --seed 0`;

/** `splint model init OUT --preset tiny`: a random-weight checkpoint for demos and tests. */
export function registerModelInit(model: Command): void {
  model
    .command("init")
    .description("Create a tiny random-weight Ministral 3-architecture checkpoint (for the demo and tests)")
    .argument("<out>", "output folder (new or empty)")
    .option("--force", "replace OUT when it is an existing model folder (holds config.json)")
    .option("--preset <name>", `size preset: ${Object.keys(PRESETS).join(", ")}`, "tiny")
    .option("--seed <n>", "weight seed", "0")
    .option("--json", "print the result as JSON")
    .addHelpText("after", HELP)
    .action(async (out: string, flags: { preset: string; seed: string; force?: boolean; json?: boolean }) => {
      const output = createOutput(Boolean(flags.json));
      const seed = Number(flags.seed);
      if (flags.seed.trim() === "" || !Number.isInteger(seed)) throw new InputError("--seed", `${JSON.stringify(flags.seed)} is not an integer`);
      const result = await initTinyModel(out, { preset: flags.preset, seed, replace: flags.force ? "model-folder" : undefined });
      output.result(result, () => `Wrote ${out}: preset ${result.preset}, ${result.parameters.toLocaleString("en")} parameters, seed ${result.seed}`);
    });
}
