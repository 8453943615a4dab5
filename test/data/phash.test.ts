import { test } from "node:test";
import assert from "node:assert/strict";
import sharp from "sharp";
import { hammingDistance, phash, phashOfPixels, phashPixels, phashWords } from "../../src/data/phash.ts";

function pattern(kind: number): number[] {
  const pixels: number[] = [];
  for (let y = 0; y < 32; y++) {
    for (let x = 0; x < 32; x++) {
      if (kind === 0) pixels.push((x * 7 + y * 3) % 256);
      else if (kind === 1) pixels.push(Math.trunc((Math.sin(x / 3) + Math.cos(y / 5)) * 60 + 128));
      else pixels.push(((x * x + 3 * y * y + x * y) * 13) % 251);
    }
  }
  return pixels;
}

test("matches imagehash's phash on fixed 32×32 inputs", () => {
  // Expected values from imagehash's algorithm run in Python on the same arrays:
  // scipy.fftpack.dct(scipy.fftpack.dct(p, axis=0), axis=1)[:8,:8] > median, packed MSB first.
  assert.equal(phashOfPixels(pattern(0)), "94294a5569baeb56");
  assert.equal(phashOfPixels(pattern(1)), "f0a89d5d615b611d");
  assert.equal(phashOfPixels(pattern(2)), "f9833613ee639213");
});

test("hamming distance counts differing bits", () => {
  assert.equal(hammingDistance(phashWords("0000000000000000"), phashWords("ffffffffffffffff")), 64);
  assert.equal(hammingDistance(phashWords("8000000000000001"), phashWords("0000000000000000")), 2);
  assert.equal(hammingDistance(phashWords("94294a5569baeb56"), phashWords("94294a5569baeb56")), 0);
});

test("robust to resizing and recompression, far for unrelated images", async () => {
  const raw = Buffer.from(Array.from({ length: 96 * 96 }, (_, i) => {
    const x = i % 96;
    const y = Math.floor(i / 96);
    return Math.abs(x - 40) < 12 ? 200 - y : 40 + ((x * y) % 30);
  }));
  const original = await sharp(raw, { raw: { width: 96, height: 96, channels: 1 } }).png().toBuffer();
  const other = await sharp(Buffer.from(raw.map((v, i) => (i % 96 > 48 ? 255 - v : v))), { raw: { width: 96, height: 96, channels: 1 } }).png().toBuffer();
  const h = phashWords(await phash(original));
  assert.ok(hammingDistance(h, phashWords(await phash(await sharp(original).resize(200, 200).png().toBuffer()))) <= 4);
  assert.ok(hammingDistance(h, phashWords(await phash(await sharp(original).jpeg({ quality: 85 }).toBuffer()))) <= 4);
  assert.ok(hammingDistance(h, phashWords(await phash(await sharp(original).toColourspace("srgb").png().toBuffer()))) <= 2);
  assert.ok(hammingDistance(h, phashWords(await phash(other))) > 10);
});

test("hashing decoded pixels gives the same thumbnail as hashing the file", async () => {
  const gray = await sharp({ create: { width: 50, height: 40, channels: 3, background: "#446" } }).toColourspace("b-w").png().toBuffer();
  const rgb = await sharp(Buffer.from(Array.from({ length: 60 * 30 * 3 }, (_, i) => (i * 37) % 256)), { raw: { width: 60, height: 30, channels: 3 } }).png().toBuffer();
  const rgba = await sharp(Buffer.from(Array.from({ length: 20 * 20 * 4 }, (_, i) => (i * 11) % 256)), { raw: { width: 20, height: 20, channels: 4 } }).png().toBuffer();
  for (const file of [gray, rgb, rgba]) {
    const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
    const fromRaw = await phashPixels({ data, width: info.width, height: info.height, channels: info.channels });
    assert.deepEqual(fromRaw, await phashPixels(file));
  }
});
