/**
 * Ops that move elements without arithmetic. Rows are the first dimension ("[N, C]" with C the
 * product of the rest). Layout ops keep the dtype (and fp8 scale) of their input; their backward
 * passes are layout ops too (slice ↔ zero-padded scatter, gather ↔ scatter-add, permutation ↔
 * inverse permutation), composed in ../../autograd/tape.ts.
 */
import { f32ArrayToBf16 } from "../../tensor/bf16.ts";
import type { DType } from "../../tensor/dtype.ts";
import { TensorError } from "../../tensor/errors.ts";
import { f32ArrayToFp8E4m3 } from "../../tensor/fp8.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { type CpuAllocator, type CpuStorage, f32Of, i32Of, newStorage, storageOf, valuesF32 } from "./storage.ts";

function rowWidth(t: Tensor): number {
  return t.shape.length === 0 ? 1 : t.shape.slice(1).reduce((a, b) => a * b, 1);
}

function rowCount(t: Tensor): number {
  return t.shape.length === 0 ? 1 : t.shape[0]!;
}

export function cast(alloc: CpuAllocator, x: Tensor, dtype: DType): Tensor {
  if (dtype === x.dtype) return copy(alloc, x);
  if (x.dtype === "i32") {
    const src = i32Of(x, "cast");
    const values = Float32Array.from(src);
    return dtype === "f32" ? alloc.fromF32(values, x.shape) : cast(alloc, alloc.fromF32(values, x.shape), dtype);
  }
  const values = valuesF32(x, "cast");
  switch (dtype) {
    case "f32":
      return alloc.fromF32(values, x.shape);
    case "bf16":
      return alloc.adopt(f32ArrayToBf16(values), x.shape, "bf16");
    case "fp8_e4m3":
      // Scale 1: values beyond ±448 saturate. Quantising with a chosen scale is the caller's job.
      return alloc.adopt(f32ArrayToFp8E4m3(values), x.shape, "fp8_e4m3", 1);
    case "i32":
      return alloc.adopt(Int32Array.from(values, Math.trunc), x.shape, "i32");
  }
}

export function copy(alloc: CpuAllocator, x: Tensor): Tensor {
  return alloc.adopt(storageOf(x).slice(), x.shape, x.dtype, x.scale);
}

export function sliceRows(alloc: CpuAllocator, x: Tensor, start: number, count: number): Tensor {
  const n = rowCount(x);
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > n) {
    throw new TensorError("sliceRows", `rows [${start}, ${start + count}) out of range 0..${n}`, { shapes: [x.shape] });
  }
  const c = rowWidth(x);
  return alloc.adopt(storageOf(x).slice(start * c, (start + count) * c), [count, ...x.shape.slice(1)], x.dtype, x.scale);
}

export function concatRows(alloc: CpuAllocator, parts: readonly Tensor[]): Tensor {
  const first = parts[0];
  if (!first) throw new TensorError("concatRows", "needs at least one tensor");
  const tail = first.shape.slice(1);
  for (const p of parts) {
    const sameTail = p.shape.length === first.shape.length && p.shape.slice(1).every((d, i) => d === tail[i]);
    if (!sameTail || p.dtype !== first.dtype || p.scale !== first.scale) {
      throw new TensorError("concatRows", "parts differ in row shape, dtype or scale", {
        shapes: parts.map((q) => q.shape),
        dtypes: parts.map((q) => q.dtype),
      });
    }
  }
  const rows = parts.reduce((a, p) => a + rowCount(p), 0);
  const out = newStorage(first.dtype, rows * rowWidth(first));
  let offset = 0;
  for (const p of parts) {
    const src = storageOf(p);
    setRaw(out, src, offset);
    offset += src.length;
  }
  return alloc.adopt(out, [rows, ...tail], first.dtype, first.scale);
}

function setRaw(dst: CpuStorage, src: CpuStorage, offset: number): void {
  (dst as Float32Array).set(src as Float32Array, offset);
}

function checkIndex(op: string, index: Int32Array, limit: number, shapes: readonly (readonly number[])[]): void {
  for (const i of index) {
    if (i < 0 || i >= limit) throw new TensorError(op, `index ${i} out of range 0..${limit - 1}`, { shapes });
  }
}

export function gatherRows(alloc: CpuAllocator, x: Tensor, index: Tensor): Tensor {
  const idx = i32Of(index, "gatherRows");
  checkIndex("gatherRows", idx, rowCount(x), [x.shape, index.shape]);
  const c = rowWidth(x);
  const src = storageOf(x);
  const out = newStorage(x.dtype, idx.length * c);
  for (let i = 0; i < idx.length; i++) setRaw(out, src.subarray(idx[i]! * c, (idx[i]! + 1) * c), i * c);
  return alloc.adopt(out, [idx.length, ...x.shape.slice(1)], x.dtype, x.scale);
}

