// LoRA's low-rank products with the module's input dropout fused in: the fast tier (precision
// "bf16") of Backend.loraDown, loraGradA and loraDxAccumulate. Each replaces a dropout kernel, a
// skinny cuBLASLt product (whose heuristic pick runs ~23 CTAs for N = 16 outputs) and, for dx, a
// dropoutBackward and an add, by one launch that reads x (or writes dx) once. The products with B
// (Backend.loraUp, loraUpBackward) replace cuBLASLt's K = r and N = r products likewise: y is only
// written, and dy is read once for both du and dB.
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
// - up, y [N, M] = alpha·u·Bᵀ (u [N, r], B [M, r]): a warp keeps its 32 rows of u in registers and
//   walks 32-column chunks of y, B's fragments straight from global memory (L1), its columns
//   permuted so each lane stores 8 consecutive elements of a row.
// - up backward, du = alpha·dy·B and dB = alpha·dyᵀ·u: grad_a's walk of 64-column tiles over a
//   row slice, each staged dy tile multiplied twice; dB is kept in registers over the slice, du's
//   partials over 64 columns are summed by a cluster of up to 8 column tiles through distributed
//   shared memory; what the slices and clusters leave is summed in a second, small kernel.
#include <cooperative_groups.h>

#include <algorithm>
#include <type_traits>

#include "common.cuh"
#include "mma.cuh"
#include "vec.cuh"

