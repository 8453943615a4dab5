import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { SYNTH_CLASS_NAMES } from "../../src/data/synth-xray.ts";
import { buildPrompt } from "../../src/text/prompt.ts";
import { bpeRanks, loadTekken } from "../../src/text/tekken.ts";
import { createStreamDecoder, loadTokenizer } from "../../src/text/tokenizer.ts";
import { InputError } from "../../src/util/errors.ts";
import { NUM_SPECIAL, tokenizerDirs, writeTekken } from "./tokenizer-fixtures.ts";

const STRINGS = [
  "hello world",
  "The quick brown fox jumps over the lazy dog.",
  "  leading and trailing spaces  ",
  "tabs\tand\nnew\n\nlines\r\n  indented",
  "café naïve Ångström façade über straße — résumé",
  "Привет мир, 你好世界, こんにちは",
  "emoji 🙂👍🏽 and 👨‍👩‍👧 family",
  "digits 1234567890 3.14159 2026-11-28",
  "what's this? it's an X-RAY, isn't it?!",
  "punctuation... ((nested)) [brackets] {braces} a/b/c",
  "spaces before punctuation , . ! ? n't 's are kept",
  "odd whitespace a\u0085b\u00a0c\ufeffd\u3000e",
  "What is the image about?",
  buildPrompt(SYNTH_CLASS_NAMES),
  "[INST]Describe[IMG][/INST]Hairline Fracture</s>",
  "<s>[INST]\nhi[IMG][IMG_BREAK][IMG][IMG_END][/INST]",
  "text<SPECIAL_500>more",
  "",
];

describe("tokenizer: tekken.json and its converted tokenizer.json agree", async () => {
  const dirs = tokenizerDirs();
  const tekken = await loadTokenizer(dirs.tekkenDir);
  const hf = await loadTokenizer(dirs.hfDir);

  it("loads each from its own file", () => {
    assert.equal(tekken.kind, "tekken.json");
    assert.equal(hf.kind, "tokenizer.json");
    assert.equal(tekken.vocabSize, NUM_SPECIAL + dirs.ranks.length);
    assert.equal(hf.vocabSize, tekken.vocabSize);
  });

  for (const s of STRINGS) {
    it(`same ids for ${JSON.stringify(s.slice(0, 40))}`, () => {
      const a = tekken.encode(s);
      const b = hf.encode(s);
      assert.deepEqual(a, b);
      assert.equal(tekken.decode(a), s);
      assert.equal(hf.decode(b), s);
    });
  }

  it("special-token strings map to their ids and no BOS is added", () => {
    for (const t of [tekken, hf]) {
      assert.deepEqual(t.encode("[INST]"), [3]);
      assert.deepEqual(t.encode("<s>"), [1]);
      assert.deepEqual(t.encode("[IMG][IMG_BREAK][IMG_END]"), [10, 12, 13]);
      assert.deepEqual(t.encode("[/INST]"), [4]);
      assert.equal(t.encode("hi")[0] !== t.bosId, true);
      assert.deepEqual([t.bosId, t.eosId, t.padId, t.imgId, t.imgBreakId, t.imgEndId], [1, 2, 11, 10, 12, 13]);
      assert.equal(t.isSpecial(10), true);
      assert.equal(t.isSpecial(NUM_SPECIAL + 65), false);
    }
  });

  it("idToToken and tokenToId agree between the two and invert each other", () => {
    for (const id of [0, 3, 10, 999, NUM_SPECIAL, NUM_SPECIAL + 32, NUM_SPECIAL + 255, tekken.vocabSize - 1]) {
      const tok = tekken.idToToken(id);
      assert.equal(tok, hf.idToToken(id));
      assert.equal(tekken.tokenToId(tok!), id);
      assert.equal(hf.tokenToId(tok!), id);
    }
    // byte 0x20 (space) is spelled Ġ in byte-level vocabularies
    assert.equal(tekken.idToToken(NUM_SPECIAL + 0x20), "Ġ");
    assert.equal(tekken.idToToken(tekken.vocabSize), undefined);
  });

  it("skipSpecialTokens drops specials when decoding", () => {
    const ids = tekken.encode("<s>[INST]Hairline Fracture</s>");
    assert.equal(tekken.decode(ids, { skipSpecialTokens: true }), "Hairline Fracture");
    assert.equal(hf.decode(ids, { skipSpecialTokens: true }), "Hairline Fracture");
  });

  it("rejects out-of-range ids when decoding", () => {
    assert.throws(() => tekken.decode([tekken.vocabSize]), /outside the vocabulary/);
    assert.throws(() => hf.decode([-1]), /outside the vocabulary/);
  });

  it("a learned vocabulary entry encodes as one token", () => {
    // " fracture" occurs a dozen times in the training corpus, so it was learned whole
    const rank = dirs.ranks.findIndex((b) => Buffer.from(b).toString("latin1") === " fracture");
    assert.ok(rank >= 256);
    assert.deepEqual(tekken.encode(" fracture"), [NUM_SPECIAL + rank]);
    assert.deepEqual(hf.encode(" fracture"), [NUM_SPECIAL + rank]);
  });
});

