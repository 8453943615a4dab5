import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";

/**
 * TensorBoard event files, written directly (no npm package writes them without pulling in
 * TensorFlow.js; the format is small). A file is a sequence of TFRecords:
 *
 *   uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes | data | uint32 masked CRC-32C of data
 *
 * where each data is one `tensorflow.Event` protobuf: wall_time (1, double), step (2, int64),
 * file_version (3, string, "brain.Event:2" in the first record), summary (5: repeated Value
 * {tag (1), simple_value (2, float)}) or session_log (7: {status (1): START = 1}). TensorBoard's
 * scalar plugin reads simple_value summaries as scalars (as PyTorch's SummaryWriter writes them),
 * and a SessionLog START at step N makes it drop the points at steps ≥ N from earlier files, which
 * is what a resumed run needs. `tensorboard --logdir RUN` finds every events.out.tfevents.* file
 * under RUN, each folder a run.
 */

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32C (Castagnoli), the checksum TFRecord uses. */
export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) crc = CRC32C_TABLE[(crc ^ b) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotated right by 15 bits plus a constant, so CRCs of CRCs stay apart. */
export function maskedCrc32c(bytes: Uint8Array): number {
  const crc = crc32c(bytes);
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;
}

/** One TFRecord around `data`. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/** A minimal protobuf encoder: the field kinds an Event uses. */
class Proto {
  private readonly parts: number[] = [];

  private varint(value: number): void {
    // Non-negative integers up to 2^53 (steps, lengths, tags): no BigInt needed.
    let v = value;
    while (v >= 0x80) {
      this.parts.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.parts.push(v);
  }

  private key(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  double(field: number, value: number): this {
    this.key(field, 1);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, value, true);
    this.parts.push(...b);
    return this;
  }

  float(field: number, value: number): this {
    this.key(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.parts.push(...b);
    return this;
  }

  int(field: number, value: number): this {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`protobuf varint field ${field}: ${value} is not a non-negative safe integer`);
    this.key(field, 0);
    this.varint(value);
    return this;
  }

  bytes(field: number, value: Uint8Array): this {
    this.key(field, 2);
    this.varint(value.length);
    this.parts.push(...value);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

export const FILE_VERSION = "brain.Event:2";

/** An Event holding scalar summaries (tag → value) at one step. */
export function scalarEvent(wallTime: number, step: number, scalars: Readonly<Record<string, number>>): Uint8Array {
  const summary = new Proto();
  for (const [tag, value] of Object.entries(scalars)) summary.bytes(1, new Proto().string(1, tag).float(2, value).finish());
  return new Proto().double(1, wallTime).int(2, step).bytes(5, summary.finish()).finish();
}

export function fileVersionEvent(wallTime: number): Uint8Array {
  return new Proto().double(1, wallTime).string(3, FILE_VERSION).finish();
}

/** SessionLog START at `step`: TensorBoard discards earlier points at steps ≥ step (a restart). */
export function sessionStartEvent(wallTime: number, step: number): Uint8Array {
  return new Proto().double(1, wallTime).int(2, step).bytes(7, new Proto().int(1, 1).finish()).finish();
}

/**
 * Appends events to a new events.out.tfevents.<time>.<host>.<pid>.<n> file in `dir`. Each record
 * is written (and flushed to the OS) in one call, so a killed run leaves whole records behind; a
 * TensorBoard reading the file meanwhile sees the points so far.
 */
export class EventFileWriter {
  readonly file: string;
  private fd: number | null;
  private static counter = 0;

  constructor(dir: string, opts: { now?: () => number } = {}) {
    this.now = opts.now ?? (() => Date.now() / 1000);
    mkdirSync(dir, { recursive: true });
    const t = this.now();
    this.file = join(dir, `events.out.tfevents.${Math.floor(t)}.${hostname()}.${process.pid}.${EventFileWriter.counter++}`);
    this.fd = openSync(this.file, "a");
    this.write(fileVersionEvent(t));
  }

  private readonly now: () => number;

  scalars(step: number, values: Readonly<Record<string, number>>): void {
    const finite = Object.fromEntries(Object.entries(values).filter(([, v]) => Number.isFinite(v)));
    if (Object.keys(finite).length > 0) this.write(scalarEvent(this.now(), step, finite));
  }

  sessionStart(step: number): void {
    this.write(sessionStartEvent(this.now(), step));
  }

  close(): void {
    if (this.fd === null) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = null;
  }

  private write(event: Uint8Array): void {
    if (this.fd === null) throw new Error(`${this.file}: written after close`);
    writeSync(this.fd, tfRecord(event));
  }
}
