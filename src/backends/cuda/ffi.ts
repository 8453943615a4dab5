/**
 * The C ABI of native/cuda (include/splint_cuda.h) as typed TypeScript functions, through koffi.
 * Device addresses travel as plain numbers (they stay far below 2^53); every function returns a
 * status that `check` turns into a CudaError carrying the library's "file:line op: message".
 */
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import koffi, { type LibraryHandle } from "koffi";
import { CudaError } from "./errors.ts";

/** Element type codes shared with splint_cuda.h. */
export const DTYPE_CODE = { f32: 0, bf16: 1, fp8_e4m3: 2, i32: 3 } as const;

export const STATUS_NAMES: Readonly<Record<number, string>> = {
  1: "invalid argument",
  2: "CUDA error",
  3: "cuBLAS error",
  4: "out of GPU memory",
  5: "not supported",
  6: "NCCL error",
  7: "CUPTI error",
};

/** Reduction codes of splint_cuda_nccl_all_reduce. */
export const REDUCE_CODE = { sum: 0, avg: 1 } as const;

/** Bytes of an ncclUniqueId (NCCL_UNIQUE_ID_BYTES). */
export const NCCL_UNIQUE_ID_BYTES = 128;

/** Indices of splint_cuda_activity_stop's int64 summary (SPLINT_ACTIVITY_* in splint_cuda.h). */
export const ACTIVITY_FIELD = {
  kernels: 0,
  memcpys: 1,
  memsets: 2,
  busyNs: 3,
  firstStartNs: 4,
  lastEndNs: 5,
  idleNs: 6,
  dropped: 7,
  otherDevice: 8,
  names: 9,
} as const;
export const ACTIVITY_FIELDS = 10;

/** Opaque NCCL communicator handle (a koffi pointer object). */
export type NcclCommHandle = object;

/** Bits of splint_cuda_check_flags. */
export const FLAG_LABEL = 1;
export const FLAG_INDEX = 2;

/** Opaque context handle (a koffi pointer object). */
export type CtxHandle = object;
type Ptr = number;
type Status = number;

export interface SplintCudaLib {
  last_error(): string;
  device_count(count: Int32Array): Status;
  device_name(device: number, buf: Buffer, len: number): Status;
  create(device: number, out: [CtxHandle | null]): Status;
  destroy(ctx: CtxHandle): Status;
  synchronize(ctx: CtxHandle): Status;
  set_programmatic_launch(ctx: CtxHandle, on: number): Status;

  alloc(ctx: CtxHandle, bytes: number, out: BigUint64Array): Status;
  free(ctx: CtxHandle, ptr: Ptr): Status;
  memory_stats(ctx: CtxHandle, live: BigUint64Array, peak: BigUint64Array, reserved: BigUint64Array, mallocs: BigUint64Array): Status;
  empty_cache(ctx: CtxHandle): Status;
  upload(ctx: CtxHandle, dst: Ptr, host: ArrayBufferView, bytes: number): Status;
  download(ctx: CtxHandle, host: ArrayBufferView, src: Ptr, bytes: number, flags: Int32Array | null): Status;
  memset_zero(ctx: CtxHandle, dst: Ptr, bytes: number): Status;
  copy(ctx: CtxHandle, dst: Ptr, src: Ptr, bytes: number): Status;

  cast(ctx: CtxHandle, x: Ptr, xDtype: number, xScale: number, out: Ptr, outDtype: number, outScale: number, n: number): Status;
  gather_rows(ctx: CtxHandle, x: Ptr, elemBytes: number, rows: number, cols: number, index: Ptr, m: number, out: Ptr): Status;
  scatter_rows(
    ctx: CtxHandle, dst: Ptr, dstDtype: number, rows: number, cols: number, index: Ptr, m: number,
    src: Ptr, srcDtype: number, srcScale: number, accumulate: number,
  ): Status;
  permute_elements(ctx: CtxHandle, x: Ptr, elemBytes: number, index: Ptr, n: number, out: Ptr, gather: number): Status;
  patchify(
    ctx: CtxHandle, pixels: Ptr, xDtype: number, xScale: number, c: number, h: number, w: number, patch: number,
    out: Ptr, outDtype: number,
  ): Status;

