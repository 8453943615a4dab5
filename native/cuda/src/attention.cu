// Attention for causal grouped-query attention and block-diagonal (segment) attention, forward
// and backward, as tiled online-softmax kernels: only 32-key (or 32-query) tiles ever sit in
// shared memory, never a T×S score matrix.
//
// Letters: B batch, T queries, S keys, Hq query heads, Hkv key/value heads (query head h reads
// kv head h / (Hq/Hkv)), D head size (≤ 128). Layouts: q [B,T,Hq,D], k/v [B,S,Hkv,D],
// lse/delta [B,Hq,T].
//
// Work split (f32 on CUDA cores; dot products run sequentially over d, FMA-contracted):
// - forward and dq: a block of kWarps warps takes kBlockRows consecutive queries of one (b, h), a
//   warp kRows of them; each lane scores one key of the tile against the warp's kRows queries, so
//   a key element read from shared memory serves kRows products, and the warp accumulates its
//   queries' output rows.
// - dk/dv: a block takes kBlockRows consecutive keys of one (b, kv head) and walks query tiles of
//   every query head in the group, so dk and dv are sums in registers: no atomics, deterministic.
// A block's key range is the union of its rows' ranges; with segments a block may straddle a
// boundary and walk both segments' keys (masked per row), which shifts where the later rows' tiles
// start and so their online-softmax rounding, never which keys they see.
#include <type_traits>

#include "common.cuh"
#include "reduce.cuh"

namespace {

constexpr int kWarps = 4;
constexpr int kTile = 32;
constexpr int kMaxD = 128;
constexpr int kPad = kMaxD + 1;      // shared row stride: lane j reading row j, column d is conflict-free
constexpr int kRows = 4;             // queries (keys, in dk/dv) a warp carries through each tile
constexpr int kBlockRows = kWarps * kRows;

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

// Loads `count` rows [r0, r0 + count) of head `head` from x [B, R, H, D] into dst (a row every
// `stride` floats) as f32, rows at or past r_end as zeros. A warp a row and a lane a column, so no
// thread divides an index (64-bit division costs more than the products a tile feeds).
__device__ __forceinline__ void load_rows(In x, int64_t b, int64_t R, int64_t H, int64_t head, int64_t D, int64_t r0,
                                          int64_t r_end, int count, float* dst, int stride) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int r = warp; r < count; r += warps) {
    const int64_t row = r0 + r;
    float* out = dst + r * stride;
    if (row < r_end) {
      const int64_t base = ((b * R + row) * H + head) * D;
      for (int c = lane; c < D; c += 32) out[c] = load(x, base + c);
    } else {
      for (int c = lane; c < D; c += 32) out[c] = 0.0f;
    }
  }
}

// A key/value (or query/dout) tile: kTile rows into tile[kTile][kPad]. All threads of the block take part.
__device__ __forceinline__ void load_tile(In x, int64_t b, int64_t R, int64_t H, int64_t head, int64_t D, int64_t r0,
                                          int64_t r_end, float (*tile)[kPad]) {
  load_rows(x, b, R, H, head, D, r0, r_end, kTile, &tile[0][0], kPad);
}

// acc[r] += Σ_d rows[r][d]·col[d] for the warp's kRows rows, d in ascending order. rows are 16-byte aligned shared rows read four floats a load, so one broadcast
// load serves four products; col is the lane's own (padded) row.
__device__ __forceinline__ void rows_dot(const float (*rows)[kMaxD], const float* col, int64_t D, float (&acc)[kRows]) {
  int64_t d = 0;
  for (; d + 4 <= D; d += 4) {
    const float c0 = col[d], c1 = col[d + 1], c2 = col[d + 2], c3 = col[d + 3];
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      const float4 x = *reinterpret_cast<const float4*>(&rows[r][d]);
      acc[r] += x.x * c0;
      acc[r] += x.y * c1;
      acc[r] += x.z * c2;
      acc[r] += x.w * c3;
    }
  }
  for (; d < D; d++) {
    const float c = col[d];
#pragma unroll
    for (int r = 0; r < kRows; r++) acc[r] += rows[r][d] * c;
  }
}

