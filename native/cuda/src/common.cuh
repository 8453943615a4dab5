// Shared by every translation unit: the context, the error record, the check macros and the
// dtype-generic element loads/stores the kernels use.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <vector>

#include "../include/splint_cuda.h"
#include "allocator.cuh"

struct BlasState;  // defined in matmul.cu (the only file that sees cuBLASLt)

struct splint_ctx {
  int device;
  cudaStream_t stream;
  Allocator allocator;
  BlasState* blas;  // cuBLASLt handle and workspace, created by the first matmul
  int32_t* flags;         // device-side error flags (see splint_cuda_check_flags)
  // Profiling (splint_cuda_profile_*): counters always on (an increment per call), timing events
  // recorded only when the caller asks, from a pool reused between reads.
  int64_t launches = 0;   // kernel launches and cuBLASLt matmuls
  int64_t syncs = 0;      // host waits on the stream
  int64_t uploads = 0;    // host-to-device copies (pageable: may wait on the stream)
  std::vector<cudaEvent_t> events;
  size_t events_used = 0;
  // Programmatic dependent launch (splint_cuda_set_programmatic_launch): off unless asked for.
  bool pdl = false;
};

// Records "file:line op: message" as the last error and returns status.
int set_error(int status, const char* file, int line, const char* op, const char* fmt, ...);

// The op name every check reports; each exported function sets it first with OP("name").
#define OP(name) static const char* const splint_op = name

#define CUDA_CHECK(call)                                                                         \
  do {                                                                                           \
    cudaError_t err_ = (call);                                                                   \
    if (err_ != cudaSuccess) {                                                                   \
      return set_error(err_ == cudaErrorMemoryAllocation ? SPLINT_OUT_OF_MEMORY : SPLINT_CUDA_ERROR, \
                       __FILE__, __LINE__, splint_op, "%s (%s) in %s", cudaGetErrorString(err_),  \
                       cudaGetErrorName(err_), #call);                                           \
    }                                                                                            \
  } while (0)

// After every launch: configuration errors show up at once, and earlier asynchronous faults
// (an illegal address in a previous kernel) are sticky and surface here too.
// Every function that launches has its context in `ctx`; the launch counter feeds the profile.
#define LAUNCH_CHECK()                 \
  do {                                 \
    ++ctx->launches;                   \
    CUDA_CHECK(cudaGetLastError());    \
  } while (0)

#define ARG_CHECK(cond, ...)                                                                 \
  do {                                                                                       \
    if (!(cond)) return set_error(SPLINT_INVALID_ARGUMENT, __FILE__, __LINE__, splint_op, __VA_ARGS__); \
  } while (0)

#define STATUS_CHECK(call)      \
  do {                          \
    int st_ = (call);           \
    if (st_ != SPLINT_OK) return st_; \
  } while (0)

#define CTX_CHECK(ctx) ARG_CHECK((ctx) != nullptr, "null context")

// Bits of splint_ctx::flags.
constexpr int32_t SPLINT_FLAG_LABEL = 1;
constexpr int32_t SPLINT_FLAG_INDEX = 2;

inline bool is_float_dtype(int32_t dt) { return dt == SPLINT_F32 || dt == SPLINT_BF16 || dt == SPLINT_FP8_E4M3; }
inline bool is_grad_dtype(int32_t dt) { return dt == SPLINT_F32 || dt == SPLINT_BF16; }
inline int64_t dtype_bytes(int32_t dt) { return dt == SPLINT_BF16 ? 2 : dt == SPLINT_FP8_E4M3 ? 1 : 4; }

// A float tensor as the kernels see it: address, element type and (fp8) scale.
struct In {
  const void* p;
  int32_t dt;
  float scale;
};
struct Out {
  void* p;
  int32_t dt;
};

inline In in_of(splint_dptr p, int32_t dt, float scale = 1.0f) { return In{reinterpret_cast<const void*>(p), dt, scale}; }
inline Out out_of(splint_dptr p, int32_t dt) { return Out{reinterpret_cast<void*>(p), dt}; }

__device__ __forceinline__ float load(In x, int64_t i) {
  switch (x.dt) {
    case SPLINT_BF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(x.p)[i]);
    case SPLINT_FP8_E4M3:
      return float(static_cast<const __nv_fp8_e4m3*>(x.p)[i]) * x.scale;
    default:
      return static_cast<const float*>(x.p)[i];
  }
}