namespace {

namespace cg = cooperative_groups;
using bf16 = __nv_bfloat16;

// ---- dropout mask (the function of elementwise.cu and the CPU backend's dropout.ts) ------------

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

// ---- tensor-core helpers: mma.cuh, and one load of its own ------------------------------------

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
__global__ void __launch_bounds__(kDownWarps * 32) lora_down_kernel(const TX* x, const bf16* a,
                                                                     int64_t N, int64_t K, int r, bool fast, Mask m,
                                                                     Out u) {
  pdl_prologue();
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

// acc += ranksᵀ·cols over one staged tile: ranks [kTile rows][16·MT ranks] (du, or u), cols
// [kTile rows][kTile columns] (x, or dy), both [row][·] with stride kStride; warp w takes the 16
// columns 16w.. (dA's and dB's products, which share the tile walk).
template <int MT>
__device__ __forceinline__ void rank_tile_products(float (&acc)[MT][2][4], const bf16* ranks, const bf16* cols, int warp) {
#pragma unroll
  for (int kk = 0; kk < kTile; kk += 16) {
    uint32_t b[4];
    load_b_kn(b, cols, kStride, warp * 16, kk);
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      uint32_t a[4];
      load_a_km(a, ranks, kStride, mt * 16, kk);
      mma(acc[mt][0], a, b[0], b[1]);
      mma(acc[mt][1], a, b[2], b[3]);
    }
  }
}
constexpr int kRuns = kTile * kTile / 8 / kTileThreads;  // 8-element runs of a 64×64 tile per thread

// One tile's worth of global loads, held raw in registers while earlier tiles are multiplied.
template <typename TX, int MT>
struct GradATile {
  Run<TX> x[kRuns];
  uint4 du[MT];
};

// Run i of a thread in a 64-column tile: row (i·128 + tid) / 8, columns 8·((i·128 + tid) % 8)..+7.
template <typename TX, int MT>
__device__ __forceinline__ void grad_a_load(GradATile<TX, MT>& t, const TX* x, const bf16* du,
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
__global__ void __launch_bounds__(kTileThreads) lora_grad_a_kernel(const bf16* du, const TX* x,
                                                                    int64_t N, int64_t K, int r, int64_t slice,
                                                                    bool x_fast, bool du_fast, bool masked, Mask m,
                                                                    float* out) {
  pdl_prologue();
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
    rank_tile_products<MT>(acc, dus, xs, warp);
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
__global__ void lora_sum_slices_kernel(const float* partial, int64_t slices, int64_t n, float* out) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    float sum = 0.0f;
    for (int64_t s = 0; s < slices; s++) sum = __fadd_rn(sum, partial[s * n + i]);
    out[i] = sum;
  }
}

// ---- dx (+)= dropout'(du·A) --------------------------------------------------------------------

// Block (column tile bx, row tile by); warp w owns rows 16w..16w+15 and all 64 columns.
template <typename TD, int KT>
__global__ void __launch_bounds__(kTileThreads) lora_dx_kernel(TD* dx, const bf16* du,
                                                                const bf16* a, int64_t N, int64_t K, int r,
                                                                bool a_fast, bool du_fast, bool pair_fast, bool masked,
                                                                Mask m, bool accumulate) {
  pdl_prologue();
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

// ---- y = alpha·u·Bᵀ ----------------------------------------------------------------------------

constexpr int kUpWarps = 4;     // two along a block's rows, two taking its column chunks in turn
constexpr int kUpRows = 64;     // rows of a block: 32 a warp, two m-tiles sharing every B fragment
constexpr int kUpChunk = 32;    // columns of y a warp writes per step: 4 n-tiles (columns permuted, below)
constexpr int kUpBlocks = 528;  // blocks the column splits aim at (4 of 128 threads on each of an H200's 132 SMs)

// A lane's run of a row of r elements (of u or B) for KS k-steps (r ≤ 16·KS): elements
// [4·KS·q, 4·KS·q + 4·KS) as 2·KS words of bf16 pairs (the lower element in the low half), zero
// past r. fast: r % 8 == 0 and the base is 16-byte aligned, so a run that lies within r loads as
// one or two vectors.
template <int KS>
__device__ __forceinline__ void load_rank_run(const bf16* row, int r, bool fast, uint32_t (&w)[2 * KS]) {
  const int begin = 4 * KS * (threadIdx.x & 3);
  if (fast && begin + 4 * KS <= r) {
    if constexpr (KS == 1) {
      const uint2 v = *reinterpret_cast<const uint2*>(row + begin);
      w[0] = v.x, w[1] = v.y;
    } else {
#pragma unroll
      for (int i = 0; i < KS / 2; i++) {
        const uint4 v = reinterpret_cast<const uint4*>(row + begin)[i];
        w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
      }
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < 2 * KS; i++) {
    const int e = begin + 2 * i;
    const uint32_t lo = e < r ? __bfloat16_as_ushort(row[e]) : 0u;
    const uint32_t hi = e + 1 < r ? __bfloat16_as_ushort(row[e + 1]) : 0u;
    w[i] = lo | (hi << 16);
  }
}

__device__ __forceinline__ void store_one(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_one(bf16* p, float v) { *p = __float2bfloat16_rn(v); }

// Load order: as in lora_down, a dot product may visit its k in any order both operands agree on.
// Lane (g = lane / 4, q = lane % 4) holds run q (load_rank_run) of its rows of u and of B, and
// k-step s takes the run's elements 4s..4s+3 as the fragment's k 2q, 2q + 1, 2q + 8, 2q + 9.
// The n dimension is permuted the same way: n-slot g of n-tile t (the B row that lanes with that
// g load) is column 8·(g / 2) + 2t + g % 2 of the 32-column chunk, so lane q's accumulator pairs
// over the 4 n-tiles (columns 2q and 2q + 1 of each tile) are the chunk's columns 8q..8q+7: one
// 16-byte store a row for bf16 y, two for f32. No shared memory, no barrier.
//
// Block (row block bx, column split by); warp w takes rows 32·(w % 2).. of the block and the
// split's chunks w / 2, w / 2 + 2, …, loading the next chunk's B runs before multiplying and
// storing the current one. Rows of u and B past n and m are clamped to the last one: every load is
// in bounds, and their products are not stored.
template <typename TY, int KS>
__global__ void __launch_bounds__(kUpWarps * 32) lora_up_kernel(const bf16* u, const bf16* b,
                                                                 int64_t N, int64_t M, int r, int64_t per, bool fast,
                                                                 bool vec_store, float alpha, TY* y) {
  pdl_prologue();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int64_t row0 = (int64_t)blockIdx.x * kUpRows + (warp & 1) * 32;
  const int64_t chunks = (M + kUpChunk - 1) / kUpChunk, c_end = min(chunks, ((int64_t)blockIdx.y + 1) * per);
  int64_t c = (int64_t)blockIdx.y * per + (warp >> 1);
  if (row0 >= N || c >= c_end) return;
  uint32_t ua[2][2][2 * KS];  // [m-tile][rows g, g + 8][words]
#pragma unroll
  for (int mt = 0; mt < 2; mt++) {
#pragma unroll
    for (int h = 0; h < 2; h++) load_rank_run<KS>(u + min(row0 + 16 * mt + 8 * h + g, N - 1) * r, r, fast, ua[mt][h]);
  }
  auto load_b = [&](int64_t chunk, uint32_t (&bw)[4][2 * KS]) {
#pragma unroll
    for (int t = 0; t < 4; t++) {
      const int64_t col = chunk * kUpChunk + 8 * (g >> 1) + 2 * t + (g & 1);
      load_rank_run<KS>(b + min(col, M - 1) * r, r, fast, bw[t]);
    }
  };
  uint32_t bw[4][2 * KS], next[4][2 * KS];
  load_b(c, bw);
  for (; c < c_end; c += 2) {
    if (c + 2 < c_end) load_b(c + 2, next);
    float acc[2][4][4] = {};
#pragma unroll
    for (int s = 0; s < KS; s++) {
#pragma unroll
      for (int mt = 0; mt < 2; mt++) {
        const uint32_t a[4] = {ua[mt][0][2 * s], ua[mt][1][2 * s], ua[mt][0][2 * s + 1], ua[mt][1][2 * s + 1]};
#pragma unroll
        for (int t = 0; t < 4; t++) mma(acc[mt][t], a, bw[t][2 * s], bw[t][2 * s + 1]);
      }
    }
    const int64_t col = c * kUpChunk + 8 * q;
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int64_t row = row0 + 16 * mt + 8 * h + g;
        if (row >= N) continue;
        float v[8];
#pragma unroll
        for (int t = 0; t < 4; t++) {
          v[2 * t] = __fmul_rn(alpha, acc[mt][t][2 * h]);
          v[2 * t + 1] = __fmul_rn(alpha, acc[mt][t][2 * h + 1]);
        }
        TY* p = y + row * M + col;
        if (vec_store && col < M) {
          vec::store8(p, 0, v);  // M % 8 == 0: a run that starts inside a row ends inside it
        } else {
#pragma unroll
          for (int e = 0; e < 8; e++) {
            if (col + e < M) store_one(p + e, v[e]);
          }
        }
      }
    }
#pragma unroll
    for (int t = 0; t < 4; t++) {
#pragma unroll
      for (int i = 0; i < 2 * KS; i++) bw[t][i] = next[t][i];
    }
  }
}

// ---- du = alpha·dy·B and dB = alpha·dyᵀ·u, one pass over dy ------------------------------------

constexpr int kUbMaxCluster = 8;      // column tiles whose du partials one cluster sums (the portable maximum)
constexpr int kUbGroupBytes = 20480;  // du partials kept per group: what the three tiles leave of 48 KB of shared memory
constexpr int kUbBlocks = 512;        // blocks the row slices aim at, as lora_grad_a's (4 on each of an H200's SMs)

// Floats a row of a block's du partials (r ≤ 16·MT; 4 more so the rows' pairs spread over the banks).
template <int MT>
__host__ __device__ constexpr int ub_du_stride() {
  return 16 * MT + 4;
}

// 64-row tiles a group's du partials cover: 4 at r ≤ 16, 2 at r ≤ 32, 1 at r ≤ 64.
template <int MT>
__host__ __device__ constexpr int ub_group_tiles() {
  return kUbGroupBytes / (kTile * ub_du_stride<MT>() * 4) < 1 ? 1 : kUbGroupBytes / (kTile * ub_du_stride<MT>() * 4);
}

// Block (column tile bx, row slice by) walks the 64-row tiles of its slice as lora_grad_a does (two
// tiles' loads in flight, dy and u staged in shared memory) and multiplies each staged dy tile twice:
// - dBᵀ [r, 64 columns] += uᵀ·dy, lora_grad_a's product with u for du and dy for x, kept in
//   registers over the slice and written (× alpha when the slice is all of n) into out_db;
// - du [64 rows, r] = dy·B over the block's 64 columns, B's 64 rows staged once: warp w takes rows
//   16w..16w+15. These partials go to shared memory, a group of tiles at a time; then the cluster
//   (blocks of consecutive column tiles, the same slice) sums them through distributed shared memory
//   in rank (column) order, each block taking a share of the group's rows, into du (× alpha, when the
//   cluster spans all of m) or du_partial [cluster column][n][r].
// Rows past the slice, columns past m and ranks past r are zero in every staged tile.
template <int MT>
__global__ void __launch_bounds__(kTileThreads) lora_up_backward_kernel(
    const bf16* dy, const bf16* b, const bf16* u, int64_t N, int64_t M, int r,
    int64_t slice, bool dy_fast, bool rank_fast, float alpha, float* du_partial, Out du,
    float* db_partial, float* db) {
  pdl_prologue();
  constexpr int kDuStride = ub_du_stride<MT>(), kGroup = ub_group_tiles<MT>();
  __shared__ __align__(16) bf16 dys[kTile * kStride];                // dy tile [row][col]
  __shared__ __align__(16) bf16 us[kTile * kStride];                 // u tile [row][j]
  __shared__ __align__(16) bf16 bs[kTile * kStride];                 // B's rows of the block's columns [col][j]
  __shared__ __align__(16) float dus[kGroup * kTile * kDuStride];    // du partials of the group's rows [row][j]
  cg::cluster_group cluster = cg::this_cluster();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int64_t col0 = (int64_t)blockIdx.x * kTile;
  const int64_t begin = (int64_t)blockIdx.y * slice, end = min(N, begin + slice);
  // B's rows col0..col0+63 over 16·MT ranks: 64·2·MT runs of 8, MT a thread (read after step's first barrier).
#pragma unroll
  for (int i = 0; i < MT; i++) {
    const int run = i * kTileThreads + threadIdx.x, row = run / (2 * MT), col = (run % (2 * MT)) * 8;
    const int valid = col0 + row < M ? clamp_valid(r - col) : 0;
    uint4 w;
    load_run_bits(b + (col0 + row) * r + col, valid, rank_fast && valid == 8, w);
    *reinterpret_cast<uint4*>(bs + row * kStride + col) = w;
  }
  const int ranks = static_cast<int>(cluster.num_blocks()), rank = static_cast<int>(cluster.block_rank());
  const int64_t cluster_col = blockIdx.x / ranks;
  // Rows [group0, group0 + rows) of du from the cluster's partials.
  auto exchange = [&](int64_t group0, int rows) {
    cluster.sync();  // every block's partials of these rows are in its shared memory
    for (int e = rank * kTileThreads + threadIdx.x; e < rows * r; e += ranks * kTileThreads) {
      const int row = e / r, j = e - row * r;
      float sum = 0.0f;
#pragma unroll 4
      for (int s = 0; s < ranks; s++) sum = __fadd_rn(sum, cluster.map_shared_rank(dus, s)[row * kDuStride + j]);
      const int64_t i = (group0 + row) * r + j;
      if (du_partial) du_partial[cluster_col * N * r + i] = sum;
      else store(du, i, __fmul_rn(alpha, sum));
    }
    cluster.sync();  // no block writes the next group's partials, or leaves, while another still reads these
  };
  const Mask unmasked{};
  float acc_db[MT][2][4] = {};  // dBᵀ: ranks 16·mt + (g, g + 8), columns 16w + 8·nt + (2q, 2q + 1)
  GradATile<bf16, MT> t0, t1;
  auto step = [&](GradATile<bf16, MT>& t, int64_t row0) {
    __syncthreads();  // the previous tile's products are done with dys and us
    grad_a_stage<bf16, MT>(t, dys, us, row0, col0, M, false, unmasked);
    __syncthreads();
    if (row0 + 2 * kTile < end) grad_a_load<bf16, MT>(t, dy, u, row0 + 2 * kTile, end, col0, M, r, dy_fast, rank_fast);
    rank_tile_products<MT>(acc_db, us, dys, warp);
    float acc_du[2 * MT][4] = {};  // rows 16w + (g, g + 8), ranks 8·nt + (2q, 2q + 1)
#pragma unroll
    for (int kk = 0; kk < kTile; kk += 16) {
      uint32_t a[4];
      load_a_mk(a, dys, kStride, warp * 16, kk);
#pragma unroll
      for (int np = 0; np < MT; np++) {
        uint32_t bf[4];
        load_b_kn(bf, bs, kStride, np * 16, kk);
        mma(acc_du[2 * np], a, bf[0], bf[1]);
        mma(acc_du[2 * np + 1], a, bf[2], bf[3]);
      }
    }
    const int slot = static_cast<int>((row0 - begin) / kTile) % kGroup;
    float* part = dus + (slot * kTile + warp * 16 + g) * kDuStride + 2 * q;
#pragma unroll
    for (int nt = 0; nt < 2 * MT; nt++) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        *reinterpret_cast<float2*>(part + 8 * h * kDuStride + 8 * nt) = make_float2(acc_du[nt][2 * h], acc_du[nt][2 * h + 1]);
      }
    }
    if (slot == kGroup - 1 || row0 + kTile >= end) {
      const int64_t group0 = row0 - slot * kTile;
      exchange(group0, static_cast<int>(min(end, row0 + kTile) - group0));
    }
  };
  if (begin < end) grad_a_load<bf16, MT>(t0, dy, u, begin, end, col0, M, r, dy_fast, rank_fast);
  if (begin + kTile < end) grad_a_load<bf16, MT>(t1, dy, u, begin + kTile, end, col0, M, r, dy_fast, rank_fast);
  for (int64_t row0 = begin; row0 < end; row0 += 2 * kTile) {
    step(t0, row0);
    if (row0 + kTile < end) step(t1, row0 + kTile);
  }
#pragma unroll
  for (int mt = 0; mt < MT; mt++) {
#pragma unroll
    for (int nt = 0; nt < 2; nt++) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int j = mt * 16 + g + 8 * h;
        if (j >= r) continue;
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const int64_t col = col0 + warp * 16 + nt * 8 + 2 * q + e;
          if (col >= M) continue;
          const float v = acc_db[mt][nt][2 * h + e];
          if (db_partial) db_partial[(int64_t)blockIdx.y * M * r + col * r + j] = v;
          else db[col * r + j] = __fmul_rn(alpha, v);
        }
      }
    }
  }
}

