// RMSNorm (forward next to backward) and rotate-half RoPE.
#include <type_traits>

#include "common.cuh"
#include "reduce.cuh"
#include "vec.cuh"

namespace {

constexpr int kNormThreads = 256;
// Rows per block in the dweight pass: partial sums [ceil(rows / kRowsPerChunk), cols] then one
// column-wise sum, so the result does not depend on scheduling (no atomics).
constexpr int kRowsPerChunk = 64;

// One block per row. Sum of squares in f64 as the CPU backend, then
// rstd = f32(1/sqrt(f32(ss/c) + eps)) and y = w · f32(x·rstd) as HF's MistralRMSNorm.
__global__ void rms_norm_kernel(In x, In w, int64_t cols, double eps, Out y, float* rstd) {
  pdl_prologue();
  __shared__ double shared[32];
  const int64_t row = blockIdx.x, base = row * cols;
  double ss = 0.0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float v = load(x, base + j);
    ss += static_cast<double>(v) * v;
  }
  ss = block_sum_f64(ss, shared);
  const float inv = static_cast<float>(1.0 / sqrt(static_cast<double>(static_cast<float>(ss / cols)) + eps));
  if (threadIdx.x == 0) rstd[row] = inv;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) store(y, base + j, load(w, j) * (load(x, base + j) * inv));
}

// dx = rstd·(g − x̂·mean(g·x̂)) with g = w·dy, x̂ = x·rstd; one block per row.
// accumulate: dx += the gradient (dx read through `prior`, the same tensor) instead of dx = it.
__global__ void rms_norm_dx_kernel(In x, In w, const float* rstd, In dy, int64_t cols, Out dx, In prior, bool accumulate) {
  pdl_prologue();
  __shared__ double shared[32];
  const int64_t row = blockIdx.x, base = row * cols;
  const float inv = rstd[row];
  double dot = 0.0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float xhat = load(x, base + j) * inv;
    dot += static_cast<double>(load(w, j) * load(dy, base + j)) * xhat;
  }
  const float mean_dot = static_cast<float>(block_sum_f64(dot, shared) / cols);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float xv = load(x, base + j);
    const float g = inv * (load(w, j) * load(dy, base + j) - xv * inv * mean_dot);
    store(dx, base + j, accumulate ? load(prior, base + j) + g : g);
  }
}

// The two kernels above, 8 columns a thread at a time through 16-byte accesses: the same f64 sums
// (in another order) and the same f32 expressions. Taken when every pointer is 16-byte aligned, cols
// is a multiple of 8 and no operand is fp8; the generic kernels read each element through a dtype
// switch, which made RMSNorm 4.7 % of the 14B step (2026-12-06 profile) at ~3× its memory time.
template <typename TX, typename TW, typename TY>
__global__ void rms_norm_vec_kernel(const TX* x, const TW* w, int64_t cols, double eps, TY* y, float* rstd) {
  pdl_prologue();
  __shared__ double shared[32];
  const int64_t base = blockIdx.x * cols;
  double ss = 0.0;
  for (int64_t j = 8 * threadIdx.x; j < cols; j += 8 * blockDim.x) {
    float v[8];
    vec::load8(x, base + j, v);
#pragma unroll
    for (int e = 0; e < 8; e++) ss += static_cast<double>(v[e]) * v[e];
  }
  ss = block_sum_f64(ss, shared);
  const float inv = static_cast<float>(1.0 / sqrt(static_cast<double>(static_cast<float>(ss / cols)) + eps));
  if (threadIdx.x == 0) rstd[blockIdx.x] = inv;
  for (int64_t j = 8 * threadIdx.x; j < cols; j += 8 * blockDim.x) {
    float v[8], wv[8], out[8];
    vec::load8(x, base + j, v);
    vec::load8(w, j, wv);
#pragma unroll
    for (int e = 0; e < 8; e++) out[e] = wv[e] * (v[e] * inv);
    vec::store8(y, base + j, out);
  }
}

