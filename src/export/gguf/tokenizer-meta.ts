/**
 * The tokenizer as GGUF metadata, in the form llama.cpp's BPE ("gpt2") vocabulary loader reads:
 * `tokenizer.ggml.tokens` (byte-level spelled, one per id), `token_type`, `merges` ("left right"
 * in priority order), the special ids, `pre` = "tekken" (llama.cpp picks the pre-tokenizer regex
 * by this name, and sets ignore_merges and add_bos for it) and the chat template.
 *
 * Two sources, as splint's own tokenizer (src/text/tokenizer.ts): `tokenizer.json` (HF BPE, as
 * transformers' convert_tekken_tokenizer writes it) or Mistral's `tekken.json`, whose merges are
 * derived from the ranks the way llama.cpp's gguf-py does for tekken (every split of a token into
 * two lower-ranked tokens, ordered by the merged token's rank, then by the parts' ranks).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { loadModelChatTemplate } from "../../text/chat-template.ts";
import { bytesToByteLevel } from "../../text/byte-level.ts";
import { loadTekken } from "../../text/tekken.ts";
import { loadTokenizer, type Tokenizer } from "../../text/tokenizer.ts";
import { InputError } from "../../util/errors.ts";
import { bool, str, TokenType, u32, type GgufMetadata } from "./format.ts";

/** Mistral's tekken pre-tokenizer regex (tekken.json config.pattern; llama.cpp's LLAMA_VOCAB_PRE_TYPE_TEKKEN). */
export const TEKKEN_PATTERN =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export interface VocabTables {
  readonly source: string;
  readonly tokens: string[];
  readonly types: Int32Array;
  readonly merges: string[];
}

export interface TokenizerMeta {
  readonly metadata: GgufMetadata;
  readonly tokenizer: Tokenizer;
  /** The chat template text (absent when the model folder has none). */
  readonly chatTemplate: string | undefined;
  readonly source: string;
}

type Json = Record<string, unknown>;

function readJson(file: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new InputError(file, `cannot read JSON: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new InputError(file, "not a JSON object");
  return v as Json;
}

/** Merges containing a literal space are written with the space shifted (gguf-py does the same). */
function mergePart(part: string): string {
  return part.includes(" ") ? part.replaceAll(" ", String.fromCodePoint(0x20 + 256)) : part;
}

function findSplitPattern(pre: unknown): string | undefined {
  if (typeof pre !== "object" || pre === null) return undefined;
  const p = pre as Json;
  if (p.type === "Split") {
    const pattern = p.pattern as Json | undefined;
    return typeof pattern?.Regex === "string" ? pattern.Regex : undefined;
  }
  if (p.type === "Sequence" && Array.isArray(p.pretokenizers)) {
    for (const inner of p.pretokenizers) {
      const found = findSplitPattern(inner);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/** From an HF `tokenizer.json` (BPE, byte-level). `vocabSize` is the model's embedding rows. */
export function vocabFromTokenizerJson(file: string, vocabSize: number): VocabTables {
  const json = readJson(file);
  const model = json.model as Json | undefined;
  if (typeof model !== "object" || model === null) throw new InputError(file, "has no `model` object");
  if (model.type !== "BPE") {
    throw new InputError(file, `model.type is ${JSON.stringify(model.type)}; GGUF export supports byte-level BPE (Mistral's tekken) only`);
  }
  const pattern = findSplitPattern(json.pre_tokenizer);
  if (pattern !== TEKKEN_PATTERN) {
    throw new InputError(
      file,
      "pre_tokenizer is not Mistral's tekken Split pattern; llama.cpp selects pre-tokenizers by name and splint maps only tekken",
    );
  }
  const vocab = model.vocab;
  if (typeof vocab !== "object" || vocab === null || Array.isArray(vocab)) throw new InputError(file, "model.vocab is not an object of token → id");
  const tokens = new Array<string | undefined>(vocabSize);
  const types = new Int32Array(vocabSize).fill(TokenType.UNUSED);
  const place = (token: string, id: unknown, type: number, field: string): void => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) throw new InputError(file, `${field}: id ${JSON.stringify(id)} of ${JSON.stringify(token)} is not a token id`);
    if (id >= vocabSize) {
      throw new InputError(file, `${field}: id ${id} of ${JSON.stringify(token)} is outside the model's ${vocabSize}-row embedding (text_config.vocab_size)`);
    }
    tokens[id] = token;
    types[id] = type;
  };
  for (const [token, id] of Object.entries(vocab as Json)) place(token, id, TokenType.NORMAL, "model.vocab");
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) throw new InputError(file, "added_tokens is not a list");
  for (const [i, t] of added.entries()) {
    const entry = t as Json;
    if (typeof entry?.content !== "string") throw new InputError(file, `added_tokens[${i}] has no string content`);
    place(entry.content, entry.id, entry.special === true ? TokenType.CONTROL : TokenType.USER_DEFINED, `added_tokens[${i}]`);
  }
  const rawMerges = model.merges ?? [];
  if (!Array.isArray(rawMerges)) throw new InputError(file, "model.merges is not a list");
  const merges = rawMerges.map((m: unknown, i: number): string => {
    if (typeof m === "string") return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") return `${mergePart(m[0])} ${mergePart(m[1])}`;
    throw new InputError(file, `model.merges[${i}] is neither "a b" nor ["a", "b"]`);
  });
  return { source: file, tokens: fillUnused(tokens), types, merges };
}

