import { randomBytes } from "node:crypto";
import { open, rename, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { tempSibling, writeFileAtomic } from "../util/atomic.ts";
import { InputError } from "../util/errors.ts";
import { elementCount, IO_CHUNK_BYTES, SAFETENSORS_DTYPE_BYTES, SAFETENSORS_DTYPE_RANK, type SafetensorsDType } from "./safetensors-format.ts";

export interface TensorToWrite {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Little-endian element bytes; any typed array (its bytes are written as they are). */
  readonly data: ArrayBufferView;
}

export interface ShardedCheckpoint {
  /** Shard file names in order, relative to the folder. */
  readonly shards: readonly string[];
  readonly indexFile: string;
  /** Sum of the tensors' byte sizes, as transformers records it in the index. */
  readonly totalSize: number;
}

/** What the header needs to know about a tensor; `source` is where its bytes are now. */
interface Placed {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly byteLength: number;
}

function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function checkTensor(file: string, t: TensorToWrite, seen: Set<string>): void {
  if (t.name === "__metadata__") throw new InputError(file, `"__metadata__" cannot be a tensor name`);
  if (seen.has(t.name)) throw new InputError(file, `tensor "${t.name}" is given twice`);
  seen.add(t.name);
  if (!Object.hasOwn(SAFETENSORS_DTYPE_BYTES, t.dtype)) throw new InputError(file, `tensor "${t.name}": unknown dtype ${t.dtype}`);
  const expected = elementCount(file, t.name, t.shape) * SAFETENSORS_DTYPE_BYTES[t.dtype];
  if (t.data.byteLength !== expected) {
    throw new InputError(file, `tensor "${t.name}": ${t.dtype} [${t.shape.join(",")}] needs ${expected} bytes, got ${t.data.byteLength}`);
  }
}

/** Python's order: dtype alignment descending, then name by UTF-8 bytes. */
function pythonOrder(a: Placed, b: Placed): number {
  return SAFETENSORS_DTYPE_RANK[b.dtype] - SAFETENSORS_DTYPE_RANK[a.dtype] || Buffer.compare(Buffer.from(a.name), Buffer.from(b.name));
}

/**
 * The 8-byte length plus the JSON header, laid out as the Rust library serialises it (compact
 * JSON, `__metadata__` first, tensors in data order, spaces up to an 8-byte boundary).
 */
function encodeHeader(ordered: readonly Placed[], metadata: Readonly<Record<string, string>> | undefined): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    header.__metadata__ = Object.fromEntries(Object.entries(metadata).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }
  let offset = 0;
  for (const t of ordered) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.byteLength] };
    offset += t.byteLength;
  }
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const padded = json.byteLength + ((8 - (json.byteLength % 8)) % 8);
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

async function writeAll(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, done, Math.min(IO_CHUNK_BYTES, bytes.byteLength - done), position + done);
    done += bytesWritten;
  }
}

/** Writes to a temp file beside `path` and renames it into place, so readers never see half a file. */
async function atomically(path: string, fill: (handle: FileHandle) => Promise<void>): Promise<void> {
  const temp = tempSibling(path);
  const handle = await open(temp, "wx");
  try {
    await fill(handle);
    await handle.sync();
    await handle.close();
    await rename(temp, path);
  } catch (error) {
    await handle.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw error;
  }
}

/**
 * Writes one .safetensors file atomically. Byte-identical to `safetensors.torch.save_file` for the
 * same tensors and metadata.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const seen = new Set<string>();
  for (const t of tensors) checkTensor(path, t, seen);
  const ordered = tensors.map((t) => ({ ...t, byteLength: t.data.byteLength })).sort(pythonOrder);
  await atomically(path, async (handle) => {
    const header = encodeHeader(ordered, metadata);
    await writeAll(handle, header, 0);
    let position = header.byteLength;
    for (const t of ordered) {
      await writeAll(handle, bytesOf(t.data), position);
      position += t.byteLength;
    }
  });
}

/** A tensor already spilled to a shard's scratch file, at `at`. */
interface Spilled extends Placed {
  readonly at: number;
}

const COPY_CHUNK = 64 * 1024 * 1024;

/**
 * One shard being collected: tensor bytes go to a scratch file as they arrive (the header, which
 * comes first in the file, can only be written once the shard's tensors are known), then the shard
 * is assembled from the scratch file in Python's tensor order.
 */
class ShardBuilder {
  readonly tensors: Spilled[] = [];
  bytes = 0;

  private constructor(
    private readonly scratchPath: string,
    private readonly scratch: FileHandle,
  ) {}

