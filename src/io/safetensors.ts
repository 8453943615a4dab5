import { open, readFile, readdir, stat, type FileHandle } from "node:fs/promises";
import { basename, isAbsolute, join } from "node:path";
import { bf16ArrayToF32 } from "../tensor/bf16.ts";
import { FP8_E4M3_TABLE } from "../tensor/fp8.ts";
import { InputError } from "../util/errors.ts";
import {
  elementCount,
  IO_CHUNK_BYTES,
  parseHeader,
  parseHeaderLength,
  SAFETENSORS_DTYPE_BYTES,
  type HeaderEntry,
  type SafetensorsDType,
} from "./safetensors-format.ts";

export type { SafetensorsDType } from "./safetensors-format.ts";
export { writeSafetensors, writeShardedCheckpoint, shardName, type TensorToWrite, type ShardedCheckpoint } from "./safetensors-write.ts";

export const SAFETENSORS_FILE = "model.safetensors";
export const SAFETENSORS_INDEX_FILE = "model.safetensors.index.json";

export interface TensorInfo {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly byteLength: number;
  /** The file (shard) holding the tensor. */
  readonly file: string;
}

/** One tensor's bytes as stored (little-endian), with where it came from for error messages. */
export interface StoredTensor {
  readonly name: string;
  readonly file: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/**
 * A checkpoint opened lazily: headers are parsed up front, tensor bytes are read on demand with
 * positioned reads of exactly that tensor's range, so a 28 GB checkpoint never sits in memory.
 */
export interface TensorSource {
  keys(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): Promise<StoredTensor>;
  /**
   * Rows [start, start + count) of the outermost dimension only (shape [count, …rest]): lets a
   * caller stream a 1.3 GB embedding through in slices instead of holding it whole.
   */
  readRows(name: string, start: number, count: number): Promise<StoredTensor>;
  /** `__metadata__` of a single file; of the first shard for sharded checkpoints. */
  readonly metadata: Readonly<Record<string, string>>;
  close(): Promise<void>;
}

interface OpenFile {
  readonly path: string;
  readonly handle: FileHandle;
  readonly entries: ReadonlyMap<string, HeaderEntry>;
  readonly metadata: Readonly<Record<string, string>>;
  readonly dataStart: number;
}

async function openFile(path: string): Promise<OpenFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    throw new InputError(path, `cannot open safetensors file (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new InputError(path, "is not a file");
    const size = info.size;
    const prefix = await readExactly(handle, path, 0, Math.min(8, size));
    const headerLength = parseHeaderLength(path, prefix, size);
    const header = parseHeader(path, await readExactly(handle, path, 8, headerLength), size);
    return { path, handle, ...header };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

async function readExactly(handle: FileHandle, path: string, position: number, length: number): Promise<Uint8Array> {
  // Unpooled and not zero-filled: every byte is overwritten by the read, and offset 0 keeps typed views aligned.
  const buffer = new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, Math.min(IO_CHUNK_BYTES, length - done), position + done);
    if (bytesRead === 0) {
      throw new InputError(path, `file ended at byte ${position + done} while reading ${length} bytes at ${position}: truncated (changed while open?)`);
    }
    done += bytesRead;
  }
  return buffer;
}

/** Builds the lazy view over a set of open files and a name → file map. */
function sourceOf(files: readonly OpenFile[], locate: ReadonlyMap<string, OpenFile>, describe: string): TensorSource {
  const entryOf = (name: string): { file: OpenFile; entry: HeaderEntry } => {
    const file = locate.get(name);
    const entry = file?.entries.get(name);
    if (!file || !entry) throw new InputError(describe, `no tensor named "${name}"`);
    return { file, entry };
  };
  return {
    keys: () => [...locate.keys()],
    has: (name) => locate.has(name),
    info(name) {
      const { file, entry } = entryOf(name);
      return { dtype: entry.dtype, shape: entry.shape, byteLength: entry.end - entry.begin, file: file.path };
    },
    async read(name) {
      const { file, entry } = entryOf(name);
      const data = await readExactly(file.handle, file.path, file.dataStart + entry.begin, entry.end - entry.begin);
      return { name, file: file.path, dtype: entry.dtype, shape: entry.shape, data };
    },
    async readRows(name, start, count) {
      const { file, entry } = entryOf(name);
      const rows = entry.shape[0] ?? 1;
      if (entry.shape.length === 0 || !Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > rows) {
        throw new InputError(file.path, `tensor "${name}": rows [${start}, ${start + count}) are outside its shape [${entry.shape.join(",")}]`);
      }
      const rowBytes = (entry.end - entry.begin) / rows;
      const data = await readExactly(file.handle, file.path, file.dataStart + entry.begin + start * rowBytes, count * rowBytes);
      return { name, file: file.path, dtype: entry.dtype, shape: [count, ...entry.shape.slice(1)], data };
    },
    metadata: files[0]?.metadata ?? {},
    async close() {
      await Promise.all(files.map((f) => f.handle.close()));
    },
  };
}

/** Opens one .safetensors file (header validated now, tensors read on demand). */
export async function openSafetensors(path: string): Promise<TensorSource> {
  const file = await openFile(path);
  return sourceOf([file], new Map([...file.entries.keys()].map((name) => [name, file])), path);
}

/**
 * Opens a Hugging Face checkpoint folder: `model.safetensors.index.json` (sharded) or
 * `model.safetensors`. Mistral's native `consolidated.safetensors` holds the same weights under
 * other names and is never read.
 */
export async function openCheckpoint(dir: string): Promise<TensorSource> {
  const indexPath = join(dir, SAFETENSORS_INDEX_FILE);
  if (await isFile(indexPath)) return openSharded(dir, indexPath);
  const single = join(dir, SAFETENSORS_FILE);
  if (await isFile(single)) return openSafetensors(single);
  let names: string[] = [];
  try {
    names = await readdir(dir);
  } catch (error) {
    throw new InputError(dir, `cannot read the checkpoint folder (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const others = names.filter((n) => n.endsWith(".safetensors"));
  const hint = others.some((n) => n.startsWith("consolidated"))
    ? "consolidated*.safetensors is Mistral's native layout; splint reads the Hugging Face layout of the same repo (model*.safetensors)"
    : undefined;
  throw new InputError(dir, `no ${SAFETENSORS_FILE} or ${SAFETENSORS_INDEX_FILE} in the checkpoint folder`, hint);
}

async function openSharded(dir: string, indexPath: string): Promise<TensorSource> {
  const weightMap = parseIndex(indexPath, await readFile(indexPath, "utf8"));
  const files = new Map<string, OpenFile>();
  try {
    for (const shard of new Set(weightMap.values())) files.set(shard, await openFile(join(dir, shard)));
  } catch (error) {
    await Promise.all([...files.values()].map((f) => f.handle.close()));
    throw error;
  }
  const locate = new Map<string, OpenFile>();
  for (const [name, shard] of weightMap) {
    const file = files.get(shard) as OpenFile;
    if (!file.entries.has(name)) {
      await Promise.all([...files.values()].map((f) => f.handle.close()));
      throw new InputError(indexPath, `the index puts tensor "${name}" in ${shard}, which has no such tensor`);
    }
    locate.set(name, file);
  }
  return sourceOf([...files.values()], locate, indexPath);
}

function parseIndex(indexPath: string, text: string): Map<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new InputError(indexPath, `not valid JSON (${(error as Error).message})`);
  }
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new InputError(indexPath, `has no "weight_map" object`);
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== "string" || shard === "" || isAbsolute(shard) || basename(shard) !== shard) {
      throw new InputError(indexPath, `weight_map entry "${name}" names ${JSON.stringify(shard)}, not a file beside the index`);
    }
    map.set(name, shard);
  }
  return map;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

