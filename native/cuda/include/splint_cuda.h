/*
 * splint_cuda: the C ABI of splint's CUDA backend (loaded from TypeScript through koffi).
 *
 * Conventions
 * - Every function returns a splint_status; on failure splint_cuda_last_error() describes it as
 *   "file:line op: message". The library never exits or aborts the process.
 * - A context (opaque handle) owns one device, one stream, one cuBLASLt handle and a caching
 *   allocator. Every kernel runs on that stream, so nothing synchronises with the host except the
 *   calls documented to do so (download, the *_host readers, synchronize).
 * - Device memory is passed as plain addresses (splint_dptr). Tensors are contiguous row-major.
 * - A float input is described by (address, dtype, scale): the value of element i is
 *   load(address, i) · scale for fp8 and load(address, i) otherwise. Arithmetic is f32.
 * - Shapes are int64 element counts; indices are int32.
 */
#ifndef SPLINT_CUDA_H
#define SPLINT_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t splint_dptr;
typedef struct splint_ctx splint_ctx;

typedef enum {
  SPLINT_OK = 0,
  SPLINT_INVALID_ARGUMENT = 1,
  SPLINT_CUDA_ERROR = 2,
  SPLINT_CUBLAS_ERROR = 3,
  SPLINT_OUT_OF_MEMORY = 4,
  SPLINT_NOT_SUPPORTED = 5,
  SPLINT_NCCL_ERROR = 6,
  SPLINT_CUPTI_ERROR = 7,
} splint_status;

/* Element types; the numbers match the TypeScript side (src/backends/cuda/ffi.ts). */
typedef enum {
  SPLINT_F32 = 0,
  SPLINT_BF16 = 1,
  SPLINT_FP8_E4M3 = 2,
  SPLINT_I32 = 3,
} splint_dtype;

/* ---- context, errors, device ---------------------------------------------------------------- */
const char* splint_cuda_last_error(void);
int splint_cuda_device_count(int32_t* count);
/* Writes a NUL-terminated device description ("NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB") into buf. */
int splint_cuda_device_name(int32_t device, char* buf, int32_t len);
int splint_cuda_create(int32_t device, splint_ctx** out);
/* Programmatic dependent launch (sm_90+): with on = 1 every kernel of the context is launched so
   that the device may schedule it while the kernel before it finishes, hiding the launch gap
   between back-to-back kernels; each kernel waits for its predecessor's writes before touching
   memory (src/common.cuh, pdl_prologue). Off after create. SPLINT_INVALID_ARGUMENT on older GPUs. */
int splint_cuda_set_programmatic_launch(splint_ctx* ctx, int32_t on);
int splint_cuda_destroy(splint_ctx* ctx);
/* Waits for all queued work; surfaces asynchronous kernel errors. */
int splint_cuda_synchronize(splint_ctx* ctx);

/* ---- memory --------------------------------------------------------------------------------- */
int splint_cuda_alloc(splint_ctx* ctx, uint64_t bytes, splint_dptr* out);
int splint_cuda_free(splint_ctx* ctx, splint_dptr ptr);
/* live/peak: bytes held by allocations; reserved: bytes obtained from cudaMalloc (cached too);
   mallocs: how many cudaMalloc calls the allocator has made so far. */
int splint_cuda_memory_stats(splint_ctx* ctx, uint64_t* live, uint64_t* peak, uint64_t* reserved,
                             uint64_t* mallocs);
/* Returns every cached, unused block to the driver. */
int splint_cuda_empty_cache(splint_ctx* ctx);
int splint_cuda_upload(splint_ctx* ctx, splint_dptr dst, const void* host, uint64_t bytes);
/* Synchronous: returns when host holds the bytes. With flags non-null, the device error flags
   (splint_cuda_check_flags) come back and are cleared in the same synchronisation. */
int splint_cuda_download(splint_ctx* ctx, void* host, splint_dptr src, uint64_t bytes, int32_t* flags);
int splint_cuda_memset_zero(splint_ctx* ctx, splint_dptr dst, uint64_t bytes);
int splint_cuda_copy(splint_ctx* ctx, splint_dptr dst, splint_dptr src, uint64_t bytes);

