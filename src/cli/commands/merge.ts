import type { Command } from "commander";
import { mergeAdapter } from "../../lora/merge.ts";
import { InputError } from "../../util/errors.ts";
import { createOutput } from "../output.ts";
import { ADAPTER_FLAG, ADAPTER_HELP, MODEL_FLAG, MODEL_HELP, REVISION_FLAG, REVISION_HELP, revisionOption } from "../model-flags.ts";

/** `splint merge`: bakes a LoRA adapter into its base model's weights. */
export function registerMerge(program: Command): void {
  program
    .command("merge")
    .description("Merge a LoRA adapter into its base model and write a plain checkpoint (sharded safetensors)")
    .requiredOption(MODEL_FLAG, MODEL_HELP)
    .option(REVISION_FLAG, REVISION_HELP)
    .requiredOption(ADAPTER_FLAG, ADAPTER_HELP)
    .requiredOption("--out <dir>", "new folder for the merged checkpoint")
    .option("--dtype <dtype>", "weights written: auto (as stored; fp8 becomes bf16), bf16 or f32", "auto")
    .option("--max-shard-size <GB>", "largest shard in GB", "5")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
The merged folder is a plain Hugging Face checkpoint (config, tokenizer and processor files copied):
load it with transformers or any tool that knows no adapters.

Examples:
  splint merge --model ./ministral --adapter runs/bones/adapter --out models/ministral-bones
  splint merge --model mistralai/Ministral-3-3B-Instruct-2512-BF16 --adapter me/ministral-bones-lora --out merged --dtype bf16`,
    )
    .action(async (opts: { model: string; revision?: string; adapter: string; out: string; dtype: string; maxShardSize: string; json?: boolean }) => {
      const output = createOutput(Boolean(opts.json));
      if (!["auto", "bf16", "f32"].includes(opts.dtype)) throw new InputError("--dtype", `must be auto, bf16 or f32, got ${JSON.stringify(opts.dtype)}`);
      const gb = Number(opts.maxShardSize);
      if (!(gb > 0)) throw new InputError("--max-shard-size", `must be a positive number of GB, got ${JSON.stringify(opts.maxShardSize)}`);
      let bar: ReturnType<typeof output.progress> | undefined;
      const result = await mergeAdapter({
        modelDir: opts.model,
        ...revisionOption(opts.revision),
        output,
        adapterDir: opts.adapter,
        outDir: opts.out,
        dtype: opts.dtype as "auto" | "bf16" | "f32",
        maxShardBytes: gb * 1e9,
        onProgress(done, total) {
          bar ??= output.progress("merging", total, "tensors");
          bar.update(done);
        },
      });
      bar?.stop();
      output.result(result, () =>
        [
          `merged ${result.mergedModules} LoRA modules into ${result.outDir} (${result.shards.length} shard${result.shards.length === 1 ? "" : "s"})`,
          ...(result.dequantizedFp8 > 0 ? [`${result.dequantizedFp8} FP8 weights written as BF16; quantization_config dropped`] : []),
          `copied: ${result.copiedFiles.join(", ") || "nothing"}`,
        ].join("\n"),
      );
    });
}
