// NCCL collectives for data-parallel training, with NCCL loaded at run time (dlopen): a machine
// without NCCL still loads libsplint_cuda.so, and the library is found where the caller says (the
// nvidia-nccl wheel's lib folder) or on the loader path. So nccl.h is not needed either: the few
// types below are declared as NCCL's public header (nccl.h, NCCL 2.x) defines them.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

namespace {

// ---- NCCL's public types (nccl.h) ------------------------------------------------------------
constexpr int kNcclUniqueIdBytes = 128;  // NCCL_UNIQUE_ID_BYTES
struct NcclUniqueId {
  char internal[kNcclUniqueIdBytes];
};
typedef struct NcclCommOpaque* NcclComm;  // ncclComm_t
typedef int NcclResult;                    // ncclResult_t: 0 is ncclSuccess
constexpr int kNcclFloat32 = 7;            // ncclFloat32
constexpr int kNcclBfloat16 = 9;           // ncclBfloat16
constexpr int kNcclSum = 0;                // ncclSum
constexpr int kNcclAvg = 4;                // ncclAvg (NCCL ≥ 2.10)

struct NcclApi {
  void* handle = nullptr;
  NcclResult (*getUniqueId)(NcclUniqueId*);
  NcclResult (*commInitRank)(NcclComm*, int, NcclUniqueId, int);
  NcclResult (*allReduce)(const void*, void*, size_t, int, int, NcclComm, cudaStream_t);
  NcclResult (*broadcast)(const void*, void*, size_t, int, int, NcclComm, cudaStream_t);
  NcclResult (*commDestroy)(NcclComm);
  NcclResult (*commAbort)(NcclComm);
  const char* (*getErrorString)(NcclResult);
  const char* (*getLastError)(NcclComm);
};

NcclApi g_nccl;

// ncclResult_t's names, for messages NCCL's own string may not make plain.
const char* result_name(NcclResult r) {
  switch (r) {
    case 1: return "ncclUnhandledCudaError";
    case 2: return "ncclSystemError";
    case 3: return "ncclInternalError";
    case 4: return "ncclInvalidArgument";
    case 5: return "ncclInvalidUsage";
    case 6: return "ncclRemoteError";
    case 7: return "ncclInProgress";
    default: return "ncclResult";
  }
}

}  // namespace

struct splint_nccl_comm {
  NcclComm comm;
  splint_ctx* ctx;
};

#define NCCL_LOADED()                                                                          \
  do {                                                                                         \
    if (!g_nccl.handle)                                                                        \
      return set_error(SPLINT_NOT_SUPPORTED, __FILE__, __LINE__, splint_op,                    \
                       "NCCL is not loaded (call splint_cuda_nccl_load first)");               \
  } while (0)

// Every NCCL failure becomes SPLINT_NCCL_ERROR with NCCL's words (and its last error, which names
// the failing peer or transport more often than the result string does).
#define NCCL_CHECK(call, comm)                                                                 \
  do {                                                                                         \
    NcclResult r_ = (call);                                                                    \
    if (r_ != 0) {                                                                             \
      const char* detail_ = g_nccl.getLastError ? g_nccl.getLastError(comm) : nullptr;         \
      return set_error(SPLINT_NCCL_ERROR, __FILE__, __LINE__, splint_op, "%s (%s %d)%s%s in %s", \
                       g_nccl.getErrorString(r_), result_name(r_), r_, detail_ && *detail_ ? ": " : "", \
                       detail_ ? detail_ : "", #call);                                         \
    }                                                                                          \
  } while (0)

template <typename F>
static bool bind(void* handle, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(handle, name));
  return *out != nullptr;
}

extern "C" int splint_cuda_nccl_load(const char* path) {
  OP("nccl_load");
  if (g_nccl.handle) return SPLINT_OK;
  const char* name = path && *path ? path : "libnccl.so.2";
  void* handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!handle) return set_error(SPLINT_NOT_SUPPORTED, __FILE__, __LINE__, splint_op, "cannot load %s: %s", name, dlerror());
  NcclApi api;
  api.handle = handle;
  const bool ok = bind(handle, "ncclGetUniqueId", &api.getUniqueId) && bind(handle, "ncclCommInitRank", &api.commInitRank) &&
                  bind(handle, "ncclAllReduce", &api.allReduce) && bind(handle, "ncclBroadcast", &api.broadcast) &&
                  bind(handle, "ncclCommDestroy", &api.commDestroy) && bind(handle, "ncclCommAbort", &api.commAbort) &&
                  bind(handle, "ncclGetErrorString", &api.getErrorString);
  if (!ok) {
    const char* why = dlerror();
    dlclose(handle);
    return set_error(SPLINT_NOT_SUPPORTED, __FILE__, __LINE__, splint_op, "%s lacks a needed NCCL function (%s)", name,
                     why ? why : "unknown");
  }
  bind(handle, "ncclGetLastError", &api.getLastError);  // NCCL ≥ 2.13; optional
  g_nccl = api;
  return SPLINT_OK;
}

