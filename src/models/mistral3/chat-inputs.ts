import type { ChatTemplate } from "../../text/chat-template.ts";
import { loadImageProcessorConfig, preprocessFiles } from "../../vision/image-processor.ts";
import { tokenizeChat, type ChatTokens, type ImageGrid } from "../../text/image-tokens.ts";
import type { ChatMessage } from "../../text/prompt.ts";
import type { Tokenizer } from "../../text/tokenizer.ts";
import { SplintError } from "../../util/errors.ts";
import type { Mistral3Config } from "./config.ts";
import type { ImageBatch } from "./model.ts";
import { IGNORE_INDEX } from "./model.ts";

/**
 * From a conversation and its processed images to the model's token ids, exactly as the tutorial
 * does it with transformers: render the chat template, tokenize without adding special tokens, and
 * expand each [IMG] into its image's rows of [IMG] + [IMG_BREAK] (last [IMG_END]).
 */

/** Image files through the model folder's processor (processor_config.json / preprocessor_config.json). */
export async function loadImageBatch(modelDir: string, files: readonly string[]): Promise<ImageBatch> {
  const batch = await preprocessFiles(files, loadImageProcessorConfig(modelDir));
  return { pixelValues: batch.pixelValues, shape: batch.shape, imageSizes: Int32Array.from(batch.imageSizes.flat()) };
}

/** Token grid of each image: its resized size over patch_size × spatial_merge_size. */
export function imageGrids(config: Mistral3Config, images: ImageBatch | undefined): ImageGrid[] {
  if (!images) return [];
  const unit = config.vision_config.patch_size * config.spatial_merge_size;
  const grids: ImageGrid[] = [];
  for (let i = 0; i < images.shape[0]; i++) {
    const h = images.imageSizes[2 * i]!;
    const w = images.imageSizes[2 * i + 1]!;
    if (h % unit !== 0 || w % unit !== 0) {
      throw new SplintError(`image ${i} was resized to ${h}×${w}, not a multiple of patch_size × spatial_merge_size = ${unit}`, "check patch_size in the processor config against the model's vision_config");
    }
    grids.push({ rows: h / unit, cols: w / unit });
  }
  return grids;
}

export interface RenderedChat {
  text: string;
  tokens: ChatTokens;
}

export function renderChat(
  tokenizer: Tokenizer,
  template: ChatTemplate,
  messages: readonly ChatMessage[],
  grids: readonly ImageGrid[],
  addGenerationPrompt: boolean,
): RenderedChat {
  const text = template.render({ messages, addGenerationPrompt, bosToken: tokenizer.bosToken, eosToken: tokenizer.eosToken });
  return { text, tokens: tokenizeChat(tokenizer, text, grids) };
}

export type LossOn = "completion" | "all";

/**
 * Training labels for a conversation whose last turn is the assistant's answer: the ids, with -100
 * on every image token ([IMG], [IMG_BREAK], [IMG_END]) and, for completion-only loss, on the prompt
 * (the tokens the same template renders with add_generation_prompt).
 */
export function trainingLabels(full: ChatTokens, prompt: ChatTokens | null, lossOn: LossOn): Int32Array {
  const labels = Int32Array.from(full.ids);
  full.kinds.forEach((kind, i) => {
    if (kind === "image" || kind === "image_break" || kind === "image_end") labels[i] = IGNORE_INDEX;
  });
  if (lossOn === "completion") {
    if (!prompt) throw new Error("trainingLabels: completion-only loss needs the prompt tokens");
    const n = prompt.ids.length;
    const isPrefix = n <= full.ids.length && prompt.ids.every((id, i) => full.ids[i] === id);
    if (!isPrefix) {
      throw new SplintError(
        "the chat template renders the prompt differently with and without the answer, so the answer tokens cannot be found",
        "use a template whose generation prompt is a prefix of the full conversation (e.g. --template short), or --loss-on all",
      );
    }
    labels.fill(IGNORE_INDEX, 0, n);
  }
  return labels;
}
