// Flash attention on tensor cores: the fast tier of attention (Backend.attention with precision
// "bf16"). q, k, v (and dout) are rounded to bf16 as they are staged into shared memory, products
// run as mma.sync m16n8k16 (bf16 operands, f32 accumulators), softmax statistics stay in f32 and
// in base 2, and no T×S matrix ever leaves the registers. attention.cu keeps the exact f32 tier.
//
// Letters and layouts as attention.cu: q [B,T,Hq,D], k/v [B,S,Hkv,D], lse/delta [B,Hq,T]; query
// head h reads kv head h / (Hq/Hkv). Every mask is, per query row t, an interval of visible keys
// [lo_t, hi_t) (causal: [0, query_offset + t + 1); segments: the row's block) and, for causal
// masks with padding, a per-key validity.
//
// Work split (a block is 4 warps, a warp owns 16·kM consecutive rows of the block's 64·kM; kM = 2
// at D ≤ 64, so each B fragment read from shared memory feeds two products):
// - forward: a block takes 64·kM queries of one (b, h) and walks key tiles of its key range.
// - dq: the same split; it also writes delta = rowsum(out · dout) for the dk/dv kernel.
// - dk/dv: a block takes 64·kM keys of one (b, kv head) and walks the query tiles of every query
//   head of its group, so dk and dv are sums in registers: no atomics, deterministic.
// Fragments: A operands come from shared memory through ldmatrix (or straight from the previous
// product's accumulators: P and dS), B operands through ldmatrix, transposed where the tile is
// stored [k][n].
#include <type_traits>

#include "common.cuh"
#include "mma.cuh"

// Build knobs for measuring the D = 64 kernels' occupancy (scripts/gpu-check's flashvariants step
// builds the library with each and times the vision shape): the least blocks an SM the forward and
// the fused backward are compiled for (__launch_bounds__' second argument; 0 lets ptxas choose the
// registers), and the fused backward's query tile.
// - The fused backward is built for 3 blocks an SM: ptxas then fits it in 168 registers (189
//   without, two blocks an SM) with 68 bytes of spill stores, and the vision backward's 1088 blocks run
//   in 2.7 waves of 396 instead of 4.1 of 264: 0.855 → 0.700 ms (H100, 65e89f6). 32-query tiles
//   (140 registers, no spills, three blocks) took 0.795, and 4 blocks with them 0.787.
// - A forward built for 4 blocks (128 registers, no spills) took 0.315 ms against 0.309 for 3.
#ifndef SPLINT_FLASH_FWD64_MIN_BLOCKS
#define SPLINT_FLASH_FWD64_MIN_BLOCKS 0
#endif
#ifndef SPLINT_FLASH_BWD64_MIN_BLOCKS
#define SPLINT_FLASH_BWD64_MIN_BLOCKS 3
#endif
#ifndef SPLINT_FLASH_BWD64_QUERIES
#define SPLINT_FLASH_BWD64_QUERIES 64
#endif

namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 128;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct RowMask {
  int kind;  // 0 causal, 1 segments
  int64_t query_offset;
  const int32_t* key_valid;  // [B, S] or null
  const int32_t* seg_start;  // [T]
  const int32_t* seg_end;    // [T]
  // Segments only, or null: the first row of every kSegTile-row tile of every segment, one per
  // block of a grid over query rows (forward, dq) or keys (dk/dv, fused backward), so that no
  // block straddles two segments (a straddling block walks both segments' keys, twice the work
  // of its neighbours, and was the critical path of the vision forward).
  const int32_t* seg_tiles;
};

// The rows (or keys) of a grid's tiles; each kernel's tile is this many rows.
constexpr int kSegTile = 64;

// Rows [first, end) of this block of a grid over `count` rows in tiles of kSegTile.
__device__ __forceinline__ void block_span(const RowMask& m, int count, int& first, int& end) {
  if (m.seg_tiles != nullptr) {
    first = m.seg_tiles[blockIdx.x];
    end = min(first + kSegTile, m.seg_end[first]);
  } else {
    first = blockIdx.x * kSegTile;
    end = min(count, first + kSegTile);
  }
}

// Keys [lo, hi) that query t may see (before key validity).
__device__ __forceinline__ void row_interval(const RowMask& m, int S, int t, int& lo, int& hi) {
  if (m.kind == 0) {
    lo = 0;
    hi = (int)min((int64_t)S, m.query_offset + t + 1);
  } else {
    lo = m.seg_start[t];
    hi = m.seg_end[t];
  }
}

__device__ __forceinline__ bool key_ok(const RowMask& m, int64_t b, int S, int s) {
  return s < S && (m.key_valid == nullptr || m.key_valid[b * S + s] != 0);
}

// 2^x in one MUFU op (ex2.approx.ftz: ≤ 2 ulp, denormal results flushed; 2^-inf = 0), where
// exp2f adds range handling around it: softmax probabilities that are rounded to bf16 next need
// no more, and the exponent is the per-element work that bounds the D = 64 kernels.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// B fragments of the n-tiles n0 and n0 + 8 at the k-step k0 ({b[0], b[1]} and {b[2], b[3]}), from
// a tile stored [n][k] (k tiles and q tiles when the product is against their transposes).
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const bf16* tile, int stride, int n0, int k0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4(b, tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * stride + k0 + ((lane >> 3) & 1) * 8);
}

// The same fragments from a tile stored [k][n] (v in P·V, dout and q in the dk/dv products).
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const bf16* tile, int stride, int n0, int k0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4_trans(b, tile + (k0 + (lane & 7) + (((lane >> 3) & 1) << 3)) * stride + n0 + ((lane >> 4) << 3));
}

// The A fragment of 16 columns (the n-tiles 2j and 2j + 1) of a 16-row accumulator, as bf16: the
// accumulator layout of two n-tiles is the A layout of one k-step.
template <int N>
__device__ __forceinline__ void a_from_acc(uint32_t (&a)[4], const float (&c)[N][4], int j) {
  a[0] = pack_bf16(c[2 * j][0], c[2 * j][1]);
  a[1] = pack_bf16(c[2 * j][2], c[2 * j][3]);
  a[2] = pack_bf16(c[2 * j + 1][0], c[2 * j + 1][1]);
  a[3] = pack_bf16(c[2 * j + 1][2], c[2 * j + 1][3]);
}

// acc[m] += A_m · B for kM 16-row blocks A_m (rows r0 + 16m of a row-major tile of width kD) and
// B stored [n][k]: each B fragment read from shared memory serves kM products.
template <int kD, int kM, int N>
__device__ __forceinline__ void mma_rows_nk(float (&acc)[kM][N][4], const bf16* a_tile, int r0, const bf16* b_tile) {
  constexpr int kStride = kD + 8;
#pragma unroll
  for (int kk = 0; kk < kD / 16; kk++) {
    uint32_t a[kM][4];
#pragma unroll
    for (int m = 0; m < kM; m++) load_a_mk(a[m], a_tile, kStride, r0 + 16 * m, kk * 16);
#pragma unroll
    for (int n = 0; n < N / 2; n++) {
      uint32_t b[4];
      load_b_nk(b, b_tile, kStride, n * 16, kk * 16);
#pragma unroll
      for (int m = 0; m < kM; m++) {
        mma(acc[m][2 * n], a[m], b[0], b[1]);
        mma(acc[m][2 * n + 1], a[m], b[2], b[3]);
      }
    }
  }
}

// acc[m] += P_m · B for kM 16-row accumulators P_m (as bf16) and B a tile stored [k][n] of kD columns.
template <int kD, int kM, int NP>
__device__ __forceinline__ void mma_acc_kn(float (&acc)[kM][kD / 8][4], const float (&p)[kM][NP][4], const bf16* b_tile) {
  constexpr int kStride = kD + 8;
#pragma unroll
  for (int j = 0; j < NP / 2; j++) {
    uint32_t a[kM][4];
#pragma unroll
    for (int m = 0; m < kM; m++) a_from_acc(a[m], p[m], j);
#pragma unroll
    for (int n = 0; n < kD / 16; n++) {
      uint32_t b[4];
      load_b_kn(b, b_tile, kStride, n * 16, j * 16);
#pragma unroll
      for (int m = 0; m < kM; m++) {
        mma(acc[m][2 * n], a[m], b[0], b[1]);
        mma(acc[m][2 * n + 1], a[m], b[2], b[3]);
      }
    }
  }
}