// Chunks: head-dim elements per lane (⌈D/32⌉ rounded up to 1, 2 or 4), so a short head wastes no
// products on zero columns.
template <int Chunks>
__global__ void __launch_bounds__(kWarps * 32) attention_forward_kernel(In q, In k, In v, int64_t T, int64_t S,
                                                                        int64_t Hq, int64_t Hkv, int64_t D,
                                                                        float scale, Mask mask, Out out, float* lse) {
  pdl_prologue();
  extern __shared__ float smem[];
  float(*ks)[kPad] = reinterpret_cast<float(*)[kPad]>(smem);
  float(*vs)[kPad] = ks + kTile;
  float(*qs)[kMaxD] = reinterpret_cast<float(*)[kMaxD]>(vs + kTile);  // [kBlockRows][kMaxD]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.z, h = blockIdx.y, kh = h / (Hq / Hkv);
  const int64_t t_first = blockIdx.x * (int64_t)kBlockRows;
  const int64_t t_last = min(T, t_first + kBlockRows) - 1;
  const int64_t t0 = t_first + warp * kRows;  // this warp's first query

  load_rows(q, b, T, Hq, h, D, t_first, T, kBlockRows, &qs[0][0], kMaxD);
  int64_t lo, hi;
  key_range(mask, S, t_first, t_last, lo, hi);

  float m[kRows], l[kRows], o[kRows][Chunks];
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < Chunks; c++) o[r][c] = 0.0f;
  }

  for (int64_t s0 = lo; s0 < hi; s0 += kTile) {
    __syncthreads();  // the previous tile is consumed (and qs is written, on the first pass)
    load_tile(k, b, S, Hkv, kh, D, s0, hi, ks);
    load_tile(v, b, S, Hkv, kh, D, s0, hi, vs);
    __syncthreads();
    const int64_t s = s0 + lane;
    float score[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) score[r] = 0.0f;
    rows_dot(qs + warp * kRows, ks[lane], D, score);
    float p[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      const int64_t t = t0 + r;
      const bool vis = t < T && s < hi && visible(mask, b, S, t, s);
      const float sc = vis ? score[r] * scale : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(sc));
      p[r] = 0.0f;
      if (m_new == -INFINITY) continue;  // nothing visible to this query yet (warp-uniform)
      p[r] = vis ? expf(sc - m_new) : 0.0f;
      const float correction = expf(m[r] - m_new);  // 0 when m was -inf
      l[r] = l[r] * correction + warp_sum(p[r]);
#pragma unroll
      for (int c = 0; c < Chunks; c++) o[r][c] *= correction;
      m[r] = m_new;
    }
    for (int j = 0; j < kTile; j++) {
      float vj[Chunks];
#pragma unroll
      for (int c = 0; c < Chunks; c++) {
        const int d = lane + 32 * c;
        vj[c] = d < D ? vs[j][d] : 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        const float pj = __shfl_sync(0xffffffffu, p[r], j);
        if (pj == 0.0f) continue;
#pragma unroll
        for (int c = 0; c < Chunks; c++) o[r][c] += pj * vj[c];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    const int64_t t = t0 + r;
    if (t >= T) break;
    const float inv_l = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
    for (int c = 0; c < Chunks; c++) {
      const int d = lane + 32 * c;
      if (d < D) store(out, ((b * T + t) * Hq + h) * D + d, o[r][c] * inv_l);
    }
    if (lane == 0) lse[(b * Hq + h) * T + t] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
  }
}

