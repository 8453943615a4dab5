// LoRA's low-rank products with the module's input dropout fused in: the fast tier (precision
// "bf16") of Backend.loraDown, loraGradA and loraDxAccumulate. Each replaces a dropout kernel, a
// skinny cuBLASLt product (whose heuristic pick runs ~23 CTAs for N = 16 outputs) and, for dx, a
// dropoutBackward and an add, by one launch that reads x (or writes dx) once.
//
// Numerics are those of the composite in src/tensor/lora-composite.ts: x is rounded to bf16, the
// mask is splint's counter-based hash of (seed, flat index of x) exactly as elementwise.cu's
// dropout, kept values × keep_scale are rounded to bf16, products are mma.sync m16n8k16 (bf16
// operands, f32 accumulators), and the dropout backward and the add into dx are single f32
// operations (__f*_rn: nothing is contracted into an FMA). Only the order of the f32 sums differs
// from cuBLASLt's. Every sum runs in an order fixed by the shapes: no atomics, deterministic.
//
// Shapes: x [N, K], a [r, K] (r ≤ 64), u and du [N, r], dx [N, K], dA [r, K].
// - down: a block takes 32 rows of x and one K range (split), its 4 warps take the range's 32-column
//   chunks round robin, each loading up to 4 chunks (x and A straight from global memory, see the load
//   order below) before its first mma; a cluster of a row block's splits sums the per-warp partials
//   through distributed shared memory in (split, warp) order.
// - grad_a: a block takes 64 columns of K and a slice of the rows; tiles of dropout(x) and du are
//   staged in shared memory (the sum runs over rows, which are not contiguous in memory) with two
//   tiles' loads in flight, the slices' partials are summed in slice order by a second kernel when
//   there is more than one.
// - dx: a block takes a 64×64 tile of dx; A's and du's tiles are staged in shared memory, dx is
//   read into registers before the product (when accumulating) and written once after it.
#include <cooperative_groups.h>

#include <algorithm>
#include <type_traits>

#include "common.cuh"
#include "vec.cuh"

namespace {

namespace cg = cooperative_groups;
using bf16 = __nv_bfloat16;

// ---- dropout mask (the function of elementwise.cu and the CPU backend's dropout.ts) ------------

__device__ __host__ __forceinline__ uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

struct Mask {
  uint64_t threshold;
  float keep_scale;
  uint32_t seed_hash;
};

// keep(i) ? v·keep_scale : 0, for the flat element index i of x (mod 2³², as the dropout kernel).
__device__ __forceinline__ float apply_mask(const Mask& m, int64_t i, float v) {
  const uint32_t h = fmix32(m.seed_hash + static_cast<uint32_t>(i) * 0x9e3779b9u);
  return static_cast<uint64_t>(h) >= m.threshold ? __fmul_rn(v, m.keep_scale) : 0.0f;
}

// ---- tensor-core helpers (the same as flash_attention.cu's, kept local to this file) -----------

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lower k or column) in the low half
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// c += a·b for one 16×8 tile (a 16×16 row-major, b 16×8 column-major).
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The A fragment of the 16×16 block at (m0, k0) of a tile stored [m][k].
__device__ __forceinline__ void load_a_mk(uint32_t (&a)[4], const bf16* tile, int stride, int m0, int k0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4(a, tile + (m0 + (lane & 15)) * stride + k0 + (lane >> 4) * 8);
}

// The same fragment from a tile stored [k][m] (duᵀ in dA = duᵀ·x, with du staged as rows of du):
// lanes 8q..8q+7 address the rows of the q-th 8×8 block, blocks in fragment order (m, k) = (0, 0),
// (8, 0), (0, 8), (8, 8), each read transposed.
__device__ __forceinline__ void load_a_km(uint32_t (&a)[4], const bf16* tile, int stride, int m0, int k0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4_trans(a, tile + (k0 + (lane & 7) + ((lane >> 4) << 3)) * stride + m0 + (((lane >> 3) & 1) << 3));
}

// B fragments of the n-tiles n0 and n0 + 8 at the k-step k0 ({b[0], b[1]} and {b[2], b[3]}) from
// a tile stored [k][n].
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const bf16* tile, int stride, int n0, int k0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4_trans(b, tile + (k0 + (lane & 7) + (((lane >> 3) & 1) << 3)) * stride + n0 + ((lane >> 4) << 3));
}

