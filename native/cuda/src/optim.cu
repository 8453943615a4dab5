// Multi-tensor optimiser step: Σx² over every gradient, fused AdamW (f32 moments) and 8-bit AdamW
// (block-wise quantised moments) over every parameter, the bf16 copies of the updated masters and
// the sums of micro-batch gradients, one launch each for all tensors instead of a few per tensor.
// Blocks map to (tensor, chunk) pairs through a table of the tensors on the device, each row holding
// the index of its first chunk; a block finds its row by binary search.
#include <algorithm>
#include <vector>

#include "adamw.cuh"
#include "common.cuh"
#include "reduce.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int64_t kSquaresChunk = 8192;  // elements per block of the Σx² pass
constexpr int64_t kAdamwChunk = 2048;    // elements per block of the f32 step (8 a thread)
constexpr int64_t kNarrowChunk = 8192;   // elements per block of the bf16 copies and of the sums (32 a thread)
constexpr int kQuantBlock = 256;         // elements per absmax block (BLOCK_8BIT); one a thread
constexpr int64_t kQuantBlocksPerChunk = 8;
constexpr int kMapSize = 256;

// One tensor of a multi-tensor call. Σx² reads x from `grad`; the f32 step reads m, v as f32;
// the 8-bit step reads them as u8 codes with their f32 absmaxes.
struct Entry {
  float* param;
  const float* grad;
  void* m;
  float* m_absmax;
  void* v;
  float* v_absmax;
  int64_t n;
  int64_t first_chunk;
};

// One row {first, second, n} of a two-list call: narrow_many's f32 source and bf16 copy,
// add_many's f32 sum and f32 addend.
struct PairEntry {
  void* first;
  void* second;
  int64_t n;
  int64_t first_chunk;
};

// The row whose chunks include `chunk`: the last row with first_chunk ≤ chunk.
template <typename Row>
__device__ __forceinline__ const Row& entry_of(const Row* table, int count, int64_t chunk) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (table[mid].first_chunk <= chunk) lo = mid;
    else hi = mid - 1;
  }
  return table[lo];
}

// torch's clip_grad_norm_ coefficient from Σg² in f32: Python's `max_norm / (norm + 1e-6)` is
// `(norm + 1e-6).reciprocal() * max_norm`; then at most 1 (the CPU backend's clipCoefficient).
__device__ __forceinline__ float clip_coefficient(const float* sum_squares, float max_norm) {
  const float c = __fmul_rn(__frcp_rn(__fadd_rn(__fsqrt_rn(*sum_squares), 1e-6f)), max_norm);
  return c < 1.0f ? c : 1.0f;
}

// partial[block] = Σ x² (f64) over the block's chunk of its tensor.
__global__ void sum_squares_many_partial_kernel(const Entry* table, int count, double* partial) {
  pdl_prologue();
  __shared__ double shared[32];
  const Entry& e = entry_of(table, count, blockIdx.x);
  const int64_t start = (blockIdx.x - e.first_chunk) * kSquaresChunk;
  const int64_t end = min(e.n, start + kSquaresChunk);
  double acc = 0.0;
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float x = e.grad[i];
    acc += static_cast<double>(x) * x;
  }
  acc = block_sum_f64(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block: each tensor's chunk partials summed in f64 in chunk order and rounded to f32, then the
// tensors added in f32 in table order (the CPU's sumSquares per tensor added into a [1] tensor).
__global__ void sum_squares_many_final_kernel(const Entry* table, int count, const double* partial, float* per_tensor,
                                              float* out) {
  pdl_prologue();
  for (int k = threadIdx.x; k < count; k += blockDim.x) {
    const Entry& e = table[k];
    const int64_t chunks = (e.n + kSquaresChunk - 1) / kSquaresChunk;
    double s = 0.0;
    for (int64_t c = 0; c < chunks; c++) s += partial[e.first_chunk + c];
    per_tensor[k] = static_cast<float>(s);
  }
  __syncthreads();  // makes the block's global writes above visible to thread 0
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int k = 0; k < count; k++) total = __fadd_rn(total, per_tensor[k]);
    out[0] = total;
  }
}

__global__ void adamw_many_kernel(const Entry* table, int count, AdamwScalars h, const float* clip_sum_squares,
                                  float max_norm) {
  pdl_prologue();
  const Entry& e = entry_of(table, count, blockIdx.x);
  const bool clip = clip_sum_squares != nullptr;
  const float coef = clip ? clip_coefficient(clip_sum_squares, max_norm) : 1.0f;
  float* m = static_cast<float*>(e.m);
  float* v = static_cast<float*>(e.v);
  const int64_t start = (blockIdx.x - e.first_chunk) * kAdamwChunk;
  const int64_t end = min(e.n, start + kAdamwChunk);
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) {
    float p = e.param[i], mi = m[i], vi = v[i];
    adamw_update(p, clip ? __fmul_rn(e.grad[i], coef) : e.grad[i], mi, vi, h);
    m[i] = mi;
    v[i] = vi;
    e.param[i] = p;
  }
}

