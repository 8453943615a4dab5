// Attention for causal grouped-query attention and block-diagonal (segment) attention, forward
// and backward, as tiled online-softmax kernels: only 32-key (or 32-query) tiles ever sit in
// shared memory, never a T×S score matrix.
//
// Letters: B batch, T queries, S keys, Hq query heads, Hkv key/value heads (query head h reads
// kv head h / (Hq/Hkv)), D head size (≤ 128). Layouts: q [B,T,Hq,D], k/v [B,S,Hkv,D],
// lse/delta [B,Hq,T].
//
// Work split (correctness first, a warp per row):
// - forward and dq: a block of kWarps warps takes kWarps consecutive queries of one (b, h); each
//   lane scores one key of the tile, and the warp accumulates its query's output row.
// - dk/dv: a block takes kWarps consecutive keys of one (b, kv head) and walks query tiles of
//   every query head in the group, so dk and dv are sums in registers: no atomics, deterministic.
#include "common.cuh"
#include "reduce.cuh"

namespace {

constexpr int kWarps = 4;
constexpr int kTile = 32;
constexpr int kMaxD = 128;
constexpr int kChunks = kMaxD / 32;  // head-dim elements per lane
constexpr int kPad = kMaxD + 1;      // shared row stride: lane j reading row j, column d is conflict-free

struct Mask {
  int kind;  // 0 causal, 1 segments
  int64_t query_offset;
  const int32_t* key_valid;  // [B, S] or null
  const int32_t* seg_start;  // [T]
  const int32_t* seg_end;    // [T]
};

__device__ __forceinline__ bool visible(const Mask& m, int64_t b, int64_t S, int64_t t, int64_t s) {
  if (m.kind == 0) return s <= m.query_offset + t && (m.key_valid == nullptr || m.key_valid[b * S + s] != 0);
  return s >= m.seg_start[t] && s < m.seg_end[t];
}

// Keys that any of the queries [t0, t1] may see.
__device__ __forceinline__ void key_range(const Mask& m, int64_t S, int64_t t0, int64_t t1, int64_t& lo, int64_t& hi) {
  if (m.kind == 0) {
    lo = 0;
    hi = min(S, m.query_offset + t1 + 1);
  } else {
    lo = m.seg_start[t0];
    hi = m.seg_end[t1];
  }
}

// Queries that may see any of the keys [s0, s1].
__device__ __forceinline__ void query_range(const Mask& m, int64_t T, int64_t s0, int64_t s1, int64_t& lo, int64_t& hi) {
  if (m.kind == 0) {
    lo = max((int64_t)0, s0 - m.query_offset);
    hi = T;
  } else {
    lo = m.seg_start[s0];
    hi = m.seg_end[s1];
  }
}

// Loads rows [r0, r0 + kTile) of head `head` from x [B, R, H, D] into tile[kTile][kPad] as f32
// (rows past r_end as zeros). All threads of the block take part.
__device__ __forceinline__ void load_tile(In x, int64_t b, int64_t R, int64_t H, int64_t head, int64_t D, int64_t r0,
                                          int64_t r_end, float (*tile)[kPad]) {
  for (int e = threadIdx.x; e < kTile * D; e += blockDim.x) {
    int r = e / D, c = e % D;
    int64_t row = r0 + r;
    tile[r][c] = row < r_end ? load(x, ((b * R + row) * H + head) * D + c) : 0.0f;
  }
}

__device__ __forceinline__ float row_dot(const float* a, const float* b, int64_t D) {
  float acc = 0.0f;
  for (int64_t d = 0; d < D; d++) acc += a[d] * b[d];
  return acc;
}

__global__ void __launch_bounds__(kWarps * 32) attention_forward_kernel(In q, In k, In v, int64_t T, int64_t S,
                                                                        int64_t Hq, int64_t Hkv, int64_t D,
                                                                        float scale, Mask mask, Out out, float* lse) {
  __shared__ float ks[kTile][kPad];
  __shared__ float vs[kTile][kPad];
  __shared__ float qs[kWarps][kMaxD];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.z, h = blockIdx.y, kh = h / (Hq / Hkv);
  const int64_t t_first = blockIdx.x * (int64_t)kWarps;
  const int64_t t_last = min(T, t_first + kWarps) - 1;
  const int64_t t = t_first + warp;
  const bool active = t < T;

  for (int64_t d = lane; d < D; d += 32) qs[warp][d] = active ? load(q, ((b * T + t) * Hq + h) * D + d) : 0.0f;
  int64_t lo, hi;
  key_range(mask, S, t_first, t_last, lo, hi);

  float m = -INFINITY, l = 0.0f;
  float o[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; c++) o[c] = 0.0f;

  for (int64_t s0 = lo; s0 < hi; s0 += kTile) {
    __syncthreads();  // the previous tile is consumed (and qs is written, on the first pass)
    load_tile(k, b, S, Hkv, kh, D, s0, hi, ks);
    load_tile(v, b, S, Hkv, kh, D, s0, hi, vs);
    __syncthreads();
    const int64_t s = s0 + lane;
    const bool vis = active && s < hi && visible(mask, b, S, t, s);
    const float score = vis ? row_dot(qs[warp], ks[lane], D) * scale : -INFINITY;
    const float m_new = fmaxf(m, warp_max(score));
    if (m_new == -INFINITY) continue;  // nothing visible yet (warp-uniform)
    const float p = vis ? expf(score - m_new) : 0.0f;
    const float correction = expf(m - m_new);  // 0 when m was -inf
    l = l * correction + warp_sum(p);
#pragma unroll
    for (int c = 0; c < kChunks; c++) o[c] *= correction;
    for (int j = 0; j < kTile; j++) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      if (pj == 0.0f) continue;
#pragma unroll
      for (int c = 0; c < kChunks; c++) {
        const int d = lane + 32 * c;
        if (d < D) o[c] += pj * vs[j][d];
      }
    }
    m = m_new;
  }
  if (!active) return;
  const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int c = 0; c < kChunks; c++) {
    const int d = lane + 32 * c;
    if (d < D) store(out, ((b * T + t) * Hq + h) * D + d, o[c] * inv_l);
  }
  if (lane == 0) lse[(b * Hq + h) * T + t] = l > 0.0f ? m + logf(l) : -INFINITY;
}

