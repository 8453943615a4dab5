import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import sharp from "sharp";
import {
  CLIP_MEAN,
  CLIP_STD,
  decodeImage,
  defaultImageProcessorConfig,
  loadImageProcessorConfig,
  preprocess,
  preprocessDecoded,
  preprocessFiles,
  resizedSize,
  tokenGrid,
  type RgbImage,
} from "../../src/vision/image-processor.ts";
import { resizeImage } from "../../src/vision/resize.ts";
import { InputError } from "../../src/util/errors.ts";
import { encodePng } from "./png.ts";

const cfg = defaultImageProcessorConfig();

/** Seeded LCG so failures reproduce. */
function randomImage(width: number, height: number, seed: number): RgbImage {
  let s = seed >>> 0;
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s >>> 24;
  }
  return { width, height, data };
}

describe("resized sizes (ministral3.md §3 table)", () => {
  for (const [w, h, eh, ew, rows, cols] of [
    [640, 480, 504, 644, 18, 23],
    [1024, 768, 784, 1036, 28, 37],
    [2000, 1000, 784, 1540, 28, 55],
    [1540, 1540, 1540, 1540, 55, 55],
    [30, 30, 56, 56, 2, 2],
    [90, 60, 84, 112, 3, 4],
  ] as const) {
    it(`${w}×${h} → ${eh}×${ew}`, () => {
      const size = resizedSize(h, w, cfg);
      assert.deepEqual(size, [eh, ew]);
      assert.deepEqual(tokenGrid(size, cfg), { rows, cols });
    });
  }
});

describe("normalization and batching", () => {
  it("maps white and black to the CLIP-normalized extremes", () => {
    const white = { width: 28, height: 28, data: new Uint8Array(28 * 28 * 3).fill(255) };
    const black = { width: 28, height: 28, data: new Uint8Array(28 * 28 * 3) };
    const b = preprocessDecoded([white, black], cfg);
    assert.deepEqual(b.shape, [2, 3, 28, 28]);
    const plane = 28 * 28;
    for (let c = 0; c < 3; c++) {
      assert.ok(Math.abs(b.pixelValues[c * plane]! - (1 - CLIP_MEAN[c]!) / CLIP_STD[c]!) < 1e-5);
      assert.ok(Math.abs(b.pixelValues[3 * plane + c * plane + 100]! + CLIP_MEAN[c]! / CLIP_STD[c]!) < 1e-5);
    }
    assert.ok(Math.abs(b.pixelValues[0]! - 1.9303) < 1e-4);
    assert.ok(Math.abs(b.pixelValues[plane]! - 2.0749) < 1e-4);
    assert.ok(Math.abs(b.pixelValues[2 * plane]! - 2.1459) < 1e-4);
  });

  it("pads smaller images with zeros bottom/right and reports resized sizes", () => {
    const big = randomImage(56, 28, 1); // 28 high, 56 wide
    const small = { width: 28, height: 56, data: new Uint8Array(28 * 56 * 3).fill(255) };
    const b = preprocessDecoded([big, small], cfg);
    assert.deepEqual(b.shape, [2, 3, 56, 56]);
    assert.deepEqual(b.imageSizes, [[28, 56], [56, 28]]);
    const [, , H, W] = b.shape;
    const at = (n: number, c: number, y: number, x: number) => b.pixelValues[((n * 3 + c) * H + y) * W + x]!;
    for (let c = 0; c < 3; c++) {
      for (let y = 28; y < 56; y++) for (let x = 0; x < 56; x++) assert.equal(at(0, c, y, x), 0);
      for (let y = 0; y < 56; y++) for (let x = 28; x < 56; x++) assert.equal(at(1, c, y, x), 0);
      assert.ok(at(1, c, 55, 27) > 1.9);
    }
  });

  it("leaves pixels unchanged when the size already fits the grid", () => {
    const img = randomImage(84, 56, 7);
    const out = resizeImage({ ...img, channels: 3 }, 56, 84);
    assert.deepEqual(out.data, img.data);
    const b = preprocessDecoded([img], cfg);
    assert.deepEqual(b.imageSizes, [[56, 84]]);
    const v = img.data[3 * 5 + 1]!; // pixel (0,5), green
    assert.ok(Math.abs(b.pixelValues[56 * 84 + 5]! - (v / 255 - CLIP_MEAN[1]!) / CLIP_STD[1]!) < 1e-5);
  });
});

