/** Test helpers for the import tests: tiny images made with sharp, file trees, and zip archives. */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { crc32, deflateRawSync } from "node:zlib";
import sharp from "sharp";

/** A small noisy RGB image (noise so PNG/JPEG cannot shrink it to a few bytes), distinct per seed. */
function pixels(seed: number, width: number, height: number): Buffer {
  const data = Buffer.alloc(width * height * 3);
  let state = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    data[i] = state & 255;
  }
  return data;
}

export async function pngBytes(seed: number, width = 24, height = 16): Promise<Buffer> {
  return sharp(pixels(seed, width, height), { raw: { width, height, channels: 3 } }).png().toBuffer();
}

export async function jpegBytes(seed: number, width = 24, height = 16): Promise<Buffer> {
  return sharp(pixels(seed, width, height), { raw: { width, height, channels: 3 } }).jpeg().toBuffer();
}

/** Writes `files` (relative path → content) under `root`. */
export async function writeTree(root: string, files: Record<string, Uint8Array | string>): Promise<void> {
  for (const [rel, content] of Object.entries(files)) {
    const file = path.join(root, rel);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, content);
  }
}

export interface ZipEntry {
  readonly name: string;
  readonly data: Uint8Array | string;
  /** Unix mode for the external attributes (e.g. 0o120777 for a symlink). */
  readonly mode?: number;
}

/** Builds a zip archive (deflate, Unix "version made by") by hand: no zip writer is installed. */
export function buildZip(entries: readonly ZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name, "utf8");
    const raw = Buffer.from(entry.data);
    const isDir = entry.name.endsWith("/");
    const compressed = isDir ? Buffer.alloc(0) : deflateRawSync(raw);
    const method = isDir ? 0 : 8;
    const crc = crc32(raw);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(method, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(compressed.length, 18);
    local.writeUInt32LE(raw.length, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by Unix
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(method, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(compressed.length, 20);
    central.writeUInt32LE(raw.length, 24);
    central.writeUInt16LE(name.length, 28);
    const mode = entry.mode ?? (isDir ? 0o40755 : 0o100644);
    central.writeUInt32LE((mode << 16) >>> 0, 38);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, compressed);
    centrals.push(central, name);
    offset += local.length + name.length + compressed.length;
  }
  const centralDir = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(centralDir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, centralDir, end]);
}
