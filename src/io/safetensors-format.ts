import { InputError } from "../util/errors.ts";

/**
 * The safetensors container as huggingface/safetensors defines it: an 8-byte little-endian header
 * length N, N bytes of UTF-8 JSON (`{name: {dtype, shape, data_offsets: [begin, end)}, __metadata__?}`),
 * then the tensor bytes, offsets relative to the end of the header. This module only parses and
 * validates headers; reading and writing live in safetensors.ts.
 */

export type SafetensorsDType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "F8_E4M3"
  | "F8_E5M2"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U8"
  | "BOOL";

export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<SafetensorsDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/**
 * The order the Rust library writes tensors in (largest alignment first, see `Dtype` in
 * safetensors/src/tensor.rs, sorted descending); ties break by name. Following it makes splint's
 * files byte-identical to `safetensors.torch.save_file` for the same tensors.
 */
export const SAFETENSORS_DTYPE_RANK: Readonly<Record<SafetensorsDType, number>> = {
  BOOL: 0,
  U8: 1,
  I8: 2,
  F8_E5M2: 3,
  F8_E4M3: 4,
  I16: 5,
  F16: 6,
  BF16: 7,
  I32: 8,
  F32: 9,
  F64: 10,
  I64: 11,
};

/** Node refuses single reads and writes above 2 GiB - 1; an f32 lm_head of a 14B model is 2.7 GB. */
export const IO_CHUNK_BYTES = 1 << 30;

/** Headers above this are refused before anything is allocated (the Rust library uses 100 MB too). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface HeaderEntry {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Relative to the start of the data section. */
  readonly begin: number;
  readonly end: number;
}

export interface ParsedHeader {
  readonly entries: ReadonlyMap<string, HeaderEntry>;
  readonly metadata: Readonly<Record<string, string>>;
  /** Where the data section starts in the file: 8 + header length. */
  readonly dataStart: number;
}

export function isSafetensorsDType(value: unknown): value is SafetensorsDType {
  return typeof value === "string" && Object.hasOwn(SAFETENSORS_DTYPE_BYTES, value);
}

/** Element count of a shape; refuses shapes whose size cannot be represented exactly. */
export function elementCount(file: string, name: string, shape: readonly number[]): number {
  let count = 1;
  for (const dim of shape) {
    count *= dim;
    if (!Number.isSafeInteger(count)) throw new InputError(file, `tensor "${name}": shape [${shape.join(",")}] is too large`);
  }
  return count;
}

/** Reads the header length from the first 8 bytes and checks it against the file size and the limit. */
export function parseHeaderLength(file: string, prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8 || prefix.byteLength < 8) {
    throw new InputError(file, `not a safetensors file: ${fileSize} bytes is shorter than the 8-byte header length`);
  }
  const length = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) {
    throw new InputError(file, `safetensors header length ${length} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  }
  const n = Number(length);
  if (n < 2) throw new InputError(file, `safetensors header length ${n} is too small to hold a JSON object`);
  if (8 + n > fileSize) {
    throw new InputError(file, `safetensors header length ${n} runs past the end of the file (${fileSize} bytes): truncated or corrupt`);
  }
  return n;
}

/**
 * Validates a header as strictly as the Rust reference does: known dtypes, integer shapes, offsets
 * consistent with shape × dtype size, inside the data section, covering it without overlaps, gaps
 * or trailing bytes (anything else is a file Python's safetensors would refuse too).
 */
export function parseHeader(file: string, headerBytes: Uint8Array, fileSize: number): ParsedHeader {
  const dataStart = 8 + headerBytes.byteLength;
  const dataSize = fileSize - dataStart;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new InputError(file, "safetensors header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new InputError(file, `safetensors header is not valid JSON (${(error as Error).message})`);
  }
  if (!isPlainObject(json)) throw new InputError(file, "safetensors header is not a JSON object");

  const metadata: Record<string, string> = {};
  const entries = new Map<string, HeaderEntry>();
  for (const [name, value] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (!isPlainObject(value)) throw new InputError(file, "safetensors __metadata__ is not an object of strings");
      for (const [key, v] of Object.entries(value)) {
        if (typeof v !== "string") throw new InputError(file, `safetensors __metadata__ value "${key}" is not a string`);
        metadata[key] = v;
      }
      continue;
    }
    entries.set(name, parseEntry(file, name, value, dataSize));
  }
  checkCoverage(file, [...entries.values()], dataSize);
  return { entries, metadata, dataStart };
}

function parseEntry(file: string, name: string, value: unknown, dataSize: number): HeaderEntry {
  const where = `tensor "${name}"`;
  if (!isPlainObject(value)) throw new InputError(file, `${where}: header entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (!isSafetensorsDType(dtype)) {
    throw new InputError(file, `${where}: unsupported dtype ${JSON.stringify(dtype)} (known: ${Object.keys(SAFETENSORS_DTYPE_BYTES).join(", ")})`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new InputError(file, `${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    throw new InputError(file, `${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 <= begin <= end`);
  }
  const [begin, end] = offsets as [number, number];
  const expected = elementCount(file, name, shape) * SAFETENSORS_DTYPE_BYTES[dtype];
  if (end - begin !== expected) {
    throw new InputError(file, `${where}: ${dtype} [${shape.join(",")}] needs ${expected} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
  }
  if (end > dataSize) {
    throw new InputError(file, `${where}: data_offsets [${begin}, ${end}] run past the end of the data (${dataSize} bytes): truncated or corrupt`);
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

function checkCoverage(file: string, entries: HeaderEntry[], dataSize: number): void {
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let position = 0;
  let previous: HeaderEntry | undefined;
  for (const entry of sorted) {
    if (entry.begin < position) {
      throw new InputError(file, `tensors "${previous?.name}" and "${entry.name}" overlap (bytes ${entry.begin}..${position})`);
    }
    if (entry.begin > position) {
      throw new InputError(file, `${entry.begin - position} unclaimed bytes before tensor "${entry.name}" (offset ${position}): corrupt header`);
    }
    position = entry.end;
    previous = entry;
  }
  if (position !== dataSize) {
    throw new InputError(file, `the tensors cover ${position} bytes but the data section holds ${dataSize}: truncated, padded or corrupt`);
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