/** From Mistral's `tekken.json`. */
export function vocabFromTekken(file: string, vocabSize: number): VocabTables {
  const model = loadTekken(file);
  const raw = readJson(file).config as Json;
  if (raw.pattern !== TEKKEN_PATTERN) throw new InputError(file, "config.pattern is not the tekken regex llama.cpp implements");
  const total = model.numSpecial + model.ranks.length;
  if (total > vocabSize) throw new InputError(file, `holds ${total} ids but the model's embedding has ${vocabSize} rows (text_config.vocab_size)`);
  const tokens = new Array<string | undefined>(vocabSize);
  const types = new Int32Array(vocabSize).fill(TokenType.UNUSED);
  for (let id = 0; id < model.numSpecial; id++) {
    tokens[id] = model.specials[id]!;
    types[id] = TokenType.CONTROL;
  }
  for (let r = 0; r < model.ranks.length; r++) {
    tokens[model.numSpecial + r] = bytesToByteLevel(model.ranks[r]!);
    types[model.numSpecial + r] = TokenType.NORMAL;
  }
  const merges: string[] = [];
  for (let r = 256; r < model.ranks.length; r++) {
    const whole = Buffer.from(model.ranks[r]!).toString("latin1");
    const local: [number, number, string, string][] = [];
    for (let j = 1; j < whole.length; j++) {
      const left = model.rankOf.get(whole.slice(0, j));
      const right = model.rankOf.get(whole.slice(j));
      if (left !== undefined && right !== undefined) local.push([left, right, whole.slice(0, j), whole.slice(j)]);
    }
    if (local.length === 0) throw new InputError(file, `rank ${r} cannot be built by merging two lower tokens; not a BPE vocabulary`);
    local.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (const [, , l, rgt] of local) merges.push(`${latin1ToByteLevel(l)} ${latin1ToByteLevel(rgt)}`);
  }
  return { source: file, tokens: fillUnused(tokens), types, merges };
}

function latin1ToByteLevel(s: string): string {
  return mergePart(bytesToByteLevel(Buffer.from(s, "latin1")));
}

function fillUnused(tokens: (string | undefined)[]): string[] {
  // gguf-py names holes [PAD{id}]; llama.cpp needs a distinct string for every id.
  return Array.from(tokens, (t, i) => t ?? `[PAD${i}]`);
}

function readTemplate(modelDir: string): string | undefined {
  try {
    return loadModelChatTemplate(modelDir).text;
  } catch (error) {
    if (error instanceof InputError && error.file === modelDir) return undefined; // none at all
    throw error;
  }
}

/** Everything under `tokenizer.*` for the text GGUF. */
export async function tokenizerMetadata(modelDir: string, vocabSize: number): Promise<TokenizerMeta> {
  const tokenizer = await loadTokenizer(modelDir);
  const hfFile = join(modelDir, "tokenizer.json");
  const tables = existsSync(hfFile) ? vocabFromTokenizerJson(hfFile, vocabSize) : vocabFromTekken(join(modelDir, "tekken.json"), vocabSize);
  const unk = tokenizer.tokenToId("<unk>");
  const chatTemplate = readTemplate(modelDir);
  const metadata: GgufMetadata = [
    ["tokenizer.ggml.model", str("gpt2")],
    ["tokenizer.ggml.pre", str("tekken")],
    ["tokenizer.ggml.tokens", { type: "string[]", value: tables.tokens }],
    ["tokenizer.ggml.token_type", { type: "i32[]", value: tables.types }],
    ["tokenizer.ggml.merges", { type: "string[]", value: tables.merges }],
    ["tokenizer.ggml.bos_token_id", u32(tokenizer.bosId)],
    ["tokenizer.ggml.eos_token_id", u32(tokenizer.eosId)],
    ...(unk !== undefined ? ([["tokenizer.ggml.unknown_token_id", u32(unk)]] as const) : []),
    ["tokenizer.ggml.padding_token_id", u32(tokenizer.padId)],
    // As llama.cpp's own conversion of Mistral tokenizers: BOS added by the runtime, no EOS.
    ["tokenizer.ggml.add_bos_token", bool(true)],
    ["tokenizer.ggml.add_eos_token", bool(false)],
    ...(chatTemplate !== undefined ? ([["tokenizer.chat_template", str(chatTemplate)]] as const) : []),
  ];
  return { metadata, tokenizer, chatTemplate, source: tables.source };
}