// One of lora_up_backward's outputs summed from its partials: out[i] = alpha·Σ_p partial[p·len + i],
// in part order (len 0: nothing to sum).
struct PartialSum {
  const float* partial;
  int64_t parts, len;
  Out out;
};

// Both outputs' sums in one launch: elements [0, first.len) of first, then those of second.
__global__ void lora_sum_partials_kernel(PartialSum first, PartialSum second, float alpha) {
  pdl_prologue();
  GRID_STRIDE(i, first.len + second.len) {
    const bool in_first = i < first.len;
    const float* partial = in_first ? first.partial : second.partial;
    const int64_t parts = in_first ? first.parts : second.parts, len = in_first ? first.len : second.len;
    const int64_t k = in_first ? i : i - first.len;
    float sum = 0.0f;
    for (int64_t p = 0; p < parts; p++) sum = __fadd_rn(sum, partial[p * len + k]);
    store(in_first ? first.out : second.out, k, __fmul_rn(alpha, sum));
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
  cudaLaunchAttribute attrs[2];
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = 1;
  attrs[0].val.clusterDim.y = static_cast<unsigned>(splits);
  attrs[0].val.clusterDim.z = 1;
  cfg.attrs = attrs;
  cfg.numAttrs = 1 + programmatic_launch_attr(ctx, &attrs[1]);
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
      launch_kernel(ctx, lora_grad_a_kernel<TX, MT>, grid, kTileThreads, 0,
          reinterpret_cast<const bf16*>(du), reinterpret_cast<const TX*>(x), n, k, r, slice_tiles * kTile, x_fast,
          du_fast, masked != 0, m, out);
    });
  });
  LAUNCH_CHECK();
  if (slices > 1) {
    launch_kernel(ctx, lora_sum_slices_kernel, grid_for(r * k), 256, 0, out, slices, r * k, reinterpret_cast<float*>(da));
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
      launch_kernel(ctx, lora_dx_kernel<TD, KT>, grid, kTileThreads, 0, reinterpret_cast<TD*>(dx),
                                                                      reinterpret_cast<const bf16*>(du),
                                                                      reinterpret_cast<const bf16*>(a), n, k, r, a_fast,
                                                                      du_fast, pair_fast, masked != 0, m,
                                                                      accumulate != 0);
    });
  });
  LAUNCH_CHECK();
  return SPLINT_OK;
}