// 16 bytes global → shared without passing through registers; with valid false the 16 bytes are
// zeros (nothing is read).
__device__ __forceinline__ void cp_async16(bf16* dst, const bf16* src, bool valid) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Stages rows [r0, r0 + kRows) of head `head` of x [B, R, H, D] as bf16 into dst [kRows][kD + 8];
// rows at or past r_end and columns at or past D are zeros. `vec`: D % 8 == 0 and 16-byte aligned
// tensors; then bf16 rows are copied asynchronously (complete at the next cp_async_wait, in the
// group the next cp_async_commit closes) and f32 rows are read 8 elements a load and narrowed.
template <int kRows, int kD>
__device__ __forceinline__ void stage_rows(In x, int64_t b, int R, int H, int head, int D, int r0, int r_end, bool vec,
                                           bf16* dst) {
  constexpr int kChunksPerRow = kD / 8;
  for (int c = threadIdx.x; c < kRows * kChunksPerRow; c += kThreads) {
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const int row = r0 + r;
    bf16* out = dst + r * (kD + 8) + col;
    if (vec && x.dt == SPLINT_BF16) {
      const bool valid = row < r_end && col < D;
      const bf16* base = static_cast<const bf16*>(x.p);
      cp_async16(out, valid ? base + ((b * R + row) * (int64_t)H + head) * D + col : base, valid);
      continue;
    }
    uint4 packed = make_uint4(0, 0, 0, 0);
    if (row < r_end && col < D) {
      const int64_t base = ((b * R + row) * (int64_t)H + head) * D + col;
      if (vec) {
        const float4* src = reinterpret_cast<const float4*>(static_cast<const float*>(x.p) + base);
        const float4 lo = src[0], hi = src[1];
        packed = make_uint4(pack_bf16(lo.x, lo.y), pack_bf16(lo.z, lo.w), pack_bf16(hi.x, hi.y), pack_bf16(hi.z, hi.w));
      } else {
        float e[8];
#pragma unroll
        for (int i = 0; i < 8; i++) e[i] = col + i < D ? load(x, base + i) : 0.0f;
        packed = make_uint4(pack_bf16(e[0], e[1]), pack_bf16(e[2], e[3]), pack_bf16(e[4], e[5]), pack_bf16(e[6], e[7]));
      }
    }
    *reinterpret_cast<uint4*>(out) = packed;
  }
}

// Per head size: kM 16-row blocks per warp in the deterministic backward kernels (a block holds
// 64·kM rows, and each B fragment read from shared memory serves kM products), the forward's rows
// per warp and key tile; the two deterministic backward kernels walk tiles of 32. kM = 2 at D = 64
// measured slower on the H200 in every kernel with Q in registers (238–252 registers, two blocks
// an SM: native/cuda/NOTES.md), and at D = 128 it does not fit the registers, so kM = 1 there.
// The fused backward (flash_bwd_fused_kernel) has its own tiles, see FusedTiles.
template <int kD>
struct Tiles {
  static constexpr int kM = 1;
  static constexpr int rows = 64 * kM;
  static constexpr int forward = 64;
  static constexpr int backward = 32;
};

// The block row of the warp's m-block m, accumulator half r (rows g and g + 8).
template <int kM>
__device__ __forceinline__ int warp_row(int warp, int m, int g, int r) {
  return warp * 16 * kM + 16 * m + g + 8 * r;
}

// kBc: keys a forward tile (Tiles<kD>::forward). A 128-key tile at D = 64 (half the barriers and
// row reductions per key, two blocks an SM instead of three) ran the vision shape 23 % slower
// (NOTES.md), so the tile stays a parameter for such trials but one width is built.
template <int kD, int kBc>
constexpr size_t forward_smem() {
  return (size_t)(Tiles<kD>::rows + 4 * kBc) * (kD + 8) * sizeof(bf16) + 2 * kBc * sizeof(int);
}

template <int kD, int kBc>
__global__ void __launch_bounds__(kThreads, kD == 64 ? SPLINT_FLASH_FWD64_MIN_BLOCKS : 0) flash_forward_kernel(In q, In k, In v, int T, int S, int Hq, int Hkv, int D,
                                                                 float scale_log2, RowMask mask, bool vec, Out out,
                                                                 float* lse) {
  pdl_prologue();
  constexpr int kStride = kD + 8, kM = Tiles<kD>::kM, kRows = Tiles<kD>::rows;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem);  // [kRows][kStride]
  // Two buffers of each (selected by offset: an array of pointers indexed at run time would live
  // in local memory).
  bf16* ks = qs + kRows * kStride;                           // [2][kBc][kStride]
  bf16* vs = ks + 2 * kBc * kStride;                         // [2][kBc][kStride]
  int* kok = reinterpret_cast<int*>(vs + 2 * kBc * kStride);  // [2][kBc]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
  const int64_t b = blockIdx.z;
  const int h = blockIdx.y, kh = h / (Hq / Hkv);
  static_assert(kRows == kSegTile, "the grid's tiles are kSegTile rows");
  int t_first, t_end;
  block_span(mask, T, t_first, t_end);
  const int t_last = t_end - 1;
  int block_lo, block_hi, unused;
  row_interval(mask, S, t_first, block_lo, unused);
  row_interval(mask, S, t_last, unused, block_hi);
  // Key tiles go through two buffers: tile i + 1 is in flight while tile i is multiplied.
  auto stage_keys = [&](int s0, int buf) {
    stage_rows<kBc, kD>(k, b, S, Hkv, kh, D, s0, block_hi, vec, ks + buf * kBc * kStride);
    stage_rows<kBc, kD>(v, b, S, Hkv, kh, D, s0, block_hi, vec, vs + buf * kBc * kStride);
    for (int j = threadIdx.x; j < kBc; j += kThreads) kok[buf * kBc + j] = key_ok(mask, b, S, s0 + j);
  };

  stage_rows<kRows, kD>(q, b, T, Hq, h, D, t_first, T, vec, qs);
  if (block_lo < block_hi) stage_keys(block_lo, 0);
  cp_async_commit();
  int lo[kM][2], hi[kM][2];
#pragma unroll
  for (int m = 0; m < kM; m++) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int t = t_first + warp_row<kM>(warp, m, g, r);
      lo[m][r] = hi[m][r] = 0;
      if (t < t_end) row_interval(mask, S, t, lo[m][r], hi[m][r]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[kM][kD / 16][4];
#pragma unroll
  for (int m = 0; m < kM; m++) {
#pragma unroll
    for (int kk = 0; kk < kD / 16; kk++) load_a_mk(qf[m][kk], qs, kStride, warp * 16 * kM + 16 * m, kk * 16);
  }

  float o[kM][kD / 8][4] = {};
  float mrow[kM][2], l[kM][2];
#pragma unroll
  for (int m = 0; m < kM; m++) {
    mrow[m][0] = mrow[m][1] = -INFINITY;
    l[m][0] = l[m][1] = 0.0f;
  }
  int buf = 0;
  for (int s0 = block_lo; s0 < block_hi; s0 += kBc, buf ^= 1) {
    if (s0 + kBc < block_hi) {
      stage_keys(s0 + kBc, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // tile `buf` is complete for every thread

    float sc[kM][kBc / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < kD / 16; kk++) {
#pragma unroll
      for (int n = 0; n < kBc / 16; n++) {
        uint32_t bf[4];
        load_b_nk(bf, ks + buf * kBc * kStride, kStride, n * 16, kk * 16);
#pragma unroll
        for (int m = 0; m < kM; m++) {
          mma(sc[m][2 * n], qf[m][kk], bf[0], bf[1]);
          mma(sc[m][2 * n + 1], qf[m][kk], bf[2], bf[3]);
        }
      }
    }
#pragma unroll
    for (int m = 0; m < kM; m++) {
      // Raw scores: the scale is folded into the exponent below (one FFMA an element), and a tile
      // every one of this thread's rows sees whole skips the per-element visibility test. At
      // D = 64 the per-element work, not the products, bounds the kernel.
      float mx[2] = {-INFINITY, -INFINITY};
      const bool open = mask.key_valid == nullptr && s0 >= max(lo[m][0], lo[m][1]) && s0 + kBc <= min(hi[m][0], hi[m][1]);
      if (open) {
#pragma unroll
        for (int n = 0; n < kBc / 8; n++) {
#pragma unroll
          for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], sc[m][n][e]);
        }
      } else {
#pragma unroll
        for (int n = 0; n < kBc / 8; n++) {
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int r = e >> 1, j = n * 8 + 2 * tq + (e & 1), s = s0 + j;
            if (!(s >= lo[m][r] && s < hi[m][r] && kok[buf * kBc + j])) sc[m][n][e] = -INFINITY;
            mx[r] = fmaxf(mx[r], sc[m][n][e]);
          }
        }
      }
      float base[2], alpha[2];
#pragma unroll
      for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(mrow[m][r], mx[r] * scale_log2);  // the scale is positive: max commutes
        base[r] = m_new == -INFINITY ? 0.0f : m_new;  // a row with nothing visible yet keeps p = 0
        alpha[r] = fast_exp2(mrow[m][r] - base[r]);
        mrow[m][r] = m_new;
        l[m][r] *= alpha[r];
      }
#pragma unroll
      for (int n = 0; n < kBc / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          sc[m][n][e] = fast_exp2(fmaf(sc[m][n][e], scale_log2, -base[e >> 1]));
          l[m][e >> 1] += sc[m][n][e];
        }
      }
