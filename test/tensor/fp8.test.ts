import assert from "node:assert/strict";
import { test } from "node:test";
import { FP8_E4M3_MAX, f32ArrayToFp8E4m3, f32ToFp8E4m3, fp8E4m3ArrayToF32, fp8E4m3ToF32 } from "../../src/tensor/fp8.ts";
import { rng } from "./reference.ts";

test("e4m3fn decodes its landmarks: max 448, NaN only at 0x7f/0xff, subnormal steps 2⁻⁹", () => {
  assert.equal(fp8E4m3ToF32(0x7e), 448);
  assert.equal(fp8E4m3ToF32(0xfe), -448);
  assert.ok(Number.isNaN(fp8E4m3ToF32(0x7f)));
  assert.ok(Number.isNaN(fp8E4m3ToF32(0xff)));
  assert.equal(fp8E4m3ToF32(0x08), 2 ** -6);
  assert.equal(fp8E4m3ToF32(0x01), 2 ** -9);
  assert.equal(fp8E4m3ToF32(0x07), 7 * 2 ** -9);
  assert.equal(fp8E4m3ToF32(0x38), 1);
  assert.ok(Object.is(fp8E4m3ToF32(0x80), -0));
  let nans = 0;
  for (let byte = 0; byte < 256; byte++) if (Number.isNaN(fp8E4m3ToF32(byte))) nans++;
  assert.equal(nans, 2, "no infinities, just two NaNs");
  assert.equal(FP8_E4M3_MAX, 448);
});

test("e4m3fn encoding round-trips every finite code", () => {
  for (let byte = 0; byte < 256; byte++) {
    if (byte === 0x7f || byte === 0xff) continue;
    assert.equal(f32ToFp8E4m3(fp8E4m3ToF32(byte)), byte, `byte 0x${byte.toString(16)}`);
  }
});

/** Nearest finite code by exhaustive search, ties to the even code (mantissa bit 0 clear). */
function nearestBySearch(x: number): number {
  let best = -1;
  let bestErr = Infinity;
  for (let byte = 0; byte < 256; byte++) {
    const v = fp8E4m3ToF32(byte);
    if (Number.isNaN(v) || (v === 0 && byte === 0x80 && x >= 0) || (v === 0 && byte === 0 && x < 0)) continue;
    const err = Math.abs(v - x);
    if (err < bestErr || (err === bestErr && (byte & 1) === 0)) {
      best = byte;
      bestErr = err;
    }
  }
  return best;
}

test("e4m3fn encoding is round-to-nearest-even, including subnormals and exact midpoints", () => {
  const random = rng(7);
  for (let i = 0; i < 3000; i++) {
    const x = Math.fround((random() - 0.5) * 2 * 448 * random() ** 6);
    assert.equal(f32ToFp8E4m3(x), nearestBySearch(x), `x = ${x}`);
  }
  for (let byte = 0; byte < 0x7e; byte++) {
    // Midpoint between two consecutive positive codes.
    const mid = (fp8E4m3ToF32(byte) + fp8E4m3ToF32(byte + 1)) / 2;
    const even = byte % 2 === 0 ? byte : byte + 1;
    assert.equal(f32ToFp8E4m3(mid), even, `midpoint after 0x${byte.toString(16)}`);
    assert.equal(f32ToFp8E4m3(-mid), even | 0x80);
  }
});

test("e4m3fn encoding saturates beyond ±448 and maps NaN to NaN", () => {
  assert.equal(f32ToFp8E4m3(464), 0x7e, "the midpoint to the NaN code ties to 448");
  assert.equal(f32ToFp8E4m3(470), 0x7e);
  assert.equal(f32ToFp8E4m3(1e9), 0x7e);
  assert.equal(f32ToFp8E4m3(Infinity), 0x7e);
  assert.equal(f32ToFp8E4m3(-Infinity), 0xfe);
  assert.ok(Number.isNaN(fp8E4m3ToF32(f32ToFp8E4m3(NaN))));
  assert.equal(f32ToFp8E4m3(2 ** -11), 0x00, "below half the smallest subnormal flushes to zero");
  assert.equal(f32ToFp8E4m3(-(2 ** -11)), 0x80);
});

test("e4m3fn array helpers apply the per-tensor scale both ways", () => {
  const values = Float32Array.of(0.5, -3, 100, 0.001);
  const scale = 0.25;
  const bytes = f32ArrayToFp8E4m3(values, scale);
  values.forEach((v, i) => assert.equal(bytes[i], f32ToFp8E4m3(v / scale)));
  const back = fp8E4m3ArrayToF32(bytes, scale);
  bytes.forEach((b, i) => assert.equal(back[i], fp8E4m3ToF32(b) * scale));
});