// delta[b, h, t] = Σ_d dout·out (one warp per row).
__global__ void attention_delta_kernel(In out, In dout, int64_t rows, int64_t T, int64_t Hq, int64_t D, float* delta) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5);  // (b·T + t)·Hq + h
  if (row >= rows) return;
  float acc = 0.0f;
  for (int64_t d = lane; d < D; d += 32) acc += load(dout, row * D + d) * load(out, row * D + d);
  acc = warp_sum(acc);
  const int64_t h = row % Hq, bt = row / Hq, t = bt % T, b = bt / T;
  if (lane == 0) delta[(b * Hq + h) * T + t] = acc;
}

// dq = scale · Σ_s p·(dp − δ)·k, p = exp(q·k·scale − lse), dp = dout·v.
__global__ void __launch_bounds__(kWarps * 32) attention_dq_kernel(In q, In k, In v, In dout, const float* lse,
                                                                   const float* delta, int64_t T, int64_t S,
                                                                   int64_t Hq, int64_t Hkv, int64_t D, float scale,
                                                                   Mask mask, Out dq) {
  __shared__ float ks[kTile][kPad];
  __shared__ float vs[kTile][kPad];
  __shared__ float qs[kWarps][kMaxD];
  __shared__ float dos[kWarps][kMaxD];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.z, h = blockIdx.y, kh = h / (Hq / Hkv);
  const int64_t t_first = blockIdx.x * (int64_t)kWarps;
  const int64_t t_last = min(T, t_first + kWarps) - 1;
  const int64_t t = t_first + warp;
  const float row_lse = t < T ? lse[(b * Hq + h) * T + t] : -INFINITY;
  const bool active = t < T && row_lse != -INFINITY;
  const float row_delta = active ? delta[(b * Hq + h) * T + t] : 0.0f;
  for (int64_t d = lane; d < D; d += 32) {
    const int64_t i = ((b * T + t) * Hq + h) * D + d;
    qs[warp][d] = active ? load(q, i) : 0.0f;
    dos[warp][d] = active ? load(dout, i) : 0.0f;
  }
  int64_t lo, hi;
  key_range(mask, S, t_first, t_last, lo, hi);
  float acc[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; c++) acc[c] = 0.0f;

  for (int64_t s0 = lo; s0 < hi; s0 += kTile) {
    __syncthreads();
    load_tile(k, b, S, Hkv, kh, D, s0, hi, ks);
    load_tile(v, b, S, Hkv, kh, D, s0, hi, vs);
    __syncthreads();
    const int64_t s = s0 + lane;
    float ds = 0.0f;
    if (active && s < hi && visible(mask, b, S, t, s)) {
      const float p = expf(row_dot(qs[warp], ks[lane], D) * scale - row_lse);
      ds = p * (row_dot(dos[warp], vs[lane], D) - row_delta) * scale;
    }
    for (int j = 0; j < kTile; j++) {
      const float dj = __shfl_sync(0xffffffffu, ds, j);
      if (dj == 0.0f) continue;
#pragma unroll
      for (int c = 0; c < kChunks; c++) {
        const int d = lane + 32 * c;
        if (d < D) acc[c] += dj * ks[j][d];
      }
    }
  }
  if (t >= T) return;
#pragma unroll
  for (int c = 0; c < kChunks; c++) {
    const int d = lane + 32 * c;
    if (d < D) store(dq, ((b * T + t) * Hq + h) * D + d, acc[c]);
  }
}