/* ---- casts and layout ----------------------------------------------------------------------- */
/* out[i] = convert(x[i]) for n elements between any two dtypes: fp8 out stores value / out_scale
   saturated to ±448; float → i32 truncates toward zero. */
int splint_cuda_cast(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, float x_scale, splint_dptr out,
                     int32_t out_dtype, float out_scale, int64_t n);
/* out[i, :] = x[index[i], :] as raw elements of elem_bytes (1, 2 or 4): x [rows, cols], index [m],
   out [m, cols]. An index out of range gives a zero row and raises flag bit 1. */
int splint_cuda_gather_rows(splint_ctx* ctx, splint_dptr x, int32_t elem_bytes, int64_t rows, int64_t cols,
                            splint_dptr index, int64_t m, splint_dptr out);
/* dst[index[i], :] = src[i, :] (accumulate = 0; raw copy when the dtypes match, else converted) or
   += (accumulate = 1, f32/bf16 dst, repeats allowed). Indices out of range are skipped and raise
   flag bit 1. */
int splint_cuda_scatter_rows(splint_ctx* ctx, splint_dptr dst, int32_t dst_dtype, int64_t rows, int64_t cols,
                             splint_dptr index, int64_t m, splint_dptr src, int32_t src_dtype, float src_scale,
                             int32_t accumulate);
/* Raw elements of elem_bytes: out[i] = x[index[i]] (gather = 1) or out[index[i]] = x[i] (gather = 0);
   n = index length = element count. Indices out of range raise flag bit 1. */
int splint_cuda_permute_elements(splint_ctx* ctx, splint_dptr x, int32_t elem_bytes, splint_dptr index,
                                 int64_t n, splint_dptr out, int32_t gather);
/* pixels [c, h, w] → patches [(h/p)·(w/p), c·p·p], each row ordered (channel, ky, kx). */
int splint_cuda_patchify(splint_ctx* ctx, splint_dptr pixels, int32_t x_dtype, float x_scale, int64_t c,
                         int64_t h, int64_t w, int32_t patch, splint_dptr out, int32_t out_dtype);

/* ---- matrix products ------------------------------------------------------------------------ */
/*
 * out = alpha · op(a) · op(b) + beta · out, row-major; op(a) [m, k], op(b) [k, n], out [m, n].
 * a and b may be f32, bf16 or fp8 (with scale); when either is f32 the product runs in full f32,
 * otherwise in bf16 with f32 accumulation. fp8 is widened exactly (unscaled) and its scale folded
 * into alpha.
 */
int splint_cuda_matmul(splint_ctx* ctx, splint_dptr a, int32_t a_dtype, float a_scale, int32_t trans_a,
                       splint_dptr b, int32_t b_dtype, float b_scale, int32_t trans_b, splint_dptr out,
                       int32_t out_dtype, int64_t m, int64_t n, int64_t k, float alpha, float beta);

/* ---- elementwise ---------------------------------------------------------------------------- */
/* op: 0 add, 1 mul. out[i] = a[i] op b[i % nb] (nb divides n). out may alias a. */
int splint_cuda_binary(splint_ctx* ctx, int32_t op, splint_dptr a, int32_t a_dtype, float a_scale,
                       splint_dptr b, int32_t b_dtype, float b_scale, int64_t nb, splint_dptr out,
                       int32_t out_dtype, int64_t n);
/* out[i] = alpha · a[i] + beta · b[i]; out may alias a (addInPlace, scaleInPlace with beta = 0). */
int splint_cuda_axpby(splint_ctx* ctx, splint_dptr a, int32_t a_dtype, float a_scale, float alpha,
                      splint_dptr b, int32_t b_dtype, float b_scale, float beta, splint_dptr out,
                      int32_t out_dtype, int64_t n);
/* out = silu(gate) · up */
int splint_cuda_swiglu(splint_ctx* ctx, splint_dptr gate, int32_t gate_dtype, splint_dptr up,
                       int32_t up_dtype, splint_dptr out, int32_t out_dtype, int64_t n);
