// Cross-entropy (forward and gradient in one pass), Σx² for gradient norms, and AdamW.
// Sums that the CPU backend takes in f64 are taken in f64 here too, in a fixed order.
#include "common.cuh"
#include "reduce.cuh"
#include "adamw.cuh"

namespace {

constexpr int kThreads = 256;

// One block per row: lse = max + log Σ exp(x − max); row_loss = lse − x[label] (0 when ignored).
__global__ void cross_entropy_kernel(In logits, int64_t vocab, const int32_t* labels, int32_t ignore_index,
                                     double* row_loss, Out dlogits, bool want_grad, float grad_scale, int32_t* flags) {
  pdl_prologue();
  __shared__ float shared[32];
  __shared__ double shared_d[32];
  const int64_t row = blockIdx.x, base = row * vocab;
  const int32_t label = labels[row];
  const bool ignored = label == ignore_index;
  const bool bad = !ignored && (label < 0 || label >= vocab);
  if (ignored || bad) {
    if (threadIdx.x == 0) {
      row_loss[row] = 0.0;
      if (bad) atomicOr(flags, SPLINT_FLAG_LABEL);
    }
    if (want_grad)
      for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) store(dlogits, base + j, 0.0f);
    return;
  }
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, load(logits, base + j));
  mx = block_max(mx, shared);
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) sum += exp(static_cast<double>(load(logits, base + j) - mx));
  sum = block_sum_f64(sum, shared_d);
  const double lse = mx + log(sum);
  if (threadIdx.x == 0) row_loss[row] = lse - load(logits, base + label);
  if (want_grad) {
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
      double p = exp(static_cast<double>(load(logits, base + j)) - lse);
      store(dlogits, base + j, static_cast<float>(grad_scale * (p - (j == label ? 1.0 : 0.0))));
    }
  }
}

// One block: out[0] = f32(Σ values), summed in f64 in a fixed order.
__global__ void sum_f64_kernel(const double* values, int64_t n, float* out) {
  pdl_prologue();
  __shared__ double shared[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += values[i];
  acc = block_sum_f64(acc, shared);
  if (threadIdx.x == 0) out[0] = static_cast<float>(acc);
}

// partial[block] = Σ over the block's grid-stride share of x².
__global__ void sum_squares_partial_kernel(In x, int64_t n, double* partial) {
  pdl_prologue();
  __shared__ double shared[32];
  double acc = 0.0;
  GRID_STRIDE(i, n) {
    float v = load(x, i);
    acc += static_cast<double>(v) * v;
  }
  acc = block_sum_f64(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, AdamwScalars h) {
  pdl_prologue();
  GRID_STRIDE(i, n) {
    float p = param[i], mi = m[i], vi = v[i];
    adamw_update(p, grad[i], mi, vi, h);
    m[i] = mi;
    v[i] = vi;
    param[i] = p;
  }
}

}  // namespace

extern "C" {

int splint_cuda_cross_entropy(splint_ctx* ctx, splint_dptr logits, int32_t logits_dtype, int64_t rows, int64_t vocab,
                              splint_dptr labels, int32_t ignore_index, splint_dptr loss, splint_dptr dlogits,
                              int32_t dlogits_dtype, float grad_scale) {
  OP("cross_entropy");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(logits_dtype), "logits dtype %d is not a float type", logits_dtype);
  ARG_CHECK(dlogits == 0 || is_grad_dtype(dlogits_dtype), "dlogits must be f32 or bf16");
  ARG_CHECK(rows <= 0x7fffffffLL && vocab > 0, "bad shape [%lld, %lld]", (long long)rows, (long long)vocab);
  if (rows == 0) {
    CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(loss), 0, sizeof(float), ctx->stream));
    return SPLINT_OK;
  }
  Scratch row_loss;
  STATUS_CHECK(scratch_alloc(ctx, row_loss, rows * (int64_t)sizeof(double), splint_op));
  launch_kernel(ctx, cross_entropy_kernel, (unsigned)rows, kThreads, 0,
      in_of(logits, logits_dtype), vocab, reinterpret_cast<const int32_t*>(labels), ignore_index,
      static_cast<double*>(row_loss.p), out_of(dlogits, dlogits_dtype), dlogits != 0, grad_scale, ctx->flags);
  LAUNCH_CHECK();
  launch_kernel(ctx, sum_f64_kernel, 1, 1024, 0, static_cast<const double*>(row_loss.p), rows,
                                              reinterpret_cast<float*>(loss));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_sum_squares(splint_ctx* ctx, splint_dptr x, int32_t x_dtype, float x_scale, int64_t n,
                            splint_dptr out) {
  OP("sum_squares");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(x_dtype), "dtype %d is not a float type", x_dtype);
  if (n == 0) {
    CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(out), 0, sizeof(float), ctx->stream));
    return SPLINT_OK;
  }
  unsigned blocks = grid_for(n, kThreads);
  if (blocks > 1024) blocks = 1024;
  Scratch partial;
  STATUS_CHECK(scratch_alloc(ctx, partial, blocks * (int64_t)sizeof(double), splint_op));
  launch_kernel(ctx, sum_squares_partial_kernel, blocks, kThreads, 0, in_of(x, x_dtype, x_scale), n,
                                                                   static_cast<double*>(partial.p));
  LAUNCH_CHECK();
  launch_kernel(ctx, sum_f64_kernel, 1, 1024, 0, static_cast<const double*>(partial.p), blocks,
                                              reinterpret_cast<float*>(out));
  LAUNCH_CHECK();
  return SPLINT_OK;
}

int splint_cuda_adamw(splint_ctx* ctx, splint_dptr param, splint_dptr grad, splint_dptr m, splint_dptr v, int64_t n,
                      float decay, float one_minus_beta1, float beta2, float one_minus_beta2, float neg_step_size,
                      float bias_correction2_sqrt, float eps) {
  OP("adamw");
  CTX_CHECK(ctx);
  if (n == 0) return SPLINT_OK;
  const AdamwScalars h{decay, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps};
  launch_kernel(ctx, adamw_kernel, grid_for(n), 256, 0, reinterpret_cast<float*>(param),
                                                      reinterpret_cast<const float*>(grad), reinterpret_cast<float*>(m),
                                                      reinterpret_cast<float*>(v), n, h);
  LAUNCH_CHECK();
  return SPLINT_OK;
}

}  // extern "C"
