// Matrix products through cuBLASLt (f32 accumulation), with a plain tiled kernel for the shapes
// cuBLASLt finds no algorithm for.
//
// Row-major to cuBLAS's column-major: a row-major [r, c] matrix is a column-major [c, r] one, so
// out = op(a)·op(b) (row-major [m, n]) is computed as outᵀ = op(b)ᵀ·op(a)ᵀ (column-major [n, m]):
// cuBLAS's "A" is our b and its "B" is our a, with m and n swapped.
#include <cublasLt.h>

#include <map>
#include <tuple>

#include "common.cuh"

namespace {

// What a product's descriptors and algorithm depend on: dtypes, transposes, sizes and the
// operands' alignments (the heuristic may pick vectorised kernels only for aligned pointers).
using PlanKey = std::tuple<int32_t, int32_t, int32_t, int32_t, int64_t, int64_t, int64_t, uint32_t, uint32_t, uint32_t>;

// A cached plan: created once per key, so a training step (the same shapes over and over) never
// rebuilds descriptors or asks the heuristic again. `fallback`: cuBLASLt has no algorithm.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo = {};
  bool fallback = false;
};

void destroy_plan(Plan& p) {
  if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  if (p.la) cublasLtMatrixLayoutDestroy(p.la);
  if (p.lb) cublasLtMatrixLayoutDestroy(p.lb);
  if (p.lc) cublasLtMatrixLayoutDestroy(p.lc);
  p = Plan{};
}

// Bounded so that a long run over many shapes (generation with a growing cache) cannot grow it
// without limit; past the bound the cache starts over.
constexpr size_t kMaxPlans = 4096;

}  // namespace

struct BlasState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::map<PlanKey, Plan> plans;
};

