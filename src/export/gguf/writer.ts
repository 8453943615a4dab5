import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { IO_CHUNK_BYTES } from "../../io/safetensors-format.ts";
import { tempSibling } from "../../util/atomic.ts";
import { SplintError } from "../../util/errors.ts";
import {
  alignUp,
  GgmlType,
  GGUF_MAGIC,
  GGUF_VERSION,
  GgufValueType,
  tensorBytes,
  type GgmlTypeName,
  type GgufMetadata,
  type GgufValue,
} from "./format.ts";

/**
 * Streaming GGUF writer. Every tensor's size follows from its shape and type, so the header (with
 * each tensor's data offset) is written first and the tensors are then produced one at a time:
 * memory holds one tensor, never the model. The file is written under a temporary name, synced and
 * renamed into place, so a reader never sees half a file and a failed export leaves nothing.
 */

export interface GgufTensorPlan {
  /** The GGUF name, e.g. `blk.0.attn_q.weight`. */
  readonly name: string;
  readonly type: GgmlTypeName;
  /** Row-major shape, outermost first (as in safetensors); GGUF stores it reversed. */
  readonly shape: readonly number[];
}

export interface GgufWriteResult {
  readonly path: string;
  readonly bytes: number;
  readonly tensors: number;
}

/** Bytes of one planned tensor. */
export function planBytes(t: GgufTensorPlan): number {
  const count = t.shape.reduce((a, b) => a * b, 1);
  return tensorBytes(t.type, t.shape[t.shape.length - 1] ?? 1, count);
}

class ByteSink {
  private chunks: Buffer[] = [];
  length = 0;
  private push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  i32(v: number): void {
    const b = Buffer.allocUnsafe(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.allocUnsafe(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  u8(v: number): void {
    this.push(Buffer.from([v]));
  }
  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    this.push(bytes);
  }
  zeros(n: number): void {
    if (n > 0) this.push(Buffer.alloc(n));
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

function writeValue(sink: ByteSink, key: string, v: GgufValue): void {
  const checkInt = (n: number, lo: number, hi: number): number => {
    if (!Number.isInteger(n) || n < lo || n > hi) throw new SplintError(`GGUF metadata ${key}: ${n} does not fit the key's integer type`);
    return n;
  };
  switch (v.type) {
    case "u32":
      sink.u32(GgufValueType.UINT32);
      sink.u32(checkInt(v.value, 0, 0xffffffff));
      return;
    case "i32":
      sink.u32(GgufValueType.INT32);
      sink.i32(checkInt(v.value, -0x80000000, 0x7fffffff));
      return;
    case "f32":
      sink.u32(GgufValueType.FLOAT32);
      sink.f32(v.value);
      return;
    case "bool":
      sink.u32(GgufValueType.BOOL);
      sink.u8(v.value ? 1 : 0);
      return;
    case "string":
      sink.u32(GgufValueType.STRING);
      sink.string(v.value);
      return;
    case "string[]":
      sink.u32(GgufValueType.ARRAY);
      sink.u32(GgufValueType.STRING);
      sink.u64(v.value.length);
      for (const s of v.value) sink.string(s);
      return;
    case "i32[]":
      sink.u32(GgufValueType.ARRAY);
      sink.u32(GgufValueType.INT32);
      sink.u64(v.value.length);
      for (const n of v.value) sink.i32(checkInt(n, -0x80000000, 0x7fffffff));
      return;
    case "f32[]":
      sink.u32(GgufValueType.ARRAY);
      sink.u32(GgufValueType.FLOAT32);
      sink.u64(v.value.length);
      for (const n of v.value) sink.f32(n);
      return;
  }
}

/** The header through the padding before the data section, and each tensor's data offset. */
export function encodeGgufHeader(metadata: GgufMetadata, tensors: readonly GgufTensorPlan[]): { header: Buffer; offsets: number[] } {
  const keys = new Set<string>();
  for (const [key] of metadata) {
    if (keys.has(key)) throw new SplintError(`GGUF metadata key ${key} is given twice`);
    keys.add(key);
  }
  const names = new Set<string>();
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(GGUF_VERSION);
  sink.u64(tensors.length);
  sink.u64(metadata.length);
  for (const [key, value] of metadata) {
    sink.string(key);
    writeValue(sink, key, value);
  }
  const offsets: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new SplintError(`GGUF tensor ${t.name} is planned twice`);
    names.add(t.name);
    // ggml's tensor names are fixed 64-byte buffers (GGML_MAX_NAME) including the NUL.
    if (Buffer.byteLength(t.name) >= 64) throw new SplintError(`GGUF tensor name ${t.name} is longer than ggml's 63 bytes`);
    if (t.shape.length < 1 || t.shape.length > 4) throw new SplintError(`GGUF tensor ${t.name}: ggml holds 1 to 4 dimensions, got [${t.shape.join(",")}]`);
    sink.string(t.name);
    sink.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) sink.u64(t.shape[d]!);
    sink.u32(GgmlType[t.type]);
    sink.u64(offset);
    offsets.push(offset);
    offset = alignUp(offset + planBytes(t));
  }
  sink.zeros(alignUp(sink.length) - sink.length);
  return { header: sink.bytes(), offsets };
}

async function writeAll(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const { bytesWritten } = await handle.write(data, done, Math.min(IO_CHUNK_BYTES, data.byteLength - done), position + done);
    done += bytesWritten;
  }
}

/**
 * Writes `path` atomically. `produce` is called once per tensor, in plan order, and yields the
 * tensor's bytes (already in the planned ggml type) in as many pieces as it likes: a large
 * embedding goes through in row slices. The pieces must add up to exactly the planned size.
 */
export async function writeGguf(
  path: string,
  metadata: GgufMetadata,
  tensors: readonly GgufTensorPlan[],
  produce: (t: GgufTensorPlan, index: number) => AsyncIterable<Uint8Array>,
): Promise<GgufWriteResult> {
  const { header, offsets } = encodeGgufHeader(metadata, tensors);
  const tmp = tempSibling(path);
  const handle = await open(tmp, "w");
  try {
    await writeAll(handle, header, 0);
    let end = header.length;
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      const expected = planBytes(t);
      const start = header.length + offsets[i]!;
      let written = 0;
      let overflow = false;
      for await (const piece of produce(t, i)) {
        if (written + piece.byteLength > expected) {
          overflow = true;
          break;
        }
        await writeAll(handle, piece, start + written);
        written += piece.byteLength;
      }
      if (overflow || written !== expected) {
        throw new SplintError(`GGUF tensor ${t.name}: produced ${overflow ? "more than the planned" : written} bytes, the ${t.type} [${t.shape.join(",")}] plan needs ${expected}`);
      }
      end = start + written;
      const padded = header.length + alignUp(offsets[i]! + written);
      // The file ends right after the last tensor's padding, as gguf-py writes it.
      if (padded > end) await writeAll(handle, new Uint8Array(padded - end), end);
      end = padded;
    }
    await handle.sync();
    await handle.close();
    await rename(tmp, path);
    return { path, bytes: end, tensors: tensors.length };
  } catch (error) {
    await handle.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw error;
  }
}
