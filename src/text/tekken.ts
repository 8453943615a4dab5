/**
 * Mistral's native `tekken.json` tokenizer: byte-level BPE by ranks (tiktoken style) with the
 * special tokens first. Layout (mistral_common `Tekkenizer`): ids 0…num_special-1 are special
 * (unnamed slots are `<SPECIAL_{id}>`), BPE rank r has id r + num_special, and only the first
 * `default_vocab_size - num_special` ranks are used.
 *
 * Ids match the HF `tokenizer.json` transformers' `convert_tekken_tokenizer` writes (BPE with
 * merges derived from the ranks, `ignore_merges`, Split(pattern, isolated) + ByteLevel): a piece
 * that is a whole vocabulary entry is one token, otherwise the adjacent pair whose concatenation
 * has the lowest rank is merged first, leftmost on ties.
 */
import { readFileSync } from "node:fs";
import * as hfTokenizers from "@huggingface/tokenizers";
import { InputError } from "../util/errors.ts";
import { byteLevelToBytes, bytesToByteLevel } from "./byte-level.ts";

export interface TekkenModel {
  readonly file: string;
  readonly numSpecial: number;
  /** Special token strings by id (length numSpecial). */
  readonly specials: readonly string[];
  /** Token bytes by rank. */
  readonly ranks: readonly Uint8Array[];
  /** Pre-tokenizer regex (global, unicode). */
  readonly pattern: RegExp;
  /** Rank by token bytes written as a latin1 string. */
  readonly rankOf: ReadonlyMap<string, number>;
}

interface TekkenJson {
  config?: { pattern?: unknown; default_num_special_tokens?: unknown; default_vocab_size?: unknown };
  vocab?: unknown;
  special_tokens?: unknown;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * tekken patterns are Oniguruma/Rust syntax (`\s` is Unicode White_Space, `(?i:…)` groups);
 * compile them with @huggingface/tokenizers' own rewriter so both loaders split text alike.
 */
// The package's index.d.ts re-exports its pre-tokenizers with `export *` from an extensionless
// path, which NodeNext resolution drops; the class is there at runtime.
const { SplitPreTokenizer } = hfTokenizers as unknown as {
  SplitPreTokenizer: new (config: { type: "Split"; pattern: { Regex: string }; behavior: "Isolated" }) => { pattern: RegExp | null };
};

function compilePattern(file: string, pattern: string): RegExp {
  let re: RegExp | null;
  try {
    re = new SplitPreTokenizer({ type: "Split", pattern: { Regex: pattern }, behavior: "Isolated" }).pattern;
  } catch (e) {
    throw new InputError(file, `config.pattern is not a regex splint can run: ${(e as Error).message}`);
  }
  if (re === null) throw new InputError(file, "config.pattern is not a regex splint can run");
  return re;
}

export function loadTekken(file: string): TekkenModel {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new InputError(file, `cannot read tekken tokenizer: ${(e as Error).message}`);
  }
  if (!isRecord(parsed)) throw new InputError(file, "not a JSON object");
  const data = parsed as TekkenJson;
  const config = data.config;
  if (!isRecord(config)) throw new InputError(file, "missing `config` object");
  const { pattern, default_num_special_tokens: numSpecialRaw, default_vocab_size: vocabSizeRaw } = config;
  if (typeof pattern !== "string") throw new InputError(file, "config.pattern is missing");
  const numSpecial = numSpecialRaw === undefined ? 1000 : numSpecialRaw;
  if (typeof numSpecial !== "number" || !Number.isInteger(numSpecial) || numSpecial < 0) {
    throw new InputError(file, `config.default_num_special_tokens is not a non-negative integer`);
  }
  if (!Array.isArray(data.vocab)) throw new InputError(file, "missing `vocab` list");
  const vocabSize = vocabSizeRaw === undefined ? numSpecial + data.vocab.length : vocabSizeRaw;
  if (typeof vocabSize !== "number" || !Number.isInteger(vocabSize) || vocabSize < numSpecial) {
    throw new InputError(file, `config.default_vocab_size must be an integer ≥ the ${numSpecial} special tokens`);
  }
  const used = vocabSize - numSpecial;
  if (data.vocab.length < used) {
    throw new InputError(
      file,
      `vocab has ${data.vocab.length} entries but default_vocab_size ${vocabSize} - ${numSpecial} specials needs ${used}`,
    );
  }