  matmul(
    ctx: CtxHandle, a: Ptr, aDtype: number, aScale: number, transA: number, b: Ptr, bDtype: number, bScale: number,
    transB: number, out: Ptr, outDtype: number, m: number, n: number, k: number, alpha: number, beta: number,
  ): Status;

  binary(
    ctx: CtxHandle, op: number, a: Ptr, aDtype: number, aScale: number, b: Ptr, bDtype: number, bScale: number,
    nb: number, out: Ptr, outDtype: number, n: number,
  ): Status;
  axpby(
    ctx: CtxHandle, a: Ptr, aDtype: number, aScale: number, alpha: number, b: Ptr, bDtype: number, bScale: number,
    beta: number, out: Ptr, outDtype: number, n: number,
  ): Status;
  swiglu(ctx: CtxHandle, gate: Ptr, gateDtype: number, up: Ptr, upDtype: number, out: Ptr, outDtype: number, n: number): Status;
  swiglu_backward(
    ctx: CtxHandle, gate: Ptr, gateDtype: number, up: Ptr, upDtype: number, dout: Ptr, doutDtype: number,
    dgate: Ptr, dup: Ptr, gradDtype: number, n: number,
  ): Status;
  gelu(ctx: CtxHandle, x: Ptr, xDtype: number, out: Ptr, outDtype: number, n: number): Status;
  gelu_backward(ctx: CtxHandle, x: Ptr, xDtype: number, dout: Ptr, doutDtype: number, dx: Ptr, dxDtype: number, n: number): Status;
  dropout(
    ctx: CtxHandle, x: Ptr, xDtype: number, out: Ptr, outDtype: number, n: number, threshold: number,
    keepScale: number, seed: number,
  ): Status;

  lora_down(
    ctx: CtxHandle, x: Ptr, xDtype: number, a: Ptr, n: number, k: number, r: number, masked: number, threshold: number,
    keepScale: number, seed: number, u: Ptr, uDtype: number,
  ): Status;
  lora_grad_a(
    ctx: CtxHandle, du: Ptr, x: Ptr, xDtype: number, n: number, k: number, r: number, masked: number, threshold: number,
    keepScale: number, seed: number, da: Ptr,
  ): Status;
  lora_dx(
    ctx: CtxHandle, dx: Ptr, dxDtype: number, du: Ptr, a: Ptr, n: number, k: number, r: number, masked: number,
    threshold: number, keepScale: number, seed: number, accumulate: number,
  ): Status;
  lora_up(ctx: CtxHandle, u: Ptr, b: Ptr, n: number, m: number, r: number, alpha: number, y: Ptr, yDtype: number): Status;
  lora_up_backward(
    ctx: CtxHandle, dy: Ptr, b: Ptr, u: Ptr, n: number, m: number, r: number, alpha: number, du: Ptr, duDtype: number, db: Ptr,
  ): Status;

  rms_norm(
    ctx: CtxHandle, x: Ptr, xDtype: number, weight: Ptr, wDtype: number, wScale: number, rows: number, cols: number,
    eps: number, y: Ptr, yDtype: number, rstd: Ptr,
  ): Status;
  rms_norm_backward(
    ctx: CtxHandle, x: Ptr, xDtype: number, weight: Ptr, wDtype: number, wScale: number, rstd: Ptr, dy: Ptr,
    dyDtype: number, rows: number, cols: number, dx: Ptr, dxDtype: number, accumulate: number, dweight: Ptr, dwDtype: number,
  ): Status;
  rope(
    ctx: CtxHandle, x: Ptr, xDtype: number, cos: Ptr, sin: Ptr, rows: number, heads: number, dim: number,
    inverse: number, out: Ptr, outDtype: number,
  ): Status;