describe("streaming decoder", async () => {
  const tekken = await loadTokenizer(tokenizerDirs().tekkenDir);

  it("holds back split UTF-8 characters and reproduces the full decode", () => {
    for (const s of ["emoji 🙂👍🏽 and 👨‍👩‍👧", "Ångström façade 你好世界", buildPrompt(SYNTH_CLASS_NAMES)]) {
      const ids = [...tekken.encode(s), tekken.eosId];
      const stream = createStreamDecoder(tekken);
      const pieces = ids.map((id) => stream.push(id));
      pieces.push(stream.flush());
      for (const p of pieces) assert.equal(p.includes("\uFFFD"), false);
      assert.equal(pieces.join(""), tekken.decode(ids));
    }
  });

  it("emits nothing for the first bytes of a 4-byte character given byte by byte", () => {
    const bytes = [...Buffer.from("🙂", "utf8")].map((b) => NUM_SPECIAL + b);
    const stream = createStreamDecoder(tekken);
    assert.deepEqual(bytes.map((id) => stream.push(id)), ["", "", "", "🙂"]);
  });

  it("can skip special tokens", () => {
    const stream = createStreamDecoder(tekken, { skipSpecialTokens: true });
    const out = [...tekken.encode("Spiral Fracture"), tekken.eosId].map((id) => stream.push(id)).join("") + stream.flush();
    assert.equal(out, "Spiral Fracture");
  });
});

describe("tekken details", () => {
  it("runs Oniguruma-style patterns: inline (?i:…) groups and Unicode White_Space \\s", () => {
    const dir = mkdtempSync(join(tmpdir(), "splint-tekken-re-"));
    writeTekken(dir, [...Array(256).keys()].map((b) => Uint8Array.of(b)), "(?i:'s|'t)|\\p{L}+|\\s+|[^\\s\\p{L}]+");
    const model = loadTekken(join(dir, "tekken.json"));
    assert.deepEqual("it'S a'T".match(model.pattern), ["it", "'S", " ", "a", "'T"]);
    // U+0085 is White_Space (JS \\s misses it); U+FEFF is not (JS \\s includes it)
    assert.deepEqual("a\u0085b\ufeff".match(model.pattern), ["a", "\u0085", "b", "\ufeff"]);
  });

  it("uses only the first default_vocab_size - num_special ranks", () => {
    const dir = mkdtempSync(join(tmpdir(), "splint-tekken-cut-"));
    const ranks = [...Array(256).keys()].map((b) => Uint8Array.of(b));
    ranks.push(Uint8Array.from(Buffer.from("ab")));
    writeTekken(dir, ranks);
    const file = join(dir, "tekken.json");
    const data = JSON.parse(readFileSync(file, "utf8"));
    data.config.default_vocab_size = NUM_SPECIAL + 256;
    writeFileSync(file, JSON.stringify(data));
    const model = loadTekken(file);
    assert.equal(model.ranks.length, 256);
    assert.deepEqual(bpeRanks(model, "ab"), [0x61, 0x62]);
  });

  it("merges the lowest-ranked pair first", () => {
    const dir = mkdtempSync(join(tmpdir(), "splint-tekken-bpe-"));
    const ranks = [...Array(256).keys()].map((b) => Uint8Array.of(b));
    for (const s of ["bc", "ab", "xab"]) ranks.push(Uint8Array.from(Buffer.from(s)));
    writeTekken(dir, ranks);
    const model = loadTekken(join(dir, "tekken.json"));
    // "bc" (rank 256) beats "ab" (257); then "a"+"bc" is not a token, so no further merge
    assert.deepEqual(bpeRanks(model, "abcd"), [0x61, 256, 0x64]);
    // "xab" is reached through "x"+"ab" even though "xa" is no token
    assert.deepEqual(bpeRanks(model, "xab"), [258]);
    assert.deepEqual(bpeRanks(model, "xabc"), [0x78, 0x61, 256]);
  });

  it("reports a broken file by name", async () => {
    const dir = mkdtempSync(join(tmpdir(), "splint-tekken-bad-"));
    writeFileSync(join(dir, "tekken.json"), JSON.stringify({ config: { pattern: "\\s+" }, vocab: [{ rank: 0 }] }));
    await assert.rejects(loadTokenizer(dir), (e: unknown) => e instanceof InputError && /tekken\.json.*token_bytes/.test(e.message));
    const empty = mkdtempSync(join(tmpdir(), "splint-tok-none-"));
    await assert.rejects(loadTokenizer(empty), /neither tokenizer\.json nor tekken\.json/);
  });
});

