// The activity timeline: CUPTI's record of every kernel, memcpy and memset between start and stop,
// reduced to counts, the union of their device intervals and per-name totals. Unlike the timing
// events of profile.cu it puts nothing on the stream, so the gaps it measures are the real ones.
// stop keeps the sorted records (device start, end, name index) until the next start, for
// activity_records: where the idle gaps lie is worked out from them in TypeScript
// (bench/idle-gaps.ts), which knows the host's window and is testable without a GPU.
//
// CUPTI is optional at run time: it is dlopened (a machine without it still loads the library),
// cupti.h supplies the types only. A build without cupti.h (CUPTI_INC in the Makefile) keeps the
// entry points, which then say so.
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#if __has_include(<cupti.h>) && !defined(SPLINT_NO_CUPTI)

#include <cupti.h>
#include <cxxabi.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

namespace {

struct CuptiApi {
  void* handle = nullptr;
  decltype(&cuptiActivityEnable) enable;
  decltype(&cuptiActivityDisable) disable;
  decltype(&cuptiActivityRegisterCallbacks) registerCallbacks;
  decltype(&cuptiActivityFlushAll) flushAll;
  decltype(&cuptiActivityGetNextRecord) getNextRecord;
  decltype(&cuptiActivityGetNumDroppedRecords) getNumDroppedRecords;
  decltype(&cuptiGetTimestamp) getTimestamp;
  decltype(&cuptiGetResultString) getResultString;
  decltype(&cuptiGetVersion) getVersion;
};

CuptiApi g_cupti;

struct NameTotal {
  int64_t count = 0;
  int64_t ns = 0;
};

// One timed record: its device interval and the index of its name in Timeline::names.
struct Record {
  uint64_t start, end;
  int32_t name;
  bool operator<(const Record& o) const {
    return start != o.start ? start < o.start : end != o.end ? end < o.end : name < o.name;
  }
};

// What the buffer-completed callback gathers for the window; CUPTI may call it from its own
// thread, so everything here is read and written under `mutex`.
struct Timeline {
  std::mutex mutex;
  splint_ctx* ctx = nullptr;  // non-null between start and stop
  int device = -1;
  int64_t kernels = 0, memcpys = 0, memsets = 0, dropped = 0, other_device = 0;
  std::vector<Record> records;  // the timed ones; sorted by stop
  // Distinct names in the order first seen (a record's name is an index here) and the way back.
  std::vector<std::pair<std::string, NameTotal>> names;
  std::unordered_map<std::string, int32_t> name_index;
  // The context whose stop left `records` and `names` for activity_records; null before that stop
  // and from the next start on, so a read never sees a window still filling or a failed stop's.
  splint_ctx* kept = nullptr;
};

Timeline g_timeline;

constexpr CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                         CUPTI_ACTIVITY_KIND_MEMSET};
// 8 MiB a buffer: a 14B step's ~10^4 records (kernel records are ~200 bytes) fit in one or two.
constexpr size_t kBufferBytes = 8u << 20;

const char* result_string(CUptiResult r) {
  const char* s = nullptr;
  if (g_cupti.getResultString == nullptr || g_cupti.getResultString(r, &s) != CUPTI_SUCCESS || s == nullptr) return "?";
  return s;
}

#define CUPTI_CHECK(call)                                                                                      \
  do {                                                                                                         \
    CUptiResult r_ = (call);                                                                                   \
    if (r_ != CUPTI_SUCCESS)                                                                                   \
      return set_error(SPLINT_CUPTI_ERROR, __FILE__, __LINE__, splint_op, "%s (CUPTI %d) in %s", result_string(r_), \
                       (int)r_, #call);                                                                        \
  } while (0)

const char* copy_name(uint8_t kind) {
  switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "[memcpy HtoD]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "[memcpy DtoH]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "[memcpy DtoD]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return "[memcpy HtoH]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "[memcpy PtoP]";
    default: return "[memcpy other]";
  }
}

