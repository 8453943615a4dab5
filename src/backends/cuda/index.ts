/**
 * The CUDA backend: the Backend interface on top of native/cuda's C ABI. It computes the same
 * functions as the CPU backend (src/backends/cpu), with the same dtype rules: layout ops keep their
 * input's dtype and scale, arithmetic produces f32 (matmul may produce bf16), in-place ops write f32.
 * Shape errors throw at the call like the CPU backend; index and label errors inside kernels are
 * flagged on the device and thrown at the next read().
 */
import { f32ArrayToBf16 } from "../../tensor/bf16.ts";
import { adamwScalars } from "../../tensor/adamw-scalars.ts";
import type { AttentionMask, Backend, GradClip, LoraDropout, MatmulPrecision } from "../../tensor/backend.ts";
import { BLOCK_8BIT, packedCodeWords, SIGNED_MAP, UNSIGNED_MAP } from "../../tensor/blockwise8.ts";
import { attentionDims, matmulDims, requireSameSize, rowsCols } from "../../tensor/checks.ts";
import { BYTES_PER_ELEMENT, isNarrowFloat, type DType } from "../../tensor/dtype.ts";
import { TensorError } from "../../tensor/errors.ts";
import { f32ArrayToFp8E4m3 } from "../../tensor/fp8.ts";
import {
  checkLoraDropout,
  checkLoraGrad,
  loraDims,
  loraDownComposite,
  loraDxAccumulateComposite,
  loraDxComposite,
  loraGradAComposite,
  loraMasked,
  loraUpBackwardComposite,
  loraUpBackwardDims,
  loraUpComposite,
  loraUpDims,
} from "../../tensor/lora-composite.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { type CudaActivity, cudaActivity } from "./activity.ts";
import { CudaError } from "./errors.ts";
import { type CtxHandle, check, DTYPE_CODE, defaultLibraryPath, loadLibrary, type SplintCudaLib } from "./ffi.ts";
import { CudaMemory, dtypeCode, requireDtype, requireFloat } from "./memory.ts";

export interface CudaBackend extends Backend {
  readonly name: "cuda";
  /** "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB". */
  readonly device: string;
  /** Waits for queued work (for timing). */
  synchronize(): void;
  /**
   * Programmatic dependent launch (sm_90+, native/cuda/src/common.cuh): each kernel may be scheduled
   * while the one before it finishes, hiding the launch gap between back-to-back kernels. On from
   * creation where the device and the library's build allow it (1–2.5 % of a training step in the
   * H100 calls at e4f5ca0 and 65e89f6); SPLINT_CUDA_PDL=0 leaves it off, SPLINT_CUDA_PDL=1 makes a
   * device without it an error instead of a silent off.
   */
  setProgrammaticLaunch(on: boolean): void;
  /** Whether programmatic dependent launch is on. */
  readonly programmaticLaunch: boolean;
  /** Allocator statistics, including bytes cached from cudaMalloc and how many cudaMalloc calls were made. */
  allocatorStats(): { live: number; peak: number; reserved: number; mallocs: number };
  /** Frees the context and all its device memory; afterwards ops throw and Tensor.free is a no-op. */
  dispose(): void;
  /** Stream timing events and counters for step profiles (bench/step-profile.ts). */
  readonly profile: CudaProfiler;
  /** CUPTI's exact record of the device's work over a window (src/backends/cuda/activity.ts); CUPTI is optional. */
  readonly activity: CudaActivity;
  /** The library, context and device addresses, for the NCCL communicator (src/backends/cuda/nccl.ts). */
  native(): { lib: SplintCudaLib; ctx: CtxHandle; ptr(t: Tensor, op: string): number };
}

export interface CudaProfiler {
  /** Records a timing event on the stream; no host wait. */
  mark(): void;
  /** Waits for the last mark and returns the milliseconds between consecutive marks since the last read. */
  read(): Float32Array;
  /** Totals since the backend was created. */
  counters(): { launches: number; syncs: number; uploads: number };
}

type HostData = Float32Array | Uint16Array | Uint8Array | Int32Array;

function rowCount(t: Tensor): number {
  return t.shape.length === 0 ? 1 : t.shape[0]!;
}

function rowWidth(t: Tensor): number {
  return t.shape.length === 0 ? 1 : t.shape.slice(1).reduce((a, b) => a * b, 1);
}


function deviceCount(lib: SplintCudaLib): number {
  const count = new Int32Array(1);
  const status = lib.device_count(count);
  return status === 0 ? count[0]! : 0;
}

/** Loads the library (default: $SPLINT_CUDA_LIB or native/cuda/build/libsplint_cuda.so) and opens device 0. */
export function createCudaBackend(libPath?: string, device = 0): CudaBackend {
  const lib = loadLibrary(libPath ?? defaultLibraryPath());
  if (deviceCount(lib) <= device) {
    throw new CudaError("create", `no CUDA device ${device}: ${lib.last_error()}`, "run on a machine with an NVIDIA GPU and driver");
  }
  const nameBuf = Buffer.alloc(256);
  check(lib, lib.device_name(device, nameBuf, nameBuf.length), "create");
  const deviceName = nameBuf.subarray(0, nameBuf.indexOf(0)).toString("utf8");
  const handle: [CtxHandle | null] = [null];
  check(lib, lib.create(device, handle), "create");
  const ctx = handle[0]!;
  const backend = buildBackend(lib, ctx, deviceName);
  const pdl = process.env.SPLINT_CUDA_PDL;
  if (pdl !== undefined && pdl !== "" && pdl !== "0" && pdl !== "1") {
    backend.dispose();
    throw new CudaError("create", `SPLINT_CUDA_PDL=${pdl}: expected 0 (off) or 1 (on, or an error where the device cannot)`);
  }
  if (pdl !== "0") {
    try {
      backend.setProgrammaticLaunch(true);
    } catch (err) {
      // By default a device before sm_90 (or a library built for one) simply runs without it.
      if (pdl === "1" || !(err instanceof CudaError)) {
        backend.dispose();
        throw err;
      }
    }
  }
  return backend;
}

