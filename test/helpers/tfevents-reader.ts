import assert from "node:assert/strict";
import { maskedCrc32c } from "../../src/metrics/tfevents.ts";

/**
 * A reader of TensorBoard event files for tests, written apart from the writer: TFRecords with
 * both CRCs checked, and the Event fields splint writes decoded from the protobuf wire format.
 */
export interface ParsedEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  scalars: Record<string, number>;
  sessionStatus?: number;
}

/** Reads TFRecords (checking both CRCs) and decodes the Event fields the writer uses. */
export function readEvents(bytes: Uint8Array): ParsedEvent[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: ParsedEvent[] = [];
  let at = 0;
  while (at < bytes.length) {
    const length = Number(view.getBigUint64(at, true));
    assert.equal(view.getUint32(at + 8, true), maskedCrc32c(bytes.subarray(at, at + 8)), `length CRC at ${at}`);
    const data = bytes.subarray(at + 12, at + 12 + length);
    assert.equal(view.getUint32(at + 12 + length, true), maskedCrc32c(data), `data CRC at ${at}`);
    out.push(decodeEvent(data));
    at += 16 + length;
  }
  return out;
}

function fields(data: Uint8Array): { field: number; wire: number; value: number | Uint8Array; raw: Uint8Array }[] {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: { field: number; wire: number; value: number | Uint8Array; raw: Uint8Array }[] = [];
  let i = 0;
  const varint = () => {
    let v = 0;
    let scale = 1;
    for (;;) {
      const b = data[i++]!;
      v += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) return v;
    }
  };
  while (i < data.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) out.push({ field, wire, value: varint(), raw: new Uint8Array() });
    else if (wire === 1) {
      out.push({ field, wire, value: view.getFloat64(i, true), raw: new Uint8Array() });
      i += 8;
    } else if (wire === 5) {
      out.push({ field, wire, value: view.getFloat32(i, true), raw: new Uint8Array() });
      i += 4;
    } else if (wire === 2) {
      const n = varint();
      const raw = data.subarray(i, i + n);
      out.push({ field, wire, value: raw, raw });
      i += n;
    } else throw new Error(`wire type ${wire}`);
  }
  return out;
}

function decodeEvent(data: Uint8Array): ParsedEvent {
  const event: ParsedEvent = { wallTime: 0, step: 0, scalars: {} };
  for (const f of fields(data)) {
    if (f.field === 1) event.wallTime = f.value as number;
    else if (f.field === 2) event.step = f.value as number;
    else if (f.field === 3) event.fileVersion = new TextDecoder().decode(f.raw);
    else if (f.field === 5) {
      for (const v of fields(f.raw)) {
        const parts = fields(v.raw);
        const tag = new TextDecoder().decode(parts.find((p) => p.field === 1)!.raw);
        event.scalars[tag] = parts.find((p) => p.field === 2)!.value as number;
      }
    } else if (f.field === 7) event.sessionStatus = fields(f.raw).find((p) => p.field === 1)!.value as number;
  }
  return event;
}

