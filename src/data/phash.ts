import sharp from "sharp";

/**
 * 64-bit DCT perceptual hash, as Python's `imagehash.phash`: the image in grayscale at 32×32, its
 * 2-D DCT-II, the top-left 8×8 low-frequency block, each coefficient compared with the block's
 * median. Resizing, recompression and mild noise move few bits; different images differ in ~32.
 */
export const PHASH_SIDE = 32;
const LOW = 8;

/** DCT-II basis rows cos(π(2x+1)u / 2N) for u < LOW. */
const basis: Float64Array[] = Array.from({ length: LOW }, (_, u) => {
  const row = new Float64Array(PHASH_SIDE);
  for (let x = 0; x < PHASH_SIDE; x++) row[x] = Math.cos((Math.PI * (2 * x + 1) * u) / (2 * PHASH_SIDE));
  return row;
});

/** The hash of 32×32 grayscale pixels (row-major), as 16 hex digits, most significant bit first. */
export function phashOfPixels(pixels: ArrayLike<number>): string {
  if (pixels.length !== PHASH_SIDE * PHASH_SIDE) throw new RangeError(`phash needs ${PHASH_SIDE}×${PHASH_SIDE} pixels`);
  // Rows first: rowsDct[y][u] = Σx p[y][x]·basis[u][x]; then columns for the 8×8 block.
  const rowsDct = new Float64Array(PHASH_SIDE * LOW);
  for (let y = 0; y < PHASH_SIDE; y++) {
    for (let u = 0; u < LOW; u++) {
      const b = basis[u] as Float64Array;
      let sum = 0;
      for (let x = 0; x < PHASH_SIDE; x++) sum += (pixels[y * PHASH_SIDE + x] ?? 0) * (b[x] ?? 0);
      rowsDct[y * LOW + u] = sum;
    }
  }
  const block = new Float64Array(LOW * LOW);
  for (let v = 0; v < LOW; v++) {
    const b = basis[v] as Float64Array;
    for (let u = 0; u < LOW; u++) {
      let sum = 0;
      for (let y = 0; y < PHASH_SIDE; y++) sum += (rowsDct[y * LOW + u] ?? 0) * (b[y] ?? 0);
      block[v * LOW + u] = sum;
    }
  }
  const sorted = Array.from(block).sort((a, b) => a - b);
  const median = ((sorted[31] ?? 0) + (sorted[32] ?? 0)) / 2;
  let hex = "";
  for (let nibble = 0; nibble < 16; nibble++) {
    let value = 0;
    for (let bit = 0; bit < 4; bit++) value = (value << 1) | ((block[nibble * 4 + bit] ?? 0) > median ? 1 : 0);
    hex += value.toString(16);
  }
  return hex;
}

/** Already decoded 8-bit pixels, so a caller that decoded an image once need not decode it again. */
export interface RawPixels {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
  readonly channels: 1 | 2 | 3 | 4;
}

/** The 32×32 grayscale rendition the hash is taken of (alpha dropped, any size or format in). */
export async function phashPixels(image: Uint8Array | RawPixels): Promise<Uint8Array> {
  const input = image instanceof Uint8Array ? sharp(image) : sharp(image.data, { raw: { width: image.width, height: image.height, channels: image.channels } });
  const data = await input
    .removeAlpha()
    .toColourspace("b-w")
    .resize(PHASH_SIDE, PHASH_SIDE, { fit: "fill", kernel: "lanczos3" })
    .raw({ depth: "uchar" })
    .toBuffer();
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

export async function phash(image: Uint8Array | RawPixels): Promise<string> {
  return phashOfPixels(await phashPixels(image));
}

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/** A hash as two 32-bit halves, for fast Hamming distances over many pairs. */
export function phashWords(hex: string): readonly [number, number] {
  return [Number.parseInt(hex.slice(0, 8), 16) >>> 0, Number.parseInt(hex.slice(8, 16), 16) >>> 0];
}

export function hammingDistance(a: readonly [number, number], b: readonly [number, number]): number {
  return popcount32((a[0] ^ b[0]) >>> 0) + popcount32((a[1] ^ b[1]) >>> 0);
}