// Keeps a record of the timeline's device (false for another device's). Called with the mutex
// held. The name is copied: a kernel's is CUPTI's string, lent for the record's lifetime.
bool add_record(Timeline& t, uint32_t device, uint64_t start, uint64_t end, const char* name) {
  if ((int)device != t.device) {
    ++t.other_device;
    return false;
  }
  const auto [slot, added] = t.name_index.try_emplace(name ? name : "[unnamed kernel]", (int32_t)t.names.size());
  if (added) t.names.emplace_back(slot->first, NameTotal());
  // start = end = 0 means CUPTI could not time it: counted, but no interval.
  if (end > start) t.records.push_back(Record{start, end, slot->second});
  NameTotal& total = t.names[(size_t)slot->second].second;
  ++total.count;
  total.ns += end > start ? (int64_t)(end - start) : 0;
  return true;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  // CUPTI wants 8-byte-aligned records; on failure it drops records and counts them as dropped.
  *buffer = static_cast<uint8_t*>(aligned_alloc(8, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext context, uint32_t stream_id, uint8_t* buffer, size_t, size_t valid) {
  // No exception may unwind into CUPTI: a record that cannot be kept (host memory) is a dropped one.
  try {
    std::lock_guard<std::mutex> lock(g_timeline.mutex);
    Timeline& t = g_timeline;
    CUpti_Activity* record = nullptr;
    // Outside a window nothing is recorded; a buffer handed back then is discarded.
    while (t.ctx != nullptr && g_cupti.getNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
      switch (record->kind) {
        case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
          auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
          if (add_record(t, k->deviceId, k->start, k->end, k->name)) ++t.kernels;
          break;
        }
        case CUPTI_ACTIVITY_KIND_MEMCPY: {
          auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
          if (add_record(t, m->deviceId, m->start, m->end, copy_name(m->copyKind))) ++t.memcpys;
          break;
        }
        case CUPTI_ACTIVITY_KIND_MEMSET: {
          auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
          if (add_record(t, m->deviceId, m->start, m->end, "[memset]")) ++t.memsets;
          break;
        }
        default:
          break;
      }
    }
    size_t dropped = 0;
    if (g_cupti.getNumDroppedRecords(context, stream_id, &dropped) == CUPTI_SUCCESS) t.dropped += (int64_t)dropped;
  } catch (...) {
    std::lock_guard<std::mutex> lock(g_timeline.mutex);
    ++g_timeline.dropped;
  }
  free(buffer);
}

template <typename F>
bool bind(void* handle, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(handle, name));
  return *out != nullptr;
}

// Loads CUPTI once: $SPLINT_CUPTI_LIB when set, else libcupti.so.13, else libcupti.so.
int load_cupti(const char* op) {
  if (g_cupti.handle) return SPLINT_OK;
  const char* from_env = getenv("SPLINT_CUPTI_LIB");
  const bool use_env = from_env != nullptr && *from_env != '\0';
  const char* candidates[] = {"libcupti.so.13", "libcupti.so"};
  int count = 2;
  if (use_env) {
    candidates[0] = from_env;
    count = 1;
  }
  char why[1024] = "";
  void* handle = nullptr;
  for (int i = 0; i < count && handle == nullptr; ++i) {
    handle = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* error = dlerror();
      const size_t used = strlen(why);
      snprintf(why + used, sizeof why - used, "%s%s", used ? "; " : "", error ? error : candidates[i]);
    }
  }
  if (handle == nullptr) {
    return set_error(SPLINT_NOT_SUPPORTED, __FILE__, __LINE__, op,
                     "CUPTI not found (%s)%s", why, use_env ? "" : "; set SPLINT_CUPTI_LIB to a libcupti.so file");
  }
  CuptiApi api;
  api.handle = handle;
  const bool ok = bind(handle, "cuptiActivityEnable", &api.enable) && bind(handle, "cuptiActivityDisable", &api.disable) &&
                  bind(handle, "cuptiActivityRegisterCallbacks", &api.registerCallbacks) &&
                  bind(handle, "cuptiActivityFlushAll", &api.flushAll) &&
                  bind(handle, "cuptiActivityGetNextRecord", &api.getNextRecord) &&
                  bind(handle, "cuptiActivityGetNumDroppedRecords", &api.getNumDroppedRecords) &&
                  bind(handle, "cuptiGetTimestamp", &api.getTimestamp) &&
                  bind(handle, "cuptiGetResultString", &api.getResultString) &&
                  bind(handle, "cuptiGetVersion", &api.getVersion);
  if (!ok) {
    const char* missing = dlerror();
    dlclose(handle);
    return set_error(SPLINT_NOT_SUPPORTED, __FILE__, __LINE__, op, "the loaded CUPTI lacks a needed function (%s)",
                     missing ? missing : "unknown");
  }
  // The records are read through this header's structs: within one CUDA major version CUPTI only
  // appends fields to them, across majors it may not (API versions are xxyyzz from CUDA 13 on).
  uint32_t version = 0;
  if (api.getVersion(&version) != CUPTI_SUCCESS || version / 10000 != CUPTI_API_VERSION / 10000) {
    dlclose(handle);
    return set_error(SPLINT_NOT_SUPPORTED, __FILE__, __LINE__, op,
                     "the loaded CUPTI's API version %u is not of CUDA %d (built against %d)", version,
                     CUPTI_API_VERSION / 10000, CUPTI_API_VERSION);
  }
  g_cupti = api;
  const CUptiResult r = g_cupti.registerCallbacks(buffer_requested, buffer_completed);
  if (r != CUPTI_SUCCESS) {
    const char* s = result_string(r);
    g_cupti = CuptiApi();
    dlclose(handle);
    return set_error(SPLINT_CUPTI_ERROR, __FILE__, __LINE__, op, "cuptiActivityRegisterCallbacks: %s (CUPTI %d)", s, (int)r);
  }
  return SPLINT_OK;
}