int splint_cuda_lora_up(splint_ctx* ctx, splint_dptr u, splint_dptr b, int64_t n, int64_t m, int32_t r, float alpha,
                        splint_dptr y, int32_t y_dtype) {
  OP("lora_up");
  CTX_CHECK(ctx);
  ARG_CHECK(is_grad_dtype(y_dtype), "y must be f32 or bf16");
  ARG_CHECK(n >= 0 && m >= 0 && r >= 1 && r <= 64, "bad sizes n=%lld m=%lld r=%d (r must be in 1..64)", (long long)n,
            (long long)m, r);
  if (n == 0 || m == 0) return SPLINT_OK;
  // Column splits from the shape alone: about kUpBlocks blocks, each split whole 32-column chunks.
  const int64_t row_blocks = (n + kUpRows - 1) / kUpRows, chunks = (m + kUpChunk - 1) / kUpChunk;
  ARG_CHECK(row_blocks <= 0x7fffffffLL, "n=%lld too large", (long long)n);
  const int64_t want = std::max<int64_t>(1, std::min<int64_t>(chunks, (kUpBlocks + row_blocks - 1) / row_blocks));
  const int64_t per = (chunks + want - 1) / want, splits = (chunks + per - 1) / per;
  const bool fast = r % 8 == 0 && aligned16(u) && aligned16(b);
  const bool vec_store = m % 8 == 0 && aligned16(y);
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits));
  vec::with_type(y_dtype, [&](auto* ty) {
    using TY = std::remove_pointer_t<decltype(ty)>;
    with_tiles<16>(r, [&](auto ks) {
      constexpr int KS = decltype(ks)::value;
      launch_kernel(ctx, lora_up_kernel<TY, KS>, grid, kUpWarps * 32, 0, reinterpret_cast<const bf16*>(u),
                                                                       reinterpret_cast<const bf16*>(b), n, m, r, per,
                                                                       fast, vec_store, alpha, reinterpret_cast<TY*>(y));
    });
  });
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_lora_up_backward(splint_ctx* ctx, splint_dptr dy, splint_dptr b, splint_dptr u, int64_t n, int64_t m,
                                 int32_t r, float alpha, splint_dptr du, int32_t du_dtype, splint_dptr db) {
  OP("lora_up_backward");
  CTX_CHECK(ctx);
  ARG_CHECK(is_grad_dtype(du_dtype), "du must be f32 or bf16");
  ARG_CHECK(n >= 0 && m >= 0 && r >= 1 && r <= 64, "bad sizes n=%lld m=%lld r=%d (r must be in 1..64)", (long long)n,
            (long long)m, r);
  if (n == 0 && m == 0) return SPLINT_OK;
  // Clusters of up to 8 consecutive column tiles, as few as that allows and of equal size (the grid
  // padded to whole clusters by at most one block a cluster; m = 0 still runs one, which writes
  // du = 0). Row slices as lora_grad_a's, for about kUbBlocks blocks. Both from the shape alone, so
  // the order of every sum, hence the result, is the same on every GPU.
  const int64_t col_tiles = std::max<int64_t>(1, (m + kTile - 1) / kTile);
  const int64_t cluster_cols = (col_tiles + kUbMaxCluster - 1) / kUbMaxCluster;
  const int64_t cluster = (col_tiles + cluster_cols - 1) / cluster_cols, col_blocks = cluster * cluster_cols;
  ARG_CHECK(col_blocks <= 0x7fffffffLL, "m=%lld too large", (long long)m);
  const int64_t row_tiles = (n + kTile - 1) / kTile;
  const int64_t want = std::max<int64_t>(1, std::min<int64_t>(row_tiles, (kUbBlocks + col_blocks - 1) / col_blocks));
  const int64_t slice_tiles = row_tiles == 0 ? 1 : (row_tiles + want - 1) / want;
  const int64_t slices = row_tiles == 0 ? 1 : (row_tiles + slice_tiles - 1) / slice_tiles;
  Scratch du_scratch, db_scratch;
  float* du_partial = nullptr;
  float* db_partial = nullptr;
  if (cluster_cols > 1 && n > 0) {
    STATUS_CHECK(scratch_alloc(ctx, du_scratch, cluster_cols * n * r * 4, splint_op));
    du_partial = static_cast<float*>(du_scratch.p);
  }
  if (slices > 1 && m > 0) {
    STATUS_CHECK(scratch_alloc(ctx, db_scratch, slices * m * r * 4, splint_op));
    db_partial = static_cast<float*>(db_scratch.p);
  }
  const bool dy_fast = m % 8 == 0 && aligned16(dy), rank_fast = r % 8 == 0 && aligned16(b) && aligned16(u);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(slices));
  cfg.blockDim = dim3(kTileThreads);
  cfg.stream = ctx->stream;
  cudaLaunchAttribute attrs[2];
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = static_cast<unsigned>(cluster);
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = 1;
  cfg.attrs = attrs;
  cfg.numAttrs = 1 + programmatic_launch_attr(ctx, &attrs[1]);
  cudaError_t err = cudaSuccess;
  with_tiles<16>(r, [&](auto mt) {
    constexpr int MT = decltype(mt)::value;
    err = cudaLaunchKernelEx(&cfg, lora_up_backward_kernel<MT>, reinterpret_cast<const bf16*>(dy),
                             reinterpret_cast<const bf16*>(b), reinterpret_cast<const bf16*>(u), n, m, r,
                             slice_tiles * kTile, dy_fast, rank_fast, alpha, du_partial, out_of(du, du_dtype), db_partial,
                             reinterpret_cast<float*>(db));
  });
  CUDA_CHECK(err);
  LAUNCH_CHECK();
  if (du_partial || db_partial) {
    const PartialSum du_sum{du_partial, cluster_cols, du_partial ? n * r : 0, out_of(du, du_dtype)};
    const PartialSum db_sum{db_partial, slices, db_partial ? m * r : 0, out_of(db, SPLINT_F32)};
    launch_kernel(ctx, lora_sum_partials_kernel, grid_for(du_sum.len + db_sum.len), 256, 0, du_sum, db_sum, alpha);
    LAUNCH_CHECK();
  }
  return SPLINT_OK;
}

}  // extern "C"