// ---- element runs: 8 consecutive elements of a row, as loaded ----------------------------------

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(bf16 v) { return __bfloat162float(v); }

// 8 elements p[0..8) of bf16 kept as raw pairs (word w holds elements 2w, 2w+1, the lower in the low
// half), of which the first `valid` exist (0..8); the rest read as 0. fast: all 8 exist and p is
// 16-byte aligned, so they load as one vector.
__device__ __forceinline__ void load_run_bits(const bf16* p, int valid, bool fast, uint4& w) {
  if (fast) {
    w = *reinterpret_cast<const uint4*>(p);
    return;
  }
  uint32_t word[4];
#pragma unroll
  for (int j = 0; j < 4; j++) {
    const uint32_t lo = 2 * j < valid ? __bfloat16_as_ushort(p[2 * j]) : 0u;
    const uint32_t hi = 2 * j + 1 < valid ? __bfloat16_as_ushort(p[2 * j + 1]) : 0u;
    word[j] = lo | (hi << 16);
  }
  w = make_uint4(word[0], word[1], word[2], word[3]);
}

// A run of x as loaded, widened only when the products need it: bf16 stays 4 registers instead of 8,
// so twice the loads fit in flight for the same registers.
template <typename T>
struct Run;
template <>
struct Run<bf16> {
  uint4 w;
};
template <>
struct Run<float> {
  float4 lo, hi;
};

__device__ __forceinline__ void load_raw(const bf16* p, int valid, bool fast, Run<bf16>& v) {
  load_run_bits(p, valid, fast, v.w);
}

__device__ __forceinline__ void load_raw(const float* p, int valid, bool fast, Run<float>& v) {
  if (fast) {
    v.lo = reinterpret_cast<const float4*>(p)[0];
    v.hi = reinterpret_cast<const float4*>(p)[1];
    return;
  }
  float e[8];
#pragma unroll
  for (int j = 0; j < 8; j++) e[j] = j < valid ? p[j] : 0.0f;
  v.lo = make_float4(e[0], e[1], e[2], e[3]);
  v.hi = make_float4(e[4], e[5], e[6], e[7]);
}