// delta[b, h, t] = Σ_d dout·out (one warp per row).
__global__ void attention_delta_kernel(In out, In dout, int64_t rows, int64_t T, int64_t Hq, int64_t D, float* delta) {
  pdl_prologue();
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
template <int Chunks>
__global__ void __launch_bounds__(kWarps * 32) attention_dq_kernel(In q, In k, In v, In dout, const float* lse,
                                                                   const float* delta, int64_t T, int64_t S,
                                                                   int64_t Hq, int64_t Hkv, int64_t D, float scale,
                                                                   Mask mask, Out dq) {
  pdl_prologue();
  extern __shared__ float smem[];
  float(*ks)[kPad] = reinterpret_cast<float(*)[kPad]>(smem);
  float(*vs)[kPad] = ks + kTile;
  float(*qs)[kMaxD] = reinterpret_cast<float(*)[kMaxD]>(vs + kTile);  // [kBlockRows][kMaxD]
  float(*dos)[kMaxD] = qs + kBlockRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.z, h = blockIdx.y, kh = h / (Hq / Hkv);
  const int64_t t_first = blockIdx.x * (int64_t)kBlockRows;
  const int64_t t_last = min(T, t_first + kBlockRows) - 1;
  const int64_t t0 = t_first + warp * kRows;

  float row_lse[kRows], row_delta[kRows];
  bool active[kRows];
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    const int64_t t = t0 + r;
    row_lse[r] = t < T ? lse[(b * Hq + h) * T + t] : -INFINITY;
    active[r] = t < T && row_lse[r] != -INFINITY;
    row_delta[r] = active[r] ? delta[(b * Hq + h) * T + t] : 0.0f;
  }
  // Rows that see no key (lse −inf) are loaded too; their ds is 0, so they add nothing.
  load_rows(q, b, T, Hq, h, D, t_first, T, kBlockRows, &qs[0][0], kMaxD);
  load_rows(dout, b, T, Hq, h, D, t_first, T, kBlockRows, &dos[0][0], kMaxD);
  int64_t lo, hi;
  key_range(mask, S, t_first, t_last, lo, hi);
  float acc[kRows][Chunks];
#pragma unroll
  for (int r = 0; r < kRows; r++)
#pragma unroll
    for (int c = 0; c < Chunks; c++) acc[r][c] = 0.0f;

  for (int64_t s0 = lo; s0 < hi; s0 += kTile) {
    __syncthreads();
    load_tile(k, b, S, Hkv, kh, D, s0, hi, ks);
    load_tile(v, b, S, Hkv, kh, D, s0, hi, vs);
    __syncthreads();
    const int64_t s = s0 + lane;
    float qk[kRows], dov[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) qk[r] = dov[r] = 0.0f;
    rows_dot(qs + warp * kRows, ks[lane], D, qk);
    rows_dot(dos + warp * kRows, vs[lane], D, dov);
    float ds[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      ds[r] = 0.0f;
      if (active[r] && s < hi && visible(mask, b, S, t0 + r, s)) {
        const float p = expf(qk[r] * scale - row_lse[r]);
        ds[r] = p * (dov[r] - row_delta[r]) * scale;
      }
    }
    for (int j = 0; j < kTile; j++) {
      float kj[Chunks];
#pragma unroll
      for (int c = 0; c < Chunks; c++) {
        const int d = lane + 32 * c;
        kj[c] = d < D ? ks[j][d] : 0.0f;
      }
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        const float dj = __shfl_sync(0xffffffffu, ds[r], j);
        if (dj == 0.0f) continue;
#pragma unroll
        for (int c = 0; c < Chunks; c++) acc[r][c] += dj * kj[c];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    const int64_t t = t0 + r;
    if (t >= T) break;
#pragma unroll
    for (int c = 0; c < Chunks; c++) {
      const int d = lane + 32 * c;
      if (d < D) store(dq, ((b * T + t) * Hq + h) * D + d, acc[r][c]);
    }
  }
}

// dv = Σ_(h in group, t) p·dout, dk = scale · Σ p·(dp − δ)·q; a warp per kRows keys.
template <int Chunks>
__global__ void __launch_bounds__(kWarps * 32) attention_dkv_kernel(In q, In k, In v, In dout, const float* lse,
                                                                    const float* delta, int64_t T, int64_t S,
                                                                    int64_t Hq, int64_t Hkv, int64_t D, float scale,
                                                                    Mask mask, Out dk, Out dv) {
  pdl_prologue();
  extern __shared__ float smem[];
  float(*qs)[kPad] = reinterpret_cast<float(*)[kPad]>(smem);
  float(*dos)[kPad] = qs + kTile;
  float(*kk)[kMaxD] = reinterpret_cast<float(*)[kMaxD]>(dos + kTile);  // [kBlockRows][kMaxD]
  float(*vv)[kMaxD] = kk + kBlockRows;
  float* ls = reinterpret_cast<float*>(vv + kBlockRows);  // [kTile]
  float* dls = ls + kTile;                                // [kTile]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.z, kh = blockIdx.y, group = Hq / Hkv;
  const int64_t s_first = blockIdx.x * (int64_t)kBlockRows;
  const int64_t s_last = min(S, s_first + kBlockRows) - 1;
  const int64_t s0_warp = s_first + warp * kRows;
  load_rows(k, b, S, Hkv, kh, D, s_first, S, kBlockRows, &kk[0][0], kMaxD);
  load_rows(v, b, S, Hkv, kh, D, s_first, S, kBlockRows, &vv[0][0], kMaxD);
  int64_t lo, hi;
  query_range(mask, T, s_first, s_last, lo, hi);
  float dk_acc[kRows][Chunks], dv_acc[kRows][Chunks];
#pragma unroll
  for (int r = 0; r < kRows; r++)
#pragma unroll
    for (int c = 0; c < Chunks; c++) dk_acc[r][c] = dv_acc[r][c] = 0.0f;

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
      float qk[kRows], dov[kRows];
#pragma unroll
      for (int r = 0; r < kRows; r++) qk[r] = dov[r] = 0.0f;
      rows_dot(kk + warp * kRows, qs[lane], D, qk);
      rows_dot(vv + warp * kRows, dos[lane], D, dov);
      float p[kRows], ds[kRows];
#pragma unroll
      for (int r = 0; r < kRows; r++) {
        p[r] = ds[r] = 0.0f;
        const int64_t s = s0_warp + r;
        if (s < S && t < hi && ls[lane] != -INFINITY && visible(mask, b, S, t, s)) {
          p[r] = expf(qk[r] * scale - ls[lane]);
          ds[r] = p[r] * (dov[r] - dls[lane]) * scale;
        }
      }
      for (int j = 0; j < kTile; j++) {
        float qj[Chunks], doj[Chunks];
#pragma unroll
        for (int c = 0; c < Chunks; c++) {
          const int d = lane + 32 * c;
          qj[c] = d < D ? qs[j][d] : 0.0f;
          doj[c] = d < D ? dos[j][d] : 0.0f;
        }
#pragma unroll
        for (int r = 0; r < kRows; r++) {
          const float pj = __shfl_sync(0xffffffffu, p[r], j);
          const float dj = __shfl_sync(0xffffffffu, ds[r], j);
          if (pj == 0.0f && dj == 0.0f) continue;
#pragma unroll
          for (int c = 0; c < Chunks; c++) {
            dv_acc[r][c] += pj * doj[c];
            dk_acc[r][c] += dj * qj[c];
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; r++) {
    const int64_t s = s0_warp + r;
    if (s >= S) break;
#pragma unroll
    for (int c = 0; c < Chunks; c++) {
      const int d = lane + 32 * c;
      if (d < D) {
        const int64_t i = ((b * S + s) * Hkv + kh) * D + d;
        store(dk, i, dk_acc[r][c]);
        store(dv, i, dv_acc[r][c]);
      }
    }
  }
}

// Dynamic shared memory of the three kernels. dq and dk/dv need more than the 48 KiB a kernel gets
// without opting in; all three opt in alike. Sized for kMaxD whatever the head size.
constexpr size_t kForwardSmem = (2 * kTile * kPad + kBlockRows * kMaxD) * sizeof(float);
constexpr size_t kDqSmem = (2 * kTile * kPad + 2 * kBlockRows * kMaxD) * sizeof(float);
constexpr size_t kDkvSmem = (2 * kTile * kPad + 2 * kBlockRows * kMaxD + 2 * kTile) * sizeof(float);

template <int Chunks>
int set_smem_limits(const char* splint_op) {
  CUDA_CHECK(cudaFuncSetAttribute(attention_forward_kernel<Chunks>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)kForwardSmem));
  CUDA_CHECK(cudaFuncSetAttribute(attention_dq_kernel<Chunks>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kDqSmem));
  CUDA_CHECK(cudaFuncSetAttribute(attention_dkv_kernel<Chunks>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)kDkvSmem));
  return SPLINT_OK;
}

// Raises the kernels' shared-memory limit once per process (the attribute is per function).
int ensure_smem_limits(const char* splint_op) {
  // Per process: splint drives one device per process (the attribute is per device context).
  static bool done = false;
  if (done) return SPLINT_OK;
  STATUS_CHECK(set_smem_limits<1>(splint_op));
  STATUS_CHECK(set_smem_limits<2>(splint_op));
  STATUS_CHECK(set_smem_limits<4>(splint_op));
  done = true;
  return SPLINT_OK;
}

// Calls launch(std::integral_constant<int, Chunks>) with the chunk count a head of size d needs.
template <typename Launch>
void with_chunks(int64_t d, Launch launch) {
  if (d <= 32) launch(std::integral_constant<int, 1>{});
  else if (d <= 64) launch(std::integral_constant<int, 2>{});
  else launch(std::integral_constant<int, 4>{});
}

int check_dims(const char* op, int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d, int32_t mask_kind,
               splint_dptr seg_start, splint_dptr seg_end) {
  const char* splint_op = op;
  ARG_CHECK(d >= 1 && d <= kMaxD, "head size %lld is outside 1..%d", (long long)d, kMaxD);
  ARG_CHECK(hkv >= 1 && hq % hkv == 0, "%lld query heads are not a multiple of %lld kv heads", (long long)hq,
            (long long)hkv);
  ARG_CHECK(b <= 65535 && hq <= 65535 && (t + kBlockRows - 1) / kBlockRows <= 0x7fffffffLL, "grid too large");
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
  STATUS_CHECK(ensure_smem_limits(splint_op));
  dim3 grid((unsigned)((t + kBlockRows - 1) / kBlockRows), (unsigned)hq, (unsigned)b);
  with_chunks(d, [&](auto chunks) {
    launch_kernel(ctx, attention_forward_kernel<decltype(chunks)::value>, grid, kWarps * 32, kForwardSmem,
        in_of(q, q_dtype), in_of(k, k_dtype), in_of(v, v_dtype), t, s, hq, hkv, d, scale, mask, out_of(out, out_dtype),
        reinterpret_cast<float*>(lse));
  });
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
  ARG_CHECK(b <= 65535 && hkv <= 65535 && (s + kBlockRows - 1) / kBlockRows <= 0x7fffffffLL, "grid too large");
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
  launch_kernel(ctx, attention_delta_kernel, (unsigned)((rows + 7) / 8), 256, 0, in_of(out, out_dtype), doi, rows, t, hq,
                                                                              d, delta_p);
  LAUNCH_CHECK();
  STATUS_CHECK(ensure_smem_limits(splint_op));
  dim3 qgrid((unsigned)((t + kBlockRows - 1) / kBlockRows), (unsigned)hq, (unsigned)b);
  with_chunks(d, [&](auto chunks) {
    launch_kernel(ctx, attention_dq_kernel<decltype(chunks)::value>, qgrid, kWarps * 32, kDqSmem,
        qi, ki, vi, doi, lse_p, delta_p, t, s, hq, hkv, d, scale, mask, out_of(dq, grad_dtype));
  });
  LAUNCH_CHECK();
  dim3 kgrid((unsigned)((s + kBlockRows - 1) / kBlockRows), (unsigned)hkv, (unsigned)b);
  with_chunks(d, [&](auto chunks) {
    launch_kernel(ctx, attention_dkv_kernel<decltype(chunks)::value>, kgrid, kWarps * 32, kDkvSmem,
        qi, ki, vi, doi, lse_p, delta_p, t, s, hq, hkv, d, scale, mask, out_of(dk, grad_dtype), out_of(dv, grad_dtype));
  });
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // extern "C"