// dv = Σ_(h in group, t) p·dout, dk = scale · Σ p·(dp − δ)·q; a warp per key.
__global__ void __launch_bounds__(kWarps * 32) attention_dkv_kernel(In q, In k, In v, In dout, const float* lse,
                                                                    const float* delta, int64_t T, int64_t S,
                                                                    int64_t Hq, int64_t Hkv, int64_t D, float scale,
                                                                    Mask mask, Out dk, Out dv) {
  __shared__ float qs[kTile][kPad];
  __shared__ float dos[kTile][kPad];
  __shared__ float ls[kTile];
  __shared__ float dls[kTile];
  __shared__ float kk[kWarps][kMaxD];
  __shared__ float vv[kWarps][kMaxD];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.z, kh = blockIdx.y, group = Hq / Hkv;
  const int64_t s_first = blockIdx.x * (int64_t)kWarps;
  const int64_t s_last = min(S, s_first + kWarps) - 1;
  const int64_t s = s_first + warp;
  const bool active = s < S;
  for (int64_t d = lane; d < D; d += 32) {
    const int64_t i = ((b * S + s) * Hkv + kh) * D + d;
    kk[warp][d] = active ? load(k, i) : 0.0f;
    vv[warp][d] = active ? load(v, i) : 0.0f;
  }
  int64_t lo, hi;
  query_range(mask, T, s_first, s_last, lo, hi);
  float dk_acc[kChunks], dv_acc[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; c++) dk_acc[c] = dv_acc[c] = 0.0f;

  for (int64_t h = kh * group; h < (kh + 1) * group; h++) {
    for (int64_t t0 = lo; t0 < hi; t0 += kTile) {
      __syncthreads();
      load_tile(q, b, T, Hq, h, D, t0, hi, qs);
      load_tile(dout, b, T, Hq, h, D, t0, hi, dos);
      if (threadIdx.x < kTile) {
        const int64_t t = t0 + threadIdx.x;
        ls[threadIdx.x] = t < hi ? lse[(b * Hq + h) * T + t] : -INFINITY;
        dls[threadIdx.x] = t < hi ? delta[(b * Hq + h) * T + t] : 0.0f;
      }
      __syncthreads();
      const int64_t t = t0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (active && t < hi && ls[lane] != -INFINITY && visible(mask, b, S, t, s)) {
        p = expf(row_dot(qs[lane], kk[warp], D) * scale - ls[lane]);
        ds = p * (row_dot(dos[lane], vv[warp], D) - dls[lane]) * scale;
      }
      for (int j = 0; j < kTile; j++) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
        const float dj = __shfl_sync(0xffffffffu, ds, j);
        if (pj == 0.0f && dj == 0.0f) continue;
#pragma unroll
        for (int c = 0; c < kChunks; c++) {
          const int d = lane + 32 * c;
          if (d < D) {
            dv_acc[c] += pj * dos[j][d];
            dk_acc[c] += dj * qs[j][d];
          }
        }
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int c = 0; c < kChunks; c++) {
    const int d = lane + 32 * c;
    if (d < D) {
      const int64_t i = ((b * S + s) * Hkv + kh) * D + d;
      store(dk, i, dk_acc[c]);
      store(dv, i, dv_acc[c]);
    }
  }
}

int check_dims(const char* op, int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d, int32_t mask_kind,
               splint_dptr seg_start, splint_dptr seg_end) {
  const char* splint_op = op;
  ARG_CHECK(d >= 1 && d <= kMaxD, "head size %lld is outside 1..%d", (long long)d, kMaxD);
  ARG_CHECK(hkv >= 1 && hq % hkv == 0, "%lld query heads are not a multiple of %lld kv heads", (long long)hq,
            (long long)hkv);
  ARG_CHECK(b <= 65535 && hq <= 65535 && (t + kWarps - 1) / kWarps <= 0x7fffffffLL, "grid too large");
  ARG_CHECK(mask_kind == 0 || mask_kind == 1, "unknown mask kind %d", mask_kind);
  if (mask_kind == 1) {
    ARG_CHECK(b == 1 && t == s, "segment mask needs B = 1 and T = S");
    ARG_CHECK(seg_start != 0 && seg_end != 0, "segment mask without segment tables");
  }
  return SPLINT_OK;
}

}  // namespace