// bf16 → f32 is exact: the bits move to the high half.
__device__ __forceinline__ void widen_run(const Run<bf16>& v, float (&f)[8]) {
  const uint32_t w[4] = {v.w.x, v.w.y, v.w.z, v.w.w};
#pragma unroll
  for (int j = 0; j < 4; j++) {
    f[2 * j] = __uint_as_float(w[j] << 16);
    f[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
  }
}

__device__ __forceinline__ void widen_run(const Run<float>& v, float (&f)[8]) {
  f[0] = v.lo.x, f[1] = v.lo.y, f[2] = v.lo.z, f[3] = v.lo.w;
  f[4] = v.hi.x, f[5] = v.hi.y, f[6] = v.hi.z, f[7] = v.hi.w;
}

__device__ __forceinline__ int clamp_valid(int64_t remaining) {
  return remaining >= 8 ? 8 : remaining <= 0 ? 0 : static_cast<int>(remaining);
}

// x as the products see it: rounded to bf16 (a no-op for bf16 input), then the dropout in f32,
// then (by the caller's packing) rounded to bf16 again, as dropout(cast(x, bf16), outDtype bf16).
template <typename TX, bool kMask>
__device__ __forceinline__ void drop_run(float (&v)[8], const Mask& m, int64_t flat) {
#pragma unroll
  for (int j = 0; j < 8; j++) {
    float x = v[j];
    if constexpr (std::is_same_v<TX, float>) x = __bfloat162float(__float2bfloat16_rn(x));
    if constexpr (kMask) x = apply_mask(m, flat + j, x);
    v[j] = x;
  }
}

// ---- u = dropout(x)·Aᵀ -------------------------------------------------------------------------

constexpr int kDownWarps = 4;      // a block's warps take its K range's chunks round robin
constexpr int kDownRows = 32;      // rows of a block, two m-tiles in every warp: each A fragment serves both
constexpr int kDownMaxSplits = 8;  // K ranges of a row block: one thread-block cluster (the portable maximum)
constexpr int kDownBlocks = 528;   // blocks the splits aim at (4 of 128 threads on each of an H200's 132 SMs)

// Chunks a warp loads before its first mma: as many as fit in ~96 registers of raw runs (4 of x, NT of
// A a chunk), at most 4. The loads, not the mma, bound this kernel: with one chunk in flight a warp
// waits a full memory latency per 32 columns.
template <typename TX, int NT>
__host__ __device__ constexpr int down_depth() {
  constexpr int regs = static_cast<int>(sizeof(Run<TX>)) + 4 * NT;
  return regs * 4 <= 96 ? 4 : 96 / regs < 1 ? 1 : 96 / regs;
}

// Load order: in a 32-column chunk, lane (g = lane / 4, q = lane % 4) loads columns 8q..8q+7 of
// rows g, g + 8, g + 16, g + 24 of the block's x and of rows g (+ 8·tile) of A, 16 contiguous bytes
// each (bf16). Since a dot product may visit its k in any order, as long as both operands agree,
// k-step s of the chunk takes the pairs (8q + 4s, +1) and (8q + 4s + 2, +3) as the fragment's
// (2q, 2q + 1) and (2q + 8, 2q + 9): every column of the chunk is used once, and no shared memory
// or ldmatrix is needed.
//
// Block (row block bx, split by) sums the chunks [by·per, (by + 1)·per) of its 32 rows; its warps
// keep partials over their chunks in chunk order, and the cluster of a row block's splits adds them
// through distributed shared memory in (split, warp) order: one launch, no atomics, and the order
// depends only on the shape. Rows past N and A rows past r are clamped to the last one (a product
// row or column depends only on its own operand row), so every load is in bounds and their results
// are simply not written.
template <typename TX, int NT, bool kMask>
__global__ void __launch_bounds__(kDownWarps * 32) lora_down_kernel(const TX* __restrict__ x, const bf16* __restrict__ a,
                                                                     int64_t N, int64_t K, int r, bool fast, Mask m,
                                                                     Out u) {
  constexpr int kDepth = down_depth<TX, NT>();
  __shared__ float part[kDownWarps][kDownRows][NT * 8];
  cg::cluster_group cluster = cg::this_cluster();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int splits = static_cast<int>(cluster.num_blocks()), split = static_cast<int>(cluster.block_rank());
  const int64_t row0 = (int64_t)blockIdx.x * kDownRows;
  int64_t rows[4];  // lo and hi rows of m-tile 0, then of m-tile 1
#pragma unroll
  for (int i = 0; i < 4; i++) rows[i] = min(row0 + g + 8 * i, N - 1);
  const int64_t chunks = (K + 31) / 32, per = (chunks + splits - 1) / splits;
  const int64_t c_end = min(chunks, (split + 1) * per);
  float acc[2][NT][4] = {};
  for (int64_t c = split * per + warp; c < c_end; c += kDownWarps * kDepth) {
    Run<TX> xr[kDepth][4];
    uint4 ar[kDepth][NT];
#pragma unroll
    for (int d = 0; d < kDepth; d++) {
      if (c + d * kDownWarps >= c_end) break;
      const int64_t col = (c + d * kDownWarps) * 32 + 8 * q;
      const int valid = clamp_valid(K - col);
      const bool vec = fast && valid == 8;  // with fast (K % 8 == 0, aligned operands), all but a partial last chunk
#pragma unroll
      for (int i = 0; i < 4; i++) load_raw(x + rows[i] * K + col, valid, vec, xr[d][i]);
#pragma unroll
      for (int t = 0; t < NT; t++) load_run_bits(a + (int64_t)min(t * 8 + g, r - 1) * K + col, valid, vec, ar[d][t]);
    }
#pragma unroll
    for (int d = 0; d < kDepth; d++) {
      if (c + d * kDownWarps >= c_end) break;
      const int64_t col = (c + d * kDownWarps) * 32 + 8 * q;
#pragma unroll
      for (int mt = 0; mt < 2; mt++) {
        float lo[8], hi[8];
        widen_run(xr[d][2 * mt], lo);
        widen_run(xr[d][2 * mt + 1], hi);
        drop_run<TX, kMask>(lo, m, rows[2 * mt] * K + col);
        drop_run<TX, kMask>(hi, m, rows[2 * mt + 1] * K + col);
#pragma unroll
        for (int s = 0; s < 2; s++) {
          const uint32_t frag[4] = {pack_bf16(lo[4 * s], lo[4 * s + 1]), pack_bf16(hi[4 * s], hi[4 * s + 1]),
                                    pack_bf16(lo[4 * s + 2], lo[4 * s + 3]), pack_bf16(hi[4 * s + 2], hi[4 * s + 3])};
#pragma unroll
          for (int t = 0; t < NT; t++) {
            const uint32_t b0 = s == 0 ? ar[d][t].x : ar[d][t].z, b1 = s == 0 ? ar[d][t].y : ar[d][t].w;
            mma(acc[mt][t], frag, b0, b1);
          }
        }
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < 2; mt++) {
#pragma unroll
    for (int t = 0; t < NT; t++) {
      part[warp][16 * mt + g][t * 8 + 2 * q] = acc[mt][t][0];
      part[warp][16 * mt + g][t * 8 + 2 * q + 1] = acc[mt][t][1];
      part[warp][16 * mt + g + 8][t * 8 + 2 * q] = acc[mt][t][2];
      part[warp][16 * mt + g + 8][t * 8 + 2 * q + 1] = acc[mt][t][3];
    }
  }
  cluster.sync();  // every split's partials are written
  // The cluster's blocks share out the outputs; each sums all splits' partials of its own.
  for (int e = split * kDownWarps * 32 + threadIdx.x; e < kDownRows * r; e += splits * kDownWarps * 32) {
    const int row = e / r, j = e % r;
    if (row0 + row >= N) break;
    float sum = 0.0f;
    for (int s = 0; s < splits; s++) {
      const float* p = cluster.map_shared_rank(&part[0][0][0], s);
#pragma unroll
      for (int w = 0; w < kDownWarps; w++) sum = __fadd_rn(sum, p[(w * kDownRows + row) * NT * 8 + j]);
    }
    store(u, (row0 + row) * r + j, sum);
  }
  cluster.sync();  // no block leaves (freeing its shared memory) while another still reads it
}

// ---- dA = duᵀ·dropout(x) -----------------------------------------------------------------------

constexpr int kTile = 64;            // rows of a staged tile, and columns of K per block (grad_a, dx)
constexpr int kStride = kTile + 8;   // shared-memory row stride (elements): ldmatrix without bank conflicts
constexpr int kTileThreads = 128;    // 4 warps; each owns 16 columns (grad_a) or 16 rows (dx)
constexpr int kRuns = kTile * kTile / 8 / kTileThreads;  // 8-element runs of a 64×64 tile per thread

// One tile's worth of global loads, held raw in registers while earlier tiles are multiplied.
template <typename TX, int MT>
struct GradATile {
  Run<TX> x[kRuns];
  uint4 du[MT];
};

// Run i of a thread in a 64-column tile: row (i·128 + tid) / 8, columns 8·((i·128 + tid) % 8)..+7.
template <typename TX, int MT>
__device__ __forceinline__ void grad_a_load(GradATile<TX, MT>& t, const TX* __restrict__ x, const bf16* __restrict__ du,
                                            int64_t row0, int64_t row_end, int64_t col0, int64_t K, int r, bool x_fast,
                                            bool du_fast) {
#pragma unroll
  for (int i = 0; i < kRuns; i++) {
    const int run = i * kTileThreads + threadIdx.x, row = run >> 3, col = (run & 7) * 8;
    const int valid = row0 + row < row_end ? clamp_valid(K - col0 - col) : 0;
    load_raw(x + (row0 + row) * K + col0 + col, valid, x_fast && valid == 8, t.x[i]);
  }
  // du's rows are 2·MT runs of 8 (r ≤ 16·MT): 64·2·MT runs, MT a thread.
#pragma unroll
  for (int i = 0; i < MT; i++) {
    const int run = i * kTileThreads + threadIdx.x, row = run / (2 * MT), col = (run % (2 * MT)) * 8;
    const int valid = row0 + row < row_end ? clamp_valid(r - col) : 0;
    load_run_bits(du + (row0 + row) * r + col, valid, du_fast && valid == 8, t.du[i]);
  }
}

template <typename TX, int MT>
__device__ __forceinline__ void grad_a_stage(const GradATile<TX, MT>& t, bf16* xs, bf16* dus, int64_t row0, int64_t col0,
                                             int64_t K, bool masked, const Mask& m) {
#pragma unroll
  for (int i = 0; i < kRuns; i++) {
    const int run = i * kTileThreads + threadIdx.x, row = run >> 3, col = (run & 7) * 8;
    float v[8];
    widen_run(t.x[i], v);
    // Padding (rows or columns past the data) is 0 and stays 0 under the mask.
    if (masked) drop_run<TX, true>(v, m, (row0 + row) * K + col0 + col);
    else drop_run<TX, false>(v, m, 0);
    *reinterpret_cast<uint4*>(xs + row * kStride + col) =
        make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
  }
#pragma unroll
  for (int i = 0; i < MT; i++) {
    const int run = i * kTileThreads + threadIdx.x, row = run / (2 * MT), col = (run % (2 * MT)) * 8;
    *reinterpret_cast<uint4*>(dus + row * kStride + col) = t.du[i];
  }
}

// Block (column tile bx, row slice by): rows [by·slice, min(N, (by + 1)·slice)) into out + by·r·K
// (the partials of the slices, or dA itself when there is one slice).
template <typename TX, int MT>
__global__ void __launch_bounds__(kTileThreads) lora_grad_a_kernel(const bf16* __restrict__ du, const TX* __restrict__ x,
                                                                    int64_t N, int64_t K, int r, int64_t slice,
                                                                    bool x_fast, bool du_fast, bool masked, Mask m,
                                                                    float* __restrict__ out) {
  __shared__ __align__(16) bf16 xs[kTile * kStride];
  __shared__ __align__(16) bf16 dus[kTile * kStride];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int64_t col0 = (int64_t)blockIdx.x * kTile;
  const int64_t begin = (int64_t)blockIdx.y * slice, end = min(N, begin + slice);
  float acc[MT][2][4] = {};
  // Two tiles in flight: tile i + 2 loads into t0 or t1 as soon as tile i is staged from it.
  GradATile<TX, MT> t0, t1;
  auto step = [&](GradATile<TX, MT>& t, int64_t row0) {
    __syncthreads();  // the previous tile's products are done with xs and dus
    grad_a_stage<TX, MT>(t, xs, dus, row0, col0, K, masked, m);
    __syncthreads();
    if (row0 + 2 * kTile < end) grad_a_load<TX, MT>(t, x, du, row0 + 2 * kTile, end, col0, K, r, x_fast, du_fast);
#pragma unroll
    for (int kk = 0; kk < kTile; kk += 16) {
      uint32_t b[4];
      load_b_kn(b, xs, kStride, warp * 16, kk);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        uint32_t a[4];
        load_a_km(a, dus, kStride, mt * 16, kk);
        mma(acc[mt][0], a, b[0], b[1]);
        mma(acc[mt][1], a, b[2], b[3]);
      }
    }
  };
  if (begin < end) grad_a_load<TX, MT>(t0, x, du, begin, end, col0, K, r, x_fast, du_fast);
  if (begin + kTile < end) grad_a_load<TX, MT>(t1, x, du, begin + kTile, end, col0, K, r, x_fast, du_fast);
  for (int64_t row0 = begin; row0 < end; row0 += 2 * kTile) {
    step(t0, row0);
    if (row0 + kTile < end) step(t1, row0 + kTile);
  }
  float* dst = out + (int64_t)blockIdx.y * r * K;
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
      const int64_t col = col0 + warp * 16 + nt * 8 + 2 * q;
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int j = mt * 16 + g + 8 * h;
        if (j >= r) continue;
        if (col < K) dst[j * K + col] = acc[mt][nt][2 * h];
        if (col + 1 < K) dst[j * K + col + 1] = acc[mt][nt][2 * h + 1];
      }
    }
  }
}

