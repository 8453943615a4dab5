import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { imageGrids, loadImageBatch, renderChat, trainingLabels, type LossOn } from "../../models/mistral3/chat-inputs.ts";
import { resolveModel } from "../../hub/resolve.ts";
import { IGNORE_INDEX, readMistral3Config } from "../../models/mistral3/model.ts";
import { resolveChatTemplate } from "../../text/chat-template.ts";
import type { ChatMessage, ContentBlock } from "../../text/prompt.ts";
import { loadTokenizer } from "../../text/tokenizer.ts";
import { InputError } from "../../util/errors.ts";
import { createOutput } from "../output.ts";
import { MODEL_FLAG, MODEL_HELP, REVISION_FLAG, REVISION_HELP, revisionOption } from "../model-flags.ts";

/** render needs no weights: only these files of a Hub repo are fetched. */
const CONFIG_FILES = ["*.json", "*.jinja", "tokenizer.model"];

interface RenderFlags {
  revision?: string;
  model: string;
  image: string[];
  prompt?: string;
  promptFile?: string;
  answer?: string;
  template: string;
  lossOn: string;
  json?: boolean;
}

/**
 * `splint render`: shows exactly what the model is fed: the rendered chat text, every token id with
 * its string, each image's token grid, and (with --answer) which tokens the training loss covers.
 * Train/serve template mismatches and wrong loss masks become visible here.
 */
export function registerRender(program: Command): void {
  program
    .command("render")
    .description("Show the rendered prompt, its tokens, the image token grid and the training loss mask")
    .requiredOption(MODEL_FLAG, MODEL_HELP + " (config, tokenizer, processor config and chat template are read)")
    .option(REVISION_FLAG, REVISION_HELP)
    .option("--image <file...>", "image file(s), in prompt order", [])
    .option("--prompt <text>", "the user's text")
    .option("--prompt-file <file>", "read the user's text from a file")
    .option("--answer <text>", "the assistant's answer, as in a training example")
    .option("--template <spec>", "chat template: model, short (the tutorial's) or a Jinja file", "model")
    .option("--loss-on <which>", "completion (answer only) or all (prompt too, as the tutorial)", "completion")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
Examples:
  splint render --model runs/demo/model --template short --prompt "Which fracture?" --image xray.png
  splint render --model M --template short --prompt "Which fracture?" --image xray.png --answer "Spiral Fracture" --loss-on all --json`,
    )
    .action(async (flags: RenderFlags) => {
      const output = createOutput(Boolean(flags.json));
      if (flags.lossOn !== "completion" && flags.lossOn !== "all") throw new InputError("--loss-on", `must be completion or all, got ${JSON.stringify(flags.lossOn)}`);
      if ((flags.prompt === undefined) === (flags.promptFile === undefined)) throw new InputError("--prompt", "give exactly one of --prompt TEXT or --prompt-file FILE");
      const prompt = flags.prompt ?? (await readFile(flags.promptFile!, "utf8"));
      const modelDir = await resolveModel(flags.model, { output, include: CONFIG_FILES, ...revisionOption(flags.revision) });
      const config = await readMistral3Config(modelDir);
      const tokenizer = await loadTokenizer(modelDir);
      const template = resolveChatTemplate(flags.template, modelDir);
      const images = flags.image.length > 0 ? await loadImageBatch(modelDir, flags.image) : undefined;
      const grids = imageGrids(config, images);

      const content: ContentBlock[] = [{ type: "text", text: prompt }, ...flags.image.map((): ContentBlock => ({ type: "image" }))];
      const messages: ChatMessage[] = [{ role: "user", content }];
      const promptOnly = renderChat(tokenizer, template, messages, grids, true);
      const full =
        flags.answer === undefined
          ? promptOnly
          : renderChat(tokenizer, template, [...messages, { role: "assistant", content: [{ type: "text", text: flags.answer }] }], grids, false);
      const labels = flags.answer === undefined ? null : trainingLabels(full.tokens, promptOnly.tokens, flags.lossOn as LossOn);
      // Label i is what the logits at position i-1 are scored against (transformers' shift).
      const lossIds = labels ? Array.from(labels).filter((l, i) => i > 0 && l !== IGNORE_INDEX) : [];

      const tokens = full.tokens.ids.map((id, i) => ({
        index: i,
        id,
        token: tokenizer.idToToken(id) ?? `<id ${id}>`,
        text: tokenizer.decode([id]),
        kind: full.tokens.kinds[i]!,
        image: full.tokens.imageIndex[i]!,
        loss: labels ? i > 0 && labels[i] !== IGNORE_INDEX : null,
      }));
      const imageInfo = grids.map((g, i) => ({
        file: flags.image[i]!,
        height: images!.imageSizes[2 * i]!,
        width: images!.imageSizes[2 * i + 1]!,
        rows: g.rows,
        cols: g.cols,
        imageTokens: g.rows * g.cols,
        totalTokens: g.rows * (g.cols + 1),
      }));
      const result = {
        template: { name: template.name, source: template.source },
        text: full.text,
        tokens,
        images: imageInfo,
        loss: labels ? { on: flags.lossOn, tokens: lossIds.length, text: tokenizer.decode(lossIds) } : null,
      };
      output.result(result, () => formatRender(result));
    });
}

interface RenderResult {
  template: { name: string; source: string };
  text: string;
  tokens: { index: number; id: number; token: string; text: string; kind: string; image: number; loss: boolean | null }[];
  images: { file: string; height: number; width: number; rows: number; cols: number; imageTokens: number; totalTokens: number }[];
  loss: { on: string; tokens: number; text: string } | null;
}

function formatRender(r: RenderResult): string {
  const lines = [`template: ${r.template.name} (${r.template.source})`, "rendered text:", r.text, ""];
  for (const [i, img] of r.images.entries()) {
    lines.push(`image ${i}: ${img.file} → ${img.height}×${img.width} px → ${img.rows} rows × ${img.cols} cols = ${img.imageTokens} [IMG] (+${img.rows} [IMG_BREAK]/[IMG_END]) = ${img.totalTokens} tokens`);
  }
  lines.push(`${r.tokens.length} tokens${r.loss ? ` (L = counted by the loss, ${r.loss.on})` : ""}:`);
  let i = 0;
  while (i < r.tokens.length) {
    const t = r.tokens[i]!;
    if (t.image >= 0) {
      // One line per image row: [IMG]×cols then its [IMG_BREAK] / [IMG_END].
      let j = i;
      while (j < r.tokens.length && r.tokens[j]!.kind === "image") j++;
      const end = r.tokens[j];
      const closing = end && end.image === t.image && end.kind !== "image" ? ` ${end.token}` : "";
      const last = closing ? j : j - 1;
      lines.push(`${String(i).padStart(6)}-${String(last).padEnd(6)} image ${t.image}: [IMG]×${j - i}${closing}`);
      i = last + 1;
      continue;
    }
    const mark = t.loss === null ? "" : t.loss ? "L " : "  ";
    const shown = t.token === t.text ? JSON.stringify(t.token) : `${JSON.stringify(t.token)} = ${JSON.stringify(t.text)}`;
    lines.push(`${String(i).padStart(6)} ${mark}${String(t.id).padStart(7)}  ${shown}  ${t.kind === "text" ? "" : t.kind}`.trimEnd());
    i++;
  }
  if (r.loss) lines.push(`loss covers ${r.loss.tokens} tokens: ${JSON.stringify(r.loss.text)}`);
  return lines.join("\n");
}