#pragma unroll
      for (int n = 0; n < kD / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) o[m][n][e] *= alpha[e >> 1];
      }
    }
    mma_acc_kn<kD, kM>(o, sc, vs + buf * kBc * kStride);
    __syncthreads();  // every warp is done with `buf` before the next iteration restages it
  }

#pragma unroll
  for (int m = 0; m < kM; m++) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      l[m][r] += __shfl_xor_sync(0xffffffffu, l[m][r], 1);
      l[m][r] += __shfl_xor_sync(0xffffffffu, l[m][r], 2);
      inv[r] = l[m][r] > 0.0f ? 1.0f / l[m][r] : 0.0f;
    }
#pragma unroll
    for (int n = 0; n < kD / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int t = t_first + warp_row<kM>(warp, m, g, e >> 1), d = n * 8 + 2 * tq + (e & 1);
        if (t < t_end && d < D) store(out, ((b * T + t) * Hq + h) * (int64_t)D + d, o[m][n][e] * inv[e >> 1]);
      }
    }
    if (tq == 0) {
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int t = t_first + warp_row<kM>(warp, m, g, r);
        if (t < t_end) lse[(b * Hq + h) * (int64_t)T + t] = l[m][r] > 0.0f ? (mrow[m][r] + log2f(l[m][r])) * kLn2 : -INFINITY;
      }
    }
  }
}

template <int kD>
constexpr size_t dq_smem() {
  return (size_t)(2 * Tiles<kD>::rows + 4 * Tiles<kD>::backward) * (kD + 8) * sizeof(bf16) + 2 * Tiles<kD>::backward * sizeof(int);
}

// dq = scale · Σ_s p·(dp − δ)·k with p = exp(q·k·scale − lse), dp = dout·v; δ = rowsum(out·dout)
// is computed here first and written for the dk/dv kernel.
template <int kD>
__global__ void __launch_bounds__(kThreads) flash_dq_kernel(In q, In k, In v, In out, In dout, const float* lse, int T,
                                                            int S, int Hq, int Hkv, int D, float scale, float scale_log2,
                                                            RowMask mask, bool vec, float* delta, Out dq) {
  pdl_prologue();
  constexpr int kStride = kD + 8, kM = Tiles<kD>::kM, kRows = Tiles<kD>::rows, kBc = Tiles<kD>::backward;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem);  // [kRows][kStride]
  bf16* dos = qs + kRows * kStride;          // [kRows][kStride]
  bf16* ks = dos + kRows * kStride;                          // [2][kBc][kStride]
  bf16* vs = ks + 2 * kBc * kStride;                         // [2][kBc][kStride]
  int* kok = reinterpret_cast<int*>(vs + 2 * kBc * kStride);  // [2][kBc]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
  const int64_t b = blockIdx.z;
  const int h = blockIdx.y, kh = h / (Hq / Hkv);
  static_assert(kRows == kSegTile, "the grid's tiles are kSegTile rows");
  int t_first, t_end;
  block_span(mask, T, t_first, t_end);
  const int t_last = t_end - 1;

  int block_lo, block_hi, unused;
  row_interval(mask, S, t_first, block_lo, unused);
  row_interval(mask, S, t_last, unused, block_hi);
  auto stage_keys = [&](int s0, int buf) {
    stage_rows<kBc, kD>(k, b, S, Hkv, kh, D, s0, block_hi, vec, ks + buf * kBc * kStride);
    stage_rows<kBc, kD>(v, b, S, Hkv, kh, D, s0, block_hi, vec, vs + buf * kBc * kStride);
    for (int j = threadIdx.x; j < kBc; j += kThreads) kok[buf * kBc + j] = key_ok(mask, b, S, s0 + j);
  };
  stage_rows<kRows, kD>(q, b, T, Hq, h, D, t_first, T, vec, qs);
  stage_rows<kRows, kD>(dout, b, T, Hq, h, D, t_first, T, vec, dos);
  if (block_lo < block_hi) stage_keys(block_lo, 0);
  cp_async_commit();
  // δ of the warp's rows: out as given, dout as the products see it (bf16).
  for (int r = 0; r < 16 * kM; r++) {
    const int t = t_first + warp * 16 * kM + r;
    if (t >= t_end) break;
    const int64_t base = ((b * T + t) * Hq + h) * (int64_t)D;
    float acc = 0.0f;
    for (int d = lane; d < D; d += 32) acc += load(out, base + d) * __bfloat162float(__float2bfloat16_rn(load(dout, base + d)));
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) delta[(b * Hq + h) * (int64_t)T + t] = acc;
  }
  __syncwarp();
  int lo[kM][2], hi[kM][2];
  float lse2[kM][2], dl[kM][2];
#pragma unroll
  for (int m = 0; m < kM; m++) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int t = t_first + warp_row<kM>(warp, m, g, r);
      lo[m][r] = hi[m][r] = 0;
      lse2[m][r] = dl[m][r] = 0.0f;
      if (t < t_end) {
        const float row_lse = lse[(b * Hq + h) * (int64_t)T + t];
        if (row_lse != -INFINITY) row_interval(mask, S, t, lo[m][r], hi[m][r]);  // a row that saw nothing gets no gradient
        lse2[m][r] = row_lse * kLog2e;
        dl[m][r] = delta[(b * Hq + h) * (int64_t)T + t];
      }
    }
  }

  float acc[kM][kD / 8][4] = {};
  int buf = 0;
  if (block_lo >= block_hi) cp_async_wait<0>();
  for (int s0 = block_lo; s0 < block_hi; s0 += kBc, buf ^= 1) {
    if (s0 + kBc < block_hi) {
      stage_keys(s0 + kBc, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    float p[kM][kBc / 8][4] = {}, dp[kM][kBc / 8][4] = {};
    mma_rows_nk<kD, kM>(p, qs, warp * 16 * kM, ks + buf * kBc * kStride);    // s = q·kᵀ
    mma_rows_nk<kD, kM>(dp, dos, warp * 16 * kM, vs + buf * kBc * kStride);  // dp = dout·vᵀ
#pragma unroll
    for (int m = 0; m < kM; m++) {
      const bool open = mask.key_valid == nullptr && s0 >= max(lo[m][0], lo[m][1]) && s0 + kBc <= min(hi[m][0], hi[m][1]);
      // Open tiles skip the per-element visibility test (see the forward kernel).
      if (open) {
#pragma unroll
        for (int n = 0; n < kBc / 8; n++) {
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int r = e >> 1;
            p[m][n][e] = fast_exp2(fmaf(p[m][n][e], scale_log2, -lse2[m][r])) * (dp[m][n][e] - dl[m][r]);  // dS
          }
        }
      } else {
#pragma unroll
        for (int n = 0; n < kBc / 8; n++) {
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int r = e >> 1, j = n * 8 + 2 * tq + (e & 1), s = s0 + j;
            const bool visible = s >= lo[m][r] && s < hi[m][r] && kok[buf * kBc + j];
            const float pr = visible ? fast_exp2(fmaf(p[m][n][e], scale_log2, -lse2[m][r])) : 0.0f;
            p[m][n][e] = pr * (dp[m][n][e] - dl[m][r]);  // dS
          }
        }
      }
    }
    mma_acc_kn<kD, kM>(acc, p, ks + buf * kBc * kStride);
    __syncthreads();
  }
#pragma unroll
  for (int m = 0; m < kM; m++) {
#pragma unroll
    for (int n = 0; n < kD / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int t = t_first + warp_row<kM>(warp, m, g, e >> 1), d = n * 8 + 2 * tq + (e & 1);
        if (t < t_end && d < D) store(dq, ((b * T + t) * Hq + h) * (int64_t)D + d, acc[m][n][e] * scale);
      }
    }
  }
}