/** Keys cubic (a = -0.5) and the antialias taps of output i, straight from the definition, float64. */
function keys(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1;
  if (x < 2) return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a;
  return 0;
}

function taps(inSize: number, outSize: number, i: number): [number, number][] {
  const scale = inSize / outSize;
  const stretch = Math.max(scale, 1); // antialias: widen the kernel by the shrink factor
  const center = (i + 0.5) * scale;
  const lo = Math.max(0, Math.floor(center - 2 * stretch + 0.5));
  const hi = Math.min(inSize, Math.floor(center + 2 * stretch + 0.5));
  const ws: [number, number][] = [];
  for (let j = lo; j < hi; j++) ws.push([j, keys((j + 0.5 - center) / stretch)]);
  const total = ws.reduce((acc, [, w]) => acc + w, 0);
  return ws.map(([j, w]) => [j, w / total]);
}

const toByte = (v: number) => Math.min(255, Math.max(0, Math.floor(v + 0.5)));

/** The uint8 resize by definition: float64 width pass → uint8 → float64 height pass → uint8. */
function referenceResize(img: RgbImage, outH: number, outW: number): Uint8Array {
  let cur = img.data;
  let w = img.width;
  if (outW !== img.width) {
    const mid = new Uint8Array(img.height * outW * 3);
    for (let y = 0; y < img.height; y++)
      for (let x = 0; x < outW; x++)
        for (let c = 0; c < 3; c++)
          mid[(y * outW + x) * 3 + c] = toByte(taps(img.width, outW, x).reduce((acc, [j, wt]) => acc + wt * cur[(y * w + j) * 3 + c]!, 0));
    cur = mid;
    w = outW;
  }
  if (outH === img.height) return cur;
  const out = new Uint8Array(outH * w * 3);
  for (let y = 0; y < outH; y++) {
    const ty = taps(img.height, outH, y);
    for (let k = 0; k < w * 3; k++) out[y * w * 3 + k] = toByte(ty.reduce((acc, [j, wt]) => acc + wt * cur[j * w * 3 + k]!, 0));
  }
  return out;
}

/** Non-separable, unrounded 2-D sum of the same kernel. */
function exact2d(img: RgbImage, outH: number, outW: number): Float64Array {
  const out = new Float64Array(outH * outW * 3);
  for (let y = 0; y < outH; y++)
    for (let x = 0; x < outW; x++)
      for (let c = 0; c < 3; c++) {
        let acc = 0;
        for (const [iy, wy] of taps(img.height, outH, y))
          for (const [ix, wx] of taps(img.width, outW, x)) acc += wy * wx * img.data[(iy * img.width + ix) * 3 + c]!;
        out[(y * outW + x) * 3 + c] = acc;
      }
  return out;
}

const SIZES = [
  [53, 37, 28, 28],
  [53, 37, 112, 84],
  [40, 30, 13, 100],
  [200, 9, 56, 28],
  [61, 45, 61, 28],
] as const;

