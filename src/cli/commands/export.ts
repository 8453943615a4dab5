import type { Command } from "commander";
import { exportGguf } from "../../export/gguf/export.ts";
import { EXPORT_QUANTS, type ExportQuant } from "../../export/gguf/tensor-map.ts";
import { InputError } from "../../util/errors.ts";
import { createOutput } from "../output.ts";

const EXAMPLES = `
Examples:
  # merge an adapter and write a Q8_0 text model + mmproj for llama.cpp / Ollama / LM Studio
  splint export --model models/Ministral-3-3B-Instruct-2512-BF16 --adapter runs/xray/adapter \\
    --format gguf --quant q8_0 --out exports/xray-q8

  # the base model alone, 4-bit (llama.cpp's Q4_K_M mix)
  splint export --model models/Ministral-3-8B-Instruct-2512-BF16 --format gguf --quant q4_k_m --out exports/8b-q4

  # then
  llama-mtmd-cli -m exports/xray-q8/*-q8_0.gguf --mmproj exports/xray-q8/mmproj-*.gguf --image x.png -p "Describe the image."
  ollama create xray -f exports/xray-q8/Modelfile
`;

/** `splint export`: a checkpoint (and adapter) as GGUF files for llama.cpp-based runtimes. */
export function registerExport(program: Command): void {
  program
    .command("export")
    .description("Export a model (with its LoRA adapter merged) to GGUF: a text model and an mmproj vision file for llama.cpp, Ollama and LM Studio")
    .requiredOption("--model <dir>", "base model folder (Hugging Face layout)")
    .option("--adapter <dir>", "PEFT LoRA adapter folder to merge first")
    .requiredOption("--out <dir>", "new folder for the GGUF files and the Ollama Modelfile")
    .option("--format <format>", "output format (gguf)", "gguf")
    .option("--quant <type>", `text model weights: ${EXPORT_QUANTS.join(", ")}`, "q8_0")
    .option("--name <name>", "model name written into the files (default: the model folder's name)")
    .option("--json", "print the result as JSON")
    .addHelpText("after", EXAMPLES)
    .action(async (opts: { model: string; adapter?: string; out: string; format: string; quant: string; name?: string; json?: boolean }) => {
      const output = createOutput(Boolean(opts.json));
      if (opts.format !== "gguf") throw new InputError("--format", `must be gguf, got ${JSON.stringify(opts.format)}`);
      if (!(EXPORT_QUANTS as readonly string[]).includes(opts.quant)) {
        throw new InputError("--quant", `must be one of ${EXPORT_QUANTS.join(", ")}, got ${JSON.stringify(opts.quant)}`);
      }
      let bar: ReturnType<typeof output.progress> | undefined;
      const result = await exportGguf({
        modelDir: opts.model,
        ...(opts.adapter !== undefined ? { adapterDir: opts.adapter } : {}),
        outDir: opts.out,
        quant: opts.quant as ExportQuant,
        ...(opts.name !== undefined ? { name: opts.name } : {}),
        onProgress(done, total, tensor) {
          bar ??= output.progress("exporting", total, "tensors");
          bar.update(done, { tensor });
        },
      });
      bar?.stop();
      const types = (t: Readonly<Record<string, number | undefined>>) => Object.entries(t).map(([k, n]) => `${n} ${k}`).join(", ");
      const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
      output.result(result, () =>
        [
          `wrote ${result.outDir} in ${result.seconds.toFixed(1)} s${result.mergedModules > 0 ? ` (${result.mergedModules} LoRA modules merged)` : ""}`,
          `  ${result.text.file}: ${mb(result.text.bytes)}, ${types(result.text.types)}`,
          `  ${result.mmproj.file}: ${mb(result.mmproj.bytes)}, ${types(result.mmproj.types)}`,
          `  ${result.modelfile} (Ollama)`,
          `run: llama-mtmd-cli -m ${result.outDir}/${result.text.file} --mmproj ${result.outDir}/${result.mmproj.file} --image IMAGE -p PROMPT`,
        ].join("\n"),
      );
    });
}
