// Casts and the ops that move elements: row gathers and scatters, element permutations, patchify.
// Layout ops copy raw elements (so bf16 stays bit-exact and fp8 keeps its scale); only casts,
// converting scatters and patchify do arithmetic.
#include <type_traits>

#include "common.cuh"
#include "vec.cuh"

namespace {

// f32 ↔ bf16 eight elements a thread (vec.cuh); the same rounding as cast_kernel.
template <typename TX, typename TY>
__global__ void cast_vec_kernel(const TX* x, TY* y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE8(i, n) {
    float v[8];
    vec::load8(x, i, v);
    vec::store8(y, i, v);
  }
}

// fp8 e4m3 → f32 / bf16 eight elements a thread: the same value as cast_kernel's load (fp8 · scale),
// stored with store8's rounding. The matmul widens every fp8 weight through this before each
// product, so it runs at memory speed rather than one byte a thread.
template <typename TY>
__global__ void cast_fp8_vec_kernel(const __nv_fp8_e4m3* x, float scale, TY* y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE8(i, n) {
    const uint2 raw = *reinterpret_cast<const uint2*>(x + i);
    const __nv_fp8_e4m3* e = reinterpret_cast<const __nv_fp8_e4m3*>(&raw);
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = float(e[j]) * scale;
    vec::store8(y, i, v);
  }
}

__global__ void cast_kernel(In x, Out y, float inv_out_scale, int64_t n) {
  pdl_prologue();
  GRID_STRIDE(i, n) { store(y, i, load(x, i) * inv_out_scale); }
}

__global__ void i32_to_float_kernel(const int32_t* x, Out y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE(i, n) { store(y, i, static_cast<float>(x[i])); }
}

__global__ void float_to_i32_kernel(In x, int32_t* y, int64_t n) {
  pdl_prologue();
  GRID_STRIDE(i, n) { y[i] = static_cast<int32_t>(truncf(load(x, i))); }
}

template <typename T>
__global__ void gather_rows_kernel(const T* x, int64_t rows, int64_t cols, const int32_t* index, int64_t m, T* y,
                                   int32_t* flags) {
  pdl_prologue();
  GRID_STRIDE(i, m * cols) {
    int64_t r = i / cols, c = i % cols;
    int32_t src = index[r];
    if (src >= 0 && src < rows) {
      y[i] = x[src * cols + c];
    } else {
      y[i] = T(0);
      if (c == 0) atomicOr(flags, SPLINT_FLAG_INDEX);
    }
  }
}

template <typename T>
__global__ void scatter_rows_raw_kernel(T* dst, int64_t rows, int64_t cols, const int32_t* index, int64_t m,
                                        const T* src, int32_t* flags) {
  pdl_prologue();
  GRID_STRIDE(i, m * cols) {
    int64_t r = i / cols, c = i % cols;
    int32_t d = index[r];
    if (d >= 0 && d < rows) dst[d * cols + c] = src[i];
    else if (c == 0) atomicOr(flags, SPLINT_FLAG_INDEX);
  }
}

__global__ void scatter_rows_kernel(Out dst, int64_t rows, int64_t cols, const int32_t* index, int64_t m, In src,
                                    int32_t* flags) {
  pdl_prologue();
  GRID_STRIDE(i, m * cols) {
    int64_t r = i / cols, c = i % cols;
    int32_t d = index[r];
    if (d >= 0 && d < rows) store(dst, d * cols + c, load(src, i));
    else if (c == 0) atomicOr(flags, SPLINT_FLAG_INDEX);
  }
}

__global__ void scatter_add_rows_kernel(Out dst, int64_t rows, int64_t cols, const int32_t* index, int64_t m, In src,
                                        int32_t* flags) {
  pdl_prologue();
  GRID_STRIDE(i, m * cols) {
    int64_t r = i / cols, c = i % cols;
    int32_t d = index[r];
    if (d < 0 || d >= rows) {
      if (c == 0) atomicOr(flags, SPLINT_FLAG_INDEX);
      continue;
    }
    float v = load(src, i);
    if (dst.dt == SPLINT_BF16) {
      atomicAdd(static_cast<__nv_bfloat16*>(dst.p) + d * cols + c, __float2bfloat16_rn(v));
    } else {
      atomicAdd(static_cast<float*>(dst.p) + d * cols + c, v);
    }
  }
}

template <typename T>
__global__ void permute_kernel(const T* x, const int32_t* index, int64_t n, T* y, bool gather, int32_t* flags) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    int32_t j = index[i];
    if (j < 0 || j >= n) {
      atomicOr(flags, SPLINT_FLAG_INDEX);
      continue;
    }
    if (gather) y[i] = x[j];
    else y[j] = x[i];
  }
}

