/**
 * The CPU backend: plain TypeScript reference kernels, one file per family with each forward next
 * to its backward. It is the ground truth the CUDA kernels are tested against, so kernels favour
 * clarity and exactness (f64 sums for norms, softmax statistics, losses) over speed. The exception
 * is the matrix product: matmul and the attention products run on a WebAssembly SIMD kernel with
 * f32 accumulation (wasm-matmul.ts), on all cores (kernel-pool.ts).
 */
import { f32ArrayToBf16, bf16ArrayToF32 } from "../../tensor/bf16.ts";
import type { Backend } from "../../tensor/backend.ts";
import type { DType } from "../../tensor/dtype.ts";
import { TensorError } from "../../tensor/errors.ts";
import { f32ArrayToFp8E4m3, fp8E4m3ArrayToF32 } from "../../tensor/fp8.ts";
import {
  loraDownComposite,
  loraDxAccumulateComposite,
  loraDxComposite,
  loraGradAComposite,
  loraUpBackwardComposite,
  loraUpComposite,
} from "../../tensor/lora-composite.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { geluBackward, gelu, swiglu, swigluBackward } from "./activations.ts";
import { attention, attentionBackward } from "./attention.ts";
import { dropout, dropoutBackward } from "./dropout.ts";
import { add, addInPlace, mul, scale, scaleInPlace, sumSquares } from "./elementwise.ts";
import * as layout from "./layout.ts";
import { crossEntropy } from "./loss.ts";
import { matmul } from "./matmul.ts";
import { rmsNorm, rmsNormBackward } from "./norm.ts";
import { adamw, adamw8bitMany, adamwMany, addMany, narrowMany, sumSquaresMany } from "./optim.ts";
import { rope } from "./rope.ts";
import { CpuAllocator, type CpuStorage, f32Of, storageOf } from "./storage.ts";

type HostData = Float32Array | Uint16Array | Uint8Array | Int32Array;

function uploadStorage(data: HostData, dtype: DType, scale: number): CpuStorage {
  const given = data.constructor.name;
  switch (dtype) {
    case "f32":
      if (data instanceof Float32Array) return data.slice();
      break;
    case "bf16":
      if (data instanceof Uint16Array) return data.slice();
      if (data instanceof Float32Array) return f32ArrayToBf16(data);
      break;
    case "fp8_e4m3":
      if (data instanceof Uint8Array) return data.slice();
      if (data instanceof Float32Array) return f32ArrayToFp8E4m3(data, scale);
      break;
    case "i32":
      if (data instanceof Int32Array) return data.slice();
      break;
  }
  throw new TensorError("upload", `cannot upload a ${given} as ${dtype}`, { dtypes: [dtype] });
}

