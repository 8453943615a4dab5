// RMSNorm (forward next to backward) and rotate-half RoPE.
#include "common.cuh"
#include "reduce.cuh"

namespace {

constexpr int kNormThreads = 256;
// Rows per block in the dweight pass: partial sums [ceil(rows / kRowsPerChunk), cols] then one
// column-wise sum, so the result does not depend on scheduling (no atomics).
constexpr int kRowsPerChunk = 64;

// One block per row. Sum of squares in f64 as the CPU backend, then
// rstd = f32(1/sqrt(f32(ss/c) + eps)) and y = w · f32(x·rstd) as HF's MistralRMSNorm.
__global__ void rms_norm_kernel(In x, In w, int64_t cols, double eps, Out y, float* rstd) {
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

// partial[chunk, j] = Σ over the chunk's rows of dy·x̂
__global__ void rms_norm_dw_partial_kernel(In x, const float* rstd, In dy, int64_t rows, int64_t cols, double* partial) {
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= cols) return;
  const int64_t r0 = blockIdx.y * (int64_t)kRowsPerChunk;
  const int64_t r1 = r0 + kRowsPerChunk < rows ? r0 + kRowsPerChunk : rows;
  double acc = 0.0;
  for (int64_t r = r0; r < r1; r++) acc += static_cast<double>(load(dy, r * cols + j)) * (load(x, r * cols + j) * rstd[r]);
  partial[blockIdx.y * cols + j] = acc;
}

__global__ void column_sum_kernel(const double* partial, int64_t chunks, int64_t cols, Out out) {
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= cols) return;
  double acc = 0.0;
  for (int64_t c = 0; c < chunks; c++) acc += partial[c * cols + j];
  store(out, j, static_cast<float>(acc));
}

// One thread per (row, head, i < dim/2): y[i] = x[i]·cos − x[i+h]·sin, y[i+h] = x[i+h]·cos + x[i]·sin.
__global__ void rope_kernel(In x, In cos_t, In sin_t, int64_t rows, int64_t heads, int64_t dim, float sign, Out y) {
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
  rms_norm_kernel<<<(unsigned)rows, kNormThreads, 0, ctx->stream>>>(in_of(x, x_dtype), in_of(weight, w_dtype, w_scale),
                                                                     cols, eps, out_of(y, y_dtype),
                                                                     reinterpret_cast<float*>(rstd));
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
  rms_norm_dx_kernel<<<(unsigned)rows, kNormThreads, 0, ctx->stream>>>(
      xi, in_of(weight, w_dtype, w_scale), r, dyi, cols, out_of(dx, dx_dtype), in_of(dx, dx_dtype), accumulate != 0);
  LAUNCH_CHECK();
  if (dweight == 0) return SPLINT_OK;  // a frozen weight: no gradient asked for
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  ARG_CHECK(chunks <= 65535, "too many rows for the dweight pass");
  Scratch partial;
  STATUS_CHECK(scratch_alloc(ctx, partial, chunks * cols * (int64_t)sizeof(double), splint_op));
  dim3 grid((unsigned)((cols + 255) / 256), (unsigned)chunks);
  rms_norm_dw_partial_kernel<<<grid, 256, 0, ctx->stream>>>(xi, r, dyi, rows, cols, static_cast<double*>(partial.p));
  LAUNCH_CHECK();
  column_sum_kernel<<<(unsigned)((cols + 255) / 256), 256, 0, ctx->stream>>>(static_cast<const double*>(partial.p),
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
  rope_kernel<<<grid_for(n), 256, 0, ctx->stream>>>(in_of(x, x_dtype), in_of(cos_t, SPLINT_F32),
                                                     in_of(sin_t, SPLINT_F32), rows, heads, dim,
                                                     inverse ? -1.0f : 1.0f, out_of(out, out_dtype));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // extern "C"