namespace {

constexpr size_t kWorkspaceBytes = 32ull << 20;

const char* blas_status_name(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}

#define BLAS_CHECK(call)                                                                                    \
  do {                                                                                                      \
    cublasStatus_t st_ = (call);                                                                            \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                       \
      return set_error(st_ == CUBLAS_STATUS_ALLOC_FAILED ? SPLINT_OUT_OF_MEMORY : SPLINT_CUBLAS_ERROR, __FILE__, \
                       __LINE__, splint_op, "%s (%d) in %s", blas_status_name(st_), (int)st_, #call);      \
  } while (0)

// Owner that destroys the heuristic preference on every return path.
struct Preference {
  cublasLtMatmulPreference_t d = nullptr;
  ~Preference() {
    if (d) cublasLtMatmulPreferenceDestroy(d);
  }
};

uint32_t alignment_of(const void* p) {
  uint64_t a = reinterpret_cast<uint64_t>(p);
  uint32_t align = 256;
  while (align > 1 && (a % align) != 0) align >>= 1;
  return align;
}

int ensure_blas(splint_ctx* ctx) {
  OP("matmul");
  if (ctx->blas) return SPLINT_OK;
  BlasState* blas = new BlasState();
  cublasStatus_t st = cublasLtCreate(&blas->handle);
  if (st != CUBLAS_STATUS_SUCCESS) {
    delete blas;
    BLAS_CHECK(st);
  }
  // Allocated once with the context, outside the caching allocator's statistics.
  cudaError_t err = cudaMalloc(&blas->workspace, kWorkspaceBytes);
  if (err != cudaSuccess) {
    cublasLtDestroy(blas->handle);
    delete blas;
    CUDA_CHECK(err);
  }
  blas->workspace_bytes = kWorkspaceBytes;
  ctx->blas = blas;
  return SPLINT_OK;
}

// Fallback: out[i, j] = alpha · Σ_k a(i, k)·b(k, j) + beta · out[i, j], 16×16 tiles, f32 accumulation.
constexpr int kT = 16;
__global__ void gemm_fallback_kernel(In a, bool trans_a, In b, bool trans_b, Out out, int64_t m, int64_t n, int64_t k,
                                     float alpha, float beta) {
  pdl_prologue();
  __shared__ float as[kT][kT + 1];
  __shared__ float bs[kT][kT + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i = blockIdx.y * (int64_t)kT + ty, j = blockIdx.x * (int64_t)kT + tx;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < k; k0 += kT) {
    const int64_t ka = k0 + tx, kb = k0 + ty;
    as[ty][tx] = (i < m && ka < k) ? load(a, trans_a ? ka * m + i : i * k + ka) : 0.0f;
    bs[ty][tx] = (j < n && kb < k) ? load(b, trans_b ? j * k + kb : kb * n + j) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kT; kk++) acc += as[ty][kk] * bs[kk][tx];
    __syncthreads();
  }
  if (i < m && j < n) {
    float v = alpha * acc;
    if (beta != 0.0f) {
      In prev{out.p, out.dt, 1.0f};
      v += beta * load(prev, i * n + j);
    }
    store(out, i * n + j, v);
  }
}

int gemm_fallback(splint_ctx* ctx, In a, bool trans_a, In b, bool trans_b, Out out, int64_t m, int64_t n, int64_t k,
                  float alpha, float beta) {
  OP("matmul");
  ARG_CHECK((n + kT - 1) / kT <= 0x7fffffffLL && (m + kT - 1) / kT <= 65535, "matrix too large for the fallback");
  dim3 grid((unsigned)((n + kT - 1) / kT), (unsigned)((m + kT - 1) / kT));
  launch_kernel(ctx, gemm_fallback_kernel, grid, dim3(kT, kT), 0, a, trans_a, b, trans_b, out, m, n, k, alpha, beta);
  LAUNCH_CHECK();
  return SPLINT_OK;
}

cudaDataType_t cuda_type(int32_t dt) { return dt == SPLINT_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// Widens an operand to `to` (f32 or bf16) in scratch unless it already is that type.
int widen(splint_ctx* ctx, In x, int64_t count, int32_t to, Scratch& scratch, In& result) {
  OP("matmul");
  if (x.dt == to) {
    result = x;
    return SPLINT_OK;
  }
  STATUS_CHECK(scratch_alloc(ctx, scratch, count * dtype_bytes(to), splint_op));
  STATUS_CHECK(splint_cuda_cast(ctx, reinterpret_cast<splint_dptr>(x.p), x.dt, x.scale,
                                reinterpret_cast<splint_dptr>(scratch.p), to, 1.0f, count));
  result = In{scratch.p, to, 1.0f};
  return SPLINT_OK;
}

// Candidates the heuristic is asked for; products with a small output get them timed (below).
constexpr int kCandidates = 8;
// Outputs up to this size are autotuned: the skinny LoRA products ([N, r], [out, r]), where the
// heuristic's first pick can leave most of the GPU idle. The timing output is scratch, so the bound
// also keeps it from moving the allocator's high-water mark.
constexpr int64_t kAutotuneMaxOutputBytes = 8ll << 20;

// The operands of the product being planned, for timing candidates on real data.
struct Operands {
  const void* blas_a;  // cuBLAS's A: our b
  const void* blas_b;  // cuBLAS's B: our a
  float alpha;
};

// Times every candidate the heuristic offered, three runs each after one warm-up, into a scratch
// output (beta = 0: nothing the caller owns is written) and returns the index of the fastest. Runs
// once per plan, the first time a shape is seen; its event waits are host syncs and are counted.
int fastest_candidate(splint_ctx* ctx, const Plan& plan, const cublasLtMatmulHeuristicResult_t* found, int count,
                      const Operands& ops, int64_t out_bytes, int& best) {
  OP("matmul");
  Scratch out;
  STATUS_CHECK(scratch_alloc(ctx, out, out_bytes, splint_op));
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  if (cudaEventCreate(&stop) != cudaSuccess) {
    cudaEventDestroy(start);
    return set_error(SPLINT_CUDA_ERROR, __FILE__, __LINE__, splint_op, "cudaEventCreate failed");
  }
  const float beta = 0.0f;
  float best_ms = INFINITY;
  best = 0;
  for (int i = 0; i < count; i++) {
    if (found[i].state != CUBLAS_STATUS_SUCCESS) continue;
    bool ok = true;
    for (int run = 0; run < 4 && ok; run++) {
      if (run == 1) ok = cudaEventRecord(start, ctx->stream) == cudaSuccess;
      ok = ok && cublasLtMatmul(ctx->blas->handle, plan.desc, &ops.alpha, ops.blas_a, plan.la, ops.blas_b, plan.lb, &beta,
                                out.p, plan.lc, out.p, plan.lc, &found[i].algo, ctx->blas->workspace,
                                ctx->blas->workspace_bytes, ctx->stream) == CUBLAS_STATUS_SUCCESS;
      ctx->launches += ok ? 1 : 0;
    }
    float ms = INFINITY;
    ok = ok && cudaEventRecord(stop, ctx->stream) == cudaSuccess && cudaEventSynchronize(stop) == cudaSuccess &&
         cudaEventElapsedTime(&ms, start, stop) == cudaSuccess;
    ++ctx->syncs;
    if (ok && ms < best_ms) {
      best_ms = ms;
      best = i;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  // A candidate that failed to launch left an error behind; the chosen one is checked by its caller.
  cudaGetLastError();
  return SPLINT_OK;
}

// Descriptors and an algorithm for one product (see the row-major note on top): the heuristic's
// first pick, or for small outputs the fastest of its candidates on the real operands.
int make_plan(splint_ctx* ctx, Plan& plan, int32_t compute, int32_t out_dtype, bool trans_a, bool trans_b, int64_t m,
              int64_t n, int64_t k, uint32_t align_a, uint32_t align_b, uint32_t align_c, const Operands& ops) {
  OP("matmul");
  BLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS "A" = our b
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS "B" = our a
  BLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_b, sizeof op_b));
  BLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_a, sizeof op_a));
  // our b: [k, n] row-major = col-major n×k (ld n); transposed: [n, k] = col-major k×n (ld k).
  if (trans_b) BLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.la, cuda_type(compute), k, n, k));
  else BLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.la, cuda_type(compute), n, k, n));
  // our a: [m, k] row-major = col-major k×m (ld k); transposed: [k, m] = col-major m×k (ld m).
  if (trans_a) BLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.lb, cuda_type(compute), m, k, m));
  else BLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.lb, cuda_type(compute), k, m, k));
  BLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.lc, cuda_type(out_dtype), n, m, n));

  Preference pref;
  BLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.d));
  uint64_t ws = ctx->blas->workspace_bytes;
  BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                                  sizeof align_a));
  BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                                  sizeof align_b));
  BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                                  sizeof align_c));
  BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                                  sizeof align_c));
  const int64_t out_bytes = m * n * dtype_bytes(out_dtype);
  const int wanted = out_bytes <= kAutotuneMaxOutputBytes ? kCandidates : 1;
  cublasLtMatmulHeuristicResult_t heuristic[kCandidates] = {};
  int found = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx->blas->handle, plan.desc, plan.la, plan.lb, plan.lc, plan.lc,
                                                     pref.d, wanted, heuristic, &found);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0)) {
    plan.fallback = true;
    return SPLINT_OK;
  }
  BLAS_CHECK(st);
  int best = 0;
  if (found > 1) STATUS_CHECK(fastest_candidate(ctx, plan, heuristic, found, ops, out_bytes, best));
  plan.algo = heuristic[best].algo;
  return SPLINT_OK;
}

}  // namespace