  attention(
    ctx: CtxHandle, q: Ptr, qDtype: number, k: Ptr, kDtype: number, v: Ptr, vDtype: number, b: number, t: number,
    s: number, hq: number, hkv: number, d: number, scale: number, maskKind: number, queryOffset: number,
    keyValid: Ptr, segStart: Ptr, segEnd: Ptr, out: Ptr, outDtype: number, lse: Ptr,
  ): Status;
  attention_backward(
    ctx: CtxHandle, q: Ptr, qDtype: number, k: Ptr, kDtype: number, v: Ptr, vDtype: number, out: Ptr,
    outDtype: number, lse: Ptr, dout: Ptr, doutDtype: number, b: number, t: number, s: number, hq: number,
    hkv: number, d: number, scale: number, maskKind: number, queryOffset: number, keyValid: Ptr, segStart: Ptr,
    segEnd: Ptr, dq: Ptr, dk: Ptr, dv: Ptr, gradDtype: number,
  ): Status;
  /**
   * The same contract as attention, on tensor cores (bf16 operands, f32 accumulation); segTiles
   * (with a segment mask, or 0): the first row of every 64-row tile of every segment.
   */
  flash_attention(
    ctx: CtxHandle, q: Ptr, qDtype: number, k: Ptr, kDtype: number, v: Ptr, vDtype: number, b: number, t: number,
    s: number, hq: number, hkv: number, d: number, scale: number, maskKind: number, queryOffset: number,
    keyValid: Ptr, segStart: Ptr, segEnd: Ptr, segTiles: Ptr, nSegTiles: number, out: Ptr, outDtype: number, lse: Ptr,
  ): Status;
  /** deterministic: 1 two kernels, bit-reproducible; 0 one fused kernel (dq summed with atomics). */
  flash_attention_backward(
    ctx: CtxHandle, q: Ptr, qDtype: number, k: Ptr, kDtype: number, v: Ptr, vDtype: number, out: Ptr,
    outDtype: number, lse: Ptr, dout: Ptr, doutDtype: number, b: number, t: number, s: number, hq: number,
    hkv: number, d: number, scale: number, maskKind: number, queryOffset: number, keyValid: Ptr, segStart: Ptr,
    segEnd: Ptr, segTiles: Ptr, nSegTiles: number, dq: Ptr, dk: Ptr, dv: Ptr, gradDtype: number, deterministic: number,
  ): Status;

  cross_entropy(
    ctx: CtxHandle, logits: Ptr, logitsDtype: number, rows: number, vocab: number, labels: Ptr, ignoreIndex: number,
    loss: Ptr, dlogits: Ptr, dlogitsDtype: number, gradScale: number,
  ): Status;
  check_flags(ctx: CtxHandle, flags: Int32Array): Status;
  sum_squares(ctx: CtxHandle, x: Ptr, xDtype: number, xScale: number, n: number, out: Ptr): Status;
  adamw(
    ctx: CtxHandle, param: Ptr, grad: Ptr, m: Ptr, v: Ptr, n: number, decay: number, oneMinusBeta1: number,
    beta2: number, oneMinusBeta2: number, negStepSize: number, biasCorrection2Sqrt: number, eps: number,
  ): Status;

  // Multi-tensor optimiser step: `tensors` rows of device addresses and element counts.
  sum_squares_many(ctx: CtxHandle, tensors: BigUint64Array, count: number, out: Ptr): Status;
  narrow_many(ctx: CtxHandle, tensors: BigUint64Array, count: number): Status;
  add_many(ctx: CtxHandle, tensors: BigUint64Array, count: number): Status;
  adamw_many(
    ctx: CtxHandle, tensors: BigUint64Array, count: number, decay: number, oneMinusBeta1: number, beta2: number,
    oneMinusBeta2: number, negStepSize: number, biasCorrection2Sqrt: number, eps: number, clipSumSquares: Ptr,
    maxNorm: number,
  ): Status;
  adamw8bit_many(
    ctx: CtxHandle, tensors: BigUint64Array, count: number, signedMap: Ptr, unsignedMap: Ptr, decay: number,
    oneMinusBeta1: number, beta2: number, oneMinusBeta2: number, negStepSize: number, biasCorrection2Sqrt: number,
    eps: number, clipSumSquares: Ptr, maxNorm: number,
  ): Status;