// ---- decoding stored bytes into typed arrays -------------------------------------------------

function mismatch(t: StoredTensor, wanted: string): InputError {
  return new InputError(t.file, `tensor "${t.name}" is ${t.dtype}, expected ${wanted}`);
}

/** A view when the bytes are aligned for T, a copy otherwise (safetensors does not align tensors). */
function alignedBytes(data: Uint8Array, elementBytes: number): ArrayBuffer {
  if (data.byteOffset % elementBytes === 0 && data.buffer instanceof ArrayBuffer) return data.buffer;
  return data.slice().buffer;
}

function view<T>(t: StoredTensor, make: (buffer: ArrayBuffer, offset: number, length: number) => T, bytes: number): T {
  const buffer = alignedBytes(t.data, bytes);
  const offset = buffer === t.data.buffer ? t.data.byteOffset : 0;
  return make(buffer, offset, t.data.byteLength / bytes);
}

/** Decodes any float dtype (and integers, exactly where they fit) to f32. FP8 comes back unscaled. */
export function toFloat32(t: StoredTensor): Float32Array {
  const n = elementCount(t.file, t.name, t.shape);
  switch (t.dtype) {
    case "F32":
      return view(t, (b, o, l) => new Float32Array(b, o, l), 4);
    case "F64":
      return Float32Array.from(view(t, (b, o, l) => new Float64Array(b, o, l), 8));
    case "BF16":
      return bf16ArrayToF32(view(t, (b, o, l) => new Uint16Array(b, o, l), 2));
    case "F16":
      return f16ToFloat32(view(t, (b, o, l) => new Uint16Array(b, o, l), 2));
    case "F8_E4M3":
    case "F8_E5M2": {
      const table = t.dtype === "F8_E4M3" ? FP8_E4M3_TABLE : fp8E5M2Table();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[t.data[i] as number] as number;
      return out;
    }
    default:
      return Float32Array.from(toInt32(t));
  }
}

