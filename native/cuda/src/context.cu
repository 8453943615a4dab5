// Context lifetime, the error record, and the memory entry points.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.cuh"

static char g_last_error[1024] = "no error";

int set_error(int status, const char* file, int line, const char* op, const char* fmt, ...) {
  const char* base = strrchr(file, '/');
  base = base ? base + 1 : file;
  int used = snprintf(g_last_error, sizeof g_last_error, "%s:%d %s: ", base, line, op);
  if (used < 0 || used >= (int)sizeof g_last_error) return status;
  va_list args;
  va_start(args, fmt);
  vsnprintf(g_last_error + used, sizeof g_last_error - used, fmt, args);
  va_end(args);
  return status;
}

void destroy_blas(splint_ctx* ctx);  // matmul.cu

int scratch_alloc(splint_ctx* ctx, Scratch& s, int64_t bytes, const char* op) {
  s.ctx = ctx;
  int err = ctx->allocator.allocate(static_cast<uint64_t>(bytes), &s.p);
  if (err != 0) {
    s.p = nullptr;
    return set_error(err == cudaErrorMemoryAllocation ? SPLINT_OUT_OF_MEMORY : SPLINT_CUDA_ERROR, __FILE__, __LINE__,
                     op, "scratch of %lld bytes: %s", (long long)bytes, cudaGetErrorString((cudaError_t)err));
  }
  return SPLINT_OK;
}

extern "C" {

const char* splint_cuda_last_error(void) { return g_last_error; }

int splint_cuda_device_count(int32_t* count) {
  OP("device_count");
  ARG_CHECK(count != nullptr, "null count");
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    cudaGetLastError();
    *count = 0;
    return set_error(SPLINT_CUDA_ERROR, __FILE__, __LINE__, splint_op, "%s", cudaGetErrorString(err));
  }
  CUDA_CHECK(err);
  *count = n;
  return SPLINT_OK;
}

int splint_cuda_device_name(int32_t device, char* buf, int32_t len) {
  OP("device_name");
  ARG_CHECK(buf != nullptr && len > 0, "null buffer");
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  snprintf(buf, len, "%s, sm_%d%d, %.1f GiB", prop.name, prop.major, prop.minor,
           prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
  return SPLINT_OK;
}

int splint_cuda_create(int32_t device, splint_ctx** out) {
  OP("create");
  ARG_CHECK(out != nullptr, "null output handle");
  *out = nullptr;
  CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  ARG_CHECK(prop.major >= 8, "device %d (%s) is sm_%d%d; splint's kernels need sm_80 or newer", device, prop.name,
            prop.major, prop.minor);
  splint_ctx* ctx = new splint_ctx();
  ctx->device = device;
  ctx->blas = nullptr;
  ctx->flags = nullptr;
  cudaError_t err = cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking);
  if (err == cudaSuccess) err = cudaMalloc(&ctx->flags, sizeof(int32_t));
  if (err == cudaSuccess) err = cudaMemset(ctx->flags, 0, sizeof(int32_t));
  if (err != cudaSuccess) {
    delete ctx;
    CUDA_CHECK(err);
  }
  *out = ctx;
  return SPLINT_OK;
}

// Compiled like every kernel of the library: what it was built for tells whether pdl_prologue
// holds a griddepcontrol.wait in them, or was compiled out (code for an older arch, or its PTX
// JIT-compiled for this device) — with the attribute on and no wait, kernels would race.
__global__ void pdl_probe_kernel() { pdl_prologue(); }

int splint_cuda_set_programmatic_launch(splint_ctx* ctx, int32_t on) {
  OP("set_programmatic_launch");
  CTX_CHECK(ctx);
  if (on) {
    int major = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ctx->device));
    ARG_CHECK(major >= 9, "programmatic dependent launch needs sm_90 or newer; device %d is sm_%d", ctx->device, major);
    cudaFuncAttributes attr;
    CUDA_CHECK(cudaFuncGetAttributes(&attr, pdl_probe_kernel));
    ARG_CHECK(attr.ptxVersion >= 90 && attr.binaryVersion >= 90,
              "the library's kernels were built for compute_%d (sm_%d); programmatic dependent launch needs them "
              "built for sm_90 or newer (native/cuda/Makefile's -arch)",
              attr.ptxVersion, attr.binaryVersion);
  }
  ctx->pdl = on != 0;
  return SPLINT_OK;
}

int splint_cuda_destroy(splint_ctx* ctx) {
  OP("destroy");
  if (ctx == nullptr) return SPLINT_OK;
  cudaError_t err = cudaStreamSynchronize(ctx->stream);
  destroy_blas(ctx);
  for (cudaEvent_t e : ctx->events) cudaEventDestroy(e);
  // Tensors the caller never freed go with the context (compute-sanitizer's leak check saw them).
  ctx->allocator.free_all();
  if (ctx->flags) cudaFree(ctx->flags);
  cudaStreamDestroy(ctx->stream);
  delete ctx;
  CUDA_CHECK(err);
  return SPLINT_OK;
}

int splint_cuda_synchronize(splint_ctx* ctx) {
  OP("synchronize");
  CTX_CHECK(ctx);
  ++ctx->syncs;
  CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
  return SPLINT_OK;
}