  profile_mark(ctx: CtxHandle): Status;
  profile_read(ctx: CtxHandle, intervalsMs: Float32Array, capacity: number, count: BigInt64Array): Status;
  nccl_load(path: string): Status;
  nccl_get_unique_id(id: Uint8Array): Status;
  nccl_comm_init_rank(ctx: CtxHandle, id: Uint8Array, nranks: number, rank: number, out: [NcclCommHandle | null]): Status;
  nccl_all_reduce(comm: NcclCommHandle, send: Ptr, recv: Ptr, count: number, dtype: number, op: number): Status;
  nccl_broadcast(comm: NcclCommHandle, send: Ptr, recv: Ptr, count: number, dtype: number, root: number): Status;
  nccl_comm_destroy(comm: NcclCommHandle, abort: number): Status;
  profile_counters(ctx: CtxHandle, launches: BigInt64Array, syncs: BigInt64Array, uploads: BigInt64Array): Status;
  activity_start(ctx: CtxHandle): Status;
  activity_timestamp(ns: BigUint64Array): Status;
  activity_stop(
    ctx: CtxHandle, summary: BigInt64Array, summaryLen: number, names: Buffer | null, nameBytes: number,
    nameCounts: BigInt64Array | null, nameNs: BigInt64Array | null, nameCapacity: number, namesWritten: Int32Array,
  ): Status;
  activity_records(
    ctx: CtxHandle, starts: BigInt64Array, ends: BigInt64Array, nameIndex: Int32Array, capacity: number, count: BigInt64Array,
    names: Buffer, nameBytes: number, nameCapacity: number, namesCount: Int32Array,
  ): Status;
}