int splint_cuda_swiglu_backward(splint_ctx* ctx, splint_dptr gate, int32_t gate_dtype, splint_dptr up,
                                int32_t up_dtype, splint_dptr dout, int32_t dout_dtype, splint_dptr dgate,
                                splint_dptr dup, int32_t grad_dtype, int64_t n);
int splint_cuda_gelu(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr out, int32_t out_dtype,
                     int64_t n);
int splint_cuda_gelu_backward(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr dout,
                              int32_t dout_dtype, splint_dptr dx, int32_t dx_dtype, int64_t n);
/* Inverted dropout with splint's counter-based hash (see elementwise.cu): out[i] = keep ? x[i]·keep_scale
   : 0 with keep ⇔ hash(seed, i) ≥ threshold (threshold = ceil(p·2³²) and keep_scale = (float)(1/(1−p)),
   both computed by the caller exactly as the CPU backend does). The backward is the same call on the
   upstream gradient. */
int splint_cuda_dropout(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr out, int32_t out_dtype,
                        int64_t n, uint64_t threshold, float keep_scale, uint32_t seed);

/* ---- LoRA (src/lora.cu) --------------------------------------------------------------------- */
/*
 * The fast tier of a LoRA module's low-rank products with its input dropout fused in, for
 * x [n, k], a [r, k] bf16 (1 ≤ r ≤ 64), du [n, r] bf16:
 *   lora_down:          u [n, r] (f32 or bf16) = dropout(x)·aᵀ
 *   lora_grad_a:        da [r, k] f32 = duᵀ·dropout(x)
 *   lora_dx:            dx [n, k] (f32 or bf16) += dropout_backward(du·a) with accumulate = 1
 *                       (in place), = it with accumulate = 0 (dx only written)
 * masked = 0: no dropout. Otherwise the mask of splint_cuda_dropout on x's flat index t·k + c (the
 * same threshold, keep_scale and seed). x (f32 or bf16) is rounded to bf16, kept values × keep_scale
 * are rounded to bf16, products run on tensor cores with f32 accumulation; the dropout backward
 * and the add into dx are f32 operations (dx bf16: the sum rounded once). Sums run in an order
 * fixed by the shapes (no atomics): deterministic. lora_grad_a may use allocator scratch.
 */
int splint_cuda_lora_down(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr a, int64_t n, int64_t k, int32_t r,
                          int32_t masked, uint64_t threshold, float keep_scale, uint32_t seed, splint_dptr u,
                          int32_t u_dtype);
int splint_cuda_lora_grad_a(splint_ctx* ctx, splint_dptr du, splint_dptr x, int32_t x_dtype, int64_t n, int64_t k,
                            int32_t r, int32_t masked, uint64_t threshold, float keep_scale, uint32_t seed,
                            splint_dptr da);
int splint_cuda_lora_dx(splint_ctx* ctx, splint_dptr dx, int32_t dx_dtype, splint_dptr du, splint_dptr a, int64_t n,
                        int64_t k, int32_t r, int32_t masked, uint64_t threshold, float keep_scale, uint32_t seed,
                        int32_t accumulate);
/*
 * The fast tier's products with a LoRA module's B, for u [n, r], b [m, r], dy [n, m] bf16 (1 ≤ r ≤ 64,
 * any n, m ≥ 0):
 *   lora_up:           y [n, m] (f32 or bf16) = alpha·u·bᵀ, only written (never read)
 *   lora_up_backward:  du [n, r] (f32 or bf16) = alpha·dy·b and db [m, r] f32 = alpha·dyᵀ·u, both from
 *                      one pass over dy
 * Products run on tensor cores with f32 accumulation; alpha multiplies each finished f32 sum once,
 * then a bf16 output is rounded once. Sums run in an order fixed by the shapes (no atomics):
 * deterministic. lora_up_backward may use allocator scratch and a second, small launch.
 */
int splint_cuda_lora_up(splint_ctx* ctx, splint_dptr u, splint_dptr b, int64_t n, int64_t m, int32_t r, float alpha,
                        splint_dptr y, int32_t y_dtype);
