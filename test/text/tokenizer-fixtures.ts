/**
 * Small tokenizer folders for tests: a tekken.json with the Mistral special-token layout (1000
 * specials) and byte-level BPE ranks trained here on a little corpus, and the HF tokenizer.json
 * that transformers' `convert_tekken_tokenizer` would write for it (merges derived from the ranks,
 * BPE ignore_merges, Split(pattern, Isolated) + ByteLevel(use_regex=false), ByteLevel decoder).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SYNTH_CLASS_NAMES } from "../../src/data/synth-xray.ts";
import { bytesToByteLevel } from "../../src/text/byte-level.ts";
import { buildPrompt } from "../../src/text/prompt.ts";

/** The pre-tokenizer regex of Mistral's tekken files (as transformers' fix_mistral_regex spells it). */
export const TEKKEN_PATTERN =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const NAMED_SPECIALS = [
  "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
  "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
  "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
];
export const NUM_SPECIAL = 1000;

const CORPUS = [
  buildPrompt(SYNTH_CLASS_NAMES),
  "What is the image about? The X-ray shows a bone with a fracture line.",
  "café naïve Ångström façade über straße — résumé, déjà vu. Привет мир. 你好世界",
  "numbers 1234567890 and 3.14159, 2026-11-28; emoji 🙂👍🏽 done.",
  "the quick brown fox jumps over the lazy dog THE QUICK BROWN FOX",
].join("\n");

/** Byte-level BPE training on the corpus (pre-split by the tekken regex): ranks = learned order. */
function trainRanks(merges: number): Uint8Array[] {
  const words = [...CORPUS.matchAll(new RegExp(TEKKEN_PATTERN, "gu"))].map((m) => [
    ...Buffer.from(m[0], "utf8"),
  ].map((b) => Buffer.from([b]).toString("latin1")));
  const ranks: string[] = [];
  for (let b = 0; b < 256; b++) ranks.push(Buffer.from([b]).toString("latin1"));
  const known = new Set(ranks);
  for (let k = 0; k < merges; k++) {
    const counts = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.length; i++) {
        const key = `${w[i]}\u0000${w[i + 1]}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    }
    let best = "";
    let bestCount = 0;
    for (const [key, c] of counts) {
      const merged = key.replace("\u0000", "");
      if (c > bestCount && !known.has(merged)) {
        best = key;
        bestCount = c;
      }
    }
    if (bestCount === 0) break;
    const [l, r] = best.split("\u0000") as [string, string];
    ranks.push(l + r);
    known.add(l + r);
    for (const w of words) {
      for (let i = 0; i + 1 < w.length; i++) {
        if (w[i] === l && w[i + 1] === r) w.splice(i, 2, l + r);
      }
    }
  }
  return ranks.map((s) => new Uint8Array(Buffer.from(s, "latin1")));
}

export interface TokenizerDirs {
  tekkenDir: string;
  hfDir: string;
  ranks: Uint8Array[];
}

function specialsList(): string[] {
  const out: string[] = [];
  for (let i = 0; i < NUM_SPECIAL; i++) out.push(NAMED_SPECIALS[i] ?? `<SPECIAL_${i}>`);
  return out;
}

export function writeTekken(dir: string, ranks: Uint8Array[], pattern = TEKKEN_PATTERN): void {
  const specials = specialsList();
  const tekken = {
    config: {
      pattern,
      num_vocab_tokens: ranks.length,
      default_vocab_size: NUM_SPECIAL + ranks.length,
      default_num_special_tokens: NUM_SPECIAL,
      version: "v13",
    },
    vocab: ranks.map((b, rank) => ({ rank, token_bytes: Buffer.from(b).toString("base64"), token_str: null })),
    special_tokens: specials
      .map((token_str, rank) => ({ rank, token_str, is_control: true }))
      .filter((s) => !s.token_str.startsWith("<SPECIAL_")),
  };
  writeFileSync(join(dir, "tekken.json"), JSON.stringify(tekken));
}

/** What convert_tekken_tokenizer writes for the same ranks. */
export function writeHfTokenizerJson(dir: string, ranks: Uint8Array[]): void {
  const specials = specialsList();
  const key = (b: Uint8Array) => Buffer.from(b).toString("latin1");
  const rankOf = new Map(ranks.map((b, r) => [key(b), r]));
  const vocab: Record<string, number> = {};
  specials.forEach((s, id) => (vocab[s] = id));
  ranks.forEach((b, r) => (vocab[bytesToByteLevel(b)] = r + NUM_SPECIAL));
  const merges: [string, string, number][] = [];
  ranks.forEach((tok, rank) => {
    if (tok.length === 1) return;
    const local: [string, string, number][] = [];
    const t = key(tok);
    for (let i = 1; i < t.length; i++) {
      const l = t.slice(0, i);
      const r = t.slice(i);
      if (rankOf.has(l) && rankOf.has(r)) local.push([l, r, rank]);
    }
    local.sort((a, b) => rankOf.get(a[0])! - rankOf.get(b[0])! || rankOf.get(a[1])! - rankOf.get(b[1])!);
    merges.push(...local);
  });
  merges.sort((a, b) => a[2] - b[2]);
  const toBL = (s: string) => bytesToByteLevel(new Uint8Array(Buffer.from(s, "latin1")));
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: TEKKEN_PATTERN }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab,
      merges: merges.map(([l, r]) => [toBL(l), toBL(r)]),
    },
  };
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(json));
  writeFileSync(
    join(dir, "tokenizer_config.json"),
    JSON.stringify({ bos_token: "<s>", eos_token: "</s>", pad_token: "<pad>", unk_token: "<unk>" }),
  );
}

let cached: TokenizerDirs | undefined;

/** A tekken folder and its converted HF twin, built once per test process. */
export function tokenizerDirs(): TokenizerDirs {
  if (cached) return cached;
  const ranks = trainRanks(300);
  const tekkenDir = mkdtempSync(join(tmpdir(), "splint-tekken-"));
  const hfDir = mkdtempSync(join(tmpdir(), "splint-hftok-"));
  writeTekken(tekkenDir, ranks);
  writeHfTokenizerJson(hfDir, ranks);
  cached = { tekkenDir, hfDir, ranks };
  return cached;
}