template <int kD>
constexpr size_t dkv_smem() {
  return (size_t)(2 * Tiles<kD>::rows + 4 * Tiles<kD>::backward) * (kD + 8) * sizeof(bf16) +
         (8 * Tiles<kD>::backward + 4) * sizeof(float);
}

// dv = Σ_t pᵀ·dout, dk = scale · Σ_t (p·(dp − δ))ᵀ·q over every query head of the kv head's group.
template <int kD>
__global__ void __launch_bounds__(kThreads) flash_dkv_kernel(In q, In k, In v, In dout, const float* lse,
                                                             const float* delta, int T, int S, int Hq, int Hkv, int D,
                                                             float scale, float scale_log2, RowMask mask, bool vec,
                                                             Out dk, Out dv) {
  pdl_prologue();
  constexpr int kStride = kD + 8, kM = Tiles<kD>::kM, kRows = Tiles<kD>::rows, kBq = Tiles<kD>::backward;
  static_assert(kBq == 32, "the first warp stages a query tile's rows and reduces their intervals");
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem);  // [kRows][kStride]
  bf16* vs = ks + kRows * kStride;           // [kRows][kStride]
  // Query tiles and their rows' lse, δ and visible-key intervals, in two buffers each.
  bf16* qs = vs + kRows * kStride;     // [2][kBq][kStride]
  bf16* dos = qs + 2 * kBq * kStride;  // [2][kBq][kStride]
  float* lse2_s = reinterpret_cast<float*>(dos + 2 * kBq * kStride);  // [2][kBq] each
  float* delta_s = lse2_s + 2 * kBq;
  int* lo_s = reinterpret_cast<int*>(delta_s + 2 * kBq);
  int* hi_s = lo_s + 2 * kBq;
  int* tile_lo = hi_s + 2 * kBq;  // [2]: the largest lo of the tile's queries
  int* tile_hi = tile_lo + 2;     // [2]: the smallest hi
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
  const int64_t b = blockIdx.z;
  const int kh = blockIdx.y, group = Hq / Hkv;
  static_assert(kRows == kSegTile, "the grid's tiles are kSegTile keys");
  int s_first, s_end;
  block_span(mask, S, s_first, s_end);
  const int s_last = s_end - 1;

  stage_rows<kRows, kD>(k, b, S, Hkv, kh, D, s_first, S, vec, ks);
  stage_rows<kRows, kD>(v, b, S, Hkv, kh, D, s_first, S, vec, vs);
  bool ok[kM][2];
#pragma unroll
  for (int m = 0; m < kM; m++) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int s = s_first + warp_row<kM>(warp, m, g, r);
      ok[m][r] = s < s_end && key_ok(mask, b, S, s);
    }
  }
  int query_lo, query_hi;
  if (mask.kind == 0) {
    query_lo = (int)max((int64_t)0, s_first - mask.query_offset);
    query_hi = T;
  } else {
    query_lo = mask.seg_start[s_first];
    query_hi = mask.seg_end[s_last];
  }

  // The walk over (query head, query tile) pairs, flattened so the next tile can be staged across
  // a head boundary.
  const int tiles_per_head = (max(query_hi - query_lo, 0) + kBq - 1) / kBq, tiles = tiles_per_head * group;
  auto stage_queries = [&](int tile, int buf) {
    const int h = kh * group + tile / tiles_per_head, t0 = query_lo + (tile % tiles_per_head) * kBq;
    stage_rows<kBq, kD>(q, b, T, Hq, h, D, t0, query_hi, vec, qs + buf * kBq * kStride);
    stage_rows<kBq, kD>(dout, b, T, Hq, h, D, t0, query_hi, vec, dos + buf * kBq * kStride);
    for (int j = threadIdx.x; j < kBq; j += kThreads) {
      const int t = t0 + j;
      int lo = 0, hi = 0;
      float row_lse = 0.0f, row_delta = 0.0f;
      if (t < query_hi) {
        row_lse = lse[(b * Hq + h) * (int64_t)T + t];
        row_delta = delta[(b * Hq + h) * (int64_t)T + t];
        if (row_lse != -INFINITY) row_interval(mask, S, t, lo, hi);
      }
      lse2_s[buf * kBq + j] = row_lse == -INFINITY ? 0.0f : row_lse * kLog2e;
      delta_s[buf * kBq + j] = row_delta;
      lo_s[buf * kBq + j] = lo;
      hi_s[buf * kBq + j] = hi;
      // kBq = 32: the first warp holds the whole tile; every key of [tile_lo, tile_hi) is seen by all of it.
      const int most_lo = __reduce_max_sync(0xffffffffu, lo), least_hi = __reduce_min_sync(0xffffffffu, hi);
      if (j == 0) {
        tile_lo[buf] = most_lo;
        tile_hi[buf] = least_hi;
      }
    }
  };
  if (tiles > 0) stage_queries(0, 0);
  cp_async_commit();

  float dka[kM][kD / 8][4] = {}, dva[kM][kD / 8][4] = {};
  if (tiles == 0) cp_async_wait<0>();
  for (int tile = 0, buf = 0; tile < tiles; tile++, buf ^= 1) {
    if (tile + 1 < tiles) {
      stage_queries(tile + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    float p[kM][kBq / 8][4] = {}, dp[kM][kBq / 8][4] = {};
    mma_rows_nk<kD, kM>(p, ks, warp * 16 * kM, qs + buf * kBq * kStride);    // sᵀ = k·qᵀ
    mma_rows_nk<kD, kM>(dp, vs, warp * 16 * kM, dos + buf * kBq * kStride);  // dpᵀ = v·doutᵀ
#pragma unroll
    for (int m = 0; m < kM; m++) {
      const int s_lo = s_first + warp_row<kM>(warp, m, g, 0), s_hi = s_lo + 8;  // this thread's two keys
      const bool open = ok[m][0] && ok[m][1] && s_lo >= tile_lo[buf] && s_hi < tile_hi[buf];
      // Open tiles skip the per-element visibility test (see the forward kernel).
      if (open) {
#pragma unroll
        for (int n = 0; n < kBq / 8; n++) {
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int j = n * 8 + 2 * tq + (e & 1);
            p[m][n][e] = fast_exp2(fmaf(p[m][n][e], scale_log2, -lse2_s[buf * kBq + j]));
            dp[m][n][e] = p[m][n][e] * (dp[m][n][e] - delta_s[buf * kBq + j]);  // dSᵀ
          }
        }
      } else {
#pragma unroll
        for (int n = 0; n < kBq / 8; n++) {
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int r = e >> 1, j = n * 8 + 2 * tq + (e & 1), s = s_first + warp_row<kM>(warp, m, g, r);
            const bool visible = ok[m][r] && s >= lo_s[buf * kBq + j] && s < hi_s[buf * kBq + j];
            p[m][n][e] = visible ? fast_exp2(fmaf(p[m][n][e], scale_log2, -lse2_s[buf * kBq + j])) : 0.0f;
            dp[m][n][e] = p[m][n][e] * (dp[m][n][e] - delta_s[buf * kBq + j]);  // dSᵀ
          }
        }
      }
    }
    mma_acc_kn<kD, kM>(dva, p, dos + buf * kBq * kStride);
    mma_acc_kn<kD, kM>(dka, dp, qs + buf * kBq * kStride);
    __syncthreads();
  }
#pragma unroll
  for (int m = 0; m < kM; m++) {
#pragma unroll
    for (int n = 0; n < kD / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int s = s_first + warp_row<kM>(warp, m, g, e >> 1), d = n * 8 + 2 * tq + (e & 1);
        if (s < s_end && d < D) {
          const int64_t i = ((b * S + s) * Hkv + kh) * (int64_t)D + d;
          store(dk, i, dka[m][n][e] * scale);
          store(dv, i, dva[m][n][e]);
        }
      }
    }
  }
}

// The A fragment of the 16×16 block at (m0, k0) of a matrix stored transposed, [k][m] (dS read back
// from the [key][query] tile of the fused backward): ldmatrix.trans hands each thread the elements
// load_a would give it for the row-major matrix.
__device__ __forceinline__ void load_a_km(uint32_t (&a)[4], const bf16* tile, int stride, int m0, int k0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4_trans(a, tile + (k0 + (lane & 7) + ((lane >> 4) << 3)) * stride + m0 + ((lane >> 3) & 1) * 8);
}

