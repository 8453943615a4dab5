/**
 * ggml's float and block-quantised tensor encodings, written from ggml's definitions
 * (ggml-common.h block structs, ggml-quants.c `quantize_row_*_ref` / `dequantize_row_*`):
 *
 * - F16 / BF16: IEEE half and bfloat16, round to nearest even.
 * - Q8_0: blocks of 32; d = max|x| / 127 stored as f16, then 32 int8 q = round(x / d).
 * - Q4_K: super-blocks of 256 = 8 sub-blocks of 32, each with a 6-bit scale and 6-bit min
 *   (x ≈ d·sc·q − dmin·m, q in 0…15); the per-sub-block scale and min are fitted by ggml's
 *   weighted least-squares search (make_qkx2_quants), then quantised against the super-block's
 *   f16 d and dmin.
 * - Q6_K: super-blocks of 256 = 16 sub-blocks of 16 with int8 scales (x ≈ d·sc·q, q in −32…31).
 *
 * The dequantisers are the reading side of the same definitions; tests use them to bound the
 * round-trip error and to check hand-computed blocks, and llama.cpp reads the bytes the same way.
 * Arithmetic is done in f32 (Math.fround at the points where ggml's f32 rounding decides a
 * quantised value) so ties land as they do in C.
 */

import { f32ArrayToBf16 } from "../../tensor/bf16.ts";
import { GGML_BLOCK } from "./format.ts";

const fr = Math.fround;

// ---- f16 ------------------------------------------------------------------------------------

const f32Box = new Float32Array(1);
const u32Box = new Uint32Array(f32Box.buffer);

/** f32 → IEEE binary16 bits, round to nearest even (subnormals, overflow to ∞, NaN kept). */
export function f32ToF16(value: number): number {
  f32Box[0] = value;
  const x = u32Box[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: ±0
    const m = mant | 0x800000; // implicit bit
    const shift = 14 - e; // 24-bit significand down to the subnormal's 10 bits
    let half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && (half & 1))) half++;
    return sign | half;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++; // may carry into the exponent: correct
  return sign | h;
}

let f16Table: Float32Array | undefined;
/** binary16 bits → value (a 64k table, built once). */
export function f16ToF32(bits: number): number {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1;
      const e = (h >>> 10) & 0x1f;
      const m = h & 0x3ff;
      f16Table[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? Number.NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return f16Table[bits & 0xffff]!;
}

export function encodeF16(x: Float32Array): Uint8Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32ToF16(x[i]!);
  return new Uint8Array(out.buffer);
}

export function encodeBf16(x: Float32Array): Uint8Array {
  return new Uint8Array(f32ArrayToBf16(x).buffer);
}

export function encodeF32(x: Float32Array): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

/** ggml's nearest_int: adds 1.5·2²³ in f32 so the FPU's round-to-nearest-even does the rounding. */
export function nearestInt(v: number): number {
  return fr(v + 12582912) - 12582912;
}

// ---- Q8_0 -----------------------------------------------------------------------------------

export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const { elements: QK, bytes } = GGML_BLOCK.Q8_0;
  if (x.length % QK !== 0) throw new Error(`Q8_0 needs a multiple of ${QK} values, got ${x.length}`);
  const nb = x.length / QK;
  const out = new Uint8Array(nb * bytes);
  const view = new DataView(out.buffer);
  const qs = new Int8Array(out.buffer);
  for (let i = 0; i < nb; i++) {
    const base = i * QK;
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[base + j]!));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    view.setUint16(i * bytes, f32ToF16(d), true);
    const q0 = i * bytes + 2;
    for (let j = 0; j < QK; j++) {
      const v = fr(x[base + j]! * id);
      // roundf: half away from zero
      qs[q0 + j] = v < 0 ? -Math.round(-v) : Math.round(v);
    }
  }
  return out;
}