describe("bicubic antialias resize", () => {
  for (const [w, h, ow, oh] of SIZES) {
    it(`${w}×${h} → ${ow}×${oh} matches the float64 definition up to fixed-point rounding`, () => {
      const img = randomImage(w, h, w * 1000 + h);
      const fast = resizeImage({ ...img, channels: 3 }, oh, ow);
      const ref = referenceResize(img, oh, ow);
      let differ = 0;
      for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(fast.data[i]! - ref[i]!);
        // a 1-level flip in the uint8 width pass can grow to 2 through weights above 1
        assert.ok(d <= 2, `sample ${i}: ${fast.data[i]} vs ${ref[i]}`);
        if (d > 0) differ++;
      }
      // int16 weights (≤ 2^-15 off) flip a rounding only near a .5 boundary
      assert.ok(differ <= ref.length * 0.03, `${differ} of ${ref.length} differ`);
    });
  }

  it("a single pass is within one level of the float64 definition", () => {
    for (const [inSize, outSize] of [[37, 28], [37, 84], [200, 28], [30, 100]] as const) {
      const row = randomImage(inSize, 1, inSize * 7 + outSize);
      const fast = resizeImage({ ...row, channels: 3 }, 1, outSize);
      const ref = referenceResize(row, 1, outSize);
      ref.forEach((v, i) => assert.ok(Math.abs(fast.data[i]! - v) <= 1, `${inSize}→${outSize} sample ${i}`));
    }
  });

  it("agrees with the unrounded 2-D kernel on a smooth image", () => {
    const w = 60;
    const h = 44;
    const data = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = 40 + 2 * x + y + 10 * c;
    const img = { width: w, height: h, data };
    for (const [oh, ow] of [[28, 28], [84, 140]] as const) {
      const fast = resizeImage({ ...img, channels: 3 }, oh, ow);
      const ref = exact2d(img, oh, ow);
      ref.forEach((v, i) => assert.ok(Math.abs(fast.data[i]! - v) <= 1, `sample ${i}: ${fast.data[i]} vs ${v}`));
    }
  });

  it("keeps a constant image constant when enlarging and shrinking", () => {
    const img = { width: 17, height: 11, channels: 3, data: new Uint8Array(17 * 11 * 3).fill(77) };
    for (const [oh, ow] of [[28, 56], [5, 3]] as const) {
      assert.ok(resizeImage(img, oh, ow).data.every((v) => v === 77));
    }
  });
});

describe("decoding to RGB like PIL convert('RGB')", () => {
  it("applies EXIF orientation", async () => {
    const raw = Buffer.from([1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]);
    const png = await sharp(raw, { raw: { width: 3, height: 2, channels: 3 } }).withMetadata({ orientation: 6 }).png().toBuffer();
    const img = await decodeImage(png, "rot.png");
    // orientation 6 = turn 90° clockwise: rows [1 2 3] [4 5 6] become [4 1] [5 2] [6 3]
    assert.deepEqual([img.width, img.height], [2, 3]);
    assert.deepEqual([...img.data].filter((_, i) => i % 3 === 0), [4, 1, 5, 2, 6, 3]);
  });

  it("drops alpha without compositing (RGBA, gray+alpha, palette with tRNS)", async () => {
    const rgba = encodePng({ width: 2, height: 1, bitDepth: 8, colorType: 6, samples: [10, 20, 30, 0, 40, 50, 60, 128] });
    assert.deepEqual([...(await decodeImage(rgba, "a.png")).data], [10, 20, 30, 40, 50, 60]);
    const la = encodePng({ width: 2, height: 1, bitDepth: 8, colorType: 4, samples: [7, 0, 200, 255] });
    assert.deepEqual([...(await decodeImage(la, "la.png")).data], [7, 7, 7, 200, 200, 200]);
    const pal = encodePng({
      width: 3, height: 1, bitDepth: 8, colorType: 3, samples: [2, 0, 1],
      palette: [255, 0, 0, 0, 255, 0, 9, 8, 7], transparency: [255, 0],
    });
    assert.deepEqual([...(await decodeImage(pal, "p.png")).data], [9, 8, 7, 255, 0, 0, 0, 255, 0]);
  });

  it("replicates grayscale into R, G and B", async () => {
    const g = encodePng({ width: 3, height: 1, bitDepth: 8, colorType: 0, samples: [0, 128, 255] });
    assert.deepEqual([...(await decodeImage(g, "g.png")).data], [0, 0, 0, 128, 128, 128, 255, 255, 255]);
  });

  it("16-bit: RGB keeps the top byte; gray keeps the top byte or clips like PIL I;16", async () => {
    const rgb16 = encodePng({ width: 1, height: 1, bitDepth: 16, colorType: 2, samples: [0x1234, 0xff01, 0x00ff] });
    assert.deepEqual([...(await decodeImage(rgb16, "c16.png")).data], [0x12, 0xff, 0x00]);
    const values = [100, 255, 256, 0x1234, 65535];
    const g16 = encodePng({ width: 5, height: 1, bitDepth: 16, colorType: 0, samples: values });
    const top = await decodeImage(g16, "g16.png", "top8");
    assert.deepEqual([...top.data].filter((_, i) => i % 3 === 0), values.map((v) => v >> 8));
    const clip = await decodeImage(g16, "g16.png", "clip");
    assert.deepEqual([...clip.data].filter((_, i) => i % 3 === 0), values.map((v) => Math.min(v, 255)));
  });

  it("ignores embedded ICC profiles, as PIL does", async () => {
    const raw = Buffer.alloc(4 * 4 * 3).map((_, i) => (i * 37) % 256);
    const tagged = await sharp(raw, { raw: { width: 4, height: 4, channels: 3 } }).withIccProfile("p3").png().toBuffer();
    const stored = await sharp(tagged, { ignoreIcc: true }).raw().toBuffer();
    assert.deepEqual([...(await decodeImage(tagged, "p3.png")).data], [...stored]);
  });

  it("names the file it cannot decode", async () => {
    await assert.rejects(
      preprocess([new Uint8Array([1, 2, 3])], cfg, ["broken.jpg"]),
      (e: unknown) => e instanceof InputError && e.message.startsWith("broken.jpg:"),
    );
  });

  it("reads files and names a missing one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "splint-img-"));
    const file = join(dir, "white.png");
    writeFileSync(file, encodePng({ width: 30, height: 30, bitDepth: 8, colorType: 0, samples: Array(900).fill(255) }));
    const b = await preprocessFiles([file], cfg);
    assert.deepEqual(b.shape, [1, 3, 56, 56]);
    const missing = join(dir, "nope.png");
    await assert.rejects(preprocessFiles([missing], cfg), (e: unknown) => e instanceof InputError && e.message.startsWith(`${missing}: cannot read image: ENOENT`));
  });

  it("preprocesses encoded files end to end", async () => {
    const png = encodePng({ width: 90, height: 60, bitDepth: 8, colorType: 2, samples: Array(90 * 60 * 3).fill(255) });
    const b = await preprocess([png], cfg);
    assert.deepEqual(b.shape, [1, 3, 84, 112]);
    assert.deepEqual(b.imageSizes, [[84, 112]]);
    assert.ok(Math.abs(b.pixelValues[0]! - 1.9303) < 1e-4);
  });
});