__global__ void narrow_many_kernel(const PairEntry* table, int count) {
  pdl_prologue();
  const PairEntry& e = entry_of(table, count, blockIdx.x);
  const float* src = static_cast<const float*>(e.first);
  __nv_bfloat16* dst = static_cast<__nv_bfloat16*>(e.second);
  const int64_t start = (blockIdx.x - e.first_chunk) * kNarrowChunk;
  const int64_t end = min(e.n, start + kNarrowChunk);
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void add_many_kernel(const PairEntry* table, int count) {
  pdl_prologue();
  const PairEntry& e = entry_of(table, count, blockIdx.x);
  float* sum = static_cast<float*>(e.first);
  const float* addend = static_cast<const float*>(e.second);
  const int64_t start = (blockIdx.x - e.first_chunk) * kNarrowChunk;
  const int64_t end = min(e.n, start + kNarrowChunk);
  for (int64_t i = start + threadIdx.x; i < end; i += blockDim.x) sum[i] += addend[i];
}

// Math.max's rule (the CPU's quantizeInto): NaN when either is NaN.
__device__ __forceinline__ float nan_max(float a, float b) { return (a != a || b != b) ? NAN : fmaxf(a, b); }

// Both block maxima at once; every thread gets them. `shared` holds 64 floats; may be repeated.
__device__ __forceinline__ void block_nan_max2(float& a, float& b, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    a = nan_max(a, __shfl_xor_sync(0xffffffffu, a, o));
    b = nan_max(b, __shfl_xor_sync(0xffffffffu, b, o));
  }
  __syncthreads();
  if (lane == 0) {
    shared[warp] = a;
    shared[32 + warp] = b;
  }
  __syncthreads();
  a = lane < warps ? shared[lane] : 0.0f;
  b = lane < warps ? shared[32 + lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) {
    a = nan_max(a, __shfl_xor_sync(0xffffffffu, a, o));
    b = nan_max(b, __shfl_xor_sync(0xffffffffu, b, o));
  }
}

// blockwise8.ts nearestCode: binary search over the sorted map, compared in f64, a tie to the lower.
__device__ __forceinline__ uint8_t nearest_code(const float* map, double x) {
  int lo = 0, hi = kMapSize - 1;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (static_cast<double>(map[mid]) <= x) lo = mid;
    else hi = mid;
  }
  return static_cast<uint8_t>(x - static_cast<double>(map[lo]) <= static_cast<double>(map[hi]) - x ? lo : hi);
}

// The value's code within a block of maximum absmax: x = value / absmax in f64 (0 when the maximum
// is not above 0, a NaN maximum included), as quantizeInto divides.
__device__ __forceinline__ uint8_t quantize(const float* map, float value, float absmax) {
  return nearest_code(map, absmax > 0.0f ? __ddiv_rn(static_cast<double>(value), static_cast<double>(absmax)) : 0.0);
}

// A block of kQuantBlock threads walks kQuantBlocksPerChunk absmax blocks of its tensor; for each:
// dequantise m and v (code's value · absmax, f32), the f32 AdamW step, the new absmaxes (a block
// max) and the new codes. Every thread reads the old absmax before the reduction's barrier, so
// thread 0 may overwrite it after.
__global__ void __launch_bounds__(kQuantBlock) adamw8bit_many_kernel(const Entry* table, int count,
                                                                     const float* signed_map,
                                                                     const float* unsigned_map, AdamwScalars h,
                                                                     const float* clip_sum_squares, float max_norm) {
  pdl_prologue();
  __shared__ float smap[kMapSize], umap[kMapSize];
  __shared__ float shared[64];
  smap[threadIdx.x] = signed_map[threadIdx.x];
  umap[threadIdx.x] = unsigned_map[threadIdx.x];
  __syncthreads();
  const Entry& e = entry_of(table, count, blockIdx.x);
  const bool clip = clip_sum_squares != nullptr;
  const float coef = clip ? clip_coefficient(clip_sum_squares, max_norm) : 1.0f;
  uint8_t* mc = static_cast<uint8_t*>(e.m);
  uint8_t* vc = static_cast<uint8_t*>(e.v);
  const int64_t blocks = (e.n + kQuantBlock - 1) / kQuantBlock;
  const int64_t first = (blockIdx.x - e.first_chunk) * kQuantBlocksPerChunk;
  const int64_t last = min(blocks, first + kQuantBlocksPerChunk);
  for (int64_t qb = first; qb < last; qb++) {
    const int64_t i = qb * kQuantBlock + threadIdx.x;
    const bool active = i < e.n;
    float mi = 0.0f, vi = 0.0f;
    if (active) {
      float p = e.param[i];
      mi = __fmul_rn(smap[mc[i]], e.m_absmax[qb]);
      vi = __fmul_rn(umap[vc[i]], e.v_absmax[qb]);
      adamw_update(p, clip ? __fmul_rn(e.grad[i], coef) : e.grad[i], mi, vi, h);
      e.param[i] = p;
    }
    // The CPU's maximum starts at 0, so threads past the end contribute 0.
    float m_max = active ? fabsf(mi) : 0.0f, v_max = active ? fabsf(vi) : 0.0f;
    block_nan_max2(m_max, v_max, shared);
    if (active) {
      mc[i] = quantize(smap, mi, m_max);
      vc[i] = quantize(umap, vi, v_max);
    }
    if (threadIdx.x == 0) {
      e.m_absmax[qb] = m_max;
      e.v_absmax[qb] = v_max;
    }
  }
}