  static async create(dir: string): Promise<ShardBuilder> {
    const path = join(dir, `.shard-${process.pid}-${randomBytes(4).toString("hex")}.scratch`);
    return new ShardBuilder(path, await open(path, "wx+"));
  }

  async add(t: TensorToWrite): Promise<void> {
    await writeAll(this.scratch, bytesOf(t.data), this.bytes);
    this.tensors.push({ name: t.name, dtype: t.dtype, shape: [...t.shape], byteLength: t.data.byteLength, at: this.bytes });
    this.bytes += t.data.byteLength;
  }

  /** Writes the finished shard to a temp path and returns it (renamed once the shard count is known). */
  async finish(dir: string, metadata: Readonly<Record<string, string>>): Promise<string> {
    const ordered = [...this.tensors].sort(pythonOrder);
    const temp = tempSibling(join(dir, "shard.safetensors"));
    const out = await open(temp, "wx");
    try {
      const header = encodeHeader(ordered, metadata);
      await writeAll(out, header, 0);
      let position = header.byteLength;
      const buffer = new Uint8Array(Math.min(COPY_CHUNK, Math.max(1, this.bytes)));
      for (const t of ordered) {
        for (let done = 0; done < t.byteLength; ) {
          const n = Math.min(buffer.byteLength, t.byteLength - done);
          const { bytesRead } = await this.scratch.read(buffer, 0, n, t.at + done);
          if (bytesRead === 0) throw new Error(`scratch file ${this.scratchPath} is shorter than written`);
          await writeAll(out, buffer.subarray(0, bytesRead), position);
          position += bytesRead;
          done += bytesRead;
        }
      }
      await out.sync();
      await out.close();
    } catch (error) {
      await out.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw error;
    } finally {
      await this.discard();
    }
    return temp;
  }

  async discard(): Promise<void> {
    await this.scratch.close().catch(() => undefined);
    await unlink(this.scratchPath).catch(() => undefined);
  }
}

export function shardName(index: number, count: number): string {
  return `model-${String(index).padStart(5, "0")}-of-${String(count).padStart(5, "0")}.safetensors`;
}

/**
 * Writes a sharded checkpoint as transformers does (`model-0000i-of-0000N.safetensors` plus
 * `model.safetensors.index.json`), taking tensors one at a time so a merged checkpoint of many GB
 * never has to be in memory at once. A shard is closed when the next tensor would push it past
 * `maxShardBytes` (a tensor larger than that gets a shard of its own). The index is written last.
 */
export async function writeShardedCheckpoint(
  dir: string,
  tensors: Iterable<TensorToWrite> | AsyncIterable<TensorToWrite>,
  maxShardBytes: number,
  metadata: Readonly<Record<string, string>> = { format: "pt" },
): Promise<ShardedCheckpoint> {
  if (!(maxShardBytes > 0)) throw new InputError(dir, `max shard size must be positive, got ${maxShardBytes}`);
  const seen = new Set<string>();
  const finished: { temp: string; names: string[] }[] = [];
  let current: ShardBuilder | undefined;
  let totalSize = 0;
  try {
    for await (const t of tensors) {
      checkTensor(dir, t, seen);
      if (current && current.bytes > 0 && current.bytes + t.data.byteLength > maxShardBytes) {
        const names = current.tensors.map((s) => s.name);
        const builder = current;
        current = undefined;
        finished.push({ temp: await builder.finish(dir, metadata), names });
      }
      current ??= await ShardBuilder.create(dir);
      await current.add(t);
      totalSize += t.data.byteLength;
    }
    if (current) {
      const names = current.tensors.map((s) => s.name);
      const builder = current;
      current = undefined;
      finished.push({ temp: await builder.finish(dir, metadata), names });
    }
    const shards = finished.map((_, i) => shardName(i + 1, finished.length));
    const weightMap: Record<string, string> = {};
    for (const [i, shard] of finished.entries()) {
      await rename(shard.temp, join(dir, shards[i] as string));
      for (const name of shard.names) weightMap[name] = shards[i] as string;
    }
    const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const indexFile = "model.safetensors.index.json";
    const indexText = `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sortedMap }, null, 2)}\n`;
    const indexPath = join(dir, indexFile);
    await writeFileAtomic(indexPath, indexText);
    return { shards, indexFile, totalSize };
  } catch (error) {
    await current?.discard();
    await Promise.all(finished.map((f) => unlink(f.temp).catch(() => undefined)));
    throw error;
  }
}
