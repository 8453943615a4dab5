import assert from "node:assert/strict";
import { test } from "node:test";
import type { TextRope } from "../../src/models/mistral3/config.ts";
import {
  decoderRopeTables,
  llama4QueryScale,
  pixtralRopeTables,
  textInvFreq,
  yarnCorrectionRange,
} from "../../src/models/mistral3/rope.ts";

function yarn(theta: number, overrides: Partial<Extract<TextRope, { rope_type: "yarn" }>> = {}): TextRope {
  return {
    rope_type: "yarn",
    rope_theta: theta,
    factor: 16,
    original_max_position_embeddings: 16384,
    beta_fast: 32,
    beta_slow: 1,
    mscale: 1,
    mscale_all_dim: 1,
    attention_factor: null,
    truncate: true,
    llama_4_scaling_beta: 0.1,
    ...overrides,
  };
}

test("YaRN correction range matches transformers for theta 1e6 and 1e9 (ministral3.md §1.2)", () => {
  assert.deepEqual(yarnCorrectionRange(32, 1, 128, 1e6, 16384, true), { low: 20, high: 37 });
  assert.deepEqual(yarnCorrectionRange(32, 1, 128, 1e9, 16384, true), { low: 13, high: 25 });
});

test("YaRN inv_freq: original below low, 1/factor above high, linear in between (theta 1e9)", () => {
  const { invFreq } = textInvFreq(yarn(1e9), 128);
  for (let i = 0; i < 64; i++) {
    const original = 1 / 1e9 ** ((2 * i) / 128);
    const ratio = invFreq[i]! / original;
    const expected = i <= 13 ? 1 : i >= 25 ? 1 / 16 : 1 + ((i - 13) / 12) * (1 / 16 - 1);
    assert.ok(Math.abs(ratio - expected) < 1e-5, `i=${i}: ratio ${ratio} expected ${expected}`);
  }
});

test("YaRN attention factor is exactly 1 with mscale = mscale_all_dim = 1, the paper's mscale otherwise", () => {
  assert.equal(textInvFreq(yarn(1e6), 128).attentionFactor, 1);
  const plain = textInvFreq(yarn(1e6, { mscale: null, mscale_all_dim: null }), 128).attentionFactor;
  assert.ok(Math.abs(plain - (1 + 0.1 * Math.log(16))) < 1e-12);
  // mscale_all_dim = 0 (text-only conversions) also falls back to the plain formula.
  assert.equal(textInvFreq(yarn(1e6, { mscale_all_dim: 0 }), 128).attentionFactor, plain);
  assert.equal(textInvFreq(yarn(1e6, { attention_factor: 0.5 }), 128).attentionFactor, 0.5);
});

test("llama-4 query scale values of §1.3", () => {
  const cases: [number, number][] = [
    [0, 1],
    [16383, 1],
    [16384, 1.0693],
    [32767, 1.0693],
    [32768, 1.1099],
    [49152, 1.1386],
    [131071, 1.2079],
    [262143, 1.2773],
  ];
  for (const [p, want] of cases) assert.ok(Math.abs(llama4QueryScale(p, 0.1, 16384) - want) < 1e-4, `p=${p}`);
});

test("decoder tables: queries carry the llama-4 scale only from original_max_position_embeddings on", () => {
  const rope = yarn(1e6, { original_max_position_embeddings: 4 });
  const freq = textInvFreq(rope, 8);
  const { query, key } = decoderRopeTables(rope, freq, Int32Array.from([0, 3, 4, 9]));
  for (let row = 0; row < 4; row++) {
    const s = [1, 1, 1 + 0.1 * Math.log(2), 1 + 0.1 * Math.log(3)][row]!;
    for (let j = 0; j < 4; j++) {
      const k = row * 4 + j;
      assert.ok(Math.abs(query.cos[k]! - s * key.cos[k]!) < 1e-6);
      assert.ok(Math.abs(query.sin[k]! - s * key.sin[k]!) < 1e-6);
      assert.ok(Math.abs(key.cos[k]! ** 2 + key.sin[k]! ** 2 - 1) < 1e-6, "key table is a pure rotation");
    }
  }
  // Short sequences get the very same table object for queries and keys (no scaling at all).
  const short = decoderRopeTables(rope, freq, Int32Array.from([0, 1, 2]));
  assert.equal(short.query, short.key);
});

test("Pixtral axial tables: even frequencies follow the row, odd ones the column", () => {
  const headDim = 8;
  const theta = 10000;
  const all = [0, 1, 2, 3].map((i) => 1 / theta ** ((2 * i) / headDim));
  const tables = pixtralRopeTables([{ rows: 2, cols: 3 }, { rows: 1, cols: 2 }], headDim, theta);
  assert.equal(tables.cos.length, (6 + 2) * 4);
  const expectAngle = (n: number, r: number, c: number) => [r * all[0]!, r * all[2]!, c * all[1]!, c * all[3]!].forEach((a, j) => {
    assert.ok(Math.abs(tables.cos[n * 4 + j]! - Math.cos(a)) < 1e-6, `patch ${n} dim ${j}`);
    assert.ok(Math.abs(tables.sin[n * 4 + j]! - Math.sin(a)) < 1e-6, `patch ${n} dim ${j}`);
  });
  expectAngle(0, 0, 0);
  expectAngle(5, 1, 2); // token r·w + c of the first image
  expectAngle(7, 0, 1); // the second image restarts at (0, 0)
});