export function dequantizeQ8_0(data: Uint8Array, count: number): Float32Array {
  const { elements: QK, bytes } = GGML_BLOCK.Q8_0;
  const out = new Float32Array(count);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const qs = new Int8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i < count / QK; i++) {
    const d = f16ToF32(view.getUint16(i * bytes, true));
    for (let j = 0; j < QK; j++) out[i * QK + j] = fr(d * qs[i * bytes + 2 + j]!);
  }
  return out;
}

// ---- Q4_K -----------------------------------------------------------------------------------

const QK_K = 256;

/**
 * Scratch for make_qkx2_quants, allocated once: the quantiser runs over billions of values and
 * per-block allocations would dominate its time.
 */
const kWeights = new Float32Array(32);
const kLaux = new Uint8Array(32);
const kL = new Uint8Array(QK_K);
const kScales = new Float32Array(8);
const kMins = new Float32Array(8);
const minOut = new Float32Array(1);

/**
 * ggml's make_qkx2_quants for nmax = 15: start from the min/max grid, then try 21 scales around
 * it (rmin −1, rdelta 0.1) and keep the weighted least-squares fit (scale, min ≤ 0) with the
 * smallest weighted squared error. Writes the levels into L[lOff…] and −min into minOut.
 *
 * The levels come from the same f32 products as in C (so rounding ties agree); the sums are
 * accumulated in f64, which is at least as accurate as ggml's f32 sums and several times faster
 * than rounding every step. Where the two could disagree (two candidate scales with errors equal
 * to f32 precision) either choice is as good.
 */
const kXm = new Float32Array(32);
function makeQkx2(x: Float32Array, off: number, n: number, nmax: number, weights: Float32Array, L: Uint8Array, lOff: number): number {
  let min = x[off]!;
  let max = x[off]!;
  let sumW = 0;
  let sumX = 0;
  let sumX2 = 0;
  for (let i = 0; i < n; i++) {
    const xi = x[off + i]!;
    if (xi < min) min = xi;
    if (xi > max) max = xi;
    sumW += weights[i]!;
    sumX += weights[i]! * xi;
    sumX2 += weights[i]! * xi * xi;
  }
  if (min > 0) min = 0;
  if (max === min) {
    for (let i = 0; i < n; i++) L[lOff + i] = 0;
    minOut[0] = -min;
    return 0;
  }
  const range = fr(max - min);
  for (let i = 0; i < n; i++) kXm[i] = fr(x[off + i]! - min);
  let iscale = fr(nmax / range);
  let scale = fr(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const v = fr(iscale * kXm[i]!) + 12582912;
    const l = Math.max(0, Math.min(nmax, fr(v) - 12582912));
    L[lOff + i] = l;
    const diff = scale * l + min - x[off + i]!;
    bestError += weights[i]! * diff * diff;
  }
  for (let is = 0; is <= 20; is++) {
    iscale = fr(fr(fr(-1 + fr(0.1 * is)) + nmax) / range);
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, fr(fr(iscale * kXm[i]!) + 12582912) - 12582912));
      kLaux[i] = l;
      const wl = weights[i]! * l;
      sumL += wl;
      sumL2 += wl * l;
      sumXL += wl * x[off + i]!;
    }
    const D = sumW * sumL2 - sumL * sumL;
    if (D > 0) {
      let thisScale = (sumW * sumXL - sumX * sumL) / D;
      let thisMin = (sumL2 * sumX - sumL * sumXL) / D;
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = sumXL / sumL2;
      }
      // Σw(s·l + m − x)² expanded into the sums already at hand (no second pass over the block).
      const err =
        thisScale * thisScale * sumL2 +
        2 * thisScale * thisMin * sumL -
        2 * thisScale * sumXL +
        thisMin * thisMin * sumW -
        2 * thisMin * sumX +
        sumX2;
      if (err < bestError) {
        for (let i = 0; i < n; i++) L[lOff + i] = kLaux[i]!;
        bestError = err;
        scale = fr(thisScale);
        min = fr(thisMin);
      }
    }
  }
  minOut[0] = -min;
  return scale;
}