// p[0] += a, p[1] += b in global memory (8-byte aligned) as one reduction: no value comes back, so
// the thread does not wait for it (atomicAdd(float2*) leaves that to ptxas).
__device__ __forceinline__ void red_add2(float* p, float a, float b) {
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(a), "f"(b) : "memory");
}

// Elements i .. i + 7 of x as f32, those at or past `left` as zeros. `vec`: i is a multiple of 8 in
// a 16-byte aligned tensor whose rows are a multiple of 8 long, so one or two 16-byte loads.
__device__ __forceinline__ void load8(In x, int64_t i, int left, bool vec, float (&e)[8]) {
  if (vec && x.dt == SPLINT_BF16) {
    const uint4 u = *reinterpret_cast<const uint4*>(static_cast<const bf16*>(x.p) + i);
    const __nv_bfloat162* pair = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const float2 f = __bfloat1622float2(pair[j]);
      e[2 * j] = f.x;
      e[2 * j + 1] = f.y;
    }
  } else if (vec && x.dt == SPLINT_F32) {
    const float4* src = reinterpret_cast<const float4*>(static_cast<const float*>(x.p) + i);
    const float4 lo = src[0], hi = src[1];
    e[0] = lo.x, e[1] = lo.y, e[2] = lo.z, e[3] = lo.w, e[4] = hi.x, e[5] = hi.y, e[6] = hi.z, e[7] = hi.w;
  } else {
#pragma unroll
    for (int j = 0; j < 8; j++) e[j] = j < left ? load(x, i + j) : 0.0f;
  }
}