// dA[i] = Σ_s partial[s][i] in slice order.
__global__ void lora_sum_slices_kernel(const float* __restrict__ partial, int64_t slices, int64_t n, float* __restrict__ out) {
  GRID_STRIDE(i, n) {
    float sum = 0.0f;
    for (int64_t s = 0; s < slices; s++) sum = __fadd_rn(sum, partial[s * n + i]);
    out[i] = sum;
  }
}

// ---- dx (+)= dropout'(du·A) --------------------------------------------------------------------

// Block (column tile bx, row tile by); warp w owns rows 16w..16w+15 and all 64 columns.
template <typename TD, int KT>
__global__ void __launch_bounds__(kTileThreads) lora_dx_kernel(TD* __restrict__ dx, const bf16* __restrict__ du,
                                                                const bf16* __restrict__ a, int64_t N, int64_t K, int r,
                                                                bool a_fast, bool du_fast, bool pair_fast, bool masked,
                                                                Mask m, bool accumulate) {
  __shared__ __align__(16) bf16 as[KT * 16 * kStride];  // A [j][col]
  __shared__ __align__(16) bf16 dus[kTile * kStride];   // du [row][j]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int64_t col0 = (int64_t)blockIdx.x * kTile, row0 = (int64_t)blockIdx.y * kTile;
  // dx first, so its loads are in flight while the tiles are staged and multiplied (not read at
  // all when it is only written: the base product is added onto it afterwards). Element
  // (nt, h, e): row row0 + 16w + g + 8h, column col0 + 8nt + 2q + e.
  float old[8][2][2] = {};
  if (accumulate) {
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int64_t row = row0 + warp * 16 + g + 8 * h, col = col0 + nt * 8 + 2 * q;
        const TD* p = dx + row * K + col;
        if (row < N && pair_fast && col < K) {
          if constexpr (std::is_same_v<TD, float>) {
            const float2 v = *reinterpret_cast<const float2*>(p);
            old[nt][h][0] = v.x, old[nt][h][1] = v.y;
          } else {
            const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
            old[nt][h][0] = v.x, old[nt][h][1] = v.y;
          }
        } else {
          old[nt][h][0] = row < N && col < K ? widen(p[0]) : 0.0f;
          old[nt][h][1] = row < N && col + 1 < K ? widen(p[1]) : 0.0f;
        }
      }
    }
  }
  // A's rows j < 16·KT (zero past r) over the block's 64 columns (zero past K) and du's 64 rows
  // over 16·KT columns (zero past r or N): 128·KT runs of 8 each, KT a thread.