export function createCpuBackend(): Backend {
  // The allocator needs the backend (tensors point back to it) and the backend needs the allocator.
  let alloc: CpuAllocator;
  const backend: Backend = {
    name: "cpu",

    empty: (shape, dtype) => alloc.allocate(shape, dtype),
    zeros: (shape, dtype) => alloc.allocate(shape, dtype),
    upload(data, shape, dtype, scaleValue = 1) {
      const size = shape.reduce((a, b) => a * b, 1);
      if (data.length !== size) {
        throw new TensorError("upload", `${data.length} values do not fill shape [${shape.join(",")}]`, { shapes: [shape], dtypes: [dtype] });
      }
      return alloc.adopt(uploadStorage(data, dtype, scaleValue), shape, dtype, dtype === "fp8_e4m3" ? scaleValue : 1);
    },
    read(t: Tensor) {
      const storage = storageOf(t);
      switch (t.dtype) {
        case "f32":
          return (storage as Float32Array).slice();
        case "bf16":
          return bf16ArrayToF32(storage as Uint16Array);
        case "fp8_e4m3":
          return fp8E4m3ArrayToF32(storage as Uint8Array, t.scale);
        case "i32":
          return (storage as Int32Array).slice();
      }
    },
    readRaw: (t) => storageOf(t).slice(),
    release: (t) => alloc.release(t),
    memory: () => alloc.memory(),

    cast: (x, dtype) => layout.cast(alloc, x, dtype),
    copy: (x) => layout.copy(alloc, x),
    sliceRows: (x, start, count) => layout.sliceRows(alloc, x, start, count),
    concatRows: (parts) => layout.concatRows(alloc, parts),
    gatherRows: (x, index) => layout.gatherRows(alloc, x, index),
    scatterRowsInPlace: layout.scatterRowsInPlace,
    scatterAddRowsInPlace: layout.scatterAddRowsInPlace,
    gatherElements: (x, index, outShape) => layout.gatherElements(alloc, x, index, outShape),
    scatterElements: (x, index, outShape) => layout.scatterElements(alloc, x, index, outShape),
    patchify: (pixels, patch) => layout.patchify(alloc, pixels, patch),

    matmul: (a, b, opts) => matmul(alloc, a, b, opts),

    loraDown: (x, a, opts) => loraDownComposite(backend, x, a, opts),
    loraGradA: (du, x, opts) => loraGradAComposite(backend, du, x, opts),
    loraDx: (du, a, opts) => loraDxComposite(backend, du, a, opts),
    loraDxAccumulate(dx, du, a, opts) {
      if (dx.dtype !== "bf16") {
        loraDxAccumulateComposite(backend, dx, du, a, opts);
        return;
      }
      // The f32 sum of the widened dx, rounded once to nearest even back into dx's storage.
      const wide = layout.cast(alloc, dx, "f32");
      try {
        loraDxAccumulateComposite(backend, wide, du, a, opts);
        f32ArrayToBf16(f32Of(wide, "loraDxAccumulate"), storageOf(dx) as Uint16Array);
      } finally {
        wide.free();
      }
    },
    loraUp: (u, b, opts) => loraUpComposite(backend, u, b, opts),
    loraUpBackward: (dy, b, u, opts) => loraUpBackwardComposite(backend, dy, b, u, opts),

    add: (a, b) => add(alloc, a, b),
    addInPlace,
    mul: (a, b) => mul(alloc, a, b),
    scale: (x, s) => scale(alloc, x, s),
    scaleInPlace,
    swiglu: (gate, up, outDtype) => swiglu(alloc, gate, up, outDtype),
    swigluBackward: (gate, up, dout, outDtype) => swigluBackward(alloc, gate, up, dout, outDtype),
    gelu: (x) => gelu(alloc, x),
    geluBackward: (x, dout) => geluBackward(alloc, x, dout),
    dropout: (x, p, seed, outDtype) => dropout(alloc, x, p, seed, outDtype),
    dropoutBackward: (dout, p, seed) => dropoutBackward(alloc, dout, p, seed),

    rmsNorm: (x, weight, eps, outDtype) => rmsNorm(alloc, x, weight, eps, outDtype),
    rmsNormBackward: (x, weight, rstd, dy, weightGrad, into) => rmsNormBackward(alloc, x, weight, rstd, dy, weightGrad, into),
    rope: (x, cos, sin, inverse, outDtype) => rope(alloc, x, cos, sin, inverse, outDtype),

    attention: (q, k, v, mask, s, precision) => attention(alloc, q, k, v, mask, s, precision),
    attentionBackward: (q, k, v, out, lse, dout, mask, s, precision) =>
      attentionBackward(alloc, q, k, v, out, lse, dout, mask, s, precision),

    crossEntropy: (logits, labels, ignoreIndex, gradScale) => crossEntropy(alloc, logits, labels, ignoreIndex, gradScale),
    sumSquares: (x) => sumSquares(alloc, x),
    adamw,

    sumSquaresMany: (xs) => alloc.fromF32(sumSquaresMany(xs), [1]),
    adamwMany,
    adamw8bitMany,
    narrowMany,
    addMany,
  };
  alloc = new CpuAllocator(backend);
  return backend;
}
