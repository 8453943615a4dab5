import assert from "node:assert/strict";
import { test } from "node:test";
import { patchMergerIndex } from "../../src/models/mistral3/projector.ts";

/** torch's F.unfold(kernel=m, stride=m) on a (d, h, w) grid, then .view(d·m², -1).t(), computed directly. */
function unfoldReference(x: number[][][], m: number): number[][] {
  const d = x.length;
  const h = x[0]!.length;
  const w = x[0]![0]!.length;
  const rows: number[][] = [];
  for (let i = 0; i < h / m; i++) {
    for (let j = 0; j < w / m; j++) {
      const row: number[] = [];
      // unfold's channel dimension is (c, ki, kj) with c slowest
      for (let c = 0; c < d; c++) for (let ki = 0; ki < m; ki++) for (let kj = 0; kj < m; kj++) row.push(x[c]![m * i + ki]![m * j + kj]!);
      rows.push(row);
    }
  }
  return rows;
}

test("patch merger index reproduces unfold's channel-major order across several images", () => {
  const d = 3;
  const m = 2;
  const grids = [
    { rows: 4, cols: 2 },
    { rows: 2, cols: 6 },
  ];
  // Tokens (P, d) of both images with distinct values; token index = base + r·w + c.
  const tokens: number[][] = [];
  for (const { rows, cols } of grids) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) tokens.push([0, 1, 2].map((ch) => tokens.length * 10 + ch));
  const flat = tokens.flat();
  const index = patchMergerIndex(grids, d, m);
  assert.equal(index.length, flat.length);
  const merged = Array.from(index, (i) => flat[i]!);

  const expected: number[][] = [];
  let base = 0;
  for (const { rows, cols } of grids) {
    const grid = [0, 1, 2].map((ch) => Array.from({ length: rows }, (_, r) => Array.from({ length: cols }, (_, c) => tokens[base + r * cols + c]![ch]!)));
    expected.push(...unfoldReference(grid, m));
    base += rows * cols;
  }
  assert.deepEqual(merged, expected.flat());
  // It is a permutation: every element used once.
  assert.equal(new Set(index).size, index.length);
});

test("block (0,0) of a 2×2 merge is [x00c, x01c, x10c, x11c] per channel, not four concatenated vectors", () => {
  const index = patchMergerIndex([{ rows: 2, cols: 2 }], 2, 2);
  // tokens 0..3 = (0,0), (0,1), (1,0), (1,1); element = token·2 + channel
  assert.deepEqual(Array.from(index), [0, 2, 4, 6, 1, 3, 5, 7]);
});
