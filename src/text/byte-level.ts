/**
 * GPT-2's byte ↔ printable-character table (`bytes_to_unicode` in transformers), which byte-level
 * BPE `tokenizer.json` files use to spell token bytes as strings. Tekken tokens are raw bytes; this
 * table is how their ids and strings line up with the HF `tokenizer.json` that transformers'
 * `convert_tekken_tokenizer` writes.
 */

function buildByteToChar(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Array<string>(256);
  for (const b of printable) table[b] = String.fromCodePoint(b);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    if (table[b] === undefined) table[b] = String.fromCodePoint(256 + next++);
  }
  return table;
}

const BYTE_TO_CHAR = buildByteToChar();
const CHAR_TO_BYTE = new Map<string, number>(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** Token bytes spelled the way byte-level `tokenizer.json` vocabularies spell them. */
export function bytesToByteLevel(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += BYTE_TO_CHAR[b];
  return s;
}

/** The inverse of bytesToByteLevel; undefined when a character is outside the table. */
export function byteLevelToBytes(token: string): Uint8Array | undefined {
  const out: number[] = [];
  for (const ch of token) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b === undefined) return undefined;
    out.push(b);
  }
  return Uint8Array.from(out);
}