  const ranks: Uint8Array[] = [];
  const rankOf = new Map<string, number>();
  for (let r = 0; r < used; r++) {
    const entry: unknown = data.vocab[r];
    if (!isRecord(entry) || typeof entry.token_bytes !== "string") {
      throw new InputError(file, `vocab[${r}] has no base64 token_bytes`);
    }
    if (entry.rank !== undefined && entry.rank !== r) {
      throw new InputError(file, `vocab[${r}] has rank ${String(entry.rank)}; ranks must equal their position`);
    }
    const bytes = new Uint8Array(Buffer.from(entry.token_bytes, "base64"));
    const key = Buffer.from(bytes).toString("latin1");
    if (rankOf.has(key)) throw new InputError(file, `vocab[${r}] repeats the bytes of rank ${rankOf.get(key)}`);
    ranks.push(bytes);
    rankOf.set(key, r);
  }

  const specials = new Array<string>(numSpecial);
  if (data.special_tokens !== undefined) {
    if (!Array.isArray(data.special_tokens)) throw new InputError(file, "`special_tokens` is not a list");
    for (const st of data.special_tokens) {
      if (!isRecord(st) || typeof st.token_str !== "string" || typeof st.rank !== "number") {
        throw new InputError(file, "each special_tokens entry needs a string token_str and a numeric rank");
      }
      if (!Number.isInteger(st.rank) || st.rank < 0 || st.rank >= numSpecial) {
        throw new InputError(file, `special token ${st.token_str} has rank ${st.rank} outside 0…${numSpecial - 1}`);
      }
      specials[st.rank] = st.token_str;
    }
  }
  for (let i = 0; i < numSpecial; i++) specials[i] ??= `<SPECIAL_${i}>`;

  return { file, numSpecial, specials, ranks, pattern: compilePattern(file, pattern), rankOf };
}

/** BPE of one pre-token (latin1 byte string) into ranks, by lowest merged rank first. */
export function bpeRanks(model: TekkenModel, piece: string): number[] {
  const whole = model.rankOf.get(piece);
  if (whole !== undefined) return [whole];
  // Part boundaries into `piece`; parts[i]…parts[i+1] is one current token.
  const bounds: number[] = [];
  for (let i = 0; i <= piece.length; i++) bounds.push(i);
  const pairRank = (i: number): number => {
    if (i + 2 >= bounds.length) return Infinity;
    return model.rankOf.get(piece.slice(bounds[i], bounds[i + 2])) ?? Infinity;
  };
  const ranks: number[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) ranks.push(pairRank(i));
  for (;;) {
    let best = Infinity;
    let at = -1;
    for (let i = 0; i < ranks.length; i++) {
      if (ranks[i]! < best) {
        best = ranks[i]!;
        at = i;
      }
    }
    if (at < 0) break;
    bounds.splice(at + 1, 1);
    ranks.splice(at + 1, 1);
    ranks[at] = pairRank(at);
    if (at > 0) ranks[at - 1] = pairRank(at - 1);
  }
  const out: number[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const part = piece.slice(bounds[i], bounds[i + 1]);
    const r = model.rankOf.get(part);
    if (r === undefined) {
      throw new InputError(model.file, `byte 0x${part.charCodeAt(0).toString(16)} has no token; the vocabulary must hold all 256 single bytes`);
    }
    out.push(r);
  }
  return out;
}

/** Ids of ordinary text (no special-token recognition). */
export function encodeOrdinary(model: TekkenModel, text: string): number[] {
  const ids: number[] = [];
  for (const m of text.matchAll(model.pattern)) {
    if (m[0].length === 0) continue;
    const piece = Buffer.from(m[0], "utf8").toString("latin1");
    for (const r of bpeRanks(model, piece)) ids.push(r + model.numSpecial);
  }
  return ids;
}

/** The HF `tokenizer.json` spelling of a tekken id (specials as themselves, BPE byte-level). */
export function tekkenIdToToken(model: TekkenModel, id: number): string | undefined {
  if (!Number.isInteger(id) || id < 0) return undefined;
  if (id < model.numSpecial) return model.specials[id];
  const bytes = model.ranks[id - model.numSpecial];
  return bytes === undefined ? undefined : bytesToByteLevel(bytes);
}

export function tekkenTokenToId(model: TekkenModel, token: string): number | undefined {
  const special = model.specials.indexOf(token);
  if (special >= 0) return special;
  const bytes = byteLevelToBytes(token);
  if (bytes === undefined) return undefined;
  const r = model.rankOf.get(Buffer.from(bytes).toString("latin1"));
  return r === undefined ? undefined : r + model.numSpecial;
}
