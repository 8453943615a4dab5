// Step profiling: timing events on the context's stream and the launch / sync / upload counters.
// The caller records an event before and after each operation it wants to time (no host wait),
// then reads every interval in one call at the end, so profiling does not add synchronisations
// inside the work it measures.
#include "common.cuh"

extern "C" {

int splint_cuda_profile_mark(splint_ctx* ctx) {
  OP("profile_mark");
  CTX_CHECK(ctx);
  if (ctx->events_used == ctx->events.size()) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));
    ctx->events.push_back(e);
  }
  CUDA_CHECK(cudaEventRecord(ctx->events[ctx->events_used], ctx->stream));
  ++ctx->events_used;
  return SPLINT_OK;
}

int splint_cuda_profile_read(splint_ctx* ctx, float* intervals_ms, int64_t capacity, int64_t* count) {
  OP("profile_read");
  CTX_CHECK(ctx);
  ARG_CHECK(count != nullptr && (intervals_ms != nullptr || capacity == 0), "null output");
  const int64_t marks = static_cast<int64_t>(ctx->events_used);
  const int64_t n = marks > 0 ? marks - 1 : 0;
  ARG_CHECK(capacity >= n, "%lld intervals recorded, room for %lld", (long long)n, (long long)capacity);
  if (marks > 0) CUDA_CHECK(cudaEventSynchronize(ctx->events[marks - 1]));
  for (int64_t i = 0; i < n; ++i) CUDA_CHECK(cudaEventElapsedTime(&intervals_ms[i], ctx->events[i], ctx->events[i + 1]));
  *count = n;
  ctx->events_used = 0;
  return SPLINT_OK;
}

int splint_cuda_profile_counters(splint_ctx* ctx, int64_t* launches, int64_t* syncs, int64_t* uploads) {
  OP("profile_counters");
  CTX_CHECK(ctx);
  ARG_CHECK(launches != nullptr && syncs != nullptr && uploads != nullptr, "null output");
  *launches = ctx->launches;
  *syncs = ctx->syncs;
  *uploads = ctx->uploads;
  return SPLINT_OK;
}

}  // extern "C"
