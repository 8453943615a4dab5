/**
 * The tokenizer of a model folder: `tokenizer.json` (HF, run by @huggingface/tokenizers) when
 * present, else Mistral's native `tekken.json` (./tekken.ts). Both behave like transformers'
 * `tokenizer(text, add_special_tokens=False)`: special-token strings written in the text
 * (`[INST]`, `[IMG]`, `<s>`) become their ids and no BOS is added.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { InputError, SplintError } from "../util/errors.ts";
import { encodeOrdinary, loadTekken, tekkenIdToToken, tekkenTokenToId, type TekkenModel } from "./tekken.ts";

export interface DecodeOptions {
  /** Drop special tokens (`</s>`, `[IMG]`…) from the text. Default false, as transformers. */
  skipSpecialTokens?: boolean;
}

export interface Tokenizer {
  /** The file the vocabulary came from. */
  readonly file: string;
  readonly kind: "tokenizer.json" | "tekken.json";
  /** Number of ids (largest id + 1). */
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly bosToken: string;
  readonly eosToken: string;
  /** `[IMG]`, `[IMG_BREAK]`, `[IMG_END]`. */
  readonly imgId: number;
  readonly imgBreakId: number;
  readonly imgEndId: number;
  encode(text: string): number[];
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
  isSpecial(id: number): boolean;
}

interface TokenizerConfig {
  bos_token?: unknown;
  eos_token?: unknown;
  pad_token?: unknown;
  [key: string]: unknown;
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new InputError(file, `cannot read JSON: ${(e as Error).message}`);
  }
}

/** tokenizer_config.json writes special tokens as a string or an AddedToken dict. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "object" && v !== null && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return undefined;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

interface Core {
  file: string;
  kind: Tokenizer["kind"];
  vocabSize: number;
  encode(text: string): number[];
  decode(ids: readonly number[], skipSpecial: boolean): string;
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
  isSpecial(id: number): boolean;
}

function tekkenCore(model: TekkenModel): Core {
  const bySpecial = new Map(model.specials.map((s, id) => [s, id]));
  // Longest first so `[/INST]` never loses to a shorter special sharing its start.
  const specialRe = new RegExp(
    [...bySpecial.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp).join("|"),
    "g",
  );
  const vocabSize = model.numSpecial + model.ranks.length;
  const utf8 = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
  return {
    file: model.file,
    kind: "tekken.json",
    vocabSize,
    encode(text) {
      const ids: number[] = [];
      let last = 0;
      if (bySpecial.size > 0) {
        for (const m of text.matchAll(specialRe)) {
          ids.push(...encodeOrdinary(model, text.slice(last, m.index)));
          ids.push(bySpecial.get(m[0])!);
          last = m.index + m[0].length;
        }
      }
      ids.push(...encodeOrdinary(model, text.slice(last)));
      return ids;
    },
    decode(ids, skipSpecial) {
      const parts: Uint8Array[] = [];
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
          throw new SplintError(`token id ${id} is outside the vocabulary (0…${vocabSize - 1}) of ${model.file}`);
        }
        if (id < model.numSpecial) {
          if (!skipSpecial) parts.push(Buffer.from(model.specials[id]!, "utf8"));
        } else {
          parts.push(model.ranks[id - model.numSpecial]!);
        }
      }
      return utf8.decode(Buffer.concat(parts));
    },
    idToToken: (id) => tekkenIdToToken(model, id),
    tokenToId: (token) => tekkenTokenToId(model, token),
    isSpecial: (id) => Number.isInteger(id) && id >= 0 && id < model.numSpecial,
  };
}

function hfCore(file: string, json: unknown, config: TokenizerConfig): Core {
  let tok: HfTokenizer;
  try {
    tok = new HfTokenizer(json as object, config);
  } catch (e) {
    throw new InputError(file, `not a tokenizer this version of @huggingface/tokenizers can load: ${(e as Error).message}`);
  }
  const vocab = tok.get_vocab(true);
  let maxId = -1;
  for (const id of vocab.values()) maxId = Math.max(maxId, id);
  const vocabSize = maxId + 1;
  // transformers 5 cleans up spaces before punctuation only when the config asks for it; the JS
  // library would default to doing it.
  const cleanUp = config.clean_up_tokenization_spaces === true;
  const special = new Set<number>();
  for (const [id, added] of tok.get_added_tokens_decoder()) if (added.special) special.add(id);
  return {
    file,
    kind: "tokenizer.json",
    vocabSize,
    encode: (text) => tok.encode(text, { add_special_tokens: false }).ids,
    decode(ids, skipSpecial) {
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
          throw new SplintError(`token id ${id} is outside the vocabulary (0…${vocabSize - 1}) of ${file}`);
        }
      }
      if (ids.length === 0) return "";
      return tok.decode([...ids], { skip_special_tokens: skipSpecial, clean_up_tokenization_spaces: cleanUp });
    },
    idToToken: (id) => tok.id_to_token(id),
    tokenToId: (token) => tok.token_to_id(token),
    isSpecial: (id) => special.has(id),
  };
}

function requireId(core: Core, token: string, what: string): number {
  const id = core.tokenToId(token);
  if (id === undefined) throw new InputError(core.file, `has no ${what} token ${token}`);
  return id;
}

/**
 * Loads `tokenizer.json` (+ `tokenizer_config.json` for bos/eos/pad names) from modelDir, or
 * `tekken.json` when there is no tokenizer.json.
 */