const C = "splint_ctx *ctx";
const P = "uint64_t";
/** C prototypes (koffi syntax) of every function, keyed by the name without its splint_cuda_ prefix. */
export const PROTOTYPES: Readonly<Record<keyof SplintCudaLib, string>> = {
  last_error: "const char *splint_cuda_last_error(void)",
  device_count: "int splint_cuda_device_count(int32_t *count)",
  device_name: "int splint_cuda_device_name(int32_t device, uint8_t *buf, int32_t len)",
  create: "int splint_cuda_create(int32_t device, _Out_ splint_ctx **out)",
  destroy: `int splint_cuda_destroy(${C})`,
  synchronize: `int splint_cuda_synchronize(${C})`,
  set_programmatic_launch: `int splint_cuda_set_programmatic_launch(${C}, int32_t on)`,
  alloc: `int splint_cuda_alloc(${C}, uint64_t bytes, uint64_t *out)`,
  free: `int splint_cuda_free(${C}, ${P} ptr)`,
  memory_stats: `int splint_cuda_memory_stats(${C}, uint64_t *live, uint64_t *peak, uint64_t *reserved, uint64_t *mallocs)`,
  empty_cache: `int splint_cuda_empty_cache(${C})`,
  upload: `int splint_cuda_upload(${C}, ${P} dst, const void *host, uint64_t bytes)`,
  download: `int splint_cuda_download(${C}, void *host, ${P} src, uint64_t bytes, int32_t *flags)`,
  memset_zero: `int splint_cuda_memset_zero(${C}, ${P} dst, uint64_t bytes)`,
  copy: `int splint_cuda_copy(${C}, ${P} dst, ${P} src, uint64_t bytes)`,
  cast: `int splint_cuda_cast(${C}, ${P} x, int32_t x_dtype, float x_scale, ${P} out, int32_t out_dtype, float out_scale, int64_t n)`,
  gather_rows: `int splint_cuda_gather_rows(${C}, ${P} x, int32_t elem_bytes, int64_t rows, int64_t cols, ${P} index, int64_t m, ${P} out)`,
  scatter_rows: `int splint_cuda_scatter_rows(${C}, ${P} dst, int32_t dst_dtype, int64_t rows, int64_t cols, ${P} index, int64_t m, ${P} src, int32_t src_dtype, float src_scale, int32_t accumulate)`,
  permute_elements: `int splint_cuda_permute_elements(${C}, ${P} x, int32_t elem_bytes, ${P} index, int64_t n, ${P} out, int32_t gather)`,
  patchify: `int splint_cuda_patchify(${C}, ${P} pixels, int32_t x_dtype, float x_scale, int64_t c, int64_t h, int64_t w, int32_t patch, ${P} out, int32_t out_dtype)`,
  matmul: `int splint_cuda_matmul(${C}, ${P} a, int32_t a_dtype, float a_scale, int32_t trans_a, ${P} b, int32_t b_dtype, float b_scale, int32_t trans_b, ${P} out, int32_t out_dtype, int64_t m, int64_t n, int64_t k, float alpha, float beta)`,
  binary: `int splint_cuda_binary(${C}, int32_t op, ${P} a, int32_t a_dtype, float a_scale, ${P} b, int32_t b_dtype, float b_scale, int64_t nb, ${P} out, int32_t out_dtype, int64_t n)`,
  axpby: `int splint_cuda_axpby(${C}, ${P} a, int32_t a_dtype, float a_scale, float alpha, ${P} b, int32_t b_dtype, float b_scale, float beta, ${P} out, int32_t out_dtype, int64_t n)`,
  swiglu: `int splint_cuda_swiglu(${C}, ${P} gate, int32_t gate_dtype, ${P} up, int32_t up_dtype, ${P} out, int32_t out_dtype, int64_t n)`,
  swiglu_backward: `int splint_cuda_swiglu_backward(${C}, ${P} gate, int32_t gate_dtype, ${P} up, int32_t up_dtype, ${P} dout, int32_t dout_dtype, ${P} dgate, ${P} dup, int32_t grad_dtype, int64_t n)`,
  gelu: `int splint_cuda_gelu(${C}, ${P} x, int32_t x_dtype, ${P} out, int32_t out_dtype, int64_t n)`,
  gelu_backward: `int splint_cuda_gelu_backward(${C}, ${P} x, int32_t x_dtype, ${P} dout, int32_t dout_dtype, ${P} dx, int32_t dx_dtype, int64_t n)`,
  dropout: `int splint_cuda_dropout(${C}, ${P} x, int32_t x_dtype, ${P} out, int32_t out_dtype, int64_t n, uint64_t threshold, float keep_scale, uint32_t seed)`,
  lora_down: `int splint_cuda_lora_down(${C}, ${P} x, int32_t x_dtype, ${P} a, int64_t n, int64_t k, int32_t r, int32_t masked, uint64_t threshold, float keep_scale, uint32_t seed, ${P} u, int32_t u_dtype)`,
  lora_grad_a: `int splint_cuda_lora_grad_a(${C}, ${P} du, ${P} x, int32_t x_dtype, int64_t n, int64_t k, int32_t r, int32_t masked, uint64_t threshold, float keep_scale, uint32_t seed, ${P} da)`,
  lora_dx: `int splint_cuda_lora_dx(${C}, ${P} dx, int32_t dx_dtype, ${P} du, ${P} a, int64_t n, int64_t k, int32_t r, int32_t masked, uint64_t threshold, float keep_scale, uint32_t seed, int32_t accumulate)`,
  lora_up: `int splint_cuda_lora_up(${C}, ${P} u, ${P} b, int64_t n, int64_t m, int32_t r, float alpha, ${P} y, int32_t y_dtype)`,
  lora_up_backward: `int splint_cuda_lora_up_backward(${C}, ${P} dy, ${P} b, ${P} u, int64_t n, int64_t m, int32_t r, float alpha, ${P} du, int32_t du_dtype, ${P} db)`,
  rms_norm: `int splint_cuda_rms_norm(${C}, ${P} x, int32_t x_dtype, ${P} weight, int32_t w_dtype, float w_scale, int64_t rows, int64_t cols, double eps, ${P} y, int32_t y_dtype, ${P} rstd)`,
  rms_norm_backward: `int splint_cuda_rms_norm_backward(${C}, ${P} x, int32_t x_dtype, ${P} weight, int32_t w_dtype, float w_scale, ${P} rstd, ${P} dy, int32_t dy_dtype, int64_t rows, int64_t cols, ${P} dx, int32_t dx_dtype, int32_t accumulate, ${P} dweight, int32_t dw_dtype)`,
  rope: `int splint_cuda_rope(${C}, ${P} x, int32_t x_dtype, ${P} cos_t, ${P} sin_t, int64_t rows, int64_t heads, int64_t dim, int32_t inverse, ${P} out, int32_t out_dtype)`,
  attention: `int splint_cuda_attention(${C}, ${P} q, int32_t q_dtype, ${P} k, int32_t k_dtype, ${P} v, int32_t v_dtype, int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d, float scale, int32_t mask_kind, int64_t query_offset, ${P} key_valid, ${P} seg_start, ${P} seg_end, ${P} out, int32_t out_dtype, ${P} lse)`,
  attention_backward: `int splint_cuda_attention_backward(${C}, ${P} q, int32_t q_dtype, ${P} k, int32_t k_dtype, ${P} v, int32_t v_dtype, ${P} out, int32_t out_dtype, ${P} lse, ${P} dout, int32_t dout_dtype, int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d, float scale, int32_t mask_kind, int64_t query_offset, ${P} key_valid, ${P} seg_start, ${P} seg_end, ${P} dq, ${P} dk, ${P} dv, int32_t grad_dtype)`,
  flash_attention: `int splint_cuda_flash_attention(${C}, ${P} q, int32_t q_dtype, ${P} k, int32_t k_dtype, ${P} v, int32_t v_dtype, int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d, float scale, int32_t mask_kind, int64_t query_offset, ${P} key_valid, ${P} seg_start, ${P} seg_end, ${P} seg_tiles, int64_t n_seg_tiles, ${P} out, int32_t out_dtype, ${P} lse)`,
  flash_attention_backward: `int splint_cuda_flash_attention_backward(${C}, ${P} q, int32_t q_dtype, ${P} k, int32_t k_dtype, ${P} v, int32_t v_dtype, ${P} out, int32_t out_dtype, ${P} lse, ${P} dout, int32_t dout_dtype, int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d, float scale, int32_t mask_kind, int64_t query_offset, ${P} key_valid, ${P} seg_start, ${P} seg_end, ${P} seg_tiles, int64_t n_seg_tiles, ${P} dq, ${P} dk, ${P} dv, int32_t grad_dtype, int32_t deterministic)`,
  cross_entropy: `int splint_cuda_cross_entropy(${C}, ${P} logits, int32_t logits_dtype, int64_t rows, int64_t vocab, ${P} labels, int32_t ignore_index, ${P} loss, ${P} dlogits, int32_t dlogits_dtype, float grad_scale)`,
  check_flags: `int splint_cuda_check_flags(${C}, int32_t *flags)`,
  sum_squares: `int splint_cuda_sum_squares(${C}, ${P} x, int32_t x_dtype, float x_scale, int64_t n, ${P} out)`,
  adamw: `int splint_cuda_adamw(${C}, ${P} param, ${P} grad, ${P} m, ${P} v, int64_t n, float decay, float one_minus_beta1, float beta2, float one_minus_beta2, float neg_step_size, float bias_correction2_sqrt, float eps)`,
  sum_squares_many: `int splint_cuda_sum_squares_many(${C}, const uint64_t *tensors, int32_t count, ${P} out)`,
  narrow_many: `int splint_cuda_narrow_many(${C}, const uint64_t *tensors, int32_t count)`,
  add_many: `int splint_cuda_add_many(${C}, const uint64_t *tensors, int32_t count)`,
  adamw_many: `int splint_cuda_adamw_many(${C}, const uint64_t *tensors, int32_t count, float decay, float one_minus_beta1, float beta2, float one_minus_beta2, float neg_step_size, float bias_correction2_sqrt, float eps, ${P} clip_sum_squares, float max_norm)`,
  adamw8bit_many: `int splint_cuda_adamw8bit_many(${C}, const uint64_t *tensors, int32_t count, ${P} signed_map, ${P} unsigned_map, float decay, float one_minus_beta1, float beta2, float one_minus_beta2, float neg_step_size, float bias_correction2_sqrt, float eps, ${P} clip_sum_squares, float max_norm)`,
  profile_mark: `int splint_cuda_profile_mark(${C})`,
  profile_read: `int splint_cuda_profile_read(${C}, float *intervals_ms, int64_t capacity, int64_t *count)`,
  profile_counters: `int splint_cuda_profile_counters(${C}, int64_t *launches, int64_t *syncs, int64_t *uploads)`,
  activity_start: `int splint_cuda_activity_start(${C})`,
  activity_timestamp: "int splint_cuda_activity_timestamp(uint64_t *ns)",
  activity_stop: `int splint_cuda_activity_stop(${C}, int64_t *summary, int32_t summary_len, uint8_t *names, int32_t name_bytes, int64_t *name_counts, int64_t *name_ns, int32_t name_capacity, int32_t *names_written)`,
  activity_records: `int splint_cuda_activity_records(${C}, int64_t *starts, int64_t *ends, int32_t *name_index, int64_t capacity, int64_t *count, uint8_t *names, int32_t name_bytes, int32_t name_capacity, int32_t *names_count)`,
  nccl_load: "int splint_cuda_nccl_load(const char *path)",
  nccl_get_unique_id: "int splint_cuda_nccl_get_unique_id(_Out_ uint8_t *id)",
  nccl_comm_init_rank: `int splint_cuda_nccl_comm_init_rank(${C}, const uint8_t *id, int32_t nranks, int32_t rank, _Out_ splint_nccl_comm **out)`,
  nccl_all_reduce: `int splint_cuda_nccl_all_reduce(splint_nccl_comm *comm, ${P} send, ${P} recv, int64_t count, int32_t dtype, int32_t op)`,
  nccl_broadcast: `int splint_cuda_nccl_broadcast(splint_nccl_comm *comm, ${P} send, ${P} recv, int64_t count, int32_t dtype, int32_t root)`,
  nccl_comm_destroy: "int splint_cuda_nccl_comm_destroy(splint_nccl_comm *comm, int32_t abort)",
};

