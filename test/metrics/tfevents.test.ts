import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { crc32c, EventFileWriter, fileVersionEvent, maskedCrc32c, scalarEvent, sessionStartEvent, tfRecord } from "../../src/metrics/tfevents.ts";
import { withTempDir } from "../helpers/temp-dir.ts";

/**
 * The writer against (1) published CRC-32C check values, (2) bytes written by TensorBoard's own
 * protobufs and record writer (tools/tfevents/make_golden.py), (3) an independent reader below,
 * and (4) TensorBoard's EventAccumulator when SPLINT_PYTHON has the tensorboard package.
 */

test("CRC-32C matches the standard check values", () => {
  const ascii = (s: string) => new TextEncoder().encode(s);
  assert.equal(crc32c(ascii("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  // The mask is a rotation plus a constant: never the raw CRC.
  assert.notEqual(maskedCrc32c(ascii("123456789")), 0xe3069283);
});

test("records are byte-identical to TensorBoard's for the same events", () => {
  const golden = readFileSync(join(import.meta.dirname, "golden.tfevents"));
  const ours = Buffer.concat(
    [
      fileVersionEvent(1700000000.25),
      scalarEvent(1700000001.5, 1, { "train/loss": 2.5, "train/learning_rate": 2e-4 }),
      scalarEvent(1700000002.75, 300, { "eval/accuracy": 0.4375 }),
      sessionStartEvent(1700000003.0, 200),
    ].map(tfRecord),
  );
  assert.equal(ours.toString("hex"), golden.toString("hex"));
});

interface ParsedEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  scalars: Record<string, number>;
  sessionStatus?: number;
}

/** Reads TFRecords (checking both CRCs) and decodes the Event fields the writer uses. */
function readEvents(bytes: Uint8Array): ParsedEvent[] {
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

test("an event file parses back: version first, then the scalars at their steps", async () => {
  await withTempDir("splint-tfevents-", async (dir) => {
    let clock = 1000.5;
    const writer = new EventFileWriter(dir, { now: () => (clock += 1) });
    writer.scalars(1, { "train/loss": 3.25, "train/grad_norm": 0.5 });
    writer.scalars(2, { "train/loss": Number.NaN, "train/learning_rate": 1e-3 }); // NaN is left out
    writer.sessionStart(2);
    writer.scalars(123456789, { "eval/loss": 1.125 });
    writer.close();
    assert.match(writer.file, /events\.out\.tfevents\.\d+\..+\.\d+\.\d+$/);
    const events = readEvents(readFileSync(writer.file));
    assert.equal(events[0]!.fileVersion, "brain.Event:2");
    assert.deepEqual(
      events.slice(1).map((e) => [e.step, e.scalars, e.sessionStatus ?? null]),
      [
        [1, { "train/loss": 3.25, "train/grad_norm": 0.5 }, null],
        [2, { "train/learning_rate": Math.fround(1e-3) }, null],
        [2, {}, 1],
        [123456789, { "eval/loss": 1.125 }, null],
      ],
    );
    assert.deepEqual(events.map((e) => e.wallTime), [1001.5, 1002.5, 1003.5, 1004.5, 1005.5]);
  });
});

const python = process.env.SPLINT_PYTHON;
const hasTensorboard = (() => {
  if (!python) return false;
  try {
    execFileSync(python, ["-c", "import tensorboard"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

test("TensorBoard's EventAccumulator reads the scalars, and a restart purges the steps after it", { skip: hasTensorboard ? false : "SPLINT_PYTHON with the tensorboard package is not set" }, async () => {
  await withTempDir("splint-tb-python-", async (dir) => {
    const first = new EventFileWriter(dir);
    for (let step = 1; step <= 4; step++) first.scalars(step, { "train/loss": 1 / step });
    first.close();
    // A resumed run from step 2 writes a second file starting with SessionLog START at step 3.
    const second = new EventFileWriter(dir);
    second.sessionStart(3);
    second.scalars(3, { "train/loss": 7 });
    second.close();
    assert.equal(readdirSync(dir).length, 2);
    const script = [
      "import json, sys",
      "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator",
      "acc = EventAccumulator(sys.argv[1]); acc.Reload()",
      "print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()['scalars']}))",
    ].join("\n");
    const out = JSON.parse(execFileSync(python!, ["-c", script, dir], { encoding: "utf8" })) as Record<string, [number, number][]>;
    assert.deepEqual(out["train/loss"], [
      [1, 1],
      [2, 0.5],
      [3, 7],
    ]);
  });
});