void disable_kinds() {
  for (CUpti_ActivityKind kind : kKinds) g_cupti.disable(kind);
}

// Busy time is the length of the union of the intervals (kernels may overlap one another).
struct Span {
  int64_t busy = 0;
  uint64_t first = 0, last = 0;
};

// Sorts the records by start (activity_records hands them out in that order).
Span interval_union(std::vector<Record>& records) {
  Span s;
  if (records.empty()) return s;
  std::sort(records.begin(), records.end());
  s.first = records[0].start;
  uint64_t run_start = records[0].start, run_end = records[0].end;
  for (const Record& r : records) {
    if (r.start > run_end) {
      s.busy += (int64_t)(run_end - run_start);
      run_start = r.start;
    }
    run_end = std::max(run_end, r.end);
  }
  s.busy += (int64_t)(run_end - run_start);
  s.last = run_end;
  return s;
}

void copy_demangled(const std::string& name, char* out, int32_t bytes) {
  int status = -1;
  char* demangled = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  snprintf(out, (size_t)bytes, "%s", status == 0 && demangled ? demangled : name.c_str());
  free(demangled);
}

}  // namespace

extern "C" int splint_cuda_activity_start(splint_ctx* ctx) {
  OP("activity_start");
  CTX_CHECK(ctx);
  STATUS_CHECK(load_cupti(splint_op));
  {
    std::lock_guard<std::mutex> lock(g_timeline.mutex);
    ARG_CHECK(g_timeline.ctx == nullptr, "a timeline is already recording (one at a time per process)");
  }
  // Work queued before the window would otherwise run inside it unrecorded.
  ++ctx->syncs;
  CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
  {
    std::lock_guard<std::mutex> lock(g_timeline.mutex);
    Timeline& t = g_timeline;
    t.ctx = ctx;
    t.device = ctx->device;
    t.kernels = t.memcpys = t.memsets = t.dropped = t.other_device = 0;
    t.records.clear();
    t.names.clear();
    t.name_index.clear();
    t.kept = nullptr;
  }
  for (CUpti_ActivityKind kind : kKinds) {
    const CUptiResult r = g_cupti.enable(kind);
    if (r != CUPTI_SUCCESS) {
      disable_kinds();
      std::lock_guard<std::mutex> lock(g_timeline.mutex);
      g_timeline.ctx = nullptr;
      return set_error(SPLINT_CUPTI_ERROR, __FILE__, __LINE__, splint_op, "cuptiActivityEnable(kind %d): %s (CUPTI %d)",
                       (int)kind, result_string(r), (int)r);
    }
  }
  return SPLINT_OK;
}

extern "C" int splint_cuda_activity_timestamp(uint64_t* ns) {
  OP("activity_timestamp");
  ARG_CHECK(ns != nullptr, "null output");
  STATUS_CHECK(load_cupti(splint_op));
  CUPTI_CHECK(g_cupti.getTimestamp(ns));
  return SPLINT_OK;
}