int splint_cuda_lora_up_backward(splint_ctx* ctx, splint_dptr dy, splint_dptr b, splint_dptr u, int64_t n, int64_t m,
                                 int32_t r, float alpha, splint_dptr du, int32_t du_dtype, splint_dptr db);

/* ---- normalisation and position ------------------------------------------------------------- */
/* x [rows, cols], weight [cols] → y [rows, cols], rstd [rows] f32. */
int splint_cuda_rms_norm(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr weight,
                         int32_t w_dtype, float w_scale, int64_t rows, int64_t cols, double eps, splint_dptr y,
                         int32_t y_dtype, splint_dptr rstd);
/* dx [rows, cols] and dweight [cols] (both f32 or bf16 by dx_dtype/dw_dtype). accumulate = 1 adds
   dx to what dx holds (in f32) instead of overwriting it. */
int splint_cuda_rms_norm_backward(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr weight,
                                  int32_t w_dtype, float w_scale, splint_dptr rstd, splint_dptr dy,
                                  int32_t dy_dtype, int64_t rows, int64_t cols, splint_dptr dx,
                                  int32_t dx_dtype, int32_t accumulate, splint_dptr dweight, int32_t dw_dtype);
/* x [rows, heads, dim], cos/sin [rows, dim/2] f32; inverse = 1 rotates by the negative angle. */
int splint_cuda_rope(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr cos_t, splint_dptr sin_t,
                     int64_t rows, int64_t heads, int64_t dim, int32_t inverse, splint_dptr out,
                     int32_t out_dtype);

/* ---- attention ------------------------------------------------------------------------------ */
/*
 * q [b, t, hq, d], k/v [b, s, hkv, d], out [b, t, hq, d], lse [b, hq, t] f32.
 * mask_kind 0 (causal): key j visible to query i iff j ≤ query_offset + i and (key_valid == 0 or
 *   key_valid[b, j] != 0), key_valid i32 [b, s].
 * mask_kind 1 (segments): b = 1, t = s; seg_start/seg_end i32 [t] give each position's block
 *   [start, end); key j visible to query i iff seg_start[i] ≤ j < seg_end[i].
 * Rows with no visible key give out = 0 and lse = -inf.
 */
int splint_cuda_attention(splint_ctx* ctx, splint_dptr q, int32_t q_dtype, splint_dptr k, int32_t k_dtype,
                          splint_dptr v, int32_t v_dtype, int64_t b, int64_t t, int64_t s, int64_t hq,
                          int64_t hkv, int64_t d, float scale, int32_t mask_kind, int64_t query_offset,
                          splint_dptr key_valid, splint_dptr seg_start, splint_dptr seg_end, splint_dptr out,
                          int32_t out_dtype, splint_dptr lse);
/* dq [b, t, hq, d], dk/dv [b, s, hkv, d] (f32 or bf16 by grad_dtype). */
int splint_cuda_attention_backward(splint_ctx* ctx, splint_dptr q, int32_t q_dtype, splint_dptr k,
                                   int32_t k_dtype, splint_dptr v, int32_t v_dtype, splint_dptr out,
                                   int32_t out_dtype, splint_dptr lse, splint_dptr dout, int32_t dout_dtype,
                                   int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d,
                                   float scale, int32_t mask_kind, int64_t query_offset, splint_dptr key_valid,
                                   splint_dptr seg_start, splint_dptr seg_end, splint_dptr dq, splint_dptr dk,
                                   splint_dptr dv, int32_t grad_dtype);

/* The fast tier of the two above, same arguments and contract: q, k, v and dout are rounded to
 * bf16 and the products run on tensor cores with f32 accumulation (native/cuda/src/flash_attention.cu).
 * Backward: deterministic = 1 runs two kernels without atomics (bit-reproducible); 0 runs one fused
 * kernel that adds dq up with atomics, so dq may differ in its last bits between runs (dk and dv
 * do not). With a segment mask, seg_tiles (i32 [n_seg_tiles], or 0) lists the first row of every
 * 64-row tile of every non-empty segment (a segment of length L has ceil(L/64) tiles starting at its
 * first row, then every 64 rows), in any order: then each kernel block takes one tile and no block
 * straddles two segments. 0 cuts the rows into 64-row tiles regardless of segments. */