// δ = rowsum(out · dout) for the fused backward, with dout rounded to bf16 as the products see it
// (as flash_dq_kernel computes it). 16 threads a row of [B·T·Hq, D] (8 elements each per step, so
// D = 128 in one step), two rows a warp; delta [B, Hq, T]. The same threads zero the row of the
// fused kernel's f32 dq accumulator [B·T·Hq, acc_width] (acc_width 64 or 128: 4 or 8 floats a
// thread, 16-byte aligned), which a memset before this kernel would otherwise do: one stream
// operation fewer, and a memset would break the programmatic launch chain between kernels.
constexpr int kDeltaThreads = 256;
__global__ void __launch_bounds__(kDeltaThreads) flash_delta_kernel(In out, In dout, int64_t rows, int T, int Hq, int D,
                                                                    bool vec, float* delta, float* dq_acc,
                                                                    int acc_width) {
  pdl_prologue();
  const int64_t row = (blockIdx.x * (int64_t)kDeltaThreads + threadIdx.x) >> 4;
  const int sub = threadIdx.x & 15;
  if (row < rows) {
    float4* zero = reinterpret_cast<float4*>(dq_acc + row * acc_width) + sub * (acc_width / 64);
    for (int j = 0; j < acc_width / 64; j++) zero[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  float acc = 0.0f;
  if (row < rows) {
    for (int d = sub * 8; d < D; d += 128) {
      float o[8], g[8];
      load8(out, row * D + d, D - d, vec, o);
      load8(dout, row * D + d, D - d, vec, g);
#pragma unroll
      for (int j = 0; j < 8; j++) acc = fmaf(o[j], __bfloat162float(__float2bfloat16_rn(g[j])), acc);
    }
  }
  // Every lane takes part in the shuffles (no early return above); xor < 16 stays within the row.
  for (int off = 8; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (row < rows && sub == 0) {
    const int64_t h = row % Hq, t = (row / Hq) % T, b = row / Hq / T;
    delta[(b * Hq + h) * T + t] = acc;
  }
}

// dq = scale · acc for acc [B·T·Hq, kD] (rows padded to the kernel's head size) and dq
// [B·T·Hq, D] in the grad dtype. `vec4`: D = kD and dq 16-byte aligned, so 4 elements a thread.
__global__ void flash_dq_finish_kernel(const float* acc, int64_t rows, int D, int kD, float scale, bool vec4, Out dq) {
  pdl_prologue();
  if (vec4) {
    GRID_STRIDE(i, rows * D / 4) {
      const float4 a = reinterpret_cast<const float4*>(acc)[i];
      if (dq.dt == SPLINT_F32) {
        reinterpret_cast<float4*>(dq.p)[i] = make_float4(a.x * scale, a.y * scale, a.z * scale, a.w * scale);
      } else {
        store(dq, 4 * i, a.x * scale);
        store(dq, 4 * i + 1, a.y * scale);
        store(dq, 4 * i + 2, a.z * scale);
        store(dq, 4 * i + 3, a.w * scale);
      }
    }
  } else {
    GRID_STRIDE(i, rows * D) {
      const int64_t r = i / D;
      store(dq, i, acc[r * kD + (i - r * D)] * scale);
    }
  }
}

// Tiles of the fused backward: a block of 4 warps owns 64 keys (16 a warp) of one (b, kv head) and
// walks query tiles of `queries` rows. Per thread it holds the dK and dV accumulators (kD / 8 · 4
// floats each: 64 at D = 128), S and dP of a tile (queries / 8 · 4 each) and a dQ chunk
// (dq_chunk / 8 · 4); shared memory holds K, V, two buffers of Q and dO, and the tile's dS.
// - D = 64: 64-query tiles. 32 + 32 accumulators and 32 + 32 for S and dP leave room, and a tile
//   twice as tall as the deterministic kernels' halves the barriers and dS round trips per product;
//   66 KB of shared memory, three blocks an SM (with the registers capped for three, see the top).
// - D = 128: 32-query tiles: the deterministic dk/dv kernel, with the same accumulators, already
//   uses 236 registers at that size, so the dQ product runs 32 columns at a time (16 more
//   accumulators, reusing the A fragment loads twice) to stay under 255 without spills; 79 KB.
// 64 keys a block keeps the grid at (S / 64)·Hkv·B blocks: 1,072 for the vision shape on 132 SMs.
template <int kD>
struct FusedTiles {
  static constexpr int keys = 64;
  static constexpr int queries = kD == 64 ? SPLINT_FLASH_BWD64_QUERIES : 32;
  static constexpr int dq_chunk = 32;
};

template <int kD>
constexpr size_t fused_smem() {
  constexpr int kKeys = FusedTiles<kD>::keys, kBq = FusedTiles<kD>::queries;
  return (size_t)(2 * kKeys + 4 * kBq) * (kD + 8) * sizeof(bf16) + (size_t)kKeys * (kBq + 8) * sizeof(bf16) +
         (size_t)(8 * kBq + 4 * (kBq / 32)) * sizeof(float);
}

// All three gradients in one pass, FlashAttention-2's backward: per (key tile, query tile) Sᵀ =
// k·qᵀ and dPᵀ = v·doutᵀ are computed once (keys in rows, as flash_dkv_kernel), then dv += pᵀ·dout
// and dk += dSᵀ·q accumulate in registers over every query head of the group, and dq += dS·k goes
// through shared memory (dS as bf16, [key][query]) into dq_acc [B, T, Hq, kD] (f32, zeroed) by
// atomics. Every key tile of the kv head adds into the same dq rows in an order that varies between
// runs, so dq differs in its last bits from run to run (dk and dv do not). δ comes from
// flash_delta_kernel; flash_dq_finish_kernel scales dq_acc into dq.
template <int kD>
__global__ void __launch_bounds__(kThreads, kD == 64 ? SPLINT_FLASH_BWD64_MIN_BLOCKS : 0) flash_bwd_fused_kernel(In q, In k, In v, In dout, const float* lse,
                                                                   const float* delta, int T, int S, int Hq, int Hkv,
                                                                   int D, float scale, float scale_log2, RowMask mask,
                                                                   bool vec, int splits, float* dq_acc, float* dkv_part,
                                                                   Out dk, Out dv) {
  pdl_prologue();
  constexpr int kStride = kD + 8, kKeys = FusedTiles<kD>::keys, kBq = FusedTiles<kD>::queries;
  // dS rows of 16-byte multiples for ldmatrix; the 8 extra columns also make the 32-bit stores of
  // a warp's 8 rows × 4 column pairs hit 32 distinct banks.
  constexpr int kDsStride = kBq + 8;
  constexpr int kStagingWarps = kBq / 32;  // warps that stage a tile's row data (one row a thread)
  // The dq product of a tile: its kBq / 16 row blocks × (4 / that) column slices, a warp each.
  constexpr int kRowBlocks = kBq / 16, kCols = kD * kRowBlocks / 4;
  constexpr int kChunk = FusedTiles<kD>::dq_chunk < kCols ? FusedTiles<kD>::dq_chunk : kCols;
  static_assert(kKeys == 16 * kThreads / 32, "a warp owns 16 keys");
  static_assert(kBq == 32 || kBq == 64, "the 4 warps split a tile's dq into 16-row blocks and column slices");
  static_assert(kCols % kChunk == 0 && kChunk % 16 == 0, "dq chunks are whole 16-column fragment pairs");
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* ks = reinterpret_cast<bf16*>(smem);  // [kKeys][kStride]
  bf16* vs = ks + kKeys * kStride;           // [kKeys][kStride]
  bf16* qs = vs + kKeys * kStride;           // [2][kBq][kStride]
  bf16* dos = qs + 2 * kBq * kStride;        // [2][kBq][kStride]
  bf16* dss = dos + 2 * kBq * kStride;       // [kKeys][kDsStride]
  float* lse2_s = reinterpret_cast<float*>(dss + kKeys * kDsStride);  // [2][kBq] each
  float* delta_s = lse2_s + 2 * kBq;
  int* lo_s = reinterpret_cast<int*>(delta_s + 2 * kBq);
  int* hi_s = lo_s + 2 * kBq;
  int* tile_lo = hi_s + 2 * kBq;                // [2][kStagingWarps]: the largest lo of the warp's rows
  int* tile_hi = tile_lo + 2 * kStagingWarps;   // [2][kStagingWarps]: the smallest hi
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
  const int64_t b = blockIdx.z;
  // blockIdx.y: the kv head and which of its `splits` slices of query heads this block walks.
  const int kh = blockIdx.y / splits, group = Hq / Hkv, heads = group / splits;
  const int h_first = kh * group + (blockIdx.y % splits) * heads;
  static_assert(kKeys == kSegTile, "the grid's tiles are kSegTile keys");
  int s_first, s_end;
  block_span(mask, S, s_first, s_end);
  const int s_last = s_end - 1;

  stage_rows<kKeys, kD>(k, b, S, Hkv, kh, D, s_first, S, vec, ks);
  stage_rows<kKeys, kD>(v, b, S, Hkv, kh, D, s_first, S, vec, vs);
  const int s_lo = s_first + warp * 16 + g, s_hi = s_lo + 8;  // this thread's two keys
  const bool ok[2] = {s_lo < s_end && key_ok(mask, b, S, s_lo), s_hi < s_end && key_ok(mask, b, S, s_hi)};
  int query_lo, query_hi;
  if (mask.kind == 0) {
    query_lo = (int)max((int64_t)0, s_first - mask.query_offset);
    query_hi = T;
  } else {
    query_lo = mask.seg_start[s_first];
    query_hi = mask.seg_end[s_last];
  }

  // The walk over (query head, query tile) pairs, flattened so the next tile can be staged across
  // a head boundary.
  const int tiles_per_head = (max(query_hi - query_lo, 0) + kBq - 1) / kBq, tiles = tiles_per_head * heads;
  auto stage_queries = [&](int tile, int buf) {
    const int h = h_first + tile / tiles_per_head, t0 = query_lo + (tile % tiles_per_head) * kBq;
    stage_rows<kBq, kD>(q, b, T, Hq, h, D, t0, query_hi, vec, qs + buf * kBq * kStride);
    stage_rows<kBq, kD>(dout, b, T, Hq, h, D, t0, query_hi, vec, dos + buf * kBq * kStride);
    // kBq ≤ kThreads and a multiple of 32: whole warps enter, one row a thread.
    for (int j = threadIdx.x; j < kBq; j += kThreads) {
      const int t = t0 + j;
      int lo = 0, hi = 0;
      float row_lse = 0.0f, row_delta = 0.0f;
      if (t < query_hi) {
        row_lse = lse[(b * Hq + h) * (int64_t)T + t];
        row_delta = delta[(b * Hq + h) * (int64_t)T + t];
        if (row_lse != -INFINITY) row_interval(mask, S, t, lo, hi);  // a row that saw nothing gets no gradient
      }
      lse2_s[buf * kBq + j] = row_lse == -INFINITY ? 0.0f : row_lse * kLog2e;
      delta_s[buf * kBq + j] = row_delta;
      lo_s[buf * kBq + j] = lo;
      hi_s[buf * kBq + j] = hi;
      const int most_lo = __reduce_max_sync(0xffffffffu, lo), least_hi = __reduce_min_sync(0xffffffffu, hi);
      if ((j & 31) == 0) {
        tile_lo[buf * kStagingWarps + j / 32] = most_lo;
        tile_hi[buf * kStagingWarps + j / 32] = least_hi;
      }
    }
  };
  if (tiles > 0) stage_queries(0, 0);
  cp_async_commit();

  float dka[1][kD / 8][4] = {}, dva[1][kD / 8][4] = {};
  if (tiles == 0) cp_async_wait<0>();
  for (int tile = 0, buf = 0; tile < tiles; tile++, buf ^= 1) {
    if (tile + 1 < tiles) {
      stage_queries(tile + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    // Tile `buf` is complete for every thread, and every warp is done with the previous tile's dS.
    __syncthreads();
    const int h = h_first + tile / tiles_per_head, t0 = query_lo + (tile % tiles_per_head) * kBq;
    const bf16* qb = qs + buf * kBq * kStride;
    const bf16* dob = dos + buf * kBq * kStride;

    float p[1][kBq / 8][4] = {}, dp[1][kBq / 8][4] = {};
    mma_rows_nk<kD, 1>(p, ks, warp * 16, qb);    // sᵀ = k·qᵀ
    mma_rows_nk<kD, 1>(dp, vs, warp * 16, dob);  // dpᵀ = v·doutᵀ
    // Keys [most_lo, least_hi) are seen by every row of the tile.
    int most_lo = tile_lo[buf * kStagingWarps], least_hi = tile_hi[buf * kStagingWarps];
#pragma unroll
    for (int w = 1; w < kStagingWarps; w++) {
      most_lo = max(most_lo, tile_lo[buf * kStagingWarps + w]);
      least_hi = min(least_hi, tile_hi[buf * kStagingWarps + w]);
    }
    // Open tiles skip the per-element visibility test (see the forward kernel).
    if (ok[0] && ok[1] && s_lo >= most_lo && s_hi < least_hi) {
#pragma unroll
      for (int n = 0; n < kBq / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int j = n * 8 + 2 * tq + (e & 1);
          p[0][n][e] = fast_exp2(fmaf(p[0][n][e], scale_log2, -lse2_s[buf * kBq + j]));
          dp[0][n][e] = p[0][n][e] * (dp[0][n][e] - delta_s[buf * kBq + j]);  // dSᵀ
        }
      }
    } else {
#pragma unroll
      for (int n = 0; n < kBq / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int r = e >> 1, j = n * 8 + 2 * tq + (e & 1), s = r ? s_hi : s_lo;
          const bool visible = ok[r] && s >= lo_s[buf * kBq + j] && s < hi_s[buf * kBq + j];
          p[0][n][e] = visible ? fast_exp2(fmaf(p[0][n][e], scale_log2, -lse2_s[buf * kBq + j])) : 0.0f;
          dp[0][n][e] = p[0][n][e] * (dp[0][n][e] - delta_s[buf * kBq + j]);  // dSᵀ
        }
      }
    }
    // dSᵀ as bf16 (the rounding the register products apply too) for the dq product.
#pragma unroll
    for (int n = 0; n < kBq / 8; n++) {
      bf16* row = dss + (warp * 16 + g) * kDsStride + n * 8 + 2 * tq;
      *reinterpret_cast<uint32_t*>(row) = pack_bf16(dp[0][n][0], dp[0][n][1]);
      *reinterpret_cast<uint32_t*>(row + 8 * kDsStride) = pack_bf16(dp[0][n][2], dp[0][n][3]);
    }
    mma_acc_kn<kD, 1>(dva, p, dob);
    mma_acc_kn<kD, 1>(dka, dp, qb);
    // Every warp's dS is in shared memory; past this barrier nothing reads tile `buf` of Q and dO,
    // so the next iteration may restage it without another barrier.
    __syncthreads();

    // dq[t0 + rows, cols] += dS[rows, :] · k[:, cols] for this warp's 16 rows and kCols columns.
    const int r0 = (warp % kRowBlocks) * 16, c0 = (warp / kRowBlocks) * kCols;
#pragma unroll
    for (int c = 0; c < kCols; c += kChunk) {
      float acc[kChunk / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; kk++) {
        uint32_t a[4];
        load_a_km(a, dss, kDsStride, r0, kk * 16);
#pragma unroll
        for (int n = 0; n < kChunk / 16; n++) {
          uint32_t bk[4];
          load_b_kn(bk, ks, kStride, c0 + c + n * 16, kk * 16);
          mma(acc[2 * n], a, bk[0], bk[1]);
          mma(acc[2 * n + 1], a, bk[2], bk[3]);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int t = t0 + r0 + g + 8 * r;
        if (t >= query_hi) continue;
        float* row = dq_acc + ((b * T + t) * Hq + h) * (int64_t)kD + c0 + c + 2 * tq;
#pragma unroll
        for (int n = 0; n < kChunk / 8; n++) {
          red_add2(row + n * 8, acc[n][2 * r], acc[n][2 * r + 1]);
        }
      }
    }
  }
  if (dkv_part != nullptr) {
    // This slice's sums, unscaled, into its part of [2][splits][B, S, Hkv, kD] (dk's, then dv's)
    // for flash_dkv_finish_kernel: rows padded to kD, so a thread's column pair is one 8-byte store.
    const int64_t part = (int64_t)gridDim.z * S * Hkv * kD;
    float* dk_part = dkv_part + (blockIdx.y % splits) * part;
    float* dv_part = dk_part + splits * part;
#pragma unroll
    for (int n = 0; n < kD / 8; n++) {
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const int s = r ? s_hi : s_lo;
        if (s >= s_end) continue;
        const int64_t i = ((b * S + s) * Hkv + kh) * (int64_t)kD + n * 8 + 2 * tq;
        *reinterpret_cast<float2*>(dk_part + i) = make_float2(dka[0][n][2 * r], dka[0][n][2 * r + 1]);
        *reinterpret_cast<float2*>(dv_part + i) = make_float2(dva[0][n][2 * r], dva[0][n][2 * r + 1]);
      }
    }
    return;
  }
#pragma unroll
  for (int n = 0; n < kD / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int s = (e >> 1) ? s_hi : s_lo, d = n * 8 + 2 * tq + (e & 1);
      if (s < s_end && d < D) {
        const int64_t i = ((b * S + s) * Hkv + kh) * (int64_t)D + d;
        store(dk, i, dka[0][n][e] * scale);
        store(dv, i, dva[0][n][e]);
      }
    }
  }
}

// dk = scale · Σ dk parts and dv = Σ dv parts over the fused backward's `splits` slices, in slice
// order (so dk and dv stay the same from run to run); parts [2][splits][rows, kD], dk/dv [rows, D].
__global__ void flash_dkv_finish_kernel(const float* parts, int splits, int64_t rows, int D, int kD, float scale,
                                        Out dk, Out dv) {
  pdl_prologue();
  const int64_t part = rows * kD;
  GRID_STRIDE(i, rows * D) {
    const int64_t r = i / D, j = r * kD + (i - r * D);
    float k_sum = 0.0f, v_sum = 0.0f;
    for (int p = 0; p < splits; p++) {
      k_sum += parts[p * part + j];
      v_sum += parts[(splits + p) * part + j];
    }
    store(dk, i, k_sum * scale);
    store(dv, i, v_sum);
  }
}

template <int kD>
int set_smem_limits(const char* splint_op) {
  CUDA_CHECK(cudaFuncSetAttribute(flash_forward_kernel<kD, Tiles<kD>::forward>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  (int)forward_smem<kD, Tiles<kD>::forward>()));
  CUDA_CHECK(cudaFuncSetAttribute(flash_dq_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dq_smem<kD>()));
  CUDA_CHECK(cudaFuncSetAttribute(flash_dkv_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dkv_smem<kD>()));
  CUDA_CHECK(cudaFuncSetAttribute(flash_bwd_fused_kernel<kD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)fused_smem<kD>()));
  return SPLINT_OK;
}

int ensure_smem_limits(const char* splint_op) {
  static bool done = false;  // per process: splint drives one device per process
  if (done) return SPLINT_OK;
  STATUS_CHECK(set_smem_limits<64>(splint_op));
  STATUS_CHECK(set_smem_limits<128>(splint_op));
  done = true;
  return SPLINT_OK;
}

// Calls launch(std::integral_constant<int, kD>) with the padded head size (64 or 128) for d.
template <typename Launch>
void with_head(int64_t d, Launch launch) {
  if (d <= 64) launch(std::integral_constant<int, 64>{});
  else launch(std::integral_constant<int, 128>{});
}

bool aligned16(splint_dptr p) { return (p & 15) == 0; }

int check_dims(const char* splint_op, int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d,
               int32_t mask_kind, splint_dptr seg_start, splint_dptr seg_end, splint_dptr seg_tiles,
               int64_t n_seg_tiles) {
  ARG_CHECK(d >= 1 && d <= 128, "head size %lld is outside 1..128", (long long)d);
  ARG_CHECK(hkv >= 1 && hq % hkv == 0, "%lld query heads are not a multiple of %lld kv heads", (long long)hq,
            (long long)hkv);
  ARG_CHECK(t < 0x7fff0000LL && s < 0x7fff0000LL, "sequence too long");
  ARG_CHECK(b <= 65535 && hq <= 65535, "grid too large");
  ARG_CHECK(mask_kind == 0 || mask_kind == 1, "unknown mask kind %d", mask_kind);
  if (mask_kind == 1) {
    ARG_CHECK(b == 1 && t == s, "segment mask needs B = 1 and T = S");
    ARG_CHECK(seg_start != 0 && seg_end != 0, "segment mask without segment tables");
  }
  ARG_CHECK(seg_tiles == 0 || (n_seg_tiles >= 1 && n_seg_tiles <= t), "%lld segment tiles for %lld rows",
            (long long)n_seg_tiles, (long long)t);
  return SPLINT_OK;
}

RowMask row_mask(int32_t mask_kind, int64_t query_offset, splint_dptr key_valid, splint_dptr seg_start,
                 splint_dptr seg_end, splint_dptr seg_tiles) {
  return RowMask{mask_kind, query_offset, reinterpret_cast<const int32_t*>(key_valid),
                 reinterpret_cast<const int32_t*>(seg_start), reinterpret_cast<const int32_t*>(seg_end),
                 mask_kind == 1 ? reinterpret_cast<const int32_t*>(seg_tiles) : nullptr};
}

// How many blocks share a kv head's query heads in the fused backward. A block that walks every
// query head of its group keeps dk and dv in registers, but with few key tiles (the decoder's 2×720
// tokens: 12 tiles × 8 kv heads × 2 = 192 blocks on 132 SMs) the grid is short of blocks and the
// first key tile of a causal mask (every query tile of 4 heads) is the critical path. Splitting the
// heads (halving while the grid has under 4 blocks an SM) shortens it; the slices' sums then go
// through f32 parts and flash_dkv_finish_kernel.
int query_head_splits(int64_t kv_blocks, int group) {
  static int sms = 0;  // per process: splint drives one device per process
  if (sms == 0) {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) sms = 132;
  }
  int splits = 1;
  while (group % (2 * splits) == 0 && kv_blocks * splits < 4 * (int64_t)sms) splits *= 2;
  return splits;
}

