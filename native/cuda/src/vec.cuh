// Vectorised element access for the memory-bound kernels: 8 consecutive elements through one
// 16-byte access (bf16) or two (f32), with the element type a template parameter instead of the
// per-element dtype switch of load/store. Each fast kernel computes exactly what its generic
// twin computes (same expressions, same rounding), so results are bit-identical; the generic
// kernels stay for fp8 operands, unaligned pointers and sizes that are not a multiple of 8.
#pragma once

#include "common.cuh"

namespace vec {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ void load8(const float* p, int64_t i, float (&v)[8]) {
  const float4 lo = *reinterpret_cast<const float4*>(p + i), hi = *reinterpret_cast<const float4*>(p + i + 4);
  v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w, v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
}

__device__ __forceinline__ void load8(const bf16* p, int64_t i, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p + i);
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int j = 0; j < 4; j++) {
    const float2 f = __bfloat1622float2(pairs[j]);
    v[2 * j] = f.x, v[2 * j + 1] = f.y;
  }
}

__device__ __forceinline__ void store8(float* p, int64_t i, const float (&v)[8]) {
  *reinterpret_cast<float4*>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
  *reinterpret_cast<float4*>(p + i + 4) = make_float4(v[4], v[5], v[6], v[7]);
}

// Round to nearest even, as store() does.
__device__ __forceinline__ void store8(bf16* p, int64_t i, const float (&v)[8]) {
  uint4 raw;
  __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int j = 0; j < 4; j++) pairs[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
  *reinterpret_cast<uint4*>(p + i) = raw;
}

// True when n elements at every given address can be walked 8 at a time with 16-byte accesses.
inline bool fits(int64_t n, std::initializer_list<uint64_t> addresses) {
  if (n % 8 != 0) return false;
  for (uint64_t a : addresses)
    if (a % 16 != 0) return false;
  return true;
}

// Calls f with a null pointer of the C++ type of an f32 or bf16 dtype; false for any other dtype.
template <typename F>
bool with_type(int32_t dt, F&& f) {
  if (dt == SPLINT_F32) {
    f(static_cast<float*>(nullptr));
    return true;
  }
  if (dt == SPLINT_BF16) {
    f(static_cast<bf16*>(nullptr));
    return true;
  }
  return false;
}

inline unsigned grid8(int64_t n, int threads = 256) { return grid_for(n / 8, threads); }

}  // namespace vec

// Grid-stride loop over groups of 8 elements: i is the first element of the group.
#define GRID_STRIDE8(i, n) \
  for (int64_t i = 8 * (blockIdx.x * (int64_t)blockDim.x + threadIdx.x); i < (n); i += 8 * (int64_t)gridDim.x * blockDim.x)
