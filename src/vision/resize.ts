/**
 * Antialiased resize of uint8 images as the HF Pixtral processor gets it on CPU: transformers 5
 * `TorchvisionBackend.resize` calls `tvF.resize(uint8, BICUBIC, antialias=True)`, which on CPU
 * runs ATen's native uint8 kernel (`_upsample_bicubic2d_aa`, UpSampleKernel.cpp):
 * - filter weights as PIL computes them: Keys cubic a = -0.5 (triangle for bilinear), support
 *   widened by the scale when shrinking, each output's weights normalized to sum 1 (float64);
 * - weights rounded to int16 fixed point at the largest precision (≤ 22 bits) where the biggest
 *   weight still fits in 15 bits;
 * - separable: width pass, then height pass; a pass whose size does not change is skipped; each
 *   pass accumulates integers plus half an LSB, shifts down and clamps to 0…255, so the
 *   intermediate image is uint8.
 *
 * PIL's `Image.resize(BICUBIC)` is the same algorithm at a fixed 22-bit precision; torchvision on
 * GPU resizes in float32 instead. Both differ from this by at most a level, rarely.
 */

export type ResampleFilter = "bilinear" | "bicubic";

function cubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

function triangle(x: number): number {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

const FILTERS: Record<ResampleFilter, { fn: (x: number) => number; halfSize: number }> = {
  bilinear: { fn: triangle, halfSize: 1 },
  bicubic: { fn: cubic, halfSize: 2 },
};

/** Per output index along one axis: first input index, tap count, weights (`taps` per output). */
export interface AxisWeights {
  start: Int32Array;
  count: Int32Array;
  taps: number;
  /** Normalized float64 weights. */
  weights: Float64Array;
}

export function axisWeights(inSize: number, outSize: number, filter: ResampleFilter): AxisWeights {
  const { fn, halfSize } = FILTERS[filter];
  const scale = inSize / outSize;
  const support = scale >= 1 ? halfSize * scale : halfSize;
  const invscale = scale >= 1 ? 1 / scale : 1;
  const taps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * taps);
  for (let i = 0; i < outSize; i++) {
    const center = scale * (i + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.max(Math.min(Math.trunc(center + support + 0.5), inSize) - xmin, 0), taps);
    let total = 0;
    const row = i * taps;
    for (let j = 0; j < xsize; j++) {
      const w = fn((j + xmin - center + 0.5) * invscale);
      weights[row + j] = w;
      total += w;
    }
    if (total !== 0) for (let j = 0; j < xsize; j++) weights[row + j]! /= total;
    start[i] = xmin;
    count[i] = xsize;
  }
  return { start, count, taps, weights };
}

interface FixedWeights {
  axis: AxisWeights;
  precision: number;
  weights: Int32Array;
}

/** ATen's `_compute_index_ranges_int16_weights`: int16 weights at the precision the largest allows. */
function fixedPoint(axis: AxisWeights): FixedWeights {
  let max = 0;
  for (const w of axis.weights) max = Math.max(max, w);
  let precision = 0;
  for (; precision < 22; precision++) {
    if (Math.trunc(0.5 + max * 2 ** (precision + 1)) >= 1 << 15) break;
  }
  const weights = new Int32Array(axis.weights.length);
  axis.weights.forEach((w, k) => {
    const v = w * 2 ** precision;
    weights[k] = v < 0 ? Math.trunc(-0.5 + v) : Math.trunc(0.5 + v);
  });
  return { axis, precision, weights };
}

/** An 8-bit image, rows of interleaved channels (HWC). */
export interface Image8 {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array;
}

/**
 * One pass along an axis: for each of `lines` lines and each of its `elems` elements, the axis'
 * samples are `axisStride` apart in `src` and `outAxisStride` apart in the result.
 */
function pass(
  src: Uint8Array,
  outLength: number,
  lines: number,
  lineStrideIn: number,
  lineStrideOut: number,
  elems: number,
  elemStride: number,
  axisStride: number,
  outAxisStride: number,
  fw: FixedWeights,
  outSize: number,
): Uint8Array {
  const out = new Uint8Array(outLength);
  const { start, count, taps } = fw.axis;
  const w = fw.weights;
  const shift = fw.precision;
  const half = shift > 0 ? 1 << (shift - 1) : 0;
  for (let line = 0; line < lines; line++) {
    const inBase = line * lineStrideIn;
    const outBase = line * lineStrideOut;
    for (let o = 0; o < outSize; o++) {
      const s0 = inBase + start[o]! * axisStride;
      const n = count[o]!;
      const wrow = o * taps;
      for (let e = 0; e < elems; e++) {
        let acc = half;
        const s = s0 + e * elemStride;
        for (let j = 0; j < n; j++) acc += src[s + j * axisStride]! * w[wrow + j]!;
        const v = acc >> shift;
        out[outBase + o * outAxisStride + e * elemStride] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
  return out;
}

/** Resizes an HWC uint8 image to outHeight × outWidth. */
export function resizeImage(img: Image8, outHeight: number, outWidth: number, filter: ResampleFilter = "bicubic"): Image8 {
  const { width: w, height: h, channels: c } = img;
  let data = img.data;
  if (outWidth !== w) {
    const fw = fixedPoint(axisWeights(w, outWidth, filter));
    // lines = rows; along the axis step by c; elements = channels.
    data = pass(data, h * outWidth * c, h, w * c, outWidth * c, c, 1, c, c, fw, outWidth);
  }
  if (outHeight !== h) {
    const fw = fixedPoint(axisWeights(h, outHeight, filter));
    // one "line" covering the whole image; along the axis step by a row; elements = row samples.
    const row = outWidth * c;
    data = pass(data, outHeight * row, 1, 0, 0, row, 1, row, row, fw, outHeight);
  }
  return { width: outWidth, height: outHeight, channels: c, data: data === img.data ? data.slice() : data };
}