function checkScatter(op: string, dst: Tensor, index: Tensor, src: Tensor): Int32Array {
  const idx = i32Of(index, op);
  if (rowWidth(dst) !== rowWidth(src) || rowCount(src) !== idx.length) {
    throw new TensorError(op, "src must be [index length, dst row width]", { shapes: [dst.shape, index.shape, src.shape] });
  }
  checkIndex(op, idx, rowCount(dst), [dst.shape, index.shape]);
  return idx;
}

/** dst[index[i]] = src[i]. Same dtypes copy bits; an f32 dst accepts any float src. */
export function scatterRowsInPlace(dst: Tensor, index: Tensor, src: Tensor): void {
  const idx = checkScatter("scatterRowsInPlace", dst, index, src);
  const c = rowWidth(dst);
  const out = storageOf(dst);
  let from: CpuStorage;
  if (src.dtype === dst.dtype && src.scale === dst.scale) from = storageOf(src);
  else if (dst.dtype === "f32") from = valuesF32(src, "scatterRowsInPlace");
  else throw new TensorError("scatterRowsInPlace", "dst must be f32 or share src's dtype", { dtypes: [dst.dtype, src.dtype] });
  for (let i = 0; i < idx.length; i++) setRaw(out, from.subarray(i * c, (i + 1) * c), idx[i]! * c);
}

/** dst[index[i]] += src[i] (indices may repeat); dst is f32. */
export function scatterAddRowsInPlace(dst: Tensor, index: Tensor, src: Tensor): void {
  const idx = checkScatter("scatterAddRowsInPlace", dst, index, src);
  const c = rowWidth(dst);
  const out = f32Of(dst, "scatterAddRowsInPlace");
  const from = valuesF32(src, "scatterAddRowsInPlace");
  for (let i = 0; i < idx.length; i++) {
    const o = idx[i]! * c;
    const s = i * c;
    for (let j = 0; j < c; j++) out[o + j] = out[o + j]! + from[s + j]!;
  }
}

function checkElements(op: string, x: Tensor, index: Tensor, outShape: readonly number[]): Int32Array {
  const idx = i32Of(index, op);
  const outSize = outShape.reduce((a, b) => a * b, 1);
  if (idx.length !== outSize || idx.length !== x.size) {
    throw new TensorError(op, "index, x and output must have the same number of elements", {
      shapes: [x.shape, index.shape, outShape],
    });
  }
  checkIndex(op, idx, x.size, [x.shape, index.shape]);
  return idx;
}

/** out.flat[i] = x.flat[index[i]]. */
export function gatherElements(alloc: CpuAllocator, x: Tensor, index: Tensor, outShape: readonly number[]): Tensor {
  const idx = checkElements("gatherElements", x, index, outShape);
  const src = storageOf(x);
  const out = newStorage(x.dtype, idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = src[idx[i]!]!;
  return alloc.adopt(out, outShape, x.dtype, x.scale);
}

/** out.flat[index[i]] = x.flat[i] (the inverse of gatherElements when index is a permutation). */
export function scatterElements(alloc: CpuAllocator, x: Tensor, index: Tensor, outShape: readonly number[]): Tensor {
  const idx = checkElements("scatterElements", x, index, outShape);
  const src = storageOf(x);
  const out = newStorage(x.dtype, idx.length);
  for (let i = 0; i < idx.length; i++) out[idx[i]!] = src[i]!;
  return alloc.adopt(out, outShape, x.dtype, x.scale);
}

/**
 * Conv2d (kernel = stride = p, no bias) as im2col: pixels [C, H, W] → [(H/p)·(W/p), C·p·p], patches
 * in row-major grid order, each row ordered (channel, ky, kx) like a conv weight [out, C, p, p].
 * Its backward is never needed: pixels are inputs, not parameters.
 */
export function patchify(alloc: CpuAllocator, pixels: Tensor, p: number): Tensor {
  const [channels, height, width] = pixels.shape as [number, number, number];
  if (pixels.shape.length !== 3 || height % p !== 0 || width % p !== 0) {
    throw new TensorError("patchify", `pixels must be [C, H, W] with H and W multiples of ${p}`, { shapes: [pixels.shape] });
  }
  const src = valuesF32(pixels, "patchify");
  const gh = height / p;
  const gw = width / p;
  const rowLen = channels * p * p;
  const out = new Float32Array(gh * gw * rowLen);
  for (let gy = 0; gy < gh; gy++) {
    for (let gx = 0; gx < gw; gx++) {
      let o = (gy * gw + gx) * rowLen;
      for (let c = 0; c < channels; c++) {
        for (let ky = 0; ky < p; ky++) {
          const s = (c * height + gy * p + ky) * width + gx * p;
          for (let kx = 0; kx < p; kx++) out[o++] = src[s + kx]!;
        }
      }
    }
  }
  return alloc.fromF32(out, [gh * gw, rowLen]);
}