// Copies the rows (n > 0 only) with their first chunks into a device table in scratch. From
// pageable memory the copy returns once the bytes are staged, so `rows` may go out of scope.
template <typename Row>
int upload_table(splint_ctx* ctx, std::vector<Row>& rows, int64_t chunk_elems, Scratch& table, int64_t& chunks,
                 const char* op) {
  const char* splint_op = op;
  chunks = 0;
  for (Row& e : rows) {
    e.first_chunk = chunks;
    chunks += (e.n + chunk_elems - 1) / chunk_elems;
  }
  if (rows.empty()) return SPLINT_OK;
  // One block a chunk: the grid's x dimension.
  ARG_CHECK(chunks <= 0x7fffffffLL, "too many chunks (%lld)", (long long)chunks);
  const int64_t bytes = static_cast<int64_t>(rows.size() * sizeof(Row));
  STATUS_CHECK(scratch_alloc(ctx, table, bytes, op));
  ++ctx->uploads;
  CUDA_CHECK(cudaMemcpyAsync(table.p, rows.data(), bytes, cudaMemcpyHostToDevice, ctx->stream));
  return SPLINT_OK;
}

// Reads the host rows {first, second, n} (n = 0 skipped), uploads the table and runs `kernel` with a
// block per kNarrowChunk elements: the body of both two-list calls.
int launch_pairs(splint_ctx* ctx, const uint64_t* tensors, int32_t count, void (*kernel)(const PairEntry*, int),
                 const char* op) {
  const char* splint_op = op;
  ARG_CHECK(count >= 0 && (count == 0 || tensors != nullptr), "bad tensor list (%d rows)", count);
  std::vector<PairEntry> rows;
  for (int32_t k = 0; k < count; k++) {
    const uint64_t* r = tensors + 3 * k;
    ARG_CHECK((r[0] != 0 && r[1] != 0) || r[2] == 0, "row %d: null tensor", k);
    if (r[2] > 0) rows.push_back(PairEntry{reinterpret_cast<void*>(r[0]), reinterpret_cast<void*>(r[1]), static_cast<int64_t>(r[2]), 0});
  }
  if (rows.empty()) return SPLINT_OK;
  Scratch table;
  int64_t chunks = 0;
  STATUS_CHECK(upload_table(ctx, rows, kNarrowChunk, table, chunks, op));
  launch_kernel(ctx, kernel, static_cast<unsigned>(chunks), kThreads, 0, static_cast<const PairEntry*>(table.p),
                                                                      static_cast<int>(rows.size()));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // namespace

extern "C" {

int splint_cuda_sum_squares_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count, splint_dptr out) {
  OP("sum_squares_many");
  CTX_CHECK(ctx);
  ARG_CHECK(count >= 0 && (count == 0 || tensors != nullptr), "bad tensor list (%d rows)", count);
  std::vector<Entry> rows;
  for (int32_t k = 0; k < count; k++) {
    const uint64_t* r = tensors + 2 * k;
    ARG_CHECK(r[0] != 0 || r[1] == 0, "row %d: null tensor", k);
    if (r[1] > 0) rows.push_back(Entry{nullptr, reinterpret_cast<const float*>(r[0]), nullptr, nullptr, nullptr, nullptr, static_cast<int64_t>(r[1]), 0});
  }
  if (rows.empty()) {
    CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(out), 0, sizeof(float), ctx->stream));
    return SPLINT_OK;
  }
  Scratch table, partial, per_tensor;
  int64_t chunks = 0;
  STATUS_CHECK(upload_table(ctx, rows, kSquaresChunk, table, chunks, splint_op));
  STATUS_CHECK(scratch_alloc(ctx, partial, chunks * (int64_t)sizeof(double), splint_op));
  STATUS_CHECK(scratch_alloc(ctx, per_tensor, static_cast<int64_t>(rows.size() * sizeof(float)), splint_op));
  const Entry* t = static_cast<const Entry*>(table.p);
  const int used = static_cast<int>(rows.size());
  launch_kernel(ctx, sum_squares_many_partial_kernel, static_cast<unsigned>(chunks), kThreads, 0,
      t, used, static_cast<double*>(partial.p));
  LAUNCH_CHECK();
  launch_kernel(ctx, sum_squares_many_final_kernel, 1, 1024, 0, t, used, static_cast<const double*>(partial.p),
                                                             static_cast<float*>(per_tensor.p),
                                                             reinterpret_cast<float*>(out));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_adamw_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count, float decay, float one_minus_beta1,
                           float beta2, float one_minus_beta2, float neg_step_size, float bias_correction2_sqrt,
                           float eps, splint_dptr clip_sum_squares, float max_norm) {
  OP("adamw_many");
  CTX_CHECK(ctx);
  ARG_CHECK(count >= 0 && (count == 0 || tensors != nullptr), "bad tensor list (%d rows)", count);
  std::vector<Entry> rows;
  for (int32_t k = 0; k < count; k++) {
    const uint64_t* r = tensors + 5 * k;
    ARG_CHECK((r[0] != 0 && r[1] != 0 && r[2] != 0 && r[3] != 0) || r[4] == 0, "row %d: null tensor", k);
    if (r[4] > 0) {
      rows.push_back(Entry{reinterpret_cast<float*>(r[0]), reinterpret_cast<const float*>(r[1]),
                           reinterpret_cast<void*>(r[2]), nullptr, reinterpret_cast<void*>(r[3]), nullptr,
                           static_cast<int64_t>(r[4]), 0});
    }
  }
  if (rows.empty()) return SPLINT_OK;
  Scratch table;
  int64_t chunks = 0;
  STATUS_CHECK(upload_table(ctx, rows, kAdamwChunk, table, chunks, splint_op));
  const AdamwScalars h{decay, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps};
  launch_kernel(ctx, adamw_many_kernel, static_cast<unsigned>(chunks), kThreads, 0,
      static_cast<const Entry*>(table.p), static_cast<int>(rows.size()), h,
      reinterpret_cast<const float*>(clip_sum_squares), max_norm);
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_adamw8bit_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count, splint_dptr signed_map,
                               splint_dptr unsigned_map, float decay, float one_minus_beta1, float beta2,
                               float one_minus_beta2, float neg_step_size, float bias_correction2_sqrt, float eps,
                               splint_dptr clip_sum_squares, float max_norm) {
  OP("adamw8bit_many");
  CTX_CHECK(ctx);
  ARG_CHECK(count >= 0 && (count == 0 || tensors != nullptr), "bad tensor list (%d rows)", count);
  ARG_CHECK(signed_map != 0 && unsigned_map != 0, "null quantisation map");
  std::vector<Entry> rows;
  for (int32_t k = 0; k < count; k++) {
    const uint64_t* r = tensors + 7 * k;
    ARG_CHECK(std::all_of(r, r + 6, [](uint64_t a) { return a != 0; }) || r[6] == 0, "row %d: null tensor", k);
    if (r[6] > 0) {
      rows.push_back(Entry{reinterpret_cast<float*>(r[0]), reinterpret_cast<const float*>(r[1]),
                           reinterpret_cast<void*>(r[2]), reinterpret_cast<float*>(r[3]),
                           reinterpret_cast<void*>(r[4]), reinterpret_cast<float*>(r[5]),
                           static_cast<int64_t>(r[6]), 0});
    }
  }
  if (rows.empty()) return SPLINT_OK;
  Scratch table;
  int64_t chunks = 0;
  STATUS_CHECK(upload_table(ctx, rows, kQuantBlocksPerChunk * kQuantBlock, table, chunks, splint_op));
  const AdamwScalars h{decay, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps};
  launch_kernel(ctx, adamw8bit_many_kernel, static_cast<unsigned>(chunks), kQuantBlock, 0,
      static_cast<const Entry*>(table.p), static_cast<int>(rows.size()), reinterpret_cast<const float*>(signed_map),
      reinterpret_cast<const float*>(unsigned_map), h, reinterpret_cast<const float*>(clip_sum_squares), max_norm);
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_narrow_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count) {
  OP("narrow_many");
  CTX_CHECK(ctx);
  return launch_pairs(ctx, tensors, count, narrow_many_kernel, splint_op);
}

int splint_cuda_add_many(splint_ctx* ctx, const uint64_t* tensors, int32_t count) {
  OP("add_many");
  CTX_CHECK(ctx);
  return launch_pairs(ctx, tensors, count, add_many_kernel, splint_op);
}

}  // extern "C"