int splint_cuda_flash_attention(splint_ctx* ctx, splint_dptr q, int32_t q_dtype, splint_dptr k, int32_t k_dtype,
                                splint_dptr v, int32_t v_dtype, int64_t b, int64_t t, int64_t s, int64_t hq,
                                int64_t hkv, int64_t d, float scale, int32_t mask_kind, int64_t query_offset,
                                splint_dptr key_valid, splint_dptr seg_start, splint_dptr seg_end,
                                splint_dptr seg_tiles, int64_t n_seg_tiles, splint_dptr out, int32_t out_dtype,
                                splint_dptr lse);
int splint_cuda_flash_attention_backward(splint_ctx* ctx, splint_dptr q, int32_t q_dtype, splint_dptr k,
                                         int32_t k_dtype, splint_dptr v, int32_t v_dtype, splint_dptr out,
                                         int32_t out_dtype, splint_dptr lse, splint_dptr dout, int32_t dout_dtype,
                                         int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d,
                                         float scale, int32_t mask_kind, int64_t query_offset, splint_dptr key_valid,
                                         splint_dptr seg_start, splint_dptr seg_end, splint_dptr seg_tiles,
                                         int64_t n_seg_tiles, splint_dptr dq, splint_dptr dk, splint_dptr dv,
                                         int32_t grad_dtype, int32_t deterministic);

/* ---- loss and optimiser --------------------------------------------------------------------- */
/* logits [rows, vocab], labels i32 [rows]; loss [1] f32 = Σ over counted rows of −log softmax[label];
   dlogits (0 = none) = grad_scale · (softmax − onehot) on counted rows, 0 on ignored rows.
   A label outside [0, vocab) that is not ignore_index counts as an error on the next
   splint_cuda_check_flags call. */
int splint_cuda_cross_entropy(splint_ctx* ctx, splint_dptr logits, int32_t logits_dtype, int64_t rows,
                              int64_t vocab, splint_dptr labels, int32_t ignore_index, splint_dptr loss,
                              splint_dptr dlogits, int32_t dlogits_dtype, float grad_scale);
/* Synchronous: returns and clears the device error flags (bit 0: a label out of range; bit 1: a row
   or element index out of range). */
int splint_cuda_check_flags(splint_ctx* ctx, int32_t* flags);
/* out [1] f32 = Σ x². */
int splint_cuda_sum_squares(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, float x_scale, int64_t n,
                            splint_dptr out);
/* One AdamW step on f32 param/grad/m/v, in place, in torch's f32 order; the host computes the
   scalars as the CPU backend does: decay = f32(1 − lr·wd), neg_step_size = f32(−lr / (1 − β1ᵗ)),
   bias_correction2_sqrt = f32(sqrt(1 − β2ᵗ)), the rest f32 of the hyper-parameters. */
int splint_cuda_adamw(splint_ctx* ctx, splint_dptr param, splint_dptr grad, splint_dptr m, splint_dptr v, int64_t n,
                      float decay, float one_minus_beta1, float beta2, float one_minus_beta2, float neg_step_size,
                      float bias_correction2_sqrt, float eps);

/* ---- multi-tensor optimiser step (src/optim.cu) ---------------------------------------------
   One launch (Σx²: two) for a whole list of tensors. `tensors` is a host array of `count` rows of
   uint64 values (device addresses and element counts), copied to the device by the call without a
   host wait; rows with n = 0 are skipped. Nothing here synchronises. */
/* Rows {x, n}, x f32 [n]: out [1] f32 = Σ over rows in order of f32(Σ x² in f64), added in f32. */
int splint_cuda_sum_squares_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count, splint_dptr out);
/* Rows {param, grad, m, v, n}, all f32 [n]: splint_cuda_adamw on each row, the same scalars for
   all. When clip_sum_squares is not 0 (a [1] f32 Σg²), every gradient element is first multiplied
   in f32 by coef = f32((1 / (sqrt(s) + 1e-6)) · max_norm) clamped to at most 1, torch's
   clip_grad_norm_ coefficient. Grads are not written. */