/** Where the library is looked for when no path is given: $SPLINT_CUDA_LIB, then the repo's build folder. */
export function defaultLibraryPath(): string {
  const fromEnv = process.env.SPLINT_CUDA_LIB;
  if (fromEnv) return resolve(fromEnv);
  const here = dirname(fileURLToPath(import.meta.url));
  // src/backends/cuda → repo root; a bundle elsewhere finds it relative to the working directory.
  const candidates = [resolve(here, "../../../native/cuda/build/libsplint_cuda.so"), resolve("native/cuda/build/libsplint_cuda.so")];
  return candidates.find((p) => existsSync(p)) ?? candidates[0]!;
}

let opaqueDeclared = false;

/** Loads the library and binds every function; throws CudaError when it cannot. */
export function loadLibrary(path: string): SplintCudaLib {
  if (!existsSync(path)) {
    throw new CudaError("load", `${path} does not exist`, "build it with `make -C native/cuda` on a machine with CUDA and cuBLAS");
  }
  let lib: LibraryHandle;
  try {
    lib = koffi.load(path);
  } catch (err) {
    throw new CudaError("load", `cannot load ${path}: ${(err as Error).message}`, "check that the CUDA runtime and cuBLASLt libraries are on the loader path");
  }
  if (!opaqueDeclared) {
    koffi.opaque("splint_ctx");
    koffi.opaque("splint_nccl_comm");
    opaqueDeclared = true;
  }
  const bound: Partial<Record<keyof SplintCudaLib, unknown>> = {};
  for (const [name, proto] of Object.entries(PROTOTYPES) as [keyof SplintCudaLib, string][]) {
    bound[name] = lib.func(proto);
  }
  return bound as SplintCudaLib;
}

/** Throws a CudaError for a non-zero status, with the library's last error message. */
export function check(lib: SplintCudaLib, status: Status, op: string): void {
  if (status === 0) return;
  const kind = STATUS_NAMES[status] ?? `status ${status}`;
  const hint =
    status === 4
      ? "reduce the batch size or sequence length, or enable gradient checkpointing"
      : status === 1
        ? "this is a bug in splint's CUDA backend or its caller: please report it with the message"
        : undefined;
  throw new CudaError(op, `${kind}: ${lib.last_error()}`, hint);
}
