import assert from "node:assert/strict";
import { test } from "node:test";
import { bf16ArrayToF32, bf16ToF32, f32ArrayToBf16, f32ToBf16 } from "../../src/tensor/bf16.ts";

const fromBits = (bits: number): number => new Float32Array(Uint32Array.of(bits).buffer)[0]!;

test("bf16 widening is exact and narrowing round-trips every bf16 value", () => {
  for (let bits = 0; bits < 0x10000; bits++) {
    const value = bf16ToF32(bits);
    const expected = fromBits(bits << 16);
    if (Number.isNaN(expected)) {
      assert.ok(Number.isNaN(value));
      continue;
    }
    assert.ok(Object.is(value, expected), `bits 0x${bits.toString(16)}`);
    assert.equal(f32ToBf16(value), bits, `bits 0x${bits.toString(16)}`);
  }
});

test("bf16 narrowing rounds to nearest, ties to even", () => {
  // 1 + 2⁻⁸ is exactly halfway between 1 (0x3f80, even) and 1 + 2⁻⁷ (0x3f81): goes to even.
  assert.equal(f32ToBf16(fromBits(0x3f808000)), 0x3f80);
  // Halfway between 0x3f81 (odd) and 0x3f82: goes up to even.
  assert.equal(f32ToBf16(fromBits(0x3f818000)), 0x3f82);
  // Just above and below halfway.
  assert.equal(f32ToBf16(fromBits(0x3f808001)), 0x3f81);
  assert.equal(f32ToBf16(fromBits(0x3f807fff)), 0x3f80);
  // Negative values mirror positive ones.
  assert.equal(f32ToBf16(-fromBits(0x3f818000)), 0xbf82);
  // The largest finite f32 rounds up to infinity; infinities and zeros keep their sign.
  assert.equal(f32ToBf16(fromBits(0x7f7fffff)), 0x7f80);
  assert.equal(f32ToBf16(-Infinity), 0xff80);
  assert.equal(f32ToBf16(-0), 0x8000);
  // Subnormals round the same way.
  assert.equal(f32ToBf16(fromBits(0x00018000)), 0x0002);
  assert.equal(f32ToBf16(fromBits(0x00008000)), 0x0000);
});

test("bf16 narrowing keeps NaN a NaN, even when rounding would carry into infinity", () => {
  for (const bits of [0x7fc00000, 0x7f800001, 0x7fffffff, 0xff800001]) {
    assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(fromBits(bits)))), `0x${bits.toString(16)}`);
  }
});

test("bf16 array conversions agree with the scalar ones", () => {
  const values = Float32Array.of(0, 1.00390625, -3.1415927, 65504, 1e-40, NaN, Infinity);
  const narrowed = f32ArrayToBf16(values);
  values.forEach((v, i) => assert.equal(narrowed[i], f32ToBf16(v)));
  const widened = bf16ArrayToF32(narrowed);
  narrowed.forEach((b, i) => assert.ok(Object.is(widened[i], bf16ToF32(b))));
});