#pragma unroll
  for (int i = 0; i < KT; i++) {
    const int run = i * kTileThreads + threadIdx.x, j = run >> 3, col = (run & 7) * 8;
    const int valid = j < r ? clamp_valid(K - col0 - col) : 0;
    uint4 w;
    load_run_bits(a + (int64_t)j * K + col0 + col, valid, a_fast && valid == 8, w);
    *reinterpret_cast<uint4*>(as + j * kStride + col) = w;
  }
#pragma unroll
  for (int i = 0; i < KT; i++) {
    const int run = i * kTileThreads + threadIdx.x, row = run / (2 * KT), col = (run % (2 * KT)) * 8;
    const int valid = row0 + row < N ? clamp_valid(r - col) : 0;
    uint4 w;
    load_run_bits(du + (row0 + row) * r + col, valid, du_fast && valid == 8, w);
    *reinterpret_cast<uint4*>(dus + row * kStride + col) = w;
  }
  __syncthreads();
  float acc[8][4] = {};
#pragma unroll
  for (int kk = 0; kk < KT; kk++) {
    uint32_t af[4];
    load_a_mk(af, dus, kStride, warp * 16, kk * 16);
#pragma unroll
    for (int np = 0; np < 4; np++) {
      uint32_t b[4];
      load_b_kn(b, as, kStride, np * 16, kk * 16);
      mma(acc[2 * np], af, b[0], b[1]);
      mma(acc[2 * np + 1], af, b[2], b[3]);
    }
  }
