#include <cuda_runtime.h>

#include "allocator.cuh"

uint64_t Allocator::bucket(uint64_t bytes) {
  if (bytes == 0) bytes = 1;
  const uint64_t small = 1ull << 20;
  if (bytes <= small) return (bytes + 511) & ~511ull;
  int top = 63 - __builtin_clzll(bytes - 1);  // 2^top < bytes ≤ 2^(top+1)
  uint64_t step = (1ull << top) / 8;
  return (bytes + step - 1) / step * step;
}

int Allocator::allocate(uint64_t bytes, void** out) {
  uint64_t size = bucket(bytes);
  void* p = nullptr;
  auto it = free_.find(size);
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
  } else {
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the non-sticky error before retrying
      int st = empty_cache();
      if (st != 0) return st;
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      return static_cast<int>(err);
    }
    reserved_ += size;
    mallocs_ += 1;
  }
  used_[p] = Block{bytes, size};
  live_ += bytes;
  if (live_ > peak_) peak_ = live_;
  *out = p;
  return 0;
}

bool Allocator::release(void* p) {
  auto it = used_.find(p);
  if (it == used_.end()) return false;
  live_ -= it->second.requested;
  free_[it->second.size].push_back(p);
  used_.erase(it);
  return true;
}

int Allocator::empty_cache() {
  // Blocks may still be read by queued kernels: wait before handing them back.
  cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) return static_cast<int>(err);
  for (auto& entry : free_) {
    for (void* p : entry.second) {
      err = cudaFree(p);
      if (err != cudaSuccess) return static_cast<int>(err);
      reserved_ -= entry.first;
    }
  }
  free_.clear();
  return 0;
}

int Allocator::free_all() {
  int st = empty_cache();
  if (st != 0) return st;
  for (auto& entry : used_) {
    cudaError_t err = cudaFree(entry.first);
    if (err != cudaSuccess) return static_cast<int>(err);
    reserved_ -= entry.second.size;
  }
  used_.clear();
  live_ = 0;
  return 0;
}
