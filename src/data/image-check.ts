/**
 * Decides whether an image file can go into a dataset: it must be a PNG or JPEG that decodes to the
 * last pixel. A header-only check would let truncated files through (they fail later, mid-training),
 * so the whole image is decoded once here and libvips warnings count as failures.
 */
import path from "node:path";
import sharp, { type Metadata } from "sharp";

/** The extensions the tutorial globs for (`*.png`, `*.jpg`, `*.jpeg`), matched case-insensitively. */
export const IMAGE_EXTENSIONS: readonly string[] = [".png", ".jpg", ".jpeg"];

export function hasImageExtension(file: string): boolean {
  return IMAGE_EXTENSIONS.includes(path.extname(file).toLowerCase());
}

export type ImageCheck =
  | { readonly ok: true; readonly format: "png" | "jpeg"; readonly width: number; readonly height: number; readonly channels: number }
  | { readonly ok: false; readonly reason: string };

/** Checks encoded image bytes; never throws for bad content, only reports why it is unusable. */
export async function checkImageBytes(bytes: Uint8Array): Promise<ImageCheck> {
  if (bytes.length === 0) return { ok: false, reason: "empty file (0 bytes)" };
  let metadata: Metadata;
  try {
    metadata = await sharp(bytes, { failOn: "warning" }).metadata();
  } catch (error) {
    const message = libvipsMessage(error);
    if (/unsupported image format/i.test(message)) return { ok: false, reason: "not an image (content is not PNG or JPEG)" };
    return { ok: false, reason: `corrupt image header (${message})` };
  }
  const format = metadata.format;
  if (format !== "png" && format !== "jpeg") {
    return { ok: false, reason: `unsupported image format ${format} (only PNG and JPEG are imported)` };
  }
  try {
    // Checked from the header before decoding: a decompression bomb (a tiny PNG declaring
    // 100000×100000 pixels) must not be inflated just to be judged.
    const shapeProblem = imageShapeProblem(metadata.width ?? 0, metadata.height ?? 0);
    if (shapeProblem) return { ok: false, reason: shapeProblem };
    const { info } = await sharp(bytes, { failOn: "warning" }).raw().toBuffer({ resolveWithObject: true });
    return { ok: true, format, width: info.width, height: info.height, channels: info.channels };
  } catch (error) {
    const message = libvipsMessage(error);
    const kind = /premature end|truncat|read error|not enough|unexpected end/i.test(message) ? "truncated or corrupt" : "corrupt";
    return { ok: false, reason: `${kind} image data (${message})` };
  }
}

/** Most pixels of an imported image (sharp's own default limit, 16384 × 16384). */
export const MAX_IMAGE_PIXELS = 16384 * 16384;
/**
 * Most long side : short side. A model's processor caps the long side (1540 px for Ministral 3, 112
 * for the tiny demo model) and scales the short one alike, so a 1×3000 strip comes out 0 px wide
 * and fails in the middle of training; 20:1 leaves every real photograph or radiograph in.
 */
export const MAX_ASPECT_RATIO = 20;

/** Why an image of this size cannot go into a dataset, or null. */
export function imageShapeProblem(width: number, height: number): string | null {
  if (width < 1 || height < 1) return `image has no pixels (${width}×${height})`;
  if (width * height > MAX_IMAGE_PIXELS) return `image is ${width}×${height} pixels, more than the ${MAX_IMAGE_PIXELS} splint decodes (a decompression bomb?)`;
  const ratio = Math.max(width, height) / Math.min(width, height);
  if (ratio > MAX_ASPECT_RATIO) {
    return `extreme aspect ratio ${width}×${height} (${Math.round(ratio)}:1, more than ${MAX_ASPECT_RATIO}:1): resizing to the model's input would shrink the short side to nothing`;
  }
  return null;
}

/** libvips repeats its message once per failing call; one line is enough for a report. */
function libvipsMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0]!.trim();
}
