import type { Command } from "commander";
import { resolveModel } from "../../hub/resolve.ts";
import { writeSafetensors } from "../../io/safetensors.ts";
import { loadImageBatch } from "../../models/mistral3/chat-inputs.ts";
import { createOutput } from "../output.ts";
import { MODEL_FLAG, MODEL_HELP, REVISION_FLAG, REVISION_HELP, revisionOption } from "../model-flags.ts";

/**
 * `splint preprocess`: the image processor alone, writing `pixel_values` (f32 [N,3,H,W], zero-padded
 * bottom/right) and `image_sizes` (i64 [N,2], resized height and width) as the HF processor returns
 * them, for comparison with Python.
 */
export function registerPreprocess(program: Command): void {
  program
    .command("preprocess")
    .description("Run the image processor and write pixel_values and image_sizes to safetensors")
    .requiredOption(MODEL_FLAG, MODEL_HELP + " (processor_config.json / preprocessor_config.json are read)")
    .option(REVISION_FLAG, REVISION_HELP)
    .requiredOption("--image <file...>", "image file(s)")
    .requiredOption("--out <file>", "safetensors file to write")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
Examples:
  splint preprocess --model mistralai/Ministral-3-3B-Instruct-2512-BF16 --image xray.png --out pixels.safetensors
  splint preprocess --model runs/demo/model --image a.png b.jpg --out batch.safetensors --json`,
    )
    .action(async (flags: { model: string; revision?: string; image: string[]; out: string; json?: boolean }) => {
      const output = createOutput(Boolean(flags.json));
      const modelDir = await resolveModel(flags.model, { output, include: ["*.json"], ...revisionOption(flags.revision) });
      const batch = await loadImageBatch(modelDir, flags.image);
      const sizes = BigInt64Array.from(batch.imageSizes, (v) => BigInt(v));
      await writeSafetensors(
        flags.out,
        [
          { name: "pixel_values", dtype: "F32", shape: batch.shape, data: batch.pixelValues },
          { name: "image_sizes", dtype: "I64", shape: [batch.shape[0], 2], data: sizes },
        ],
        { format: "pt" },
      );
      const images = flags.image.map((file, i) => ({ file, height: batch.imageSizes[2 * i]!, width: batch.imageSizes[2 * i + 1]! }));
      output.result({ out: flags.out, pixelValuesShape: batch.shape, images }, () =>
        [`wrote ${flags.out}: pixel_values [${batch.shape.join(",")}]`, ...images.map((im) => `  ${im.file}: ${im.height}×${im.width}`)].join("\n"),
      );
    });
}