template <typename TX, typename TW, typename TD, typename TO>
__global__ void rms_norm_dx_vec_kernel(const TX* x, const TW* w, const float* rstd, const TD* dy, int64_t cols, TO* dx,
                                       bool accumulate) {
  pdl_prologue();
  __shared__ double shared[32];
  const int64_t base = blockIdx.x * cols;
  const float inv = rstd[blockIdx.x];
  double dot = 0.0;
  for (int64_t j = 8 * threadIdx.x; j < cols; j += 8 * blockDim.x) {
    float xv[8], wv[8], d[8];
    vec::load8(x, base + j, xv);
    vec::load8(w, j, wv);
    vec::load8(dy, base + j, d);
#pragma unroll
    for (int e = 0; e < 8; e++) dot += static_cast<double>(wv[e] * d[e]) * (xv[e] * inv);
  }
  const float mean_dot = static_cast<float>(block_sum_f64(dot, shared) / cols);
  for (int64_t j = 8 * threadIdx.x; j < cols; j += 8 * blockDim.x) {
    float xv[8], wv[8], d[8], out[8];
    vec::load8(x, base + j, xv);
    vec::load8(w, j, wv);
    vec::load8(dy, base + j, d);
    if (accumulate) vec::load8(dx, base + j, out);
#pragma unroll
    for (int e = 0; e < 8; e++) {
      const float g = inv * (wv[e] * d[e] - xv[e] * inv * mean_dot);
      out[e] = accumulate ? out[e] + g : g;
    }
    vec::store8(dx, base + j, out);
  }
}

// Threads for a row of `cols` in the vectorised kernels: one 8-column group each, whole warps,
// at most kNormThreads (a 1024-wide vision row takes 128, a 5120-wide decoder row 256).
unsigned vec_norm_threads(int64_t cols) {
  const int64_t groups = (cols / 8 + 31) / 32 * 32;
  return (unsigned)(groups < kNormThreads ? groups : kNormThreads);
}

template <typename T>
using elem_t = std::remove_pointer_t<T>;

// partial[chunk, j] = Σ over the chunk's rows of dy·x̂
__global__ void rms_norm_dw_partial_kernel(In x, const float* rstd, In dy, int64_t rows, int64_t cols, double* partial) {
  pdl_prologue();
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const int64_t r0 = blockIdx.y * (int64_t)kRowsPerChunk;
  const int64_t r1 = r0 + kRowsPerChunk < rows ? r0 + kRowsPerChunk : rows;
  double acc = 0.0;
  for (int64_t r = r0; r < r1; r++) acc += static_cast<double>(load(dy, r * cols + j)) * (load(x, r * cols + j) * rstd[r]);
  partial[blockIdx.y * cols + j] = acc;
}

__global__ void column_sum_kernel(const double* partial, int64_t chunks, int64_t cols, Out out) {
  pdl_prologue();
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= cols) return;
  double acc = 0.0;
  for (int64_t c = 0; c < chunks; c++) acc += partial[c * cols + j];
  store(out, j, static_cast<float>(acc));
}

// One thread per (row, head, i < dim/2): y[i] = x[i]·cos − x[i+h]·sin, y[i+h] = x[i+h]·cos + x[i]·sin.
__global__ void rope_kernel(In x, In cos_t, In sin_t, int64_t rows, int64_t heads, int64_t dim, float sign, Out y) {
  pdl_prologue();
  const int64_t half = dim / 2;
  GRID_STRIDE(e, rows * heads * half) {
    int64_t i = e % half, rh = e / half, row = rh / heads;
    int64_t o = rh * dim;
    float x1 = load(x, o + i), x2 = load(x, o + i + half);
    float c = load(cos_t, row * half + i), s = sign * load(sin_t, row * half + i);
    store(y, o + i, x1 * c - x2 * s);
    store(y, o + i + half, x2 * c + x1 * s);
  }
}