// Blocks of a grid over `rows` query rows or keys (equal under a segment mask): one per tile.
unsigned grid_tiles(const RowMask& mask, int64_t n_seg_tiles, int64_t rows) {
  return (unsigned)(mask.seg_tiles != nullptr ? n_seg_tiles : (rows + kSegTile - 1) / kSegTile);
}

}  // namespace

extern "C" {

int splint_cuda_flash_attention(splint_ctx* ctx, splint_dptr q, int32_t q_dtype, splint_dptr k, int32_t k_dtype,
                                splint_dptr v, int32_t v_dtype, int64_t b, int64_t t, int64_t s, int64_t hq,
                                int64_t hkv, int64_t d, float scale, int32_t mask_kind, int64_t query_offset,
                                splint_dptr key_valid, splint_dptr seg_start, splint_dptr seg_end, splint_dptr seg_tiles,
                                int64_t n_seg_tiles, splint_dptr out, int32_t out_dtype, splint_dptr lse) {
  OP("flash_attention");
  CTX_CHECK(ctx);
  STATUS_CHECK(check_dims(splint_op, b, t, s, hq, hkv, d, mask_kind, seg_start, seg_end, seg_tiles, n_seg_tiles));
  ARG_CHECK(is_float_dtype(q_dtype) && is_float_dtype(k_dtype) && is_float_dtype(v_dtype) && is_grad_dtype(out_dtype),
            "bad dtypes");
  if (b * t * hq == 0) return SPLINT_OK;
  const RowMask mask = row_mask(mask_kind, query_offset, key_valid, seg_start, seg_end, seg_tiles);
  const bool vec = d % 8 == 0 && aligned16(q) && aligned16(k) && aligned16(v) && q_dtype != SPLINT_FP8_E4M3 &&
                   k_dtype != SPLINT_FP8_E4M3 && v_dtype != SPLINT_FP8_E4M3;
  STATUS_CHECK(ensure_smem_limits(splint_op));
  with_head(d, [&](auto head) {
    constexpr int kD = decltype(head)::value, kRows = Tiles<kD>::rows;
    static_assert(kRows == kSegTile, "one tile width for every grid");
    const dim3 grid(grid_tiles(mask, n_seg_tiles, t), (unsigned)hq, (unsigned)b);
    constexpr int kBc = Tiles<kD>::forward;
    launch_kernel(ctx, flash_forward_kernel<kD, kBc>, grid, kThreads, forward_smem<kD, kBc>(),
        in_of(q, q_dtype), in_of(k, k_dtype), in_of(v, v_dtype), (int)t, (int)s, (int)hq, (int)hkv, (int)d,
        scale * kLog2e, mask, vec, out_of(out, out_dtype), reinterpret_cast<float*>(lse));
  });
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_flash_attention_backward(splint_ctx* ctx, splint_dptr q, int32_t q_dtype, splint_dptr k,
                                         int32_t k_dtype, splint_dptr v, int32_t v_dtype, splint_dptr out,
                                         int32_t out_dtype, splint_dptr lse, splint_dptr dout, int32_t dout_dtype,
                                         int64_t b, int64_t t, int64_t s, int64_t hq, int64_t hkv, int64_t d,
                                         float scale, int32_t mask_kind, int64_t query_offset, splint_dptr key_valid,
                                         splint_dptr seg_start, splint_dptr seg_end, splint_dptr seg_tiles,
                                         int64_t n_seg_tiles, splint_dptr dq, splint_dptr dk,
                                         splint_dptr dv, int32_t grad_dtype, int32_t deterministic) {
  OP("flash_attention_backward");
  CTX_CHECK(ctx);
  STATUS_CHECK(check_dims(splint_op, b, t, s, hq, hkv, d, mask_kind, seg_start, seg_end, seg_tiles, n_seg_tiles));
  ARG_CHECK(is_float_dtype(q_dtype) && is_float_dtype(k_dtype) && is_float_dtype(v_dtype) &&
                is_float_dtype(out_dtype) && is_float_dtype(dout_dtype) && is_grad_dtype(grad_dtype),
            "bad dtypes");
  ARG_CHECK(hkv <= 65535, "grid too large");
  if (b * s * hkv > 0 && b * t * hq == 0) {
    CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(dk), 0, b * s * hkv * d * dtype_bytes(grad_dtype), ctx->stream));
    CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(dv), 0, b * s * hkv * d * dtype_bytes(grad_dtype), ctx->stream));
  }
  if (b * t * hq == 0 || b * s * hkv == 0) return SPLINT_OK;
  const RowMask mask = row_mask(mask_kind, query_offset, key_valid, seg_start, seg_end, seg_tiles);
  const bool vec = d % 8 == 0 && aligned16(q) && aligned16(k) && aligned16(v) && aligned16(dout) &&
                   q_dtype != SPLINT_FP8_E4M3 && k_dtype != SPLINT_FP8_E4M3 && v_dtype != SPLINT_FP8_E4M3 &&
                   dout_dtype != SPLINT_FP8_E4M3;
  const In qi = in_of(q, q_dtype), ki = in_of(k, k_dtype), vi = in_of(v, v_dtype), doi = in_of(dout, dout_dtype);
  const float* lse_p = reinterpret_cast<const float*>(lse);
  const int64_t rows = b * t * hq;
  Scratch delta;
  STATUS_CHECK(scratch_alloc(ctx, delta, rows * (int64_t)sizeof(float), splint_op));
  float* delta_p = static_cast<float*>(delta.p);
  STATUS_CHECK(ensure_smem_limits(splint_op));
  if (deterministic) {
    // Two kernels, no atomics: dq (which writes δ first) by query tiles, dk/dv by key tiles.
    with_head(d, [&](auto head) {
      constexpr int kD = decltype(head)::value, kRows = Tiles<kD>::rows;
      static_assert(kRows == kSegTile, "one tile width for every grid");
      const dim3 qgrid(grid_tiles(mask, n_seg_tiles, t), (unsigned)hq, (unsigned)b);
      const dim3 kgrid(grid_tiles(mask, n_seg_tiles, s), (unsigned)hkv, (unsigned)b);
      launch_kernel(ctx, flash_dq_kernel<kD>, qgrid, kThreads, dq_smem<kD>(),
          qi, ki, vi, in_of(out, out_dtype), doi, lse_p, (int)t, (int)s, (int)hq, (int)hkv, (int)d, scale,
          scale * kLog2e, mask, vec, delta_p, out_of(dq, grad_dtype));
      launch_kernel(ctx, flash_dkv_kernel<kD>, kgrid, kThreads, dkv_smem<kD>(),
          qi, ki, vi, doi, lse_p, delta_p, (int)t, (int)s, (int)hq, (int)hkv, (int)d, scale, scale * kLog2e, mask, vec,
          out_of(dk, grad_dtype), out_of(dv, grad_dtype));
    });
    LAUNCH_CHECK();  // a failed launch of either kernel stays the last error
    return SPLINT_OK;
  }
  // Fused: δ, then one kernel for dq (atomics into an f32 accumulator), dk and dv, then dq = scale · acc.
  const int padded = d <= 64 ? 64 : 128;  // the kernel's head size (with_head's choice)
  Scratch acc;
  STATUS_CHECK(scratch_alloc(ctx, acc, rows * padded * (int64_t)sizeof(float), splint_op));
  float* acc_p = static_cast<float*>(acc.p);  // zeroed by flash_delta_kernel
  Scratch parts;  // the dk/dv slices when query heads are split across blocks
  int status = SPLINT_OK;
  const bool delta_vec = d % 8 == 0 && aligned16(out) && aligned16(dout) && out_dtype != SPLINT_FP8_E4M3 &&
                         dout_dtype != SPLINT_FP8_E4M3;
  launch_kernel(ctx, flash_delta_kernel, (unsigned)((rows * 16 + kDeltaThreads - 1) / kDeltaThreads), kDeltaThreads, 0,
      in_of(out, out_dtype), doi, rows, (int)t, (int)hq, (int)d, delta_vec, delta_p, acc_p, padded);
  LAUNCH_CHECK();
  with_head(d, [&](auto head) {
    constexpr int kD = decltype(head)::value, kKeys = FusedTiles<kD>::keys;
    static_assert(kKeys == kSegTile, "one tile width for every grid");
    const int64_t key_tiles = grid_tiles(mask, n_seg_tiles, s);
    const int splits = query_head_splits(key_tiles * hkv * b, (int)(hq / hkv));
    if (splits > 1) status = scratch_alloc(ctx, parts, 2 * splits * b * s * hkv * kD * (int64_t)sizeof(float), splint_op);
    if (status != SPLINT_OK) return;
    const dim3 kgrid((unsigned)key_tiles, (unsigned)(hkv * splits), (unsigned)b);
    launch_kernel(ctx, flash_bwd_fused_kernel<kD>, kgrid, kThreads, fused_smem<kD>(),
        qi, ki, vi, doi, lse_p, delta_p, (int)t, (int)s, (int)hq, (int)hkv, (int)d, scale, scale * kLog2e, mask, vec,
        splits, acc_p, static_cast<float*>(parts.p), out_of(dk, grad_dtype), out_of(dv, grad_dtype));
    if (splits > 1) {
      launch_kernel(ctx, flash_dkv_finish_kernel, grid_for(b * s * hkv * d), 256, 0, static_cast<const float*>(parts.p),
                    splits, b * s * hkv, (int)d, kD, scale, out_of(dk, grad_dtype), out_of(dv, grad_dtype));
    }
  });
  STATUS_CHECK(status);
  LAUNCH_CHECK();
  launch_kernel(ctx, flash_dq_finish_kernel, grid_for(rows * d / 4), 256, 0, acc_p, rows, (int)d, padded, scale,
                                                                            d == padded && aligned16(dq),
                                                                            out_of(dq, grad_dtype));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // extern "C"
