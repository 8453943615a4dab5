import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { crc32c, EventFileWriter, fileVersionEvent, maskedCrc32c, scalarEvent, sessionStartEvent, tfRecord } from "../../src/metrics/tfevents.ts";
import { withTempDir } from "../helpers/temp-dir.ts";
import { readEvents } from "../helpers/tfevents-reader.ts";

/**
 * The writer against (1) published CRC-32C check values, (2) bytes written by TensorBoard's own
 * protobufs and record writer (tools/tfevents/make_golden.py), (3) an independent reader
 * (test/helpers/tfevents-reader.ts),
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