extern "C" int splint_cuda_nccl_get_unique_id(uint8_t* id) {
  OP("nccl_get_unique_id");
  NCCL_LOADED();
  ARG_CHECK(id != nullptr, "id is null");
  NcclUniqueId u;
  NCCL_CHECK(g_nccl.getUniqueId(&u), nullptr);
  memcpy(id, u.internal, kNcclUniqueIdBytes);
  return SPLINT_OK;
}

extern "C" int splint_cuda_nccl_comm_init_rank(splint_ctx* ctx, const uint8_t* id, int32_t nranks, int32_t rank,
                                               splint_nccl_comm** out) {
  OP("nccl_comm_init_rank");
  NCCL_LOADED();
  ARG_CHECK(ctx && id && out, "null argument");
  ARG_CHECK(nranks >= 1 && rank >= 0 && rank < nranks, "rank %d of %d", rank, nranks);
  // NVLink multicast (NVLS) stays off: it needs fabric-manager set-up these machines may lack,
  // and NCCL then fails at init or at the first collective rather than falling back.
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  CUDA_CHECK(cudaSetDevice(ctx->device));
  NcclUniqueId u;
  memcpy(u.internal, id, kNcclUniqueIdBytes);
  NcclComm comm = nullptr;
  NCCL_CHECK(g_nccl.commInitRank(&comm, nranks, u, rank), nullptr);
  *out = new splint_nccl_comm{comm, ctx};
  return SPLINT_OK;
}

static int nccl_dtype(int32_t dtype) {
  return dtype == SPLINT_F32 ? kNcclFloat32 : dtype == SPLINT_BF16 ? kNcclBfloat16 : -1;
}

extern "C" int splint_cuda_nccl_all_reduce(splint_nccl_comm* comm, splint_dptr send, splint_dptr recv, int64_t count,
                                           int32_t dtype, int32_t op) {
  OP("nccl_all_reduce");
  NCCL_LOADED();
  ARG_CHECK(comm != nullptr, "comm is null");
  ARG_CHECK(count >= 0, "count %lld", (long long)count);
  const int type = nccl_dtype(dtype);
  ARG_CHECK(type >= 0, "dtype %d (f32 or bf16 only)", dtype);
  ARG_CHECK(op == SPLINT_REDUCE_SUM || op == SPLINT_REDUCE_AVG, "op %d (sum 0 or avg 1)", op);
  // On the context's stream: ordered after the backward that produced the gradients, no host wait.
  NCCL_CHECK(g_nccl.allReduce(reinterpret_cast<const void*>(send), reinterpret_cast<void*>(recv), (size_t)count, type,
                              op == SPLINT_REDUCE_SUM ? kNcclSum : kNcclAvg, comm->comm, comm->ctx->stream),
             comm->comm);
  return SPLINT_OK;
}

extern "C" int splint_cuda_nccl_broadcast(splint_nccl_comm* comm, splint_dptr send, splint_dptr recv, int64_t count,
                                          int32_t dtype, int32_t root) {
  OP("nccl_broadcast");
  NCCL_LOADED();
  ARG_CHECK(comm != nullptr, "comm is null");
  ARG_CHECK(count >= 0, "count %lld", (long long)count);
  const int type = nccl_dtype(dtype);
  ARG_CHECK(type >= 0, "dtype %d (f32 or bf16 only)", dtype);
  NCCL_CHECK(g_nccl.broadcast(reinterpret_cast<const void*>(send), reinterpret_cast<void*>(recv), (size_t)count, type,
                              root, comm->comm, comm->ctx->stream),
             comm->comm);
  return SPLINT_OK;
}

extern "C" int splint_cuda_nccl_comm_destroy(splint_nccl_comm* comm, int32_t abort) {
  OP("nccl_comm_destroy");
  NCCL_LOADED();
  if (!comm) return SPLINT_OK;
  NcclComm c = comm->comm;
  delete comm;
  // Abort after a failure: destroy would wait for peers that may be gone.
  NCCL_CHECK(abort ? g_nccl.commAbort(c) : g_nccl.commDestroy(c), nullptr);
  return SPLINT_OK;
}