extern "C" int splint_cuda_activity_stop(splint_ctx* ctx, int64_t* summary, int32_t summary_len, char* names,
                                         int32_t name_bytes, int64_t* name_counts, int64_t* name_ns,
                                         int32_t name_capacity, int32_t* names_written) {
  OP("activity_stop");
  CTX_CHECK(ctx);
  ARG_CHECK(summary != nullptr && summary_len >= SPLINT_ACTIVITY_FIELDS, "summary needs %d fields, got %d",
            SPLINT_ACTIVITY_FIELDS, summary_len);
  ARG_CHECK(names_written != nullptr, "null names_written");
  ARG_CHECK(name_capacity >= 0, "name_capacity %d", name_capacity);
  ARG_CHECK(name_capacity == 0 || (names != nullptr && name_bytes > 0 && name_counts != nullptr && name_ns != nullptr),
            "null name buffers");
  {
    std::lock_guard<std::mutex> lock(g_timeline.mutex);
    ARG_CHECK(g_timeline.ctx == ctx, "no timeline recording on this context (call activity_start first)");
  }
  // Every record must be complete before the forced flush hands the buffers back; recording stops
  // whether or not the device synchronised, so a later start can begin afresh.
  ++ctx->syncs;
  cudaError_t device_sync = cudaSetDevice(ctx->device);
  if (device_sync == cudaSuccess) device_sync = cudaDeviceSynchronize();
  const CUptiResult flushed = g_cupti.flushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  disable_kinds();
  std::lock_guard<std::mutex> lock(g_timeline.mutex);
  Timeline& t = g_timeline;
  t.ctx = nullptr;
  CUDA_CHECK(device_sync);
  CUPTI_CHECK(flushed);

  const Span span = interval_union(t.records);
  summary[SPLINT_ACTIVITY_KERNELS] = t.kernels;
  summary[SPLINT_ACTIVITY_MEMCPYS] = t.memcpys;
  summary[SPLINT_ACTIVITY_MEMSETS] = t.memsets;
  summary[SPLINT_ACTIVITY_BUSY_NS] = span.busy;
  summary[SPLINT_ACTIVITY_FIRST_START_NS] = (int64_t)span.first;
  summary[SPLINT_ACTIVITY_LAST_END_NS] = (int64_t)span.last;
  summary[SPLINT_ACTIVITY_IDLE_NS] = (int64_t)(span.last - span.first) - span.busy;
  summary[SPLINT_ACTIVITY_DROPPED] = t.dropped;
  summary[SPLINT_ACTIVITY_OTHER_DEVICE] = t.other_device;
  summary[SPLINT_ACTIVITY_NAMES] = (int64_t)t.names.size();

  std::vector<std::pair<std::string, NameTotal>> ranked(t.names.begin(), t.names.end());
  const size_t top = std::min(ranked.size(), (size_t)name_capacity);
  std::partial_sort(ranked.begin(), ranked.begin() + top, ranked.end(), [](const auto& a, const auto& b) {
    return a.second.ns != b.second.ns ? a.second.ns > b.second.ns : a.first < b.first;
  });
  for (size_t i = 0; i < top; ++i) {
    copy_demangled(ranked[i].first, names + i * (size_t)name_bytes, name_bytes);
    name_counts[i] = ranked[i].second.count;
    name_ns[i] = ranked[i].second.ns;
  }
  *names_written = (int32_t)top;
  t.kept = ctx;
  return SPLINT_OK;
}

extern "C" int splint_cuda_activity_records(splint_ctx* ctx, int64_t* starts, int64_t* ends, int32_t* name_index,
                                            int64_t capacity, int64_t* count, char* names, int32_t name_bytes,
                                            int32_t name_capacity, int32_t* names_count) {
  OP("activity_records");
  CTX_CHECK(ctx);
  ARG_CHECK(count != nullptr && names_count != nullptr, "null count or names_count");
  ARG_CHECK(capacity >= 0 && name_capacity >= 0, "capacity %lld, name_capacity %d", (long long)capacity, name_capacity);
  ARG_CHECK(capacity == 0 || (starts != nullptr && ends != nullptr && name_index != nullptr), "null record buffers");
  ARG_CHECK(name_capacity == 0 || (names != nullptr && name_bytes > 0), "null name buffer");
  std::lock_guard<std::mutex> lock(g_timeline.mutex);
  const Timeline& t = g_timeline;
  ARG_CHECK(t.kept == ctx, "no stopped timeline of this context to read (call activity_stop first)");
  const size_t n = std::min(t.records.size(), (size_t)capacity);
  for (size_t i = 0; i < n; ++i) {
    starts[i] = (int64_t)t.records[i].start;
    ends[i] = (int64_t)t.records[i].end;
    name_index[i] = t.records[i].name;
  }
  *count = (int64_t)t.records.size();
  const size_t m = std::min(t.names.size(), (size_t)name_capacity);
  for (size_t i = 0; i < m; ++i) copy_demangled(t.names[i].first, names + i * (size_t)name_bytes, name_bytes);
  *names_count = (int32_t)t.names.size();
  return SPLINT_OK;
}

#else  // built without cupti.h

static int no_cupti_header(const char* op) {
  return set_error(SPLINT_NOT_SUPPORTED, __FILE__, __LINE__, op,
                   "libsplint_cuda was built without cupti.h (make CUPTI_INC=<folder with cupti.h>)");
}

extern "C" int splint_cuda_activity_start(splint_ctx*) { return no_cupti_header("activity_start"); }
extern "C" int splint_cuda_activity_timestamp(uint64_t*) { return no_cupti_header("activity_timestamp"); }
extern "C" int splint_cuda_activity_stop(splint_ctx*, int64_t*, int32_t, char*, int32_t, int64_t*, int64_t*, int32_t,
                                         int32_t*) {
  return no_cupti_header("activity_stop");
}
extern "C" int splint_cuda_activity_records(splint_ctx*, int64_t*, int64_t*, int32_t*, int64_t, int64_t*, char*, int32_t,
                                            int32_t, int32_t*) {
  return no_cupti_header("activity_records");
}

#endif