export async function loadTokenizer(modelDir: string): Promise<Tokenizer> {
  const hfFile = join(modelDir, "tokenizer.json");
  const tekkenFile = join(modelDir, "tekken.json");
  const configFile = join(modelDir, "tokenizer_config.json");
  const rawConfig = existsSync(configFile) ? readJson(configFile) : {};
  const config: TokenizerConfig =
    typeof rawConfig === "object" && rawConfig !== null && !Array.isArray(rawConfig) ? (rawConfig as TokenizerConfig) : {};

  let core: Core;
  if (existsSync(hfFile)) core = hfCore(hfFile, readJson(hfFile), config);
  else if (existsSync(tekkenFile)) core = tekkenCore(loadTekken(tekkenFile));
  else {
    throw new InputError(modelDir, "has neither tokenizer.json nor tekken.json", "point --model at the model folder");
  }

  const bosToken = tokenContent(config.bos_token) ?? "<s>";
  const eosToken = tokenContent(config.eos_token) ?? "</s>";
  const bosId = requireId(core, bosToken, "BOS");
  const eosId = requireId(core, eosToken, "EOS");
  const padName = tokenContent(config.pad_token);
  // Like the tutorial's collator: no pad token means padding with EOS.
  const padId = (padName === undefined ? core.tokenToId("<pad>") : requireId(core, padName, "pad")) ?? eosId;
  return {
    file: core.file,
    kind: core.kind,
    vocabSize: core.vocabSize,
    bosId,
    eosId,
    padId,
    bosToken,
    eosToken,
    imgId: requireId(core, "[IMG]", "image"),
    imgBreakId: requireId(core, "[IMG_BREAK]", "image-break"),
    imgEndId: requireId(core, "[IMG_END]", "image-end"),
    encode: (text) => core.encode(text),
    decode: (ids, opts) => core.decode(ids, opts?.skipSpecialTokens ?? false),
    idToToken: (id) => core.idToToken(id),
    tokenToId: (token) => core.tokenToId(token),
    isSpecial: (id) => core.isSpecial(id),
  };
}

/**
 * Turns generated ids into text as they arrive. A token can end inside a multi-byte UTF-8
 * character, so text is held back while the decoded tail is an incomplete character (U+FFFD), and
 * only the last few tokens are re-decoded each step (the prefix/read-offset scheme of HF's
 * text-generation-inference), which keeps byte-level merges across tokens right.
 */
export interface StreamDecoder {
  /** Text that became final with this token ("" while a character is incomplete). */
  push(id: number): string;
  /** Whatever is left at the end of generation. */
  flush(): string;
}

export function createStreamDecoder(tokenizer: Tokenizer, opts: DecodeOptions = {}): StreamDecoder {
  const ids: number[] = [];
  let prefixOffset = 0;
  let readOffset = 0;
  const decode = (from: number, to: number): string => tokenizer.decode(ids.slice(from, to), opts);
  return {
    push(id) {
      ids.push(id);
      const prefix = decode(prefixOffset, readOffset);
      const full = decode(prefixOffset, ids.length);
      if (full.length > prefix.length && !full.endsWith("\uFFFD")) {
        prefixOffset = readOffset;
        readOffset = ids.length;
        return full.slice(prefix.length);
      }
      return "";
    },
    flush() {
      const prefix = decode(prefixOffset, readOffset);
      const full = decode(prefixOffset, ids.length);
      prefixOffset = readOffset = ids.length;
      return full.slice(prefix.length);
    },
  };
}