function buildBackend(lib: SplintCudaLib, ctx: CtxHandle, deviceName: string): CudaBackend {
  let mem: CudaMemory;
  const ok = (status: number, op: string): void => check(lib, status, op);
  const p = (t: Tensor, op: string): number => mem.ptr(t, op);
  // Segment tables for block-diagonal attention, kept per distinct set of lengths: the same images
  // come back in the backward pass, and an upload from pageable memory waits for the stream.
  const segmentTables = new Map<string, { start: Tensor; end: Tensor; tiles: Tensor | null; tileCount: number }>();
  const MAX_SEGMENT_TABLES = 64;
  /** Rows (or keys) a flash kernel block takes: native/cuda/src/flash_attention.cu's kSegTile. */
  const SEGMENT_TILE = 64;
  /** Timing events recorded since the last profile read. */
  let marks = 0;
  let programmaticLaunch = false;
  /** blockwise8.ts's maps on the device, uploaded by the first 8-bit step. */
  let quantMaps: { signed: Tensor; unsigned: Tensor } | null = null;

  function alloc(shape: readonly number[], dtype: DType, scale = 1): Tensor {
    return mem.allocate(shape, dtype, scale);
  }

  function f32Like(x: Tensor): Tensor {
    return alloc(x.shape, "f32");
  }

  /** f32 cos/sin tables (the kernel reads f32). */
  function asF32(x: Tensor, op: string): { t: Tensor; temp: boolean } {
    requireFloat(op, x);
    if (x.dtype === "f32") return { t: x, temp: false };
    return { t: backend.cast(x, "f32"), temp: true };
  }

  function maskArgs(
    op: string,
    mask: AttentionMask,
    b: number,
    t: number,
    s: number,
  ): { kind: number; queryOffset: number; keyValid: number; segStart: number; segEnd: number; segTiles: number; tileCount: number } {
    if (mask.kind === "causal") {
      if (!Number.isInteger(mask.queryOffset)) throw new TensorError(op, `queryOffset ${mask.queryOffset} must be an integer`);
      const kv = mask.keyValid;
      if (kv && (kv.size !== b * s || kv.dtype !== "i32")) {
        throw new TensorError(op, "keyValid must be i32 [B, S]", { shapes: [kv.shape], dtypes: [kv.dtype] });
      }
      return { kind: 0, queryOffset: mask.queryOffset, keyValid: kv ? p(kv, op) : 0, segStart: 0, segEnd: 0, segTiles: 0, tileCount: 0 };
    }
    const total = mask.lengths.reduce((a, x) => a + x, 0);
    if (b !== 1 || t !== s || total !== s || mask.lengths.some((x) => !Number.isInteger(x) || x < 0)) {
      throw new TensorError(op, `segment mask needs B = 1 and T = S = Σ lengths (${total})`, { shapes: [[b, t], [b, s]] });
    }
    const key = mask.lengths.join(",");
    let tables = segmentTables.get(key);
    if (!tables) {
      const start = new Int32Array(s);
      const end = new Int32Array(s);
      // The flash kernels' blocks take SEGMENT_TILE rows (or keys) each, cut within each segment
      // so that none straddles two (such a block walks both segments' keys: twice the work).
      const tileStarts: number[] = [];
      let from = 0;
      for (const length of mask.lengths) {
        start.fill(from, from, from + length);
        end.fill(from + length, from, from + length);
        for (let r = from; r < from + length; r += SEGMENT_TILE) tileStarts.push(r);
        from += length;
      }
      if (segmentTables.size >= MAX_SEGMENT_TABLES) {
        for (const old of segmentTables.values()) {
          old.start.free();
          old.end.free();
          old.tiles?.free();
        }
        segmentTables.clear();
      }
      tables = {
        start: backend.upload(start, [s], "i32"),
        end: backend.upload(end, [s], "i32"),
        tiles: tileStarts.length > 0 ? backend.upload(Int32Array.from(tileStarts), [tileStarts.length], "i32") : null,
        tileCount: tileStarts.length,
      };
      segmentTables.set(key, tables);
    }
    return {
      kind: 1,
      queryOffset: 0,
      keyValid: 0,
      segStart: p(tables.start, op),
      segEnd: p(tables.end, op),
      segTiles: tables.tiles ? p(tables.tiles, op) : 0,
      tileCount: tables.tileCount,
    };
  }

  function checkedAttentionDims(op: string, q: Tensor, k: Tensor, v: Tensor): [number, number, number, number, number, number] {
    const { b, t, s, hq, hkv, d } = attentionDims(op, q, k, v);
    requireFloat(op, q, k, v);
    return [b, t, s, hq, hkv, d];
  }

  /**
   * The operands of the flash kernels as bf16 (each f32 one narrowed once, as the kernel would round
   * it anyway), so the kernels copy their tiles to shared memory asynchronously. `temps` are freed
   * by the caller after the launch (stream order keeps that safe).
   */
  function flashOperands(precision: MatmulPrecision, xs: readonly Tensor[]): { operands: Tensor[]; temps: Tensor[] } {
    if (precision !== "bf16") return { operands: [...xs], temps: [] };
    const temps: Tensor[] = [];
    const operands = xs.map((x) => {
      if (x.dtype !== "f32") return x;
      const narrowed = backend.cast(x, "bf16");
      temps.push(narrowed);
      return narrowed;
    });
    return { operands, temps };
  }

  /** Activations are written as f32 or, for the fast tier's bf16 products, bf16. */
  function activationDtype(op: string, dtype: DType): DType {
    if (dtype !== "f32" && dtype !== "bf16") throw new TensorError(op, `cannot produce ${dtype} output`, { dtypes: [dtype], hint: "outputs are f32 or bf16" });
    return dtype;
  }

  /**
   * Whether lora.cu's kernels compute a fused LoRA op: the fast tier (precision "bf16"), r ≤ 64 and
   * f32/bf16 operands (an f32 A or du is rounded to bf16 first, as autocast would). Otherwise the
   * composite of dropout and cuBLASLt products runs (the exact tier; fp8; larger ranks).
   */
  function loraKernels(opts: LoraDropout, r: number, ...operands: Tensor[]): boolean {
    return opts.precision === "bf16" && rankKernels(r, ...operands);
  }

  /** lora.cu's kernels take r ≤ 64 and f32/bf16 operands (loraUp and its backward are fast-tier ops). */
  function rankKernels(r: number, ...operands: Tensor[]): boolean {
    return r >= 1 && r <= 64 && operands.every((t) => t.dtype === "f32" || t.dtype === "bf16");
  }

  /** Rows {first, second, n} of a two-list multi-tensor call, each pair checked for dtype and size. */
  function pairRows(op: string, firsts: readonly Tensor[], firstDtype: DType, seconds: readonly Tensor[], secondDtype: DType): BigUint64Array {
    requireAligned(op, firsts, seconds);
    const rows = new BigUint64Array(3 * firsts.length);
    firsts.forEach((a, k) => {
      const b = seconds[k]!;
      requireDtype(op, a, [firstDtype]);
      requireDtype(op, b, [secondDtype]);
      requireSizes(op, a.size, [b]);
      rows.set([BigInt(p(a, op)), BigInt(p(b, op)), BigInt(a.size)], 3 * k);
    });
    return rows;
  }

  function bf16Operand(t: Tensor): Tensor {
    return t.dtype === "bf16" ? t : backend.cast(t, "bf16");
  }

  /** The dropout's arguments as splint_cuda_dropout takes them (see dropout below). */
  function loraMaskArgs(opts: LoraDropout): { masked: number; threshold: number; keepScale: number; seed: number } {
    if (!loraMasked(opts)) return { masked: 0, threshold: 0, keepScale: 1, seed: 0 };
    return { masked: 1, threshold: Math.ceil(opts.dropout * 2 ** 32), keepScale: Math.fround(1 / (1 - opts.dropout)), seed: opts.seed! };
  }

  function checkIndex(op: string, index: Tensor): void {
    requireDtype(op, index, ["i32"]);
  }

  const backend: CudaBackend = {
    name: "cuda",
    device: deviceName,

    // ---- memory ----------------------------------------------------------------------------
    empty: (shape, dtype) => alloc(shape, dtype),
    zeros(shape, dtype) {
      const t = alloc(shape, dtype);
      ok(lib.memset_zero(ctx, p(t, "zeros"), t.byteLength), "zeros");
      return t;
    },
    upload(data: HostData, shape, dtype, scaleValue = 1) {
      const size = shape.reduce((a, b) => a * b, 1);
      if (data.length !== size) {
        throw new TensorError("upload", `${data.length} values do not fill shape [${shape.join(",")}]`, { shapes: [shape], dtypes: [dtype] });
      }
      let bits: HostData | null = null;
      // Narrowing happens on the host with the CPU backend's own converters, so both backends hold
      // bit-identical tensors after an upload.
      if (dtype === "f32" && data instanceof Float32Array) bits = data;
      else if (dtype === "bf16") bits = data instanceof Uint16Array ? data : data instanceof Float32Array ? f32ArrayToBf16(data) : null;
      else if (dtype === "fp8_e4m3") bits = data instanceof Uint8Array ? data : data instanceof Float32Array ? f32ArrayToFp8E4m3(data, scaleValue) : null;
      else if (dtype === "i32" && data instanceof Int32Array) bits = data;
      if (!bits) throw new TensorError("upload", `cannot upload a ${data.constructor.name} as ${dtype}`, { dtypes: [dtype] });
      const t = alloc(shape, dtype, scaleValue);
      mem.upload(t, bits);
      return t;
    },
    read(t) {
      switch (t.dtype) {
        case "f32":
          return mem.download(t, new Float32Array(t.size));
        case "i32":
          return mem.download(t, new Int32Array(t.size));
        default: {
          const wide = backend.cast(t, "f32");
          try {
            return mem.download(wide, new Float32Array(t.size));
          } finally {
            wide.free();
          }
        }
      }
    },
    readRaw(t) {
      switch (t.dtype) {
        case "f32":
          return mem.download(t, new Float32Array(t.size));
        case "bf16":
          return mem.download(t, new Uint16Array(t.size));
        case "fp8_e4m3":
          return mem.download(t, new Uint8Array(t.size));
        case "i32":
          return mem.download(t, new Int32Array(t.size));
      }
    },
    release: (t) => mem.release(t),
    memory() {
      const { live, peak } = mem.stats();
      return { live, peak };
    },

    // ---- copies and layout -----------------------------------------------------------------
    cast(x, dtype) {
      if (dtype === x.dtype) return backend.copy(x);
      const out = alloc(x.shape, dtype);
      ok(lib.cast(ctx, p(x, "cast"), dtypeCode(x), x.scale, p(out, "cast"), DTYPE_CODE[dtype], 1, x.size), "cast");
      return out;
    },
    copy(x) {
      const out = alloc(x.shape, x.dtype, x.scale);
      ok(lib.copy(ctx, p(out, "copy"), p(x, "copy"), x.byteLength), "copy");
      return out;
    },
    sliceRows(x, start, count) {
      const n = rowCount(x);
      if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > n) {
        throw new TensorError("sliceRows", `rows [${start}, ${start + count}) out of range 0..${n}`, { shapes: [x.shape] });
      }
      const out = alloc([count, ...x.shape.slice(1)], x.dtype, x.scale);
      const rowBytes = rowWidth(x) * BYTES_PER_ELEMENT[x.dtype];
      ok(lib.copy(ctx, p(out, "sliceRows"), p(x, "sliceRows") + start * rowBytes, count * rowBytes), "sliceRows");
      return out;
    },
    concatRows(parts) {
      const first = parts[0];
      if (!first) throw new TensorError("concatRows", "needs at least one tensor");
      const tail = first.shape.slice(1);
      for (const part of parts) {
        const sameTail = part.shape.length === first.shape.length && part.shape.slice(1).every((d, i) => d === tail[i]);
        if (!sameTail || part.dtype !== first.dtype || part.scale !== first.scale) {
          throw new TensorError("concatRows", "parts differ in row shape, dtype or scale", {
            shapes: parts.map((q) => q.shape),
            dtypes: parts.map((q) => q.dtype),
          });
        }
      }
      const rows = parts.reduce((a, part) => a + rowCount(part), 0);
      const out = alloc([rows, ...tail], first.dtype, first.scale);
      let offset = p(out, "concatRows");
      for (const part of parts) {
        ok(lib.copy(ctx, offset, p(part, "concatRows"), part.byteLength), "concatRows");
        offset += part.byteLength;
      }
      return out;
    },
    gatherRows(x, index) {
      checkIndex("gatherRows", index);
      const c = rowWidth(x);
      const out = alloc([index.size, ...x.shape.slice(1)], x.dtype, x.scale);
      ok(
        lib.gather_rows(ctx, p(x, "gatherRows"), BYTES_PER_ELEMENT[x.dtype], rowCount(x), c, p(index, "gatherRows"), index.size, p(out, "gatherRows")),
        "gatherRows",
      );
      return out;
    },
    scatterRowsInPlace(dst, index, src) {
      const op = "scatterRowsInPlace";
      checkIndex(op, index);
      if (rowWidth(dst) !== rowWidth(src) || rowCount(src) !== index.size) {
        throw new TensorError(op, "src must be [index length, dst row width]", { shapes: [dst.shape, index.shape, src.shape] });
      }
      const raw = src.dtype === dst.dtype && src.scale === dst.scale;
      if (!raw && (dst.dtype !== "f32" || src.dtype === "i32")) {
        throw new TensorError(op, "dst must be f32 or share src's dtype", { dtypes: [dst.dtype, src.dtype] });
      }
      ok(
        lib.scatter_rows(ctx, p(dst, op), dtypeCode(dst), rowCount(dst), rowWidth(dst), p(index, op), index.size, p(src, op), dtypeCode(src), src.scale, 0),
        op,
      );
    },
    scatterAddRowsInPlace(dst, index, src) {
      const op = "scatterAddRowsInPlace";
      checkIndex(op, index);
      if (rowWidth(dst) !== rowWidth(src) || rowCount(src) !== index.size) {
        throw new TensorError(op, "src must be [index length, dst row width]", { shapes: [dst.shape, index.shape, src.shape] });
      }
      requireDtype(op, dst, ["f32"]);
      requireFloat(op, src);
      ok(
        lib.scatter_rows(ctx, p(dst, op), dtypeCode(dst), rowCount(dst), rowWidth(dst), p(index, op), index.size, p(src, op), dtypeCode(src), src.scale, 1),
        op,
      );
    },
    gatherElements(x, index, outShape) {
      return permute("gatherElements", x, index, outShape, 1);
    },
    scatterElements(x, index, outShape) {
      return permute("scatterElements", x, index, outShape, 0);
    },
    patchify(pixels, patch) {
      const [channels, height, width] = pixels.shape as [number, number, number];
      if (pixels.shape.length !== 3 || height % patch !== 0 || width % patch !== 0) {
        throw new TensorError("patchify", `pixels must be [C, H, W] with H and W multiples of ${patch}`, { shapes: [pixels.shape] });
      }
      requireFloat("patchify", pixels);
      const out = alloc([(height / patch) * (width / patch), channels * patch * patch], "f32");
      ok(
        lib.patchify(ctx, p(pixels, "patchify"), dtypeCode(pixels), pixels.scale, channels, height, width, patch, p(out, "patchify"), DTYPE_CODE.f32),
        "patchify",
      );
      return out;
    },

    // ---- matrix products -------------------------------------------------------------------
    matmul(a, b, opts = {}) {
      const { transA = false, transB = false, alpha = 1, accumulate, outDtype = "f32", precision = "f32" } = opts;
      requireFloat("matmul", a, b);
      const { m, k, n } = matmulDims(a, b, opts);
      if (!accumulate && outDtype !== "f32" && outDtype !== "bf16") {
        throw new TensorError("matmul", `cannot produce ${outDtype} output`, { dtypes: [outDtype], hint: "outputs are f32 or bf16" });
      }
      // The library runs any product with an f32 operand in full f32; autocast hands it bf16 instead.
      const autocast = precision === "bf16" && isNarrowFloat(a.dtype) !== isNarrowFloat(b.dtype);
      const x = autocast && !isNarrowFloat(a.dtype) ? backend.cast(a, "bf16") : a;
      const y = autocast && !isNarrowFloat(b.dtype) ? backend.cast(b, "bf16") : b;
      const out = accumulate ?? alloc(transA ? [m, n] : [...a.shape.slice(0, -1), n], outDtype);
      try {
        ok(
          lib.matmul(
            ctx, p(x, "matmul"), dtypeCode(x), x.scale, transA ? 1 : 0, p(y, "matmul"), dtypeCode(y), y.scale, transB ? 1 : 0,
            p(out, "matmul"), dtypeCode(out), m, n, k, alpha, accumulate ? 1 : 0,
          ),
          "matmul",
        );
      } finally {
        if (x !== a) x.free();
        if (y !== b) y.free();
      }
      return out;
    },

    // ---- LoRA ------------------------------------------------------------------------------
    loraDown(x, a, opts) {
      const op = "loraDown";
      const { n, k, r } = loraDims(op, x, a);
      const outDtype = opts.outDtype ?? "f32";
      if (!loraKernels(opts, r, x)) return loraDownComposite(backend, x, a, opts);
      checkLoraDropout(op, opts, n * k);
      const out = alloc([...x.shape.slice(0, -1), r], activationDtype(op, outDtype));
      const al = bf16Operand(a);
      const mk = loraMaskArgs(opts);
      try {
        ok(lib.lora_down(ctx, p(x, op), dtypeCode(x), p(al, op), n, k, r, mk.masked, mk.threshold, mk.keepScale, mk.seed, p(out, op), DTYPE_CODE[outDtype]), op);
      } finally {
        if (al !== a) al.free();
      }
      return out;
    },
    loraGradA(du, x, opts) {
      const op = "loraGradA";
      const [n, k] = rowsCols(x);
      const r = rowsCols(du)[1];
      if (!loraKernels(opts, r, x, du)) return loraGradAComposite(backend, du, x, opts);
      checkLoraGrad(op, du, n, r);
      checkLoraDropout(op, opts, n * k);
      const da = alloc([r, k], "f32");
      const dul = bf16Operand(du);
      const mk = loraMaskArgs(opts);
      try {
        ok(lib.lora_grad_a(ctx, p(dul, op), p(x, op), dtypeCode(x), n, k, r, mk.masked, mk.threshold, mk.keepScale, mk.seed, p(da, op)), op);
      } finally {
        if (dul !== du) dul.free();
      }
      return da;
    },
    loraDx(du, a, opts) {
      const op = "loraDx";
      const [r, k] = rowsCols(a);
      if (!loraKernels(opts, r, a, du)) return loraDxComposite(backend, du, a, opts);
      const n = rowsCols(du)[0];
      checkLoraGrad(op, du, n, r);
      if (a.shape.length !== 2) throw new TensorError(op, `a must be [${r}, ${k}]`, { shapes: [a.shape] });
      checkLoraDropout(op, opts, n * k);
      const dx = alloc([...du.shape.slice(0, -1), k], "f32");
      const [dul, al] = [bf16Operand(du), bf16Operand(a)];
      const mk = loraMaskArgs(opts);
      try {
        ok(lib.lora_dx(ctx, p(dx, op), dtypeCode(dx), p(dul, op), p(al, op), n, k, r, mk.masked, mk.threshold, mk.keepScale, mk.seed, 0), op);
      } catch (error) {
        dx.free();
        throw error;
      } finally {
        if (dul !== du) dul.free();
        if (al !== a) al.free();
      }
      return dx;
    },
    loraDxAccumulate(dx, du, a, opts) {
      const op = "loraDxAccumulate";
      const [r, k] = rowsCols(a);
      const n = rowsCols(du)[0];
      if (dx.dtype !== "f32" && dx.dtype !== "bf16") {
        throw new TensorError(op, `dx must be [${n}, ${k}], f32 or bf16`, { shapes: [dx.shape], dtypes: [dx.dtype] });
      }
      if (loraKernels(opts, r, a, du)) {
        checkLoraGrad(op, du, n, r);
        if (a.shape.length !== 2 || dx.size !== n * k) throw new TensorError(op, `dx must be [${n}, ${k}] and a [${r}, ${k}]`, { shapes: [dx.shape, a.shape] });
        checkLoraDropout(op, opts, n * k);
        const [dul, al] = [bf16Operand(du), bf16Operand(a)];
        const mk = loraMaskArgs(opts);
        try {
          ok(lib.lora_dx(ctx, p(dx, op), dtypeCode(dx), p(dul, op), p(al, op), n, k, r, mk.masked, mk.threshold, mk.keepScale, mk.seed, 1), op);
        } finally {
          if (dul !== du) dul.free();
          if (al !== a) al.free();
        }
        return;
      }
      if (dx.dtype === "f32") {
        loraDxAccumulateComposite(backend, dx, du, a, opts);
        return;
      }
      // The f32 sum of the widened dx, rounded once (to nearest even) back into dx.
      const wide = backend.cast(dx, "f32");
      try {
        loraDxAccumulateComposite(backend, wide, du, a, opts);
        ok(lib.cast(ctx, p(wide, op), DTYPE_CODE.f32, 1, p(dx, op), DTYPE_CODE.bf16, 1, dx.size), op);
      } finally {
        wide.free();
      }
    },

    loraUp(u, bw, opts) {
      const op = "loraUp";
      const { n, m, r } = loraUpDims(op, u, bw);
      if (!rankKernels(r, u, bw)) return loraUpComposite(backend, u, bw, opts);
      const outDtype = activationDtype(op, opts.outDtype ?? "f32");
      const y = alloc([...u.shape.slice(0, -1), m], outDtype);
      const [ul, bl] = [bf16Operand(u), bf16Operand(bw)];
      try {
        ok(lib.lora_up(ctx, p(ul, op), p(bl, op), n, m, r, opts.alpha ?? 1, p(y, op), DTYPE_CODE[outDtype]), op);
      } catch (error) {
        y.free();
        throw error;
      } finally {
        if (ul !== u) ul.free();
        if (bl !== bw) bl.free();
      }
      return y;
    },
    loraUpBackward(dy, bw, u, opts) {
      const op = "loraUpBackward";
      const { n, m, r } = loraUpBackwardDims(op, dy, bw, u);
      if (!rankKernels(r, dy, bw, u)) return loraUpBackwardComposite(backend, dy, bw, u, opts);
      const duDtype = activationDtype(op, opts.duDtype ?? "f32");
      const du = alloc([...dy.shape.slice(0, -1), r], duDtype);
      const db = alloc([m, r], "f32");
      const [dyl, bl, ul] = [bf16Operand(dy), bf16Operand(bw), bf16Operand(u)];
      try {
        ok(lib.lora_up_backward(ctx, p(dyl, op), p(bl, op), p(ul, op), n, m, r, opts.alpha ?? 1, p(du, op), DTYPE_CODE[duDtype], p(db, op)), op);
      } catch (error) {
        du.free();
        db.free();
        throw error;
      } finally {
        if (dyl !== dy) dyl.free();
        if (bl !== bw) bl.free();
        if (ul !== u) ul.free();
      }
      return { du, db };
    },

    // ---- elementwise -----------------------------------------------------------------------
    add: (a, b) => binary("add", 0, a, b),
    mul: (a, b) => binary("mul", 1, a, b),
    addInPlace(a, b, alpha = 1) {
      requireSameSize("addInPlace", a, b);
      requireDtype("addInPlace", a, ["f32"]);
      requireFloat("addInPlace", b);
      const pa = p(a, "addInPlace");
      ok(lib.axpby(ctx, pa, DTYPE_CODE.f32, 1, 1, p(b, "addInPlace"), dtypeCode(b), b.scale, alpha, pa, DTYPE_CODE.f32, a.size), "addInPlace");
    },
    scale(x, s) {
      requireFloat("scale", x);
      const out = f32Like(x);
      ok(lib.axpby(ctx, p(x, "scale"), dtypeCode(x), x.scale, s, 0, DTYPE_CODE.f32, 1, 0, p(out, "scale"), DTYPE_CODE.f32, x.size), "scale");
      return out;
    },
    scaleInPlace(x, s) {
      requireDtype("scaleInPlace", x, ["f32"]);
      const px = p(x, "scaleInPlace");
      ok(lib.axpby(ctx, px, DTYPE_CODE.f32, 1, s, 0, DTYPE_CODE.f32, 1, 0, px, DTYPE_CODE.f32, x.size), "scaleInPlace");
    },
    swiglu(gate, up, outDtype = "f32") {
      requireSameSize("swiglu", gate, up);
      requireFloat("swiglu", gate, up);
      const out = alloc(gate.shape, activationDtype("swiglu", outDtype));
      ok(lib.swiglu(ctx, p(gate, "swiglu"), dtypeCode(gate), p(up, "swiglu"), dtypeCode(up), p(out, "swiglu"), DTYPE_CODE[outDtype], gate.size), "swiglu");
      return out;
    },
    swigluBackward(gate, up, dout, outDtype = "f32") {
      const op = "swigluBackward";
      requireSameSize(op, gate, up);
      requireSameSize(op, gate, dout);
      requireFloat(op, gate, up, dout);
      const gradDtype = activationDtype(op, outDtype);
      const dgate = alloc(gate.shape, gradDtype);
      const dup = alloc(up.shape, gradDtype);
      ok(
        lib.swiglu_backward(ctx, p(gate, op), dtypeCode(gate), p(up, op), dtypeCode(up), p(dout, op), dtypeCode(dout), p(dgate, op), p(dup, op), DTYPE_CODE[gradDtype], gate.size),
        op,
      );
      return { dgate, dup };
    },
    gelu(x) {
      requireFloat("gelu", x);
      const out = f32Like(x);
      ok(lib.gelu(ctx, p(x, "gelu"), dtypeCode(x), p(out, "gelu"), DTYPE_CODE.f32, x.size), "gelu");
      return out;
    },
    geluBackward(x, dout) {
      requireSameSize("geluBackward", x, dout);
      requireFloat("geluBackward", x, dout);
      const out = f32Like(x);
      ok(lib.gelu_backward(ctx, p(x, "geluBackward"), dtypeCode(x), p(dout, "geluBackward"), dtypeCode(dout), p(out, "geluBackward"), DTYPE_CODE.f32, x.size), "geluBackward");
      return out;
    },
    dropout: (x, prob, seed, outDtype = "f32") => dropout("dropout", x, prob, seed, outDtype),
    dropoutBackward: (dout, prob, seed) => dropout("dropoutBackward", dout, prob, seed, "f32"),

    // ---- normalisation and position --------------------------------------------------------
    rmsNorm(x, weight, eps, outDtype = "f32") {
      const [n, c] = rowsCols(x);
      if (weight.size !== c) throw new TensorError("rmsNorm", `weight must have ${c} elements`, { shapes: [x.shape, weight.shape] });
      requireFloat("rmsNorm", x, weight);
      const y = alloc(x.shape, activationDtype("rmsNorm", outDtype));
      const rstd = alloc([n], "f32");
      ok(
        lib.rms_norm(ctx, p(x, "rmsNorm"), dtypeCode(x), p(weight, "rmsNorm"), dtypeCode(weight), weight.scale, n, c, eps, p(y, "rmsNorm"), DTYPE_CODE[outDtype], p(rstd, "rmsNorm")),
        "rmsNorm",
      );
      return { y, rstd };
    },
    rmsNormBackward(x, weight, rstd, dy, weightGrad = true, into) {
      const op = "rmsNormBackward";
      const [n, c] = rowsCols(x);
      if (weight.size !== c || dy.size !== x.size || rstd.size !== n) {
        throw new TensorError(op, "shapes do not match x [N, C]", { shapes: [x.shape, weight.shape, rstd.shape, dy.shape] });
      }
      if (into && (into.dtype !== "f32" || into.size !== x.size)) {
        throw new TensorError(op, "into must be f32 of x's size", { shapes: [x.shape, into.shape], dtypes: [into.dtype] });
      }
      requireFloat(op, x, weight, dy);
      requireDtype(op, rstd, ["f32"]);
      const dx = into ?? f32Like(x);
      const dweight = weightGrad ? alloc(weight.shape, "f32") : null;
      ok(
        lib.rms_norm_backward(
          ctx, p(x, op), dtypeCode(x), p(weight, op), dtypeCode(weight), weight.scale, p(rstd, op), p(dy, op), dtypeCode(dy),
          n, c, p(dx, op), DTYPE_CODE.f32, into ? 1 : 0, dweight ? p(dweight, op) : 0, DTYPE_CODE.f32,
        ),
        op,
      );
      return { dx, dweight };
    },
    rope(x, cos, sin, inverse = false, outDtype = "f32") {
      const [n, h, d] = x.shape as [number, number, number];
      const half = d / 2;
      if (x.shape.length !== 3 || d % 2 !== 0 || cos.size !== n * half || sin.size !== n * half) {
        throw new TensorError("rope", "expected x [N, H, D] with even D and cos/sin [N, D/2]", { shapes: [x.shape, cos.shape, sin.shape] });
      }
      requireFloat("rope", x);
      const c = asF32(cos, "rope");
      const s = asF32(sin, "rope");
      const out = alloc(x.shape, activationDtype("rope", outDtype));
      try {
        ok(lib.rope(ctx, p(x, "rope"), dtypeCode(x), p(c.t, "rope"), p(s.t, "rope"), n, h, d, inverse ? 1 : 0, p(out, "rope"), DTYPE_CODE[outDtype]), "rope");
      } finally {
        if (c.temp) c.t.free();
        if (s.temp) s.t.free();
      }
      return out;
    },

    // ---- attention -------------------------------------------------------------------------
    attention(q0, k0, v0, mask, scale, precision = "f32") {
      const op = "attention";
      const [b, t, s, hq, hkv, d] = checkedAttentionDims(op, q0, k0, v0);
      const m = maskArgs(op, mask, b, t, s);
      const { operands: [q, k, v], temps } = flashOperands(precision, [q0, k0, v0]);
      // The fast tier writes out in bf16, as SDPA does for bf16 operands: half the bytes, and its
      // one consumer (the output projection) rounds it to bf16 anyway.
      const out = alloc(q0.shape, precision === "bf16" ? "bf16" : "f32");
      const lse = alloc([b, hq, t], "f32");
      const head = [ctx, p(q!, op), dtypeCode(q!), p(k!, op), dtypeCode(k!), p(v!, op), dtypeCode(v!), b, t, s, hq, hkv, d, scale] as const;
      const maskPtrs = [m.kind, m.queryOffset, m.keyValid, m.segStart, m.segEnd] as const;
      const outputs = [p(out, op), dtypeCode(out), p(lse, op)] as const;
      ok(
        precision === "bf16"
          ? lib.flash_attention(...head, ...maskPtrs, m.segTiles, m.tileCount, ...outputs)
          : lib.attention(...head, ...maskPtrs, ...outputs),
        op,
      );
      for (const x of temps) x.free();
      return { out, lse };
    },
    attentionBackward(q0, k0, v0, out, lse, dout0, mask, scale, precision = "f32", options = {}) {
      const op = "attentionBackward";
      const [b, t, s, hq, hkv, d] = checkedAttentionDims(op, q0, k0, v0);
      if (out.size !== q0.size || dout0.size !== q0.size || lse.size !== b * hq * t) {
        throw new TensorError(op, "out/dout must match q and lse be [B, Hq, T]", { shapes: [q0.shape, out.shape, dout0.shape, lse.shape] });
      }
      requireFloat(op, out, dout0);
      requireDtype(op, lse, ["f32"]);
      const m = maskArgs(op, mask, b, t, s);
      const { operands: [q, k, v, dout], temps } = flashOperands(precision, [q0, k0, v0, dout0]);
      const dq = f32Like(q0);
      const dk = alloc(k0.shape, "f32");
      const dv = alloc(v0.shape, "f32");
      const head = [
        ctx, p(q!, op), dtypeCode(q!), p(k!, op), dtypeCode(k!), p(v!, op), dtypeCode(v!), p(out, op), dtypeCode(out),
        p(lse, op), p(dout!, op), dtypeCode(dout!), b, t, s, hq, hkv, d, scale, m.kind, m.queryOffset, m.keyValid,
        m.segStart, m.segEnd,
      ] as const;
      const grads = [p(dq, op), p(dk, op), p(dv, op), DTYPE_CODE.f32] as const;
      // The exact tier has no atomics; the fast tier takes the fused kernel unless asked for determinism.
      ok(
        precision === "bf16"
          ? lib.flash_attention_backward(...head, m.segTiles, m.tileCount, ...grads, options.deterministic ? 1 : 0)
          : lib.attention_backward(...head, ...grads),
        op,
      );
      for (const x of temps) x.free();
      return { dq, dk, dv };
    },

    // ---- loss and optimiser ----------------------------------------------------------------
    crossEntropy(logits, labels, ignoreIndex, gradScale) {
      const op = "crossEntropy";
      const [n, vocab] = rowsCols(logits);
      requireFloat(op, logits);
      requireDtype(op, labels, ["i32"]);
      if (labels.size !== n) throw new TensorError(op, `labels must have one entry per row (${n})`, { shapes: [logits.shape, labels.shape] });
      const loss = alloc([1], "f32");
      const dlogits = gradScale === undefined ? null : f32Like(logits);
      ok(
        lib.cross_entropy(
          ctx, p(logits, op), dtypeCode(logits), n, vocab, p(labels, op), ignoreIndex, p(loss, op),
          dlogits ? p(dlogits, op) : 0, DTYPE_CODE.f32, gradScale ?? 0,
        ),
        op,
      );
      return dlogits ? { loss, dlogits } : { loss };
    },
    sumSquares(x) {
      requireFloat("sumSquares", x);
      const out = alloc([1], "f32");
      ok(lib.sum_squares(ctx, p(x, "sumSquares"), dtypeCode(x), x.scale, x.size, p(out, "sumSquares")), "sumSquares");
      return out;
    },
    adamw(param, grad, m, v, hp) {
      const op = "adamw";
      for (const t of [param, grad, m, v]) requireDtype(op, t, ["f32"]);
      if (grad.size !== param.size || m.size !== param.size || v.size !== param.size) {
        throw new TensorError(op, "param, grad, m and v must have the same size", { shapes: [param.shape, grad.shape, m.shape, v.shape] });
      }
      const s = adamwScalars(op, hp);
      ok(
        lib.adamw(
          ctx, p(param, op), p(grad, op), p(m, op), p(v, op), param.size,
          s.decay, s.oneMinusBeta1, s.beta2, s.oneMinusBeta2, s.negStepSize, s.biasCorrection2Sqrt, s.eps,
        ),
        op,
      );
    },

    // ---- multi-tensor optimiser step -------------------------------------------------------
    sumSquaresMany(xs) {
      const op = "sumSquaresMany";
      const rows = new BigUint64Array(2 * xs.length);
      xs.forEach((x, k) => {
        requireDtype(op, x, ["f32"]);
        rows.set([BigInt(p(x, op)), BigInt(x.size)], 2 * k);
      });
      const out = alloc([1], "f32");
      ok(lib.sum_squares_many(ctx, rows, xs.length, p(out, op)), op);
      return out;
    },
    adamwMany(params, grads, ms, vs, hp, clip) {
      const op = "adamwMany";
      requireAligned(op, params, grads, ms, vs);
      const rows = new BigUint64Array(5 * params.length);
      params.forEach((param, k) => {
        const row = [param, grads[k]!, ms[k]!, vs[k]!];
        for (const t of row) requireDtype(op, t, ["f32"]);
        requireSizes(op, param.size, row);
        rows.set([...row.map((t) => BigInt(p(t, op))), BigInt(param.size)], 5 * k);
      });
      const s = adamwScalars(op, hp);
      const c = clipArgs(op, clip);
      ok(lib.adamw_many(ctx, rows, params.length, s.decay, s.oneMinusBeta1, s.beta2, s.oneMinusBeta2, s.negStepSize, s.biasCorrection2Sqrt, s.eps, c.sumSquares, c.maxNorm), op);
    },
    adamw8bitMany(params, grads, moments, hp, clip) {
      const op = "adamw8bitMany";
      requireAligned(op, params, grads, moments);
      const rows = new BigUint64Array(7 * params.length);
      params.forEach((param, k) => {
        const n = param.size;
        const { m, v } = moments[k]!;
        for (const t of [param, grads[k]!, m.absmax, v.absmax]) requireDtype(op, t, ["f32"]);
        for (const t of [m.codes, v.codes]) requireDtype(op, t, ["i32"]);
        requireSizes(op, n, [grads[k]!]);
        for (const q of [m, v]) {
          if (q.codes.size !== packedCodeWords(n) || q.absmax.size !== Math.ceil(n / BLOCK_8BIT)) {
            throw new TensorError(op, `8-bit moments of a ${n}-element tensor need ${packedCodeWords(n)} code words and ${Math.ceil(n / BLOCK_8BIT)} absmaxes`, { shapes: [q.codes.shape, q.absmax.shape] });
          }
        }
        rows.set([param, grads[k]!, m.codes, m.absmax, v.codes, v.absmax].map((t) => BigInt(p(t, op))), 7 * k);
        rows[7 * k + 6] = BigInt(n);
      });
      const s = adamwScalars(op, hp);
      const c = clipArgs(op, clip);
      quantMaps ??= { signed: backend.upload(SIGNED_MAP, [SIGNED_MAP.length], "f32"), unsigned: backend.upload(UNSIGNED_MAP, [UNSIGNED_MAP.length], "f32") };
      ok(
        lib.adamw8bit_many(
          ctx, rows, params.length, p(quantMaps.signed, op), p(quantMaps.unsigned, op), s.decay, s.oneMinusBeta1, s.beta2,
          s.oneMinusBeta2, s.negStepSize, s.biasCorrection2Sqrt, s.eps, c.sumSquares, c.maxNorm,
        ),
        op,
      );
    },

    narrowMany(srcs, dsts) {
      const op = "narrowMany";
      ok(lib.narrow_many(ctx, pairRows(op, srcs, "f32", dsts, "bf16"), srcs.length), op);
    },

    addMany(dsts, srcs) {
      const op = "addMany";
      ok(lib.add_many(ctx, pairRows(op, dsts, "f32", srcs, "f32"), dsts.length), op);
    },

    // ---- CUDA-only -------------------------------------------------------------------------
    synchronize() {
      mem.requireOpen("synchronize");
      ok(lib.synchronize(ctx), "synchronize");
    },
    setProgrammaticLaunch(on) {
      mem.requireOpen("setProgrammaticLaunch");
      ok(lib.set_programmatic_launch(ctx, on ? 1 : 0), "setProgrammaticLaunch");
      programmaticLaunch = on;
    },
    get programmaticLaunch() {
      return programmaticLaunch;
    },
    allocatorStats: () => mem.stats(),
    profile: {
      mark() {
        marks++;
        ok(lib.profile_mark(ctx), "profile_mark");
      },
      read() {
        const intervals = new Float32Array(Math.max(0, marks - 1));
        const count = new BigInt64Array(1);
        ok(lib.profile_read(ctx, intervals, intervals.length, count), "profile_read");
        marks = 0;
        return intervals.subarray(0, Number(count[0]!));
      },
      counters() {
        const [launches, syncs, uploads] = [new BigInt64Array(1), new BigInt64Array(1), new BigInt64Array(1)];
        ok(lib.profile_counters(ctx, launches, syncs, uploads), "profile_counters");
        return { launches: Number(launches[0]!), syncs: Number(syncs[0]!), uploads: Number(uploads[0]!) };
      },
    },
    activity: cudaActivity(lib, ctx, (op) => mem.requireOpen(op)),
    native: () => ({ lib, ctx, ptr: p }),
    dispose() {
      segmentTables.clear();
      quantMaps = null;
      mem.dispose();
    },
  };

  function binary(op: string, code: number, a: Tensor, b: Tensor): Tensor {
    requireSameSize(op, a, b);
    requireFloat(op, a, b);
    const out = f32Like(a);
    ok(lib.binary(ctx, code, p(a, op), dtypeCode(a), a.scale, p(b, op), dtypeCode(b), b.scale, b.size, p(out, op), DTYPE_CODE.f32, a.size), op);
    return out;
  }

  function permute(op: string, x: Tensor, index: Tensor, outShape: readonly number[], gather: number): Tensor {
    checkIndex(op, index);
    const outSize = outShape.reduce((a, b) => a * b, 1);
    if (index.size !== outSize || index.size !== x.size) {
      throw new TensorError(op, "index, x and output must have the same number of elements", { shapes: [x.shape, index.shape, outShape] });
    }
    const out = alloc(outShape, x.dtype, x.scale);
    ok(lib.permute_elements(ctx, p(x, op), BYTES_PER_ELEMENT[x.dtype], p(index, op), x.size, p(out, op), gather), op);
    return out;
  }

  /** The CPU backend's dropout (dropout.ts): keep ⇔ hash(seed, i) ≥ ceil(p·2³²), kept × f32(1/(1−p)). */
  function dropout(op: string, x: Tensor, prob: number, seed: number, outDtype: DType): Tensor {
    if (!(prob >= 0 && prob < 1)) throw new TensorError(op, `dropout probability ${prob} must be in [0, 1)`);
    if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new TensorError(op, `seed ${seed} must be an integer in [0, 2^32)`);
    if (x.size > 2 ** 32) throw new TensorError(op, "tensor too large for a 32-bit element counter");
    requireFloat(op, x);
    const out = alloc(x.shape, activationDtype(op, outDtype));
    const threshold = Math.ceil(prob * 2 ** 32);
    ok(lib.dropout(ctx, p(x, op), dtypeCode(x), p(out, op), DTYPE_CODE[outDtype], x.size, threshold, Math.fround(1 / (1 - prob)), seed), op);
    return out;
  }

  function clipArgs(op: string, clip: GradClip | undefined): { sumSquares: number; maxNorm: number } {
    if (!clip) return { sumSquares: 0, maxNorm: 0 };
    requireDtype(op, clip.sumSquares, ["f32"]);
    if (clip.sumSquares.size !== 1) throw new TensorError(op, "clip.sumSquares must be a [1] tensor", { shapes: [clip.sumSquares.shape] });
    return { sumSquares: p(clip.sumSquares, op), maxNorm: clip.maxNorm };
  }

  mem = new CudaMemory(lib, ctx, backend);
  return backend;
}

function requireAligned(op: string, params: readonly Tensor[], ...lists: (readonly unknown[])[]): void {
  if (lists.some((l) => l.length !== params.length)) throw new TensorError(op, `needs lists of one length (${params.length} params, got ${lists.map((l) => l.length).join(", ")})`);
}

function requireSizes(op: string, size: number, tensors: readonly Tensor[]): void {
  if (tensors.some((t) => t.size !== size)) {
    throw new TensorError(op, "the tensors of a row must have the same size", { shapes: tensors.map((t) => t.shape) });
  }
}