// bf16 rounds to nearest even, as the CPU backend's narrowing does.
__device__ __forceinline__ void store(Out y, int64_t i, float v) {
  switch (y.dt) {
    case SPLINT_BF16:
      static_cast<__nv_bfloat16*>(y.p)[i] = __float2bfloat16_rn(v);
      break;
    case SPLINT_FP8_E4M3:
      static_cast<__nv_fp8_e4m3*>(y.p)[i] = __nv_fp8_e4m3(v);
      break;
    default:
      static_cast<float*>(y.p)[i] = v;
  }
}

// MurmurHash3's finaliser: the dropout masks' hash (elementwise.cu, lora.cu; the CPU backend's
// dropout.ts defines the same function).
__device__ __host__ __forceinline__ uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

// Grid for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int threads = 256) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks > 65535LL * 16) blocks = 65535LL * 16;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

#define GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// ---- programmatic dependent launch (Hopper) ----------------------------------------------------
// A step is ~5500 kernels back to back on one stream; between two of them the device idles while
// the next grid is launched. With PDL on, each kernel is launched with programmatic stream
// serialisation, so the device may schedule its blocks while the kernel before it finishes. That
// stays correct because every kernel starts with pdl_prologue(): griddepcontrol.wait holds each
// thread until the grid before it has completed and its writes are visible, before the kernel
// touches memory; launch_dependents then lets the next grid be scheduled once every block of this
// one is running (not before: its blocks would take slots this grid still needs). Launched
// without the attribute, both instructions return at once. test/native/pdl-prologue.test.ts
// checks that every kernel begins with the prologue and that every launch goes through
// launch_kernel or programmatic_launch_attr.
__device__ __forceinline__ void pdl_prologue() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  // Built with -DSPLINT_PDL_TRIGGER_AT_EXIT, a grid triggers its dependents only as its blocks exit
  // (the A/B for blocks parked in wait costing more than the launch gap they hide).
#ifndef SPLINT_PDL_TRIGGER_AT_EXIT
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
#endif
}

// Writes the PDL attribute into *attr when the context has PDL on; returns how many it wrote (0 or 1),
// for launches that set attributes of their own (clusters).
inline unsigned programmatic_launch_attr(const splint_ctx* ctx, cudaLaunchAttribute* attr) {
  if (!ctx->pdl) return 0;
  attr->id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr->val.programmaticStreamSerializationAllowed = 1;
  return 1;
}

// kernel<<<grid, block, smem, ctx->stream>>>(args...), with the PDL attribute when the context has
// it on. Arguments are converted to the kernel's parameter types as a <<<>>> launch converts them.
// Errors surface through LAUNCH_CHECK's cudaGetLastError, as a <<<>>> launch's do.
template <typename... Params, typename... Args>
inline void launch_kernel(splint_ctx* ctx, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = ctx->stream;
  cudaLaunchAttribute attr;
  cfg.numAttrs = programmatic_launch_attr(ctx, &attr);
  cfg.attrs = cfg.numAttrs > 0 ? &attr : nullptr;
  (void)cudaLaunchKernelEx(&cfg, kernel, static_cast<Args&&>(args)...);
}

// Scratch buffer from the context's caching allocator, returned when the scope ends. Stream order
// makes reuse safe: everything runs on the context's one stream.
struct Scratch {
  splint_ctx* ctx = nullptr;
  void* p = nullptr;
  ~Scratch() {
    if (p) ctx->allocator.release(p);
  }
};
int scratch_alloc(splint_ctx* ctx, Scratch& s, int64_t bytes, const char* op);
