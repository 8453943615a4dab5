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
    const { info } = await sharp(bytes, { failOn: "warning" }).raw().toBuffer({ resolveWithObject: true });
    return { ok: true, format, width: info.width, height: info.height, channels: info.channels };
  } catch (error) {
    const message = libvipsMessage(error);
    const kind = /premature end|truncat|read error|not enough|unexpected end/i.test(message) ? "truncated or corrupt" : "corrupt";
    return { ok: false, reason: `${kind} image data (${message})` };
  }
}

/** libvips repeats its message once per failing call; one line is enough for a report. */
function libvipsMessage(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0]!.trim();
}