/** The 6-bit scale and min of sub-block j from the 12 packed bytes (ggml's get_scale_min_k4). */
export function scaleMinK4(j: number, q: Uint8Array, off: number, out: Uint8Array = new Uint8Array(2)): Uint8Array {
  if (j < 4) {
    out[0] = q[off + j]! & 63;
    out[1] = q[off + j + 4]! & 63;
  } else {
    out[0] = (q[off + j + 4]! & 0xf) | ((q[off + j - 4]! >> 6) << 4);
    out[1] = (q[off + j + 4]! >> 4) | ((q[off + j]! >> 6) << 4);
  }
  return out;
}
const scMin = new Uint8Array(2);

export function quantizeQ4_K(x: Float32Array): Uint8Array {
  const { bytes } = GGML_BLOCK.Q4_K;
  if (x.length % QK_K !== 0) throw new Error(`Q4_K needs a multiple of ${QK_K} values, got ${x.length}`);
  const nb = x.length / QK_K;
  const out = new Uint8Array(nb * bytes);
  const view = new DataView(out.buffer);
  for (let i = 0; i < nb; i++) {
    const xo = i * QK_K;
    const bo = i * bytes;
    const so = bo + 4; // scales[12]
    const qo = bo + 16; // qs[128]
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 += x[xo + 32 * j + l]! * x[xo + 32 * j + l]!;
      const avX = fr(Math.sqrt(sumX2 / 32));
      for (let l = 0; l < 32; l++) kWeights[l] = fr(avX + Math.abs(x[xo + 32 * j + l]!));
      kScales[j] = makeQkx2(x, xo + 32 * j, 32, 15, kWeights, kL, 32 * j);
      kMins[j] = minOut[0]!;
      if (kScales[j]! > maxScale) maxScale = kScales[j]!;
      if (kMins[j]! > maxMin) maxMin = kMins[j]!;
    }
    const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
    for (let j = 0; j < 8; j++) {
      // uint8_t conversion of the int result, then the 63 cap (values are never negative here)
      const ls = Math.min(63, nearestInt(fr(invScale * kScales[j]!)) & 0xff);
      const lm = Math.min(63, nearestInt(fr(invMin * kMins[j]!)) & 0xff);
      if (j < 4) {
        out[so + j] = ls;
        out[so + j + 4] = lm;
      } else {
        out[so + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
        out[so + j - 4]! |= (ls >> 4) << 6;
        out[so + j]! |= (lm >> 4) << 6;
      }
    }
    const dBits = f32ToF16(fr(maxScale / 63));
    const dminBits = f32ToF16(fr(maxMin / 63));
    view.setUint16(bo, dBits, true);
    view.setUint16(bo + 2, dminBits, true);
    const dAll = f16ToF32(dBits);
    const dminAll = f16ToF32(dminBits);
    for (let j = 0; j < 8; j++) {
      scaleMinK4(j, out, so, scMin);
      const d = fr(dAll * scMin[0]!);
      if (!d) continue;
      const dm = fr(dminAll * scMin[1]!);
      for (let ii = 0; ii < 32; ii++) {
        const l = nearestInt(fr(fr(x[xo + 32 * j + ii]! + dm) / d));
        kL[32 * j + ii] = Math.max(0, Math.min(15, l));
      }
    }
    for (let j = 0, q = qo; j < QK_K; j += 64, q += 32) {
      for (let l = 0; l < 32; l++) out[q + l] = kL[j + l]! | (kL[j + l + 32]! << 4);
    }
  }
  return out;
}

