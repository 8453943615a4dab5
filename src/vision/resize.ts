/**
 * Antialiased resize as torchvision does it for the HF Pixtral processor (transformers 5
 * `TorchvisionBackend.resize` → `tvF.resize(uint8, antialias=True)`): the uint8 image is cast to
 * float32, run through PyTorch's separable `_upsample_bicubic2d_aa` (PIL's filter: Keys cubic
 * a = -0.5, support widened by the scale when shrinking; horizontal pass then vertical pass, no
 * rounding between them), then clamped to 0…255 and rounded half to even.
 *
 * PIL's own `Image.resize(BICUBIC)` uses the same weights but 22-bit fixed point and rounds to
 * uint8 between the passes; results differ from this by at most one level, rarely.
 *
 * Arithmetic is float32 (Math.fround) where PyTorch's kernel is float32, so index bounds and sums
 * follow it closely.
 */

/** Interpolation filters by PIL resample code: 2 bilinear (triangle), 3 bicubic. */
export type ResampleFilter = "bilinear" | "bicubic";

const f = Math.fround;

function cubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return f(f(f(f(f(a + 2) * x) - f(a + 3)) * x) * x + 1);
  if (x < 2) return f(f(f(f(f(f(a * x) - f(5 * a)) * x) + f(8 * a)) * x) - f(4 * a));
  return 0;
}

function triangle(x: number): number {
  x = Math.abs(x);
  return x < 1 ? f(1 - x) : 0;
}

const FILTERS: Record<ResampleFilter, { fn: (x: number) => number; halfSize: number }> = {
  bilinear: { fn: triangle, halfSize: 1 },
  bicubic: { fn: cubic, halfSize: 2 },
};

/** Per output index: first input index, tap count and normalized weights (`taps` per row). */
export interface AxisWeights {
  start: Int32Array;
  count: Int32Array;
  taps: number;
  weights: Float32Array;
}

export function axisWeights(inSize: number, outSize: number, filter: ResampleFilter): AxisWeights {
  const { fn, halfSize } = FILTERS[filter];
  const scale = f(inSize / outSize);
  const support = scale >= 1 ? f(halfSize * scale) : halfSize;
  const invscale = scale >= 1 ? f(1 / scale) : 1;
  const taps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float32Array(outSize * taps);
  for (let i = 0; i < outSize; i++) {
    const center = f(scale * (i + 0.5));
    const xmin = Math.max(Math.trunc(f(f(center - support) + 0.5)), 0);
    const xmax = Math.min(Math.trunc(f(f(center + support) + 0.5)), inSize);
    let total = 0;
    const row = i * taps;
    for (let j = 0; j < xmax - xmin; j++) {
      const w = fn(f(f(f(j + xmin - center) + 0.5) * invscale));
      weights[row + j] = w;
      total = f(total + w);
    }
    if (total !== 0) for (let j = 0; j < xmax - xmin; j++) weights[row + j] = f(weights[row + j]! / total);
    start[i] = xmin;
    count[i] = xmax - xmin;
  }
  return { start, count, taps, weights };
}

/** An 8-bit image, rows of interleaved channels (HWC). */
export interface Image8 {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array;
}

/** Resizes an HWC uint8 image to outHeight × outWidth. */
export function resizeImage(img: Image8, outHeight: number, outWidth: number, filter: ResampleFilter = "bicubic"): Image8 {
  const { width: w, height: h, channels: c, data } = img;
  if (w === outWidth && h === outHeight) return { width: w, height: h, channels: c, data: data.slice() };
  // Horizontal pass: h × outWidth × c, float32.
  const hw = axisWeights(w, outWidth, filter);
  const mid = new Float32Array(h * outWidth * c);
  for (let y = 0; y < h; y++) {
    const src = y * w * c;
    const dst = y * outWidth * c;
    for (let x = 0; x < outWidth; x++) {
      const s0 = src + hw.start[x]! * c;
      const n = hw.count[x]!;
      const wrow = x * hw.taps;
      for (let ch = 0; ch < c; ch++) {
        let t = f(data[s0 + ch]! * hw.weights[wrow]!);
        for (let j = 1; j < n; j++) t = f(t + f(data[s0 + j * c + ch]! * hw.weights[wrow + j]!));
        mid[dst + x * c + ch] = t;
      }
    }
  }
  // Vertical pass, then clamp and round half to even like torch's clamp_().round_().
  const vw = axisWeights(h, outHeight, filter);
  const rowLen = outWidth * c;
  const out = new Uint8Array(outHeight * rowLen);
  for (let y = 0; y < outHeight; y++) {
    const n = vw.count[y]!;
    const wrow = y * vw.taps;
    const s0 = vw.start[y]! * rowLen;
    const dst = y * rowLen;
    for (let k = 0; k < rowLen; k++) {
      let t = f(mid[s0 + k]! * vw.weights[wrow]!);
      for (let j = 1; j < n; j++) t = f(t + f(mid[s0 + j * rowLen + k]! * vw.weights[wrow + j]!));
      out[dst + k] = roundHalfEven(Math.min(255, Math.max(0, t)));
    }
  }
  return { width: outWidth, height: outHeight, channels: c, data: out };
}

export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