int splint_cuda_alloc(splint_ctx* ctx, uint64_t bytes, splint_dptr* out) {
  OP("alloc");
  CTX_CHECK(ctx);
  ARG_CHECK(out != nullptr, "null output");
  void* p = nullptr;
  int err = ctx->allocator.allocate(bytes, &p);
  if (err != 0) {
    return set_error(err == cudaErrorMemoryAllocation ? SPLINT_OUT_OF_MEMORY : SPLINT_CUDA_ERROR, __FILE__, __LINE__,
                     splint_op, "%llu bytes (%.2f GiB; %.2f GiB live, %.2f GiB reserved): %s",
                     (unsigned long long)bytes, bytes / 1073741824.0, ctx->allocator.live() / 1073741824.0,
                     ctx->allocator.reserved() / 1073741824.0, cudaGetErrorString((cudaError_t)err));
  }
  *out = reinterpret_cast<splint_dptr>(p);
  return SPLINT_OK;
}

int splint_cuda_free(splint_ctx* ctx, splint_dptr ptr) {
  OP("free");
  CTX_CHECK(ctx);
  ARG_CHECK(ctx->allocator.release(reinterpret_cast<void*>(ptr)), "0x%llx was not allocated by this context",
            (unsigned long long)ptr);
  return SPLINT_OK;
}

int splint_cuda_memory_stats(splint_ctx* ctx, uint64_t* live, uint64_t* peak, uint64_t* reserved,
                             uint64_t* mallocs) {
  OP("memory_stats");
  CTX_CHECK(ctx);
  if (live) *live = ctx->allocator.live();
  if (peak) *peak = ctx->allocator.peak();
  if (reserved) *reserved = ctx->allocator.reserved();
  if (mallocs) *mallocs = ctx->allocator.mallocs();
  return SPLINT_OK;
}

int splint_cuda_empty_cache(splint_ctx* ctx) {
  OP("empty_cache");
  CTX_CHECK(ctx);
  CUDA_CHECK(static_cast<cudaError_t>(ctx->allocator.empty_cache()));
  return SPLINT_OK;
}

int splint_cuda_upload(splint_ctx* ctx, splint_dptr dst, const void* host, uint64_t bytes) {
  OP("upload");
  CTX_CHECK(ctx);
  if (bytes == 0) return SPLINT_OK;
  ARG_CHECK(host != nullptr && dst != 0, "null pointer");
  // From pageable memory the call returns once the bytes are staged, so the caller may reuse host.
  ++ctx->uploads;
  CUDA_CHECK(cudaMemcpyAsync(reinterpret_cast<void*>(dst), host, bytes, cudaMemcpyHostToDevice, ctx->stream));
  return SPLINT_OK;
}

int splint_cuda_download(splint_ctx* ctx, void* host, splint_dptr src, uint64_t bytes, int32_t* flags) {
  OP("download");
  CTX_CHECK(ctx);
  if (bytes == 0 && flags == nullptr) return SPLINT_OK;
  ARG_CHECK(bytes == 0 || (host != nullptr && src != 0), "null pointer");
  if (bytes > 0) {
    CUDA_CHECK(cudaMemcpyAsync(host, reinterpret_cast<const void*>(src), bytes, cudaMemcpyDeviceToHost, ctx->stream));
  }
  // The flags ride along: a read costs one host wait, not one for the data and one for the flags.
  if (flags != nullptr) {
    CUDA_CHECK(cudaMemcpyAsync(flags, ctx->flags, sizeof(int32_t), cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_CHECK(cudaMemsetAsync(ctx->flags, 0, sizeof(int32_t), ctx->stream));
  }
  ++ctx->syncs;
  CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
  return SPLINT_OK;
}

int splint_cuda_memset_zero(splint_ctx* ctx, splint_dptr dst, uint64_t bytes) {
  OP("memset_zero");
  CTX_CHECK(ctx);
  if (bytes == 0) return SPLINT_OK;
  ++ctx->launches;
  CUDA_CHECK(cudaMemsetAsync(reinterpret_cast<void*>(dst), 0, bytes, ctx->stream));
  return SPLINT_OK;
}

int splint_cuda_copy(splint_ctx* ctx, splint_dptr dst, splint_dptr src, uint64_t bytes) {
  OP("copy");
  CTX_CHECK(ctx);
  if (bytes == 0) return SPLINT_OK;
  ++ctx->launches;
  CUDA_CHECK(cudaMemcpyAsync(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes,
                             cudaMemcpyDeviceToDevice, ctx->stream));
  return SPLINT_OK;
}

int splint_cuda_check_flags(splint_ctx* ctx, int32_t* flags) {
  OP("check_flags");
  CTX_CHECK(ctx);
  ARG_CHECK(flags != nullptr, "null output");
  CUDA_CHECK(cudaMemcpyAsync(flags, ctx->flags, sizeof(int32_t), cudaMemcpyDeviceToHost, ctx->stream));
  CUDA_CHECK(cudaMemsetAsync(ctx->flags, 0, sizeof(int32_t), ctx->stream));
  ++ctx->syncs;
  CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
  return SPLINT_OK;
}

}  // extern "C"