int splint_cuda_adamw_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count, float decay,
                           float one_minus_beta1, float beta2, float one_minus_beta2, float neg_step_size,
                           float bias_correction2_sqrt, float eps, splint_dptr clip_sum_squares, float max_norm);
/* Rows {param, grad, m_codes, m_absmax, v_codes, v_absmax, n}: param, grad f32 [n]; codes u8 [n];
   absmax f32 [ceil(n / 256)]; signed_map, unsigned_map f32 [256], sorted. Per 256-element block:
   m = signed_map[code] · absmax (f32), v likewise on unsigned_map, the AdamW step of
   splint_cuda_adamw_many, then absmax = max |m| (NaN if any is NaN) and each code the nearest map
   entry to m / absmax (f64; 0 when absmax is not above 0; a tie to the lower code). */
int splint_cuda_adamw8bit_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count, splint_dptr signed_map,
                               splint_dptr unsigned_map, float decay, float one_minus_beta1, float beta2,
                               float one_minus_beta2, float neg_step_size, float bias_correction2_sqrt, float eps,
                               splint_dptr clip_sum_squares, float max_norm);
/* Rows {src, dst, n}: src f32 [n], dst bf16 [n]; dst = src rounded to nearest even (the bf16
   copies of f32 masters that the fast tier's products read, refreshed after each step). */
int splint_cuda_narrow_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count);
/* Rows {dst, src, n}: dst, src f32 [n]; dst += src in f32 (a micro-batch's gradients into the
   step's accumulators). */
int splint_cuda_add_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count);

/* ---- profiling ------------------------------------------------------------------------------ */
/* Records a timing event on the stream (no host wait). */
int splint_cuda_profile_mark(splint_ctx* ctx);
/* Synchronous: waits for the last mark, writes the milliseconds between each pair of consecutive
   marks since the previous read (count = marks − 1, at most capacity) and starts a new series. */
int splint_cuda_profile_read(splint_ctx* ctx, float* intervals_ms, int64_t capacity, int64_t* count);
/* Totals since create: kernel launches (cuBLASLt products, device copies and memsets included),
   host waits on the stream, and host-to-device uploads. */
int splint_cuda_profile_counters(splint_ctx* ctx, int64_t* launches, int64_t* syncs, int64_t* uploads);

/* ---- activity timeline (src/activity.cu; CUPTI is dlopened, not linked) ---------------------- */
/* CUPTI's record of every kernel, memcpy and memset the device ran between activity_start and
   activity_stop: exact busy and idle time, with nothing added to the stream. CUPTI is loaded by the
   first call from $SPLINT_CUPTI_LIB (a full path), else libcupti.so.13, else libcupti.so; when it
   cannot be loaded (or the library was built without cupti.h) these calls return
   SPLINT_NOT_SUPPORTED, and a failing CUPTI call returns SPLINT_CUPTI_ERROR. One timeline at a
   time per process (CUPTI's activity API is process-wide). */
/* Indices of activity_stop's summary (int64 each; timestamps in ns of activity_timestamp's clock). */
enum {
  SPLINT_ACTIVITY_KERNELS = 0,
  SPLINT_ACTIVITY_MEMCPYS = 1,
  SPLINT_ACTIVITY_MEMSETS = 2,
  SPLINT_ACTIVITY_BUSY_NS = 3,        /* length of the union of their device intervals */
  SPLINT_ACTIVITY_FIRST_START_NS = 4, /* 0 when nothing ran */
  SPLINT_ACTIVITY_LAST_END_NS = 5,
  SPLINT_ACTIVITY_IDLE_NS = 6,        /* last end - first start - busy */
  SPLINT_ACTIVITY_DROPPED = 7,        /* records CUPTI lost for want of buffer space: the counts undercount */
  SPLINT_ACTIVITY_OTHER_DEVICE = 8,   /* records of other devices, left out of everything above */
  SPLINT_ACTIVITY_NAMES = 9,          /* distinct names (see activity_stop) */
  SPLINT_ACTIVITY_FIELDS = 10,
};
/* Waits for ctx's stream, then starts recording the device's kernels, memcpys and memsets. */
int splint_cuda_activity_start(splint_ctx* ctx);
/* CUPTI's clock now, in ns: the clock of the summary's timestamps, for the host's start and end. */
int splint_cuda_activity_timestamp(uint64_t* ns);
/* Synchronises the device, flushes CUPTI's buffers and stops recording; writes the summary
   (summary_len >= SPLINT_ACTIVITY_FIELDS) of the records of ctx's device. Per name (a kernel's,
   demangled; copies as "[memcpy HtoD]" etc., memsets as "[memset]") the records are counted and
   their durations summed: the top name_capacity names by total time, largest first, go to
   names (NUL-terminated, name_bytes apart, truncated to fit), name_counts and name_ns, and their
   number to *names_written. name_capacity may be 0 (names, name_counts, name_ns then unused). */
