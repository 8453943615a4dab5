// Warp-level tensor-core helpers shared by the flash-attention and LoRA kernels: bf16 packing,
// ldmatrix loads from shared memory and the m16n8k16 bf16 mma with f32 accumulation.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

// Two floats as one bf16x2 register, `lo` (the lower column or k) in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const __nv_bfloat16* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const __nv_bfloat16* p) {
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

// The A fragment of the 16×16 block at (m0, k0) of a tile stored [m][k] (row-major).
__device__ __forceinline__ void load_a_mk(uint32_t (&a)[4], const __nv_bfloat16* tile, int stride, int m0, int k0) {
  const int lane = threadIdx.x & 31;
  ldsm_x4(a, tile + (m0 + (lane & 15)) * stride + k0 + (lane >> 4) * 8);
}