export function dequantizeQ4_K(data: Uint8Array, count: number): Float32Array {
  const { bytes } = GGML_BLOCK.Q4_K;
  const out = new Float32Array(count);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const q8 = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let y = 0;
  for (let i = 0; i < count / QK_K; i++) {
    const bo = i * bytes;
    const d = f16ToF32(view.getUint16(bo, true));
    const min = f16ToF32(view.getUint16(bo + 2, true));
    let q = bo + 16;
    for (let j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
      scaleMinK4(is, q8, bo + 4, scMin);
      const d1 = fr(d * scMin[0]!);
      const mm1 = fr(min * scMin[1]!);
      scaleMinK4(is + 1, q8, bo + 4, scMin);
      const d2 = fr(d * scMin[0]!);
      const mm2 = fr(min * scMin[1]!);
      for (let l = 0; l < 32; l++) out[y++] = fr(fr(d1 * (q8[q + l]! & 0xf)) - mm1);
      for (let l = 0; l < 32; l++) out[y++] = fr(fr(d2 * (q8[q + l]! >> 4)) - mm2);
    }
  }
  return out;
}

// ---- Q6_K -----------------------------------------------------------------------------------

const k6L = new Int8Array(QK_K);
const k6Scales = new Float32Array(16);
const GROUP_MAX_EPS = 1e-15;

/**
 * ggml's make_qx_quants for nmax = 32, rmse_type 1 (weights x²), no importance: the
 * max-magnitude grid, then 18 nearby scales, keeping the best weighted least-squares fit.
 * Levels (offset by nmax) go to k6L[lOff…]. Levels from f32 products, sums in f64 (as makeQkx2).
 */
const k6Try = new Int8Array(16);
function makeQx(x: Float32Array, off: number, n: number, nmax: number, lOff: number): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[off + i]!);
    if (ax > amax) {
      amax = ax;
      max = x[off + i]!;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) k6L[lOff + i] = 0;
    return 0;
  }
  let iscale = fr(-nmax / max);
  let sumLX = 0;
  let sumL2 = 0;
  for (let i = 0; i < n; i++) {
    const xi = x[off + i]!;
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * xi))));
    k6L[lOff + i] = l + nmax;
    const w = xi * xi;
    sumLX += w * xi * l;
    sumL2 += w * l * l;
  }
  let scale = sumL2 ? sumLX / sumL2 : 0;
  let best = scale * sumLX;
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(0.1 * is)) / max);
    sumLX = 0;
    sumL2 = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[off + i]!;
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * xi))));
      k6Try[i] = l;
      const w = xi * xi;
      sumLX += w * xi * l;
      sumL2 += w * l * l;
    }
    if (sumL2 > 0 && sumLX * sumLX > best * sumL2) {
      for (let i = 0; i < n; i++) k6L[lOff + i] = nmax + k6Try[i]!;
      scale = sumLX / sumL2;
      best = scale * sumLX;
    }
  }
  return fr(scale);
}

export function quantizeQ6_K(x: Float32Array): Uint8Array {
  const { bytes } = GGML_BLOCK.Q6_K;
  if (x.length % QK_K !== 0) throw new Error(`Q6_K needs a multiple of ${QK_K} values, got ${x.length}`);
  const nb = x.length / QK_K;
  const out = new Uint8Array(nb * bytes);
  const view = new DataView(out.buffer);
  const scalesI8 = new Int8Array(out.buffer);
  for (let i = 0; i < nb; i++) {
    const xo = i * QK_K;
    const bo = i * bytes; // ql[128] qh[64] scales[16] d
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      const scale = makeQx(x, xo + 16 * ib, 16, 32, 16 * ib);
      k6Scales[ib] = scale;
      if (Math.abs(scale) > maxAbsScale) {
        maxAbsScale = Math.abs(scale);
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) continue; // an all-zero block: zero bytes, d = 0
    const iscale = fr(-128 / maxScale);
    const dBits = f32ToF16(fr(1 / iscale));
    view.setUint16(bo + 208, dBits, true);
    for (let ib = 0; ib < 16; ib++) scalesI8[bo + 192 + ib] = Math.min(127, nearestInt(fr(iscale * k6Scales[ib]!)));
    const dAll = f16ToF32(dBits);
    for (let j = 0; j < 16; j++) {
      const d = fr(dAll * scalesI8[bo + 192 + j]!);
      if (!d) continue;
      for (let ii = 0; ii < 16; ii++) {
        const l = Math.max(-32, Math.min(31, nearestInt(fr(x[xo + 16 * j + ii]! / d))));
        k6L[16 * j + ii] = l + 32;
      }
    }
    let ql = bo;
    let qh = bo + 128;
    for (let j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
      for (let l = 0; l < 32; l++) {
        const a = k6L[j + l]!;
        const b = k6L[j + l + 32]!;
        const c = k6L[j + l + 64]!;
        const e = k6L[j + l + 96]!;
        out[ql + l] = (a & 0xf) | ((c & 0xf) << 4);
        out[ql + l + 32] = (b & 0xf) | ((e & 0xf) << 4);
        out[qh + l] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
      }
    }
  }
  return out;
}