void destroy_blas(splint_ctx* ctx) {
  if (!ctx->blas) return;
  for (auto& entry : ctx->blas->plans) destroy_plan(entry.second);
  if (ctx->blas->workspace) cudaFree(ctx->blas->workspace);
  if (ctx->blas->handle) cublasLtDestroy(ctx->blas->handle);
  delete ctx->blas;
  ctx->blas = nullptr;
}

extern "C" int splint_cuda_matmul(splint_ctx* ctx, splint_dptr a, int32_t a_dtype, float a_scale, int32_t trans_a,
                                  splint_dptr b, int32_t b_dtype, float b_scale, int32_t trans_b, splint_dptr out,
                                  int32_t out_dtype, int64_t m, int64_t n, int64_t k, float alpha, float beta) {
  OP("matmul");
  CTX_CHECK(ctx);
  ARG_CHECK(is_float_dtype(a_dtype) && is_float_dtype(b_dtype), "operands must be float (got %d, %d)", a_dtype, b_dtype);
  ARG_CHECK(is_grad_dtype(out_dtype), "output must be f32 or bf16 (got %d)", out_dtype);
  ARG_CHECK(m >= 0 && n >= 0 && k >= 0, "negative size");
  if (m == 0 || n == 0) return SPLINT_OK;
  if (k == 0) {
    // Empty sum: out = beta·out.
    return splint_cuda_axpby(ctx, out, out_dtype, 1.0f, beta, 0, SPLINT_F32, 1.0f, 0.0f, out, out_dtype, m * n);
  }
  STATUS_CHECK(ensure_blas(ctx));

  // Any f32 operand runs the product in full f32 (no TF32), as the CPU reference; otherwise bf16
  // with f32 accumulation. fp8 operands are widened unscaled (every e4m3 value is exact in bf16)
  // and their per-tensor scales folded into alpha, so dequantisation adds no rounding.
  const int32_t compute = (a_dtype == SPLINT_F32 || b_dtype == SPLINT_F32) ? SPLINT_F32 : SPLINT_BF16;
  if (a_dtype == SPLINT_FP8_E4M3) alpha *= a_scale;
  if (b_dtype == SPLINT_FP8_E4M3) alpha *= b_scale;
  Scratch a_wide, b_wide;
  In ai, bi;
  STATUS_CHECK(widen(ctx, in_of(a, a_dtype, 1.0f), m * k, compute, a_wide, ai));
  STATUS_CHECK(widen(ctx, in_of(b, b_dtype, 1.0f), k * n, compute, b_wide, bi));
  Out o = out_of(out, out_dtype);

  const uint32_t align_a = alignment_of(bi.p), align_b = alignment_of(ai.p), align_c = alignment_of(o.p);
  const PlanKey key{compute, out_dtype, trans_a, trans_b, m, n, k, align_a, align_b, align_c};
  auto found_plan = ctx->blas->plans.find(key);
  if (found_plan == ctx->blas->plans.end()) {
    Plan plan;
    const int status = make_plan(ctx, plan, compute, out_dtype, trans_a != 0, trans_b != 0, m, n, k, align_a, align_b,
                                 align_c, Operands{bi.p, ai.p, alpha});
    if (status != SPLINT_OK) {
      destroy_plan(plan);
      return status;
    }
    if (ctx->blas->plans.size() >= kMaxPlans) {
      for (auto& entry : ctx->blas->plans) destroy_plan(entry.second);
      ctx->blas->plans.clear();
    }
    found_plan = ctx->blas->plans.emplace(key, plan).first;
  }
  const Plan& plan = found_plan->second;
  if (plan.fallback) return gemm_fallback(ctx, ai, trans_a != 0, bi, trans_b != 0, o, m, n, k, alpha, beta);
  ++ctx->launches;
  BLAS_CHECK(cublasLtMatmul(ctx->blas->handle, plan.desc, &alpha, bi.p, plan.la, ai.p, plan.lb, &beta, o.p, plan.lc, o.p,
                            plan.lc, &plan.algo, ctx->blas->workspace, ctx->blas->workspace_bytes, ctx->stream));
  return SPLINT_OK;
}