#pragma unroll
  for (int nt = 0; nt < 8; nt++) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int64_t row = row0 + warp * 16 + g + 8 * h, col = col0 + nt * 8 + 2 * q;
      if (row >= N) continue;
      float v[2];
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const float lora = masked ? apply_mask(m, row * K + col + e, acc[nt][2 * h + e]) : acc[nt][2 * h + e];
        v[e] = accumulate ? __fadd_rn(old[nt][h][e], lora) : lora;
      }
      TD* p = dx + row * K + col;
      if (pair_fast && col < K) {
        if constexpr (std::is_same_v<TD, float>) *reinterpret_cast<float2*>(p) = make_float2(v[0], v[1]);
        else *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v[0], v[1]);
      } else {
        for (int e = 0; e < 2; e++) {
          if (col + e >= K) break;
          if constexpr (std::is_same_v<TD, float>) p[e] = v[e];
          else p[e] = __float2bfloat16_rn(v[e]);
        }
      }
    }
  }
}

// ---- dispatch --------------------------------------------------------------------------------

bool aligned16(uint64_t p) { return p % 16 == 0; }

// Calls f with std::integral_constant<int, T>, T the number of kUnit-wide tiles that cover r ≤ 64:
// 1, 2, 4 or 8 for kUnit 8 (n-tiles of u), 1, 2 or 4 for kUnit 16 (m-tiles of dA, k-steps of dx).
template <int kUnit, typename F>
void with_tiles(int r, F&& f) {
  static_assert(kUnit == 8 || kUnit == 16, "tiles are 8 or 16 wide");
  if (r <= kUnit) {
    f(std::integral_constant<int, 1>{});
  } else if (r <= 2 * kUnit) {
    f(std::integral_constant<int, 2>{});
  } else if constexpr (kUnit == 16) {
    f(std::integral_constant<int, 4>{});
  } else if (r <= 4 * kUnit) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 8>{});
  }
}