describe("processor config files", () => {
  it("reads processor_config.json (transformers 5 layout)", () => {
    const dir = mkdtempSync(join(tmpdir(), "splint-proc-"));
    writeFileSync(
      join(dir, "processor_config.json"),
      JSON.stringify({
        image_processor: {
          patch_size: { height: 14, width: 14 }, size: { longest_edge: 1024 }, resample: 3,
          do_rescale: true, rescale_factor: 1 / 255, do_normalize: true, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5],
        },
        patch_size: 16,
        spatial_merge_size: 1,
      }),
    );
    const c = loadImageProcessorConfig(dir);
    assert.deepEqual([c.patchHeight, c.patchWidth, c.spatialMergeSize, c.maxHeight, c.maxWidth], [16, 16, 1, 1024, 1024]);
    assert.deepEqual(c.imageMean, [0.5, 0.5, 0.5]);
    assert.deepEqual(resizedSize(960, 1280, c), [768, 1024]);
    assert.deepEqual(resizedSize(481, 640, c), [496, 640]);
  });

  it("falls back to preprocessor_config.json and config.json", () => {
    const dir = mkdtempSync(join(tmpdir(), "splint-proc-"));
    writeFileSync(join(dir, "preprocessor_config.json"), JSON.stringify({ patch_size: 16, size: { longest_edge: 896 } }));
    writeFileSync(join(dir, "config.json"), JSON.stringify({ spatial_merge_size: 2, vision_config: { patch_size: 14 } }));
    const c = loadImageProcessorConfig(dir);
    assert.deepEqual([c.patchHeight, c.spatialMergeSize, c.maxHeight], [14, 2, 896]);
  });

  it("names the file and key of a bad value", () => {
    const dir = mkdtempSync(join(tmpdir(), "splint-proc-"));
    writeFileSync(join(dir, "preprocessor_config.json"), JSON.stringify({ size: { longest_edge: -3 } }));
    assert.throws(() => loadImageProcessorConfig(dir), /preprocessor_config\.json: size\.longest_edge must be a positive integer/);
  });
});
