/**
 * A minimal PNG writer for tests, so inputs with exact bit depths, palettes and tRNS can be built
 * without trusting the decoder under test to encode them.
 */
import { deflateSync } from "node:zlib";

function crc32(buf: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of buf) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

export interface PngSpec {
  width: number;
  height: number;
  bitDepth: 8 | 16;
  /** 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA */
  colorType: 0 | 2 | 3 | 4 | 6;
  /** Samples row-major, interleaved; 16-bit samples as numbers 0…65535. */
  samples: number[];
  palette?: number[];
  transparency?: number[];
}

const CHANNELS: Record<PngSpec["colorType"], number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

export function encodePng(spec: PngSpec): Uint8Array {
  const { width, height, bitDepth, colorType, samples } = spec;
  const perRow = width * CHANNELS[colorType];
  const bytesPerSample = bitDepth / 8;
  const raw = Buffer.alloc(height * (1 + perRow * bytesPerSample));
  for (let y = 0; y < height; y++) {
    const rowStart = y * (1 + perRow * bytesPerSample);
    for (let i = 0; i < perRow; i++) {
      const v = samples[y * perRow + i]!;
      if (bitDepth === 16) raw.writeUInt16BE(v, rowStart + 1 + 2 * i);
      else raw[rowStart + 1 + i] = v;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colorType;
  const parts = [Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", ihdr)];
  if (spec.palette) parts.push(chunk("PLTE", Uint8Array.from(spec.palette)));
  if (spec.transparency) parts.push(chunk("tRNS", Uint8Array.from(spec.transparency)));
  parts.push(chunk("IDAT", deflateSync(raw)), chunk("IEND", new Uint8Array(0)));
  return new Uint8Array(Buffer.concat(parts));
}