Mask mask_of(uint64_t threshold, float keep_scale, uint32_t seed) { return Mask{threshold, keep_scale, fmix32(seed)}; }

}  // namespace

extern "C" {

int splint_cuda_lora_down(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr a, int64_t n, int64_t k, int32_t r,
                          int32_t masked, uint64_t threshold, float keep_scale, uint32_t seed, splint_dptr u,
                          int32_t u_dtype) {
  OP("lora_down");
  CTX_CHECK(ctx);
  ARG_CHECK(is_grad_dtype(x_dtype) && is_grad_dtype(u_dtype), "x and u must be f32 or bf16");
  ARG_CHECK(n >= 0 && k >= 0 && r >= 1 && r <= 64, "bad sizes n=%lld k=%lld r=%d (r must be in 1..64)", (long long)n,
            (long long)k, r);
  ARG_CHECK(n * k <= (1LL << 32), "%lld elements exceed the 32-bit element counter", (long long)(n * k));
  if (n == 0) return SPLINT_OK;
  const bool fast = k % 8 == 0 && aligned16(x) && aligned16(a);
  const Mask m = mask_of(threshold, keep_scale, seed);
  // K splits from the shape alone, as grad_a's slices: enough blocks for every SM, but at least 8
  // chunks (two per warp) a split, so the partials' sum stays small against the products.
  const int64_t row_blocks = (n + kDownRows - 1) / kDownRows, chunks = (k + 31) / 32;
  ARG_CHECK(row_blocks <= 0x7fffffffLL, "n=%lld too large", (long long)n);
  const int64_t splits = std::max<int64_t>(
      1, std::min<int64_t>({kDownMaxSplits, (kDownBlocks + row_blocks - 1) / row_blocks, chunks / (2 * kDownWarps)}));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits));
  cfg.blockDim = dim3(kDownWarps * 32);
  cfg.stream = ctx->stream;
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = 1;
  cluster.val.clusterDim.y = static_cast<unsigned>(splits);
  cluster.val.clusterDim.z = 1;
  cfg.attrs = &cluster;
  cfg.numAttrs = 1;
  cudaError_t err = cudaSuccess;
  vec::with_type(x_dtype, [&](auto* tx) {
    using TX = std::remove_pointer_t<decltype(tx)>;
    with_tiles<8>(r, [&](auto nt) {
      constexpr int NT = decltype(nt)::value;
      auto launch = [&](auto kernel) {
        err = cudaLaunchKernelEx(&cfg, kernel, reinterpret_cast<const TX*>(x), reinterpret_cast<const bf16*>(a), n, k, r,
                                 fast, m, out_of(u, u_dtype));
      };
      if (masked) launch(lora_down_kernel<TX, NT, true>);
      else launch(lora_down_kernel<TX, NT, false>);
    });
  });
  CUDA_CHECK(err);
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_lora_grad_a(splint_ctx* ctx, splint_dptr du, splint_dptr x, int32_t x_dtype, int64_t n, int64_t k,
                            int32_t r, int32_t masked, uint64_t threshold, float keep_scale, uint32_t seed,
                            splint_dptr da) {
  OP("lora_grad_a");
  CTX_CHECK(ctx);
  ARG_CHECK(is_grad_dtype(x_dtype), "x must be f32 or bf16");
  ARG_CHECK(n >= 0 && k >= 0 && r >= 1 && r <= 64, "bad sizes n=%lld k=%lld r=%d (r must be in 1..64)", (long long)n,
            (long long)k, r);
  ARG_CHECK(n * k <= (1LL << 32), "%lld elements exceed the 32-bit element counter", (long long)(n * k));
  if (k == 0) return SPLINT_OK;
  // Row slices from the shape alone (never the device), so the order of the sums, hence the result,
  // is the same on every GPU: about 512 blocks (4 on each of an H200's SMs, each with two 64-row
  // tiles in flight), slices of whole 64-row tiles.
  const int64_t col_blocks = (k + kTile - 1) / kTile, row_tiles = (n + kTile - 1) / kTile;
  const int64_t want = std::max<int64_t>(1, std::min<int64_t>(row_tiles, (512 + col_blocks - 1) / col_blocks));
  const int64_t slice_tiles = row_tiles == 0 ? 1 : (row_tiles + want - 1) / want;
  const int64_t slices = row_tiles == 0 ? 1 : (row_tiles + slice_tiles - 1) / slice_tiles;
  ARG_CHECK(col_blocks <= 0x7fffffffLL, "k=%lld too large", (long long)k);
  Scratch partial;
  float* out = reinterpret_cast<float*>(da);
  if (slices > 1) {
    STATUS_CHECK(scratch_alloc(ctx, partial, slices * r * k * 4, splint_op));
    out = static_cast<float*>(partial.p);
  }
  const bool x_fast = k % 8 == 0 && aligned16(x), du_fast = r % 8 == 0 && aligned16(du);
  const Mask m = mask_of(threshold, keep_scale, seed);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(slices));
  vec::with_type(x_dtype, [&](auto* tx) {
    using TX = std::remove_pointer_t<decltype(tx)>;
    with_tiles<16>(r, [&](auto mt) {
      constexpr int MT = decltype(mt)::value;
      lora_grad_a_kernel<TX, MT><<<grid, kTileThreads, 0, ctx->stream>>>(
          reinterpret_cast<const bf16*>(du), reinterpret_cast<const TX*>(x), n, k, r, slice_tiles * kTile, x_fast,
          du_fast, masked != 0, m, out);
    });
  });
  LAUNCH_CHECK();
  if (slices > 1) {
    lora_sum_slices_kernel<<<grid_for(r * k), 256, 0, ctx->stream>>>(out, slices, r * k, reinterpret_cast<float*>(da));
    LAUNCH_CHECK();
  }
  return SPLINT_OK;
}

