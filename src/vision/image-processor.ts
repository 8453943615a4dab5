/**
 * The Pixtral image processor as HF's PixtralProcessor + PixtralImageProcessor (torchvision backend,
 * transformers 5) run it for Ministral 3 (ministral3.md §3):
 *   decode → RGB (PIL `convert("RGB")` rules) → cap the longest edge → round each side up to a
 *   multiple of patch × spatial_merge (28) → antialiased bicubic resize (./resize.ts) →
 *   rescale 1/255 and normalize (float32) → zero-pad bottom/right to the batch's largest size.
 *
 * Decoding (sharp) follows what a PIL-loaded image becomes:
 * - EXIF orientation is applied (HF `load_image` and `datasets` both call `exif_transpose`);
 * - embedded ICC profiles are ignored, as PIL ignores them;
 * - alpha is dropped, not composited: transformers 5 `convert_to_rgb` is `image.convert("RGB")`;
 *   palette images map through their palette, grayscale is replicated to R, G and B;
 * - 16-bit RGB/RGBA/gray+alpha PNGs keep their top 8 bits, as PIL's PNG decoder does;
 * - 16-bit grayscale PNGs: PIL opens them as mode I;16 and `convert("RGB")` *clips* every value
 *   above 255 to 255 (Pillow `I16_RGB`), which turns most real 16-bit X-rays white. splint keeps
 *   the top 8 bits by default (`gray16: "top8"`); `gray16: "clip"` reproduces PIL/HF exactly.
 */
import { existsSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { InputError } from "../util/errors.ts";
import { resizeImage, type Image8, type ResampleFilter } from "./resize.ts";

export interface ImageProcessorConfig {
  /** Processor patch size (vision patch, 14) per axis. */
  patchHeight: number;
  patchWidth: number;
  spatialMergeSize: number;
  /** Cap on the longer side (`size.longest_edge`), or separate caps from `size.height/width`. */
  maxHeight: number;
  maxWidth: number;
  resample: ResampleFilter;
  doResize: boolean;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
  /** How 16-bit grayscale PNGs become 8-bit (see the file comment). */
  gray16: "top8" | "clip";
}

export const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** What the Ministral 3 conversion writes: patch 14, merge 2, longest edge 1540, CLIP mean/std. */
export function defaultImageProcessorConfig(): ImageProcessorConfig {
  return {
    patchHeight: 14,
    patchWidth: 14,
    spatialMergeSize: 2,
    maxHeight: 1540,
    maxWidth: 1540,
    resample: "bicubic",
    doResize: true,
    doRescale: true,
    rescaleFactor: 1 / 255,
    doNormalize: true,
    imageMean: [...CLIP_MEAN],
    imageStd: [...CLIP_STD],
    gray16: "top8",
  };
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function readJsonObject(file: string): Json | undefined {
  if (!existsSync(file)) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new InputError(file, `cannot read JSON: ${(e as Error).message}`);
  }
  if (!isObject(v)) throw new InputError(file, "not a JSON object");
  return v;
}

function positiveInt(file: string, key: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new InputError(file, `${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/** patch_size is an int or {height, width}. */
function patchSizeOf(file: string, v: unknown): [number, number] {
  if (isObject(v)) return [positiveInt(file, "patch_size.height", v.height), positiveInt(file, "patch_size.width", v.width)];
  const p = positiveInt(file, "patch_size", v);
  return [p, p];
}

function triple(file: string, key: string, v: unknown): [number, number, number] {
  if (typeof v === "number") return [v, v, v];
  if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "number")) return [v[0], v[1], v[2]];
  throw new InputError(file, `${key} must be a number or a list of 3 numbers`);
}

/**
 * Reads the processor settings of a model folder: `processor_config.json` (transformers 5 keeps
 * the image processor under `image_processor` and the processor's patch_size/spatial_merge_size
 * at the top), else `preprocessor_config.json`, with `config.json`'s spatial_merge_size and
 * vision patch_size as fallbacks. Missing files leave the Ministral 3 defaults.
 */
export function loadImageProcessorConfig(modelDir: string): ImageProcessorConfig {
  const cfg = defaultImageProcessorConfig();
  const processorFile = join(modelDir, "processor_config.json");
  const preprocessorFile = join(modelDir, "preprocessor_config.json");
  const modelFile = join(modelDir, "config.json");
  const processor = readJsonObject(processorFile);
  const preprocessor = readJsonObject(preprocessorFile);
  const model = readJsonObject(modelFile);

  let ipFile = preprocessorFile;
  let ip: Json | undefined = preprocessor;
  if (processor && isObject(processor.image_processor)) {
    ipFile = processorFile;
    ip = processor.image_processor;
  }
  if (ip) {
    if (ip.size !== undefined) {
      if (!isObject(ip.size)) throw new InputError(ipFile, "size must be an object like {longest_edge: 1540}");
      if (ip.size.longest_edge !== undefined) {
        cfg.maxHeight = cfg.maxWidth = positiveInt(ipFile, "size.longest_edge", ip.size.longest_edge);
      } else if (ip.size.height !== undefined && ip.size.width !== undefined) {
        cfg.maxHeight = positiveInt(ipFile, "size.height", ip.size.height);
        cfg.maxWidth = positiveInt(ipFile, "size.width", ip.size.width);
      } else {
        throw new InputError(ipFile, "size must contain longest_edge, or height and width");
      }
    }
    if (ip.resample !== undefined) {
      if (ip.resample === 3) cfg.resample = "bicubic";
      else if (ip.resample === 2) cfg.resample = "bilinear";
      else throw new InputError(ipFile, `resample ${JSON.stringify(ip.resample)} is not supported (2 bilinear, 3 bicubic)`);
    }
    if (ip.do_resize !== undefined) cfg.doResize = ip.do_resize === true;
    if (ip.do_rescale !== undefined) cfg.doRescale = ip.do_rescale === true;
    if (ip.do_normalize !== undefined) cfg.doNormalize = ip.do_normalize === true;
    if (ip.rescale_factor !== undefined) {
      if (typeof ip.rescale_factor !== "number") throw new InputError(ipFile, "rescale_factor must be a number");
      cfg.rescaleFactor = ip.rescale_factor;
    }
    if (ip.image_mean !== undefined) cfg.imageMean = triple(ipFile, "image_mean", ip.image_mean);
    if (ip.image_std !== undefined) cfg.imageStd = triple(ipFile, "image_std", ip.image_std);
  }

  // PixtralProcessor overrides the image processor's patch size with its own × spatial_merge_size.
  const vision = model && isObject(model.vision_config) ? model.vision_config : undefined;
  if (processor?.patch_size !== undefined) [cfg.patchHeight, cfg.patchWidth] = patchSizeOf(processorFile, processor.patch_size);
  else if (vision?.patch_size !== undefined) [cfg.patchHeight, cfg.patchWidth] = patchSizeOf(modelFile, vision.patch_size);
  else if (ip?.patch_size !== undefined) [cfg.patchHeight, cfg.patchWidth] = patchSizeOf(ipFile, ip.patch_size);
  if (processor?.spatial_merge_size !== undefined) {
    cfg.spatialMergeSize = positiveInt(processorFile, "spatial_merge_size", processor.spatial_merge_size);
  } else if (model?.spatial_merge_size !== undefined) {
    cfg.spatialMergeSize = positiveInt(modelFile, "spatial_merge_size", model.spatial_merge_size);
  }
  return cfg;
}

/** An RGB image, rows of interleaved R, G, B bytes. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Decodes an image file's bytes to 8-bit RGB the way PIL + `convert("RGB")` would. */
export async function decodeImage(bytes: Uint8Array, name: string, gray16: ImageProcessorConfig["gray16"] = "top8"): Promise<RgbImage> {
  try {
    const meta = await sharp(bytes, { ignoreIcc: true }).metadata();
    const pipeline = () => sharp(bytes, { ignoreIcc: true, limitInputPixels: false }).autoOrient();
    if (gray16 === "clip" && meta.space === "grey16" && meta.channels === 1) {
      const { data, info } = await pipeline().toColourspace("grey16").raw({ depth: "ushort" }).toBuffer({ resolveWithObject: true });
      const values = new Uint16Array(data.buffer, data.byteOffset, data.length / 2);
      const out = new Uint8Array(info.width * info.height * 3);
      for (let i = 0; i < values.length; i++) out.fill(Math.min(values[i]!, 255), 3 * i, 3 * i + 3);
      return { width: info.width, height: info.height, data: out };
    }
    // sharp's 8-bit raw output keeps the top byte of 16-bit samples and gives grey as RGB.
    const { data, info } = await pipeline().raw().toBuffer({ resolveWithObject: true });
    return { width: info.width, height: info.height, data: toRgb(data, info.width * info.height, info.channels) };
  } catch (e) {
    throw new InputError(name, `cannot decode image: ${(e as Error).message}`);
  }
}

function toRgb(data: Uint8Array, pixels: number, channels: number): Uint8Array {
  if (channels === 3) return new Uint8Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint8Array(pixels * 3);
  for (let i = 0; i < pixels; i++) {
    if (channels >= 3) {
      out[3 * i] = data[channels * i]!;
      out[3 * i + 1] = data[channels * i + 1]!;
      out[3 * i + 2] = data[channels * i + 2]!;
    } else {
      out.fill(data[channels * i]!, 3 * i, 3 * i + 3);
    }
  }
  return out;
}

/**
 * Resized size (height, width) of an image: the longest-edge cap by floor, then each side up to
 * the next multiple of patch × merge, `(x - 1) // m + 1` multiples (transformers
 * `get_resize_output_image_size` with the processor's patch size).
 */
export function resizedSize(height: number, width: number, cfg: ImageProcessorConfig): [number, number] {
  const mh = cfg.patchHeight * cfg.spatialMergeSize;
  const mw = cfg.patchWidth * cfg.spatialMergeSize;
  const ratio = Math.max(height / cfg.maxHeight, width / cfg.maxWidth);
  if (ratio > 1) {
    height = Math.floor(height / ratio);
    width = Math.floor(width / ratio);
  }
  // A side floored to 0 stays 0 (not rounded up to one block): the caller refuses such an image.
  const up = (x: number, m: number) => (x < 1 ? 0 : (Math.floor((x - 1) / m) + 1) * m);
  return [up(height, mh), up(width, mw)];
}

/** [IMG] token grid of a resized image: one token per merge × merge block of patches. */
export function tokenGrid(imageSize: readonly [number, number], cfg: ImageProcessorConfig): { rows: number; cols: number } {
  return {
    rows: Math.floor(imageSize[0] / (cfg.patchHeight * cfg.spatialMergeSize)),
    cols: Math.floor(imageSize[1] / (cfg.patchWidth * cfg.spatialMergeSize)),
  };
}

export interface PixelBatch {
  /** (N, 3, Hmax, Wmax) float32, zero-padded bottom/right. */
  pixelValues: Float32Array;
  shape: [number, number, number, number];
  /** Each image's resized (height, width), as HF's `image_sizes`. */
  imageSizes: [number, number][];
}

/** Channel-first float32 planes of one resized image, rescaled and normalized as HF does. */
function normalizePlanes(img: Image8, cfg: ImageProcessorConfig, out: Float32Array, offset: number, planeStride: number, rowStride: number): void {
  const f = Math.fround;
  // HF fuses rescale into normalize: (x - mean/r) / (std/r), with float32 tensors.
  const inv = 1 / cfg.rescaleFactor;
  for (let c = 0; c < 3; c++) {
    const mean = cfg.doNormalize ? f(f(cfg.imageMean[c]!) * f(cfg.doRescale ? inv : 1)) : 0;
    const std = cfg.doNormalize ? f(f(cfg.imageStd[c]!) * f(cfg.doRescale ? inv : 1)) : 1;
    const scale = !cfg.doNormalize && cfg.doRescale ? f(cfg.rescaleFactor) : 1;
    for (let y = 0; y < img.height; y++) {
      const dst = offset + c * planeStride + y * rowStride;
      const src = y * img.width * 3 + c;
      for (let x = 0; x < img.width; x++) {
        const v = img.data[src + 3 * x]!;
        out[dst + x] = cfg.doNormalize ? f(f(v - mean) / std) : f(v * scale);
      }
    }
  }
}

/** Resizes, normalizes and pads already-decoded RGB images into one batch. */
export function preprocessDecoded(images: readonly RgbImage[], cfg: ImageProcessorConfig): PixelBatch {
  const resized = images.map((img) => {
    const [h, w] = cfg.doResize ? resizedSize(img.height, img.width, cfg) : [img.height, img.width];
    return resizeImage({ width: img.width, height: img.height, channels: 3, data: img.data }, h, w, cfg.resample);
  });
  const hMax = Math.max(0, ...resized.map((r) => r.height));
  const wMax = Math.max(0, ...resized.map((r) => r.width));
  const n = resized.length;
  const plane = hMax * wMax;
  const pixelValues = new Float32Array(n * 3 * plane);
  resized.forEach((r, i) => normalizePlanes(r, cfg, pixelValues, i * 3 * plane, plane, wMax));
  return { pixelValues, shape: [n, 3, hMax, wMax], imageSizes: resized.map((r) => [r.height, r.width]) };
}

/**
 * The HF processor's `pixel_values` and `image_sizes` for image files' bytes; `names` (file
 * paths) label decode errors.
 */
export async function preprocess(images: readonly Uint8Array[], cfg: ImageProcessorConfig, names?: readonly string[]): Promise<PixelBatch> {
  const decoded = await Promise.all(images.map((bytes, i) => decodeImage(bytes, names?.[i] ?? `image ${i}`, cfg.gray16)));
  decoded.forEach((img, i) => checkResizable(img, cfg, names?.[i] ?? `image ${i}`));
  return preprocessDecoded(decoded, cfg);
}

/**
 * Refuses an image whose short side the longest-edge cap would shrink to nothing (a 1×3000 strip
 * under a 1540 cap becomes 0 px wide): transformers fails on it mid-run too, with no file named.
 */
export function checkResizable(img: { width: number; height: number }, cfg: ImageProcessorConfig, name: string): void {
  if (img.width < 1 || img.height < 1) throw new InputError(name, `image is ${img.width}×${img.height} pixels, which holds nothing`);
  if (!cfg.doResize) return;
  const [h, w] = resizedSize(img.height, img.width, cfg);
  if (h < 1 || w < 1) {
    throw new InputError(
      name,
      `image is ${img.width}×${img.height} pixels: capping its long side to ${Math.max(cfg.maxHeight, cfg.maxWidth)} shrinks the short side below one pixel`,
      "crop or pad it to a less extreme aspect ratio, or leave it out (splint data import skips such images)",
    );
  }
}

/** `preprocess` for image files on disk (what `splint preprocess --image FILE…` needs). */
export async function preprocessFiles(paths: readonly string[], cfg: ImageProcessorConfig): Promise<PixelBatch> {
  const bytes = await Promise.all(
    paths.map(async (p) => {
      try {
        return new Uint8Array(await readFile(p));
      } catch (e) {
        throw new InputError(p, `cannot read image: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    }),
  );
  return preprocess(bytes, cfg, paths);
}
