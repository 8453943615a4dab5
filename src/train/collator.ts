import { IGNORE_INDEX, type ImageBatch, type Mistral3Inputs } from "../models/mistral3/model.ts";
import { renderChat, trainingLabels, type LossOn } from "../models/mistral3/chat-inputs.ts";
import type { ChatTemplate } from "../text/chat-template.ts";
import { buildConversation } from "../text/prompt.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import { preprocess, tokenGrid, type ImageProcessorConfig } from "../vision/image-processor.ts";
import { SplintError } from "../util/errors.ts";

/**
 * The tutorial's collate_fn (§10): each example's conversation (strict PROMPT + image → class name)
 * rendered with the chosen template, images through the Pixtral processor, ids with every [IMG]
 * expanded, right padding, and labels -100 on padding, on the image tokens ([IMG], [IMG_BREAK],
 * [IMG_END]) and, for completion-only loss, on the prompt.
 */

/** One training example: an encoded image and the answer the model should give. */
export interface TrainExample {
  readonly image: Uint8Array;
  /** The assistant's answer (the class name). */
  readonly answer: string;
  /** For error messages (the image's file name), if known. */
  readonly name?: string;
}

export interface CollatorSettings {
  readonly tokenizer: Tokenizer;
  readonly template: ChatTemplate;
  readonly processor: ImageProcessorConfig;
  /** The user turn's text (the tutorial's PROMPT). */
  readonly prompt: string;
  readonly lossOn: LossOn;
  readonly maxSeqLen: number;
}

/** A collated micro-batch: the model's inputs (labels included) and what the logs count. */
export interface TrainBatch {
  readonly inputs: Mistral3Inputs & { labels: Int32Array };
  /** Real (non-padding) tokens. */
  readonly tokens: number;
  /** Tokens whose label is not -100 (before the shift). */
  readonly supervised: number;
  readonly images: number;
}

/** The processor settings with `max_image_edge` capping the longest side (fewer image tokens, less memory). */
export function boundImageEdge(cfg: ImageProcessorConfig, maxImageEdge: number | null): ImageProcessorConfig {
  if (maxImageEdge === null) return cfg;
  return { ...cfg, maxHeight: Math.min(cfg.maxHeight, maxImageEdge), maxWidth: Math.min(cfg.maxWidth, maxImageEdge) };
}

export async function collate(examples: readonly TrainExample[], settings: CollatorSettings): Promise<TrainBatch> {
  if (examples.length === 0) throw new Error("collate: empty micro-batch");
  const { tokenizer, template, processor } = settings;
  const pixels = await preprocess(
    examples.map((e) => e.image),
    processor,
    examples.map((e, i) => e.name ?? `example ${i}`),
  );
  const rows = examples.map((example, i) => {
    const grid = tokenGrid(pixels.imageSizes[i]!, processor);
    const full = renderChat(tokenizer, template, buildConversation(settings.prompt, example.answer), [grid], false).tokens;
    const prompt = settings.lossOn === "completion" ? renderChat(tokenizer, template, buildConversation(settings.prompt), [grid], true).tokens : null;
    const labels = trainingLabels(full, prompt, settings.lossOn);
    if (full.ids.length > settings.maxSeqLen) {
      // Truncation as the tutorial's processor call does it (right side), unless it would cut an image.
      const lastImageToken = full.kinds.findLastIndex((k) => k === "image" || k === "image_break" || k === "image_end");
      if (lastImageToken >= settings.maxSeqLen) {
        throw new SplintError(
          `${example.name ?? `example ${i}`}: ${full.ids.length} tokens, and max_seq_len ${settings.maxSeqLen} would cut through its image tokens`,
          "raise max_seq_len or lower max_image_edge (fewer image tokens)",
        );
      }
      return { ids: full.ids.slice(0, settings.maxSeqLen), labels: labels.slice(0, settings.maxSeqLen) };
    }
    return { ids: full.ids, labels };
  });
  const T = Math.max(...rows.map((r) => r.ids.length));
  const B = rows.length;
  const inputIds = new Int32Array(B * T).fill(tokenizer.padId);
  const attentionMask = new Int32Array(B * T);
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
  let supervised = 0;
  let tokens = 0;
  rows.forEach((row, b) => {
    inputIds.set(row.ids, b * T);
    attentionMask.fill(1, b * T, b * T + row.ids.length);
    labels.set(row.labels, b * T);
    tokens += row.ids.length;
    for (const l of row.labels) if (l !== IGNORE_INDEX) supervised++;
  });
  if (supervised === 0) {
    throw new SplintError("a micro-batch has no supervised token (every label is -100)", "check the template renders the answer, or raise max_seq_len");
  }
  const images: ImageBatch = { pixelValues: pixels.pixelValues, shape: pixels.shape, imageSizes: Int32Array.from(pixels.imageSizes.flat()) };
  return { inputs: { batch: B, seqLen: T, inputIds, attentionMask, labels, images }, tokens, supervised, images: B };
}