extern "C" {

int splint_cuda_attention(splint_ctx* ctx, splint_dptr q, int32_t q_dtype, splint_dptr k, int32_t k_dtype, splint_dptr v,
                          int32_t v_dtype, int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d,
                          float scale, int32_t mask_kind, int64_t query_offset, splint_dptr key_valid,
                          splint_dptr seg_start, splint_dptr seg_end, splint_dptr out, int32_t out_dtype,
                          splint_dptr lse) {
  OP("attention");
  CTX_CHECK(ctx);
  STATUS_CHECK(check_dims(splint_op, b, t, s, hq, hkv, d, mask_kind, seg_start, seg_end));
  ARG_CHECK(is_float_dtype(q_dtype) && is_float_dtype(k_dtype) && is_float_dtype(v_dtype) && is_grad_dtype(out_dtype),
            "bad dtypes");
  if (b * t * hq == 0) return SPLINT_OK;
  const Mask mask{mask_kind, query_offset, reinterpret_cast<const int32_t*>(key_valid),
                  reinterpret_cast<const int32_t*>(seg_start), reinterpret_cast<const int32_t*>(seg_end)};
  dim3 grid((unsigned)((t + kWarps - 1) / kWarps), (unsigned)hq, (unsigned)b);
  attention_forward_kernel<<<grid, kWarps * 32, 0, ctx->stream>>>(in_of(q, q_dtype), in_of(k, k_dtype),
                                                                   in_of(v, v_dtype), t, s, hq, hkv, d, scale, mask,
                                                                   out_of(out, out_dtype), reinterpret_cast<float*>(lse));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_attention_backward(splint_ctx* ctx, splint_dptr q, int32_t q_dtype, splint_dptr k, int32_t k_dtype,
                                   splint_dptr v, int32_t v_dtype, splint_dptr out, int32_t out_dtype, splint_dptr lse,
                                   splint_dptr dout, int32_t dout_dtype, int64_t b, int64_t t, int64_t s, int64_t hq,
                                   int64_t hkv, int64_t d, float scale, int32_t mask_kind, int64_t query_offset,
                                   splint_dptr key_valid, splint_dptr seg_start, splint_dptr seg_end, splint_dptr dq,
                                   splint_dptr dk, splint_dptr dv, int32_t grad_dtype) {
  OP("attention_backward");
  CTX_CHECK(ctx);
  STATUS_CHECK(check_dims(splint_op, b, t, s, hq, hkv, d, mask_kind, seg_start, seg_end));
  ARG_CHECK(is_float_dtype(q_dtype) && is_float_dtype(k_dtype) && is_float_dtype(v_dtype) &&
                is_float_dtype(out_dtype) && is_float_dtype(dout_dtype) && is_grad_dtype(grad_dtype),
            "bad dtypes");
  ARG_CHECK(b <= 65535 && hkv <= 65535 && (s + kWarps - 1) / kWarps <= 0x7fffffffLL, "grid too large");
  if (b * s * hkv > 0 && b * t * hq == 0) {
    CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(dk), 0, b * s * hkv * d * dtype_bytes(grad_dtype), ctx->stream));
    CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(dv), 0, b * s * hkv * d * dtype_bytes(grad_dtype), ctx->stream));
  }
  if (b * t * hq == 0 || b * s * hkv == 0) return SPLINT_OK;
  const Mask mask{mask_kind, query_offset, reinterpret_cast<const int32_t*>(key_valid),
                  reinterpret_cast<const int32_t*>(seg_start), reinterpret_cast<const int32_t*>(seg_end)};
  const In qi = in_of(q, q_dtype), ki = in_of(k, k_dtype), vi = in_of(v, v_dtype), doi = in_of(dout, dout_dtype);
  const float* lse_p = reinterpret_cast<const float*>(lse);

  Scratch delta;
  const int64_t rows = b * t * hq;
  STATUS_CHECK(scratch_alloc(ctx, delta, rows * (int64_t)sizeof(float), splint_op));
  float* delta_p = static_cast<float*>(delta.p);
  attention_delta_kernel<<<(unsigned)((rows + 7) / 8), 256, 0, ctx->stream>>>(in_of(out, out_dtype), doi, rows, t, hq,
                                                                              d, delta_p);
  LAUNCH_CHECK();
  dim3 qgrid((unsigned)((t + kWarps - 1) / kWarps), (unsigned)hq, (unsigned)b);
  attention_dq_kernel<<<qgrid, kWarps * 32, 0, ctx->stream>>>(qi, ki, vi, doi, lse_p, delta_p, t, s, hq, hkv, d, scale,
                                                               mask, out_of(dq, grad_dtype));
  LAUNCH_CHECK();
  dim3 kgrid((unsigned)((s + kWarps - 1) / kWarps), (unsigned)hkv, (unsigned)b);
  attention_dkv_kernel<<<kgrid, kWarps * 32, 0, ctx->stream>>>(qi, ki, vi, doi, lse_p, delta_p, t, s, hq, hkv, d, scale,
                                                                mask, out_of(dk, grad_dtype), out_of(dv, grad_dtype));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // extern "C"