/** Raw bf16 bits (no conversion); the engine keeps bf16 weights 16-bit in memory. */
export function toBf16Bits(t: StoredTensor): Uint16Array {
  if (t.dtype !== "BF16") throw mismatch(t, "BF16");
  return view(t, (b, o, l) => new Uint16Array(b, o, l), 2);
}

/** Raw fp8 e4m3 bytes; the per-tensor scale lives in a separate `*_scale_inv` tensor. */
export function toFp8Bytes(t: StoredTensor): Uint8Array {
  if (t.dtype !== "F8_E4M3") throw mismatch(t, "F8_E4M3");
  return t.data;
}

/** Integer tensors as i32; I64 values outside the i32 range are an error, never silently wrapped. */
export function toInt32(t: StoredTensor): Int32Array {
  switch (t.dtype) {
    case "I32":
      return view(t, (b, o, l) => new Int32Array(b, o, l), 4);
    case "I64": {
      const wide = view(t, (b, o, l) => new BigInt64Array(b, o, l), 8);
      const out = new Int32Array(wide.length);
      for (let i = 0; i < wide.length; i++) {
        const v = wide[i] as bigint;
        if (v < -2147483648n || v > 2147483647n) {
          throw new InputError(t.file, `tensor "${t.name}": I64 value ${v} at index ${i} does not fit in i32`);
        }
        out[i] = Number(v);
      }
      return out;
    }
    case "I16":
      return Int32Array.from(view(t, (b, o, l) => new Int16Array(b, o, l), 2));
    case "I8":
      return Int32Array.from(new Int8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    case "U8":
    case "BOOL":
      return Int32Array.from(t.data);
    default:
      throw mismatch(t, "an integer dtype (I64, I32, I16, I8, U8, BOOL)");
  }
}

export function f16ToFloat32(bits: Uint16Array): Float32Array {
  const table = f16Table();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i] as number] as number;
  return out;
}

let f16Cache: Float32Array | undefined;
function f16Table(): Float32Array {
  if (f16Cache) return f16Cache;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) table[h] = decodeMinifloat(h, 5, 10);
  return (f16Cache = table);
}

let e5m2Cache: Float32Array | undefined;
function fp8E5M2Table(): Float32Array {
  if (e5m2Cache) return e5m2Cache;
  const table = new Float32Array(256);
  for (let b = 0; b < 256; b++) table[b] = decodeMinifloat(b, 5, 2);
  return (e5m2Cache = table);
}

/** An IEEE-style sign / exponent / mantissa float of the given widths (top exponent = inf/NaN). */
function decodeMinifloat(bits: number, exponentBits: number, mantissaBits: number): number {
  const sign = bits >> (exponentBits + mantissaBits) ? -1 : 1;
  const exponent = (bits >> mantissaBits) & ((1 << exponentBits) - 1);
  const mantissa = bits & ((1 << mantissaBits) - 1);
  const bias = (1 << (exponentBits - 1)) - 1;
  if (exponent === (1 << exponentBits) - 1) return mantissa ? Number.NaN : sign * Infinity;
  if (exponent === 0) return sign * mantissa * 2 ** (1 - bias - mantissaBits);
  return sign * (1 + mantissa / (1 << mantissaBits)) * 2 ** (exponent - bias);
}

/** Bytes per element of a safetensors dtype (re-exported for callers building tensors to write). */
export function dtypeBytes(dtype: SafetensorsDType): number {
  return SAFETENSORS_DTYPE_BYTES[dtype];
}
