/** The vision input's per-image crop of the batch's pixel box (model.ts cropImage). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { cropImage } from "../../src/models/mistral3/model.ts";

test("an image that fills the pixel box is a view of it; a smaller one is copied row by row", () => {
  // 2 images, 2 channels, box 3×4; each element holds its own flat index.
  const [count, channels, maxH, maxW] = [2, 2, 3, 4];
  const pixels = Float32Array.from({ length: count * channels * maxH * maxW }, (_, e) => e);
  const full = cropImage(pixels, 1, channels, maxH, maxW, maxH, maxW);
  assert.equal(full.buffer, pixels.buffer, "no copy");
  assert.deepEqual([...full], [...pixels.subarray(24, 48)]);

  const small = cropImage(pixels, 1, channels, maxH, maxW, 2, 2);
  assert.notEqual(small.buffer, pixels.buffer);
  // Image 1 starts at 24; channel c at 24 + 12c; row y at + 4y; the crop keeps x < 2, y < 2.
  assert.deepEqual([...small], [24, 25, 28, 29, 36, 37, 40, 41]);
});