export function dequantizeQ6_K(data: Uint8Array, count: number): Float32Array {
  const { bytes } = GGML_BLOCK.Q6_K;
  const out = new Float32Array(count);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const u8 = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const i8 = new Int8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i < count / QK_K; i++) {
    const bo = i * bytes;
    const d = f16ToF32(view.getUint16(bo + 208, true));
    let ql = bo;
    let qh = bo + 128;
    let sc = bo + 192;
    for (let n = 0; n < QK_K; n += 128, ql += 64, qh += 32, sc += 8) {
      const y = i * QK_K + n;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const q1 = ((u8[ql + l]! & 0xf) | (((u8[qh + l]! >> 0) & 3) << 4)) - 32;
        const q2 = ((u8[ql + l + 32]! & 0xf) | (((u8[qh + l]! >> 2) & 3) << 4)) - 32;
        const q3 = ((u8[ql + l]! >> 4) | (((u8[qh + l]! >> 4) & 3) << 4)) - 32;
        const q4 = ((u8[ql + l + 32]! >> 4) | (((u8[qh + l]! >> 6) & 3) << 4)) - 32;
        out[y + l] = fr(fr(d * i8[sc + is]!) * q1);
        out[y + l + 32] = fr(fr(d * i8[sc + is + 2]!) * q2);
        out[y + l + 64] = fr(fr(d * i8[sc + is + 4]!) * q3);
        out[y + l + 96] = fr(fr(d * i8[sc + is + 6]!) * q4);
      }
    }
  }
  return out;
}

// ---- dispatch -------------------------------------------------------------------------------

export type EncodableType = "F32" | "F16" | "BF16" | "Q8_0" | "Q4_K" | "Q6_K";

export function encodeAs(type: EncodableType, x: Float32Array): Uint8Array {
  switch (type) {
    case "F32":
      return encodeF32(x);
    case "F16":
      return encodeF16(x);
    case "BF16":
      return encodeBf16(x);
    case "Q8_0":
      return quantizeQ8_0(x);
    case "Q4_K":
      return quantizeQ4_K(x);
    case "Q6_K":
      return quantizeQ6_K(x);
  }
}

/** The reading side, for tests and for checking an export against its source. */
export function decodeAs(type: EncodableType, data: Uint8Array, count: number): Float32Array {
  switch (type) {
    case "F32":
      return new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + count * 4));
    case "F16": {
      const out = new Float32Array(count);
      const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      for (let i = 0; i < count; i++) out[i] = f16ToF32(view.getUint16(2 * i, true));
      return out;
    }
    case "BF16": {
      const out = new Float32Array(count);
      const bits = new Uint32Array(out.buffer);
      const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
      return out;
    }
    case "Q8_0":
      return dequantizeQ8_0(data, count);
    case "Q4_K":
      return dequantizeQ4_K(data, count);
    case "Q6_K":
      return dequantizeQ6_K(data, count);
  }
}
