import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { resolveModel } from "../../hub/resolve.ts";
import { generateMistral3, type SamplingOptions } from "../../models/mistral3/generate.ts";
import { readGenerationConfig } from "../../models/mistral3/generation-config.ts";
import { imageGrids, loadImageBatch, renderChat } from "../../models/mistral3/chat-inputs.ts";
import { openModelSession } from "../../models/mistral3/runtime.ts";
import type { WeightDtype } from "../../models/mistral3/weights.ts";
import { resolveChatTemplate } from "../../text/chat-template.ts";
import { readTrainingPrompt } from "../../lora/training-prompt.ts";
import type { ChatMessage, ContentBlock } from "../../text/prompt.ts";
import { createStreamDecoder, loadTokenizer } from "../../text/tokenizer.ts";
import { InputError } from "../../util/errors.ts";
import { MATMUL_FLAG, MATMUL_FLAG_HELP, parseMatmulPrecision } from "../matmul-flag.ts";
import { createOutput } from "../output.ts";
import { ADAPTER_FLAG, ADAPTER_HELP, MODEL_FLAG, MODEL_HELP, REVISION_FLAG, REVISION_HELP, revisionOption } from "../model-flags.ts";

interface GenerateFlags {
  revision?: string;
  model: string;
  adapter?: string;
  image: string[];
  prompt?: string;
  promptFile?: string;
  template?: string;
  maxNewTokens?: string;
  doSample?: boolean;
  temperature?: string;
  topK?: string;
  topP?: string;
  minP?: string;
  seed: string;
  skipSpecialTokens?: boolean;
  dtype: string;
  matmul: string;
  json?: boolean;
}

/**
 * `splint generate`: the tutorial's "test the model" step. One user turn (the prompt text, then the
 * images, as the tutorial builds it), rendered with the chosen chat template, answered by greedy or
 * sampled decoding and streamed to the terminal as transformers' TextStreamer(skip_prompt=True) does.
 */
export function registerGenerate(program: Command): void {
  program
    .command("generate")
    .description("Answer a prompt about an image with the model (optionally with a LoRA adapter), streaming the text")
    .requiredOption(MODEL_FLAG, MODEL_HELP)
    .option(REVISION_FLAG, REVISION_HELP)
    .option(ADAPTER_FLAG, ADAPTER_HELP)
    .option("--image <file...>", "image file(s), in prompt order", [])
    .option("--prompt <text>", "the user's text")
    .option("--prompt-file <file>", "read the user's text from a file")
    .option("--template <spec>", "chat template: model, short (the tutorial's) or a Jinja file (default: the adapter's recorded one, else model)")
    .option("--max-new-tokens <n>", "most tokens to generate (default: generation_config.json, else 1000)")
    .option("--do-sample", "sample instead of greedy decoding (as transformers, temperature/top-k/top-p/min-p apply only then)")
    .option("--temperature <t>", "sampling temperature")
    .option("--top-k <k>", "keep the k most likely tokens (0 = off; transformers' default 50)")
    .option("--top-p <p>", "keep the smallest set of tokens with probability mass ≥ p (1 = off)")
    .option("--min-p <p>", "drop tokens below p × the top probability (0 = off)")
    .option("--seed <n>", "sampling seed", "0")
    .option("--skip-special-tokens", "leave special tokens such as </s> out of the printed text")
    .option("--dtype <dtype>", "weights in memory: auto (as stored), f32 or bf16", "auto")
    .option(MATMUL_FLAG, MATMUL_FLAG_HELP, "f32")
    .option("--json", "print the result as JSON (no streaming)")
    .addHelpText(
      "after",
      `
Examples:
  splint generate --model mistralai/Ministral-3-3B-Instruct-2512-BF16 --image xray.png --prompt "What does this X-ray show?"
  splint generate --model runs/demo/model --adapter runs/demo/train/adapter --template short --image xray.png --prompt "Which fracture?"
  splint generate --model M --prompt "Describe a spiral fracture." --do-sample --temperature 0.7 --seed 1 --json`,
    )
    .action(async (flags: GenerateFlags) => {
      const output = createOutput(Boolean(flags.json));
      const prompt = await promptText(flags);
      const modelDir = await resolveModel(flags.model, { output, ...revisionOption(flags.revision) });
      const adapterDir = flags.adapter === undefined ? undefined : await resolveModel(flags.adapter, { output });
      const tokenizer = await loadTokenizer(modelDir);
      // An adapter is asked with the template it was trained with, unless --template says otherwise.
      const trained = flags.template === undefined ? await readTrainingPrompt(adapterDir) : null;
      const template = trained?.template ?? resolveChatTemplate(flags.template ?? "model", modelDir);
      const defaults = readGenerationConfig(modelDir);
      const sampling = samplingOptions(flags, defaults, output.log);
      const maxNewTokens = flags.maxNewTokens === undefined ? (defaults.maxNewTokens ?? 1000) : positiveInt("--max-new-tokens", flags.maxNewTokens);

      const images = flags.image.length > 0 ? await loadImageBatch(modelDir, flags.image) : undefined;
      const session = await openModelSession(modelDir, { adapterDir, dtype: parseDtype(flags.dtype), matmulPrecision: parseMatmulPrecision(flags.matmul), output });
      const config = session.model.config;
      const content: ContentBlock[] = [{ type: "text", text: prompt }, ...flags.image.map((): ContentBlock => ({ type: "image" }))];
      const messages: ChatMessage[] = [{ role: "user", content }];
      const rendered = renderChat(tokenizer, template, messages, imageGrids(config, images), true);
      const ids = Int32Array.from(rendered.tokens.ids);

      const eos = defaults.eosTokenIds ?? [tokenizer.eosId];
      const pad = defaults.padTokenId ?? config.text_config.pad_token_id ?? tokenizer.padId;
      const stream = createStreamDecoder(tokenizer, { skipSpecialTokens: Boolean(flags.skipSpecialTokens) });
      const generated: number[] = [];
      const started = performance.now();
      const result = generateMistral3(
        session.model,
        () => session.inferenceGraph(),
        { batch: 1, seqLen: ids.length, inputIds: ids, images },
        {
          maxNewTokens,
          eosTokenIds: eos,
          padTokenId: pad,
          sampling,
          onStep(_, tokens) {
            generated.push(tokens[0]!);
            const piece = stream.push(tokens[0]!);
            if (!output.json && piece) process.stdout.write(piece);
          },
        },
      );
      const tail = stream.flush();
      if (!output.json) process.stdout.write(`${tail}\n`);
      const seconds = (performance.now() - started) / 1000;
      const text = tokenizer.decode(generated, { skipSpecialTokens: Boolean(flags.skipSpecialTokens) });
      const summary = {
        text,
        tokenIds: generated,
        promptTokens: ids.length,
        newTokens: result.newTokens,
        stoppedAtEos: eos.includes(generated[generated.length - 1]!),
        seconds,
        tokensPerSecond: result.newTokens / seconds,
      };
      if (output.json) output.result(summary, () => text);
      else output.log(`${result.newTokens} tokens in ${seconds.toFixed(2)} s (${summary.tokensPerSecond.toFixed(2)} tokens/s; prompt ${ids.length} tokens)`);
    });
}

