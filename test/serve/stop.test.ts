import assert from "node:assert/strict";
import { test } from "node:test";
import { StopFilter } from "../../src/serve/stop.ts";
import { concatImageBatches } from "../../src/serve/image-batch.ts";

test("a stop string split across pieces is never sent, nor anything after it", () => {
  const f = new StopFilter(["STOP", "\n\n"]);
  const sent = ["Hello S", "T", "O", "P and more"].map((p) => f.push(p));
  assert.deepEqual(sent, ["Hello ", "", "", ""]);
  assert.ok(f.stopped);
  assert.equal(f.flush(), "");
});

test("text held back for a possible stop string is released once it cannot be one", () => {
  const f = new StopFilter(["STOP"]);
  assert.equal(f.push("a ST"), "a ");
  assert.equal(f.push("ay"), "STay");
  assert.equal(f.push(" S"), " ");
  assert.equal(f.flush(), "S");
  assert.equal(f.stopped, false);
});

test("the earliest of several stop strings wins", () => {
  const f = new StopFilter(["bc", "ab"]);
  assert.equal(f.push("xabc"), "x");
});

test("images of several requests are padded to the largest and keep their sizes", () => {
  const a = { pixelValues: Float32Array.from({ length: 3 * 2 * 2 }, (_, i) => i + 1), shape: [1, 3, 2, 2] as const, imageSizes: Int32Array.of(2, 2) };
  const b = { pixelValues: Float32Array.from({ length: 3 * 1 * 3 }, (_, i) => -(i + 1)), shape: [1, 3, 1, 3] as const, imageSizes: Int32Array.of(1, 3) };
  const joined = concatImageBatches([a, b])!;
  assert.deepEqual(joined.shape, [2, 3, 2, 3]);
  assert.deepEqual([...joined.imageSizes], [2, 2, 1, 3]);
  // Image 0, channel 0: rows [1, 2, pad], [3, 4, pad]; image 1, channel 2: [-7, -8, -9], [pad × 3].
  assert.deepEqual([...joined.pixelValues.subarray(0, 6)], [1, 2, 0, 3, 4, 0]);
  assert.deepEqual([...joined.pixelValues.subarray(18 + 12, 18 + 18)], [-7, -8, -9, 0, 0, 0]);
  assert.equal(concatImageBatches([a]), a);
  assert.equal(concatImageBatches([]), undefined);
});