// rope_kernel's expressions for 8 consecutive i of one (row, head) a thread (half % 8 == 0).
template <typename TX, typename TY>
__global__ void rope_vec_kernel(const TX* x, const float* cos_t, const float* sin_t, int64_t rows, int64_t heads,
                                int64_t dim, float sign, TY* y) {
  pdl_prologue();
  const int64_t half = dim / 2;
  GRID_STRIDE8(e, rows * heads * half) {
    const int64_t i = e % half, rh = e / half, row = rh / heads, o = rh * dim;
    float x1[8], x2[8], c[8], sn[8], y1[8], y2[8];
    vec::load8(x, o + i, x1);
    vec::load8(x, o + i + half, x2);
    vec::load8(cos_t, row * half + i, c);
    vec::load8(sin_t, row * half + i, sn);
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const float s = sign * sn[j];
      y1[j] = x1[j] * c[j] - x2[j] * s;
      y2[j] = x2[j] * c[j] + x1[j] * s;
    }
    vec::store8(y, o + i, y1);
    vec::store8(y, o + i + half, y2);
  }
}

}  // namespace

extern "C" {

int splint_cuda_rms_norm(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr weight, int32_t w_dtype,
                         float w_scale, int64_t rows, int64_t cols, double eps, splint_dptr y, int32_t y_dtype,
                         splint_dptr rstd) {
  OP("rms_norm");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(x_dtype) && is_float_dtype(w_dtype) && is_grad_dtype(y_dtype), "bad dtypes");
  ARG_CHECK(rows <= 0x7fffffffLL, "too many rows");
  if (rows == 0 || cols == 0) return SPLINT_OK;
  bool launched = false;
  if (w_scale == 1.0f && vec::fits(cols, {x, weight, y})) {
    vec::with_type(x_dtype, [&](auto* tx) {
      vec::with_type(w_dtype, [&](auto* tw) {
        vec::with_type(y_dtype, [&](auto* ty) {
          launch_kernel(ctx, rms_norm_vec_kernel<elem_t<decltype(tx)>, elem_t<decltype(tw)>, elem_t<decltype(ty)>>, (unsigned)rows, vec_norm_threads(cols), 0,
              reinterpret_cast<const elem_t<decltype(tx)>*>(x), reinterpret_cast<const elem_t<decltype(tw)>*>(weight),
              cols, eps, reinterpret_cast<elem_t<decltype(ty)>*>(y), reinterpret_cast<float*>(rstd));
          launched = true;
        });
      });
    });
  }
  if (!launched) {
    launch_kernel(ctx, rms_norm_kernel, (unsigned)rows, kNormThreads, 0,
        in_of(x, x_dtype), in_of(weight, w_dtype, w_scale), cols, eps, out_of(y, y_dtype), reinterpret_cast<float*>(rstd));
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_rms_norm_backward(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr weight, int32_t w_dtype,
                                  float w_scale, splint_dptr rstd, splint_dptr dy, int32_t dy_dtype, int64_t rows,
                                  int64_t cols, splint_dptr dx, int32_t dx_dtype, int32_t accumulate,
                                  splint_dptr dweight, int32_t dw_dtype) {
  OP("rms_norm_backward");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(x_dtype) && is_float_dtype(w_dtype) && is_float_dtype(dy_dtype) &&
                is_grad_dtype(dx_dtype) && is_grad_dtype(dw_dtype),
            "bad dtypes");
  ARG_CHECK(rows <= 0x7fffffffLL, "too many rows");
  if (cols == 0) return SPLINT_OK;
  if (rows == 0) {
    if (dweight != 0) CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(dweight), 0, cols * dtype_bytes(dw_dtype), ctx->stream));
    return SPLINT_OK;
  }
  const In xi = in_of(x, x_dtype), dyi = in_of(dy, dy_dtype);
  const float* r = reinterpret_cast<const float*>(rstd);
  bool launched = false;
  if (w_scale == 1.0f && vec::fits(cols, {x, weight, dy, dx})) {
    vec::with_type(x_dtype, [&](auto* tx) {
      vec::with_type(w_dtype, [&](auto* tw) {
        vec::with_type(dy_dtype, [&](auto* td) {
          vec::with_type(dx_dtype, [&](auto* to) {
            launch_kernel(ctx, rms_norm_dx_vec_kernel<elem_t<decltype(tx)>, elem_t<decltype(tw)>, elem_t<decltype(td)>, elem_t<decltype(to)>>, (unsigned)rows, vec_norm_threads(cols), 0,
                reinterpret_cast<const elem_t<decltype(tx)>*>(x), reinterpret_cast<const elem_t<decltype(tw)>*>(weight), r,
                reinterpret_cast<const elem_t<decltype(td)>*>(dy), cols, reinterpret_cast<elem_t<decltype(to)>*>(dx),
                accumulate != 0);
            launched = true;
          });
        });
      });
    });
  }
  if (!launched) {
    launch_kernel(ctx, rms_norm_dx_kernel, (unsigned)rows, kNormThreads, 0,
        xi, in_of(weight, w_dtype, w_scale), r, dyi, cols, out_of(dx, dx_dtype), in_of(dx, dx_dtype), accumulate != 0);
  }
  LAUNCH_CHECK();
  if (dweight == 0) return SPLINT_OK;  // a frozen weight: no gradient asked for
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  ARG_CHECK(chunks <= 65535, "too many rows for the dweight pass");
  Scratch partial;
  STATUS_CHECK(scratch_alloc(ctx, partial, chunks * cols * (int64_t)sizeof(double), splint_op));
  dim3 grid((unsigned)((cols + 255) / 256), (unsigned)chunks);
  launch_kernel(ctx, rms_norm_dw_partial_kernel, grid, 256, 0, xi, r, dyi, rows, cols, static_cast<double*>(partial.p));
  LAUNCH_CHECK();
  launch_kernel(ctx, column_sum_kernel, (unsigned)((cols + 255) / 256), 256, 0, static_cast<const double*>(partial.p),
                                                                             chunks, cols, out_of(dweight, dw_dtype));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_rope(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, splint_dptr cos_t, splint_dptr sin_t,
                     int64_t rows, int64_t heads, int64_t dim, int32_t inverse, splint_dptr out, int32_t out_dtype) {
  OP("rope");
  CTX_CHECK(ctx);
  ARG_CHECK(dim % 2 == 0, "head dimension %lld is odd", (long long)dim);
  ARG_CHECK(is_float_dtype(x_dtype) && is_grad_dtype(out_dtype), "bad dtypes");
  const int64_t n = rows * heads * (dim / 2);
  if (n == 0) return SPLINT_OK;
  const float sign = inverse ? -1.0f : 1.0f;
  bool launched = false;
  if ((dim / 2) % 8 == 0 && vec::fits(n, {x, cos_t, sin_t, out})) {
    vec::with_type(x_dtype, [&](auto* tx) {
      vec::with_type(out_dtype, [&](auto* ty) {
        launch_kernel(ctx, rope_vec_kernel<elem_t<decltype(tx)>, elem_t<decltype(ty)>>, vec::grid8(n), 256, 0,
            reinterpret_cast<const elem_t<decltype(tx)>*>(x), reinterpret_cast<const float*>(cos_t),
            reinterpret_cast<const float*>(sin_t), rows, heads, dim, sign, reinterpret_cast<elem_t<decltype(ty)>*>(out));
        launched = true;
      });
    });
  }
  if (!launched) {
    launch_kernel(ctx, rope_kernel, grid_for(n), 256, 0, in_of(x, x_dtype), in_of(cos_t, SPLINT_F32), in_of(sin_t, SPLINT_F32),
                                                       rows, heads, dim, sign, out_of(out, out_dtype));
  }
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // extern "C"