async function promptText(flags: GenerateFlags): Promise<string> {
  if ((flags.prompt === undefined) === (flags.promptFile === undefined)) {
    throw new InputError("--prompt", "give exactly one of --prompt TEXT or --prompt-file FILE");
  }
  if (flags.prompt !== undefined) return flags.prompt;
  try {
    return await readFile(flags.promptFile!, "utf8");
  } catch (error) {
    throw new InputError(flags.promptFile!, `cannot read the prompt (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
}

function samplingOptions(flags: GenerateFlags, defaults: ReturnType<typeof readGenerationConfig>, log: (m: string) => void): SamplingOptions | undefined {
  const given = [flags.temperature, flags.topK, flags.topP, flags.minP].some((v) => v !== undefined);
  const doSample = Boolean(flags.doSample) || defaults.doSample;
  if (!doSample) {
    if (given) log("note: --temperature/--top-k/--top-p/--min-p only apply with --do-sample (as in transformers); decoding greedily");
    return undefined;
  }
  const temperature = flags.temperature === undefined ? defaults.temperature : number("--temperature", flags.temperature, (v) => v > 0);
  const topK = flags.topK === undefined ? defaults.topK : number("--top-k", flags.topK, (v) => Number.isInteger(v) && v >= 0);
  const topP = flags.topP === undefined ? defaults.topP : number("--top-p", flags.topP, (v) => v > 0 && v <= 1);
  const minP = flags.minP === undefined ? defaults.minP : number("--min-p", flags.minP, (v) => v >= 0 && v <= 1);
  return { temperature, topK, topP, minP, seed: number("--seed", flags.seed, (v) => Number.isInteger(v) && v >= 0) };
}

function number(flag: string, value: string, valid: (v: number) => boolean): number {
  const v = Number(value);
  if (value.trim() === "" || !Number.isFinite(v) || !valid(v)) throw new InputError(flag, `${JSON.stringify(value)} is not a valid value`);
  return v;
}

function positiveInt(flag: string, value: string): number {
  return number(flag, value, (v) => Number.isInteger(v) && v > 0);
}

function parseDtype(value: string): WeightDtype {
  if (value !== "auto" && value !== "f32" && value !== "bf16") throw new InputError("--dtype", `must be auto, f32 or bf16, got ${JSON.stringify(value)}`);
  return value;
}