int splint_cuda_activity_stop(splint_ctx* ctx, int64_t* summary, int32_t summary_len, char* names, int32_t name_bytes,
                              int64_t* name_counts, int64_t* name_ns, int32_t name_capacity, int32_t* names_written);
/* The records the last successful activity_stop on ctx kept (kept until the next activity_start),
   for finding where the device sat idle: each timed record's device start and end (ns, the
   summary's clock) and its name's index, sorted by start, then end; records CUPTI could not time
   are left out. The first min(capacity, kept) go to starts, ends and name_index and the number
   kept to *count; the names, every distinct one in index order (demangled and NUL-terminated as
   activity_stop writes them, name_bytes apart), the first min(name_capacity, distinct) of them,
   and their number to *names_count. The summary bounds both: kept <= KERNELS + MEMCPYS + MEMSETS,
   distinct = NAMES. A second call rather than more outputs of activity_stop: the caller sizes the
   buffers from stop's summary, and stop's callers that want only totals pass nothing new. */
int splint_cuda_activity_records(splint_ctx* ctx, int64_t* starts, int64_t* ends, int32_t* name_index, int64_t capacity,
                                 int64_t* count, char* names, int32_t name_bytes, int32_t name_capacity,
                                 int32_t* names_count);

/* ---- NCCL (src/nccl.cu; NCCL is dlopened, not linked) --------------------------------------- */
typedef struct splint_nccl_comm splint_nccl_comm;
/* Reduction codes of splint_cuda_nccl_all_reduce. */
enum { SPLINT_REDUCE_SUM = 0, SPLINT_REDUCE_AVG = 1 };
/* Loads NCCL from path (a libnccl.so.2 file; NULL or "" looks up libnccl.so.2 on the loader path).
   Later calls return OK without reloading. */
int splint_cuda_nccl_load(const char* path);
/* Writes a new 128-byte ncclUniqueId into id (rank 0 makes it and shares it with the others). */
int splint_cuda_nccl_get_unique_id(uint8_t* id);
/* Joins the communicator of nranks ranks named by id, on ctx's device; blocks until all joined.
   Sets NCCL_NVLS_ENABLE=0 first. */
int splint_cuda_nccl_comm_init_rank(splint_ctx* ctx, const uint8_t* id, int32_t nranks, int32_t rank,
                                    splint_nccl_comm** out);
/* Enqueues on the context's stream: recv = Σ (op 0) or mean (op 1) of send over the ranks; f32 or
   bf16; send == recv is in place. */
int splint_cuda_nccl_all_reduce(splint_nccl_comm* comm, splint_dptr send, splint_dptr recv, int64_t count,
                                int32_t dtype, int32_t op);
/* Enqueues on the context's stream: recv = root's send. */
int splint_cuda_nccl_broadcast(splint_nccl_comm* comm, splint_dptr send, splint_dptr recv, int64_t count,
                               int32_t dtype, int32_t root);
/* Frees the communicator: ncclCommDestroy, or ncclCommAbort when abort is non-zero (after a failure,
   when peers may be gone). */
int splint_cuda_nccl_comm_destroy(splint_nccl_comm* comm, int32_t abort);

#ifdef __cplusplus
}
#endif

#endif