// out[(gy·gw + gx), (ch·p + ky)·p + kx] = pixels[ch, gy·p + ky, gx·p + kx]
__global__ void patchify_kernel(In x, int64_t channels, int64_t h, int64_t w, int p, Out y) {
  pdl_prologue();
  const int64_t gw = w / p, row_len = channels * p * p;
  const int64_t n = (h / p) * gw * row_len;
  GRID_STRIDE(i, n) {
    int64_t patch = i / row_len, e = i % row_len;
    int64_t ch = e / (p * p), ky = (e / p) % p, kx = e % p;
    int64_t gy = patch / gw, gx = patch % gw;
    store(y, i, load(x, (ch * h + gy * p + ky) * w + gx * p + kx));
  }
}

}  // namespace

extern "C" {

int splint_cuda_cast(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, float x_scale, splint_dptr out,
                     int32_t out_dtype, float out_scale, int64_t n) {
  OP("cast");
  CTX_CHECK(ctx);
  ARG_CHECK(x_dtype >= 0 && x_dtype <= SPLINT_I32 && out_dtype >= 0 && out_dtype <= SPLINT_I32, "unknown dtype %d → %d",
            x_dtype, out_dtype);
  ARG_CHECK(out_scale > 0.0f, "output scale must be positive");
  if (n == 0) return SPLINT_OK;
  if (x_dtype == out_dtype && (x_dtype != SPLINT_FP8_E4M3 || x_scale == out_scale)) {
    CUDA_CHECK(cudaMemcpyAsync(reinterpret_cast<void*>(out), reinterpret_cast<const void*>(x), n * dtype_bytes(x_dtype),
                               cudaMemcpyDeviceToDevice, ctx->stream));
    return SPLINT_OK;
  }
  if (x_dtype == SPLINT_I32) {
    launch_kernel(ctx, i32_to_float_kernel, grid_for(n), 256, 0, reinterpret_cast<const int32_t*>(x),
                                                               out_of(out, out_dtype), n);
  } else if (out_dtype == SPLINT_I32) {
    launch_kernel(ctx, float_to_i32_kernel, grid_for(n), 256, 0, in_of(x, x_dtype, x_scale),
                                                               reinterpret_cast<int32_t*>(out), n);
  } else {
    bool launched = false;
    if (x_dtype == SPLINT_FP8_E4M3 && vec::fits(n, {x, out})) {
      launched = vec::with_type(out_dtype, [&](auto* ty) {
        launch_kernel(ctx, cast_fp8_vec_kernel<std::remove_pointer_t<decltype(ty)>>, vec::grid8(n), 256, 0,
            reinterpret_cast<const __nv_fp8_e4m3*>(x), x_scale, reinterpret_cast<std::remove_pointer_t<decltype(ty)>*>(out), n);
      });
    } else if (vec::fits(n, {x, out})) {
      vec::with_type(x_dtype, [&](auto* tx) {
        vec::with_type(out_dtype, [&](auto* ty) {
          launch_kernel(ctx, cast_vec_kernel<std::remove_pointer_t<decltype(tx)>, std::remove_pointer_t<decltype(ty)>>, vec::grid8(n), 256, 0,
              reinterpret_cast<const std::remove_pointer_t<decltype(tx)>*>(x),
              reinterpret_cast<std::remove_pointer_t<decltype(ty)>*>(out), n);
          launched = true;
        });
      });
    }
    if (!launched) {
      launch_kernel(ctx, cast_kernel, grid_for(n), 256, 0, in_of(x, x_dtype, x_scale), out_of(out, out_dtype),
                                                         out_dtype == SPLINT_FP8_E4M3 ? 1.0f / out_scale : 1.0f, n);
    }
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_gather_rows(splint_ctx* ctx, splint_dptr x, int32_t elem_bytes, int64_t rows, int64_t cols,
                            splint_dptr index, int64_t m, splint_dptr out) {
  OP("gather_rows");
  CTX_CHECK(ctx);
  ARG_CHECK(elem_bytes == 1 || elem_bytes == 2 || elem_bytes == 4, "element width %d", elem_bytes);
  if (m * cols == 0) return SPLINT_OK;
  const int32_t* idx = reinterpret_cast<const int32_t*>(index);
  unsigned grid = grid_for(m * cols);
  if (elem_bytes == 1) {
    launch_kernel(ctx, gather_rows_kernel<uint8_t>, grid, 256, 0, reinterpret_cast<const uint8_t*>(x), rows, cols, idx, m,
                                             reinterpret_cast<uint8_t*>(out), ctx->flags);
  } else if (elem_bytes == 2) {
    launch_kernel(ctx, gather_rows_kernel<uint16_t>, grid, 256, 0, reinterpret_cast<const uint16_t*>(x), rows, cols, idx, m,
                                             reinterpret_cast<uint16_t*>(out), ctx->flags);
  } else {
    launch_kernel(ctx, gather_rows_kernel<uint32_t>, grid, 256, 0, reinterpret_cast<const uint32_t*>(x), rows, cols, idx, m,
                                             reinterpret_cast<uint32_t*>(out), ctx->flags);
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_scatter_rows(splint_ctx* ctx, splint_dptr dst, int32_t dst_dtype, int64_t rows, int64_t cols,
                             splint_dptr index, int64_t m, splint_dptr src, int32_t src_dtype, float src_scale,
                             int32_t accumulate) {
  OP(accumulate ? "scatter_add_rows" : "scatter_rows");
  CTX_CHECK(ctx);
  if (m * cols == 0) return SPLINT_OK;
  const int32_t* idx = reinterpret_cast<const int32_t*>(index);
  unsigned grid = grid_for(m * cols);
  if (accumulate) {
    ARG_CHECK(is_grad_dtype(dst_dtype) && is_float_dtype(src_dtype), "accumulating scatter needs an f32 or bf16 "
              "destination and a float source (got %d ← %d)", dst_dtype, src_dtype);
    launch_kernel(ctx, scatter_add_rows_kernel, grid, 256, 0, out_of(dst, dst_dtype), rows, cols, idx, m,
                                                  in_of(src, src_dtype, src_scale), ctx->flags);
  } else if (dst_dtype == src_dtype && dst_dtype == SPLINT_I32) {
    launch_kernel(ctx, scatter_rows_raw_kernel<uint32_t>, grid, 256, 0, reinterpret_cast<uint32_t*>(dst), rows, cols, idx, m,
                                                  reinterpret_cast<const uint32_t*>(src), ctx->flags);
  } else if (dst_dtype == src_dtype && dst_dtype == SPLINT_FP8_E4M3) {
    // Raw fp8 bytes: the caller guarantees both tensors share one scale.
    launch_kernel(ctx, scatter_rows_raw_kernel<uint8_t>, grid, 256, 0, reinterpret_cast<uint8_t*>(dst), rows, cols, idx, m,
                                                  reinterpret_cast<const uint8_t*>(src), ctx->flags);
  } else if (dst_dtype == src_dtype && dst_dtype == SPLINT_BF16) {
    launch_kernel(ctx, scatter_rows_raw_kernel<uint16_t>, grid, 256, 0, reinterpret_cast<uint16_t*>(dst), rows, cols, idx, m,
                                                  reinterpret_cast<const uint16_t*>(src), ctx->flags);
  } else {
    ARG_CHECK(is_float_dtype(dst_dtype) && is_float_dtype(src_dtype), "cannot scatter dtype %d into %d", src_dtype,
              dst_dtype);
    launch_kernel(ctx, scatter_rows_kernel, grid, 256, 0, out_of(dst, dst_dtype), rows, cols, idx, m,
                                              in_of(src, src_dtype, src_scale), ctx->flags);
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_permute_elements(splint_ctx* ctx, splint_dptr x, int32_t elem_bytes, splint_dptr index, int64_t n,
                                 splint_dptr out, int32_t gather) {
  OP(gather ? "gather_elements" : "scatter_elements");
  CTX_CHECK(ctx);
  ARG_CHECK(elem_bytes == 1 || elem_bytes == 2 || elem_bytes == 4, "element width %d", elem_bytes);
  if (n == 0) return SPLINT_OK;
  const int32_t* idx = reinterpret_cast<const int32_t*>(index);
  unsigned grid = grid_for(n);
  if (elem_bytes == 1) {
    launch_kernel(ctx, permute_kernel<uint8_t>, grid, 256, 0, reinterpret_cast<const uint8_t*>(x), idx, n, reinterpret_cast<uint8_t*>(out),
                                         gather != 0, ctx->flags);
  } else if (elem_bytes == 2) {
    launch_kernel(ctx, permute_kernel<uint16_t>, grid, 256, 0, reinterpret_cast<const uint16_t*>(x), idx, n,
                                         reinterpret_cast<uint16_t*>(out), gather != 0, ctx->flags);
  } else {
    launch_kernel(ctx, permute_kernel<uint32_t>, grid, 256, 0, reinterpret_cast<const uint32_t*>(x), idx, n,
                                         reinterpret_cast<uint32_t*>(out), gather != 0, ctx->flags);
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_patchify(splint_ctx* ctx, splint_dptr pixels, int32_t x_dtype, float x_scale, int64_t c, int64_t h,
                         int64_t w, int32_t patch, splint_dptr out, int32_t out_dtype) {
  OP("patchify");
  CTX_CHECK(ctx);
  ARG_CHECK(patch > 0 && h % patch == 0 && w % patch == 0, "image %lldx%lld is not a multiple of patch %d",
            (long long)h, (long long)w, patch);
  ARG_CHECK(is_float_dtype(x_dtype) && is_float_dtype(out_dtype), "bad dtypes %d → %d", x_dtype, out_dtype);
  int64_t n = c * h * w;
  if (n == 0) return SPLINT_OK;
  launch_kernel(ctx, patchify_kernel, grid_for(n), 256, 0, in_of(pixels, x_dtype, x_scale), c, h, w, patch,
                                                         out_of(out, out_dtype));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // extern "C"
