import { renderChat } from "../models/mistral3/chat-inputs.ts";
import type { ChatTemplate } from "../text/chat-template.ts";
import type { ImageGrid } from "../text/image-tokens.ts";
import { buildConversation, buildPrompt } from "../text/prompt.ts";
import type { Tokenizer } from "../text/tokenizer.ts";
import { SplintError } from "../util/errors.ts";

/**
 * The strict classification prompt as token ids, the way training renders it: the tutorial's
 * PROMPT for the class names, one user turn (text then image), the chosen chat template with the
 * generation prompt, and each image's [IMG] block expanded. Also the tokens of every class answer
 * as they follow that prompt in a training conversation (EOS included), which is what score and
 * constrained modes compare.
 */
export class ClassPrompts {
  readonly prompt: string;
  /** Token ids of each class's answer after the prompt, ending with the template's EOS. */
  readonly answers: readonly (readonly number[])[];
  private readonly byGrid = new Map<string, readonly number[]>();

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly template: ChatTemplate,
    readonly classNames: readonly string[],
    /** The user turn's text; default the tutorial's prompt for these classes. */
    prompt: string = buildPrompt(classNames),
  ) {
    this.prompt = prompt;
    // The answer tokens do not depend on the image size; any grid renders them.
    const grid: ImageGrid = { rows: 1, cols: 1 };
    const promptIds = this.render(undefined, grid);
    this.answers = classNames.map((name) => {
      const full = this.render(name, grid);
      const isPrefix = promptIds.length < full.length && promptIds.every((id, i) => full[i] === id);
      if (!isPrefix) {
        throw new SplintError(
          `the chat template "${template.name}" renders the prompt differently with and without the answer "${name}", so the answer tokens cannot be found`,
          "use a template whose generation prompt is a prefix of the full conversation (e.g. --template short)",
        );
      }
      return full.slice(promptIds.length);
    });
    const seen = new Map<string, string>();
    this.answers.forEach((ids, c) => {
      const key = ids.join(",");
      const other = seen.get(key);
      if (other !== undefined) throw new SplintError(`classes "${other}" and "${classNames[c]}" tokenize to the same answer`, "class names must differ");
      seen.set(key, classNames[c]!);
    });
  }

  /** Prompt token ids for one image of the given token grid. */
  promptIds(grid: ImageGrid): readonly number[] {
    const key = `${grid.rows}x${grid.cols}`;
    let ids = this.byGrid.get(key);
    if (!ids) {
      ids = this.render(undefined, grid);
      this.byGrid.set(key, ids);
    }
    return ids;
  }

  /** The longest answer in tokens. */
  get longestAnswer(): number {
    return Math.max(...this.answers.map((a) => a.length));
  }

  private render(answer: string | undefined, grid: ImageGrid): number[] {
    const messages = buildConversation(this.prompt, answer);
    return renderChat(this.tokenizer, this.template, messages, [grid], answer === undefined).tokens.ids;
  }
}

/** Left-pads rows of token ids to one length: ids (B·T) with `pad`, mask (B·T) with 0 on padding. */
export function leftPad(rows: readonly (readonly number[])[], pad: number): { ids: Int32Array; mask: Int32Array; length: number } {
  const length = Math.max(...rows.map((r) => r.length));
  const ids = new Int32Array(rows.length * length).fill(pad);
  const mask = new Int32Array(rows.length * length);
  rows.forEach((r, b) => {
    const start = b * length + length - r.length;
    ids.set(r, start);
    mask.fill(1, start, start + r.length);
  });
  return { ids, mask, length };
}