int splint_cuda_lora_dx(splint_ctx* ctx, splint_dptr dx, int32_t dx_dtype, splint_dptr du, splint_dptr a, int64_t n,
                        int64_t k, int32_t r, int32_t masked, uint64_t threshold, float keep_scale, uint32_t seed,
                        int32_t accumulate) {
  OP("lora_dx");
  CTX_CHECK(ctx);
  ARG_CHECK(is_grad_dtype(dx_dtype), "dx must be f32 or bf16");
  ARG_CHECK(n >= 0 && k >= 0 && r >= 1 && r <= 64, "bad sizes n=%lld k=%lld r=%d (r must be in 1..64)", (long long)n,
            (long long)k, r);
  ARG_CHECK(n * k <= (1LL << 32), "%lld elements exceed the 32-bit element counter", (long long)(n * k));
  if (n == 0 || k == 0) return SPLINT_OK;
  const int64_t col_blocks = (k + kTile - 1) / kTile, row_blocks = (n + kTile - 1) / kTile;
  ARG_CHECK(row_blocks <= 65535, "n=%lld rows exceed the grid", (long long)n);
  const bool a_fast = k % 8 == 0 && aligned16(a), du_fast = r % 8 == 0 && aligned16(du);
  const bool pair_fast = k % 2 == 0 && dx % (dx_dtype == SPLINT_F32 ? 8 : 4) == 0;
  const Mask m = mask_of(threshold, keep_scale, seed);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks));
  vec::with_type(dx_dtype, [&](auto* td) {
    using TD = std::remove_pointer_t<decltype(td)>;
    with_tiles<16>(r, [&](auto kt) {
      constexpr int KT = decltype(kt)::value;
      lora_dx_kernel<TD, KT><<<grid, kTileThreads, 0, ctx->stream>>>(reinterpret_cast<TD*>(dx),
                                                                      reinterpret_cast<const bf16*>(du),
                                                                      reinterpret_cast<const bf16*>(a), n, k, r, a_fast,
                                                                      du_fast, pair_fast, masked != 0, m,
                                                                      accumulate != 0);
    });
  });
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // extern "C"
