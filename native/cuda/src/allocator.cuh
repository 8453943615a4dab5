// A caching device allocator: freed blocks go to a free list keyed by their rounded size and are
// handed out again, so a training step that repeats its allocations never calls cudaMalloc once
// the first step has filled the cache.
#pragma once

#include <stdint.h>

#include <map>
#include <unordered_map>
#include <vector>

class Allocator {
 public:
  // 0 on success; a cudaError_t (as int) when cudaMalloc fails even after emptying the cache.
  int allocate(uint64_t bytes, void** out);
  // False when p was not allocated here (or was freed twice).
  bool release(void* p);
  // Returns every cached block to the driver; a cudaError_t (as int), 0 on success.
  int empty_cache();
  // Frees every block, cached or still in use (the context is going away).
  int free_all();

  uint64_t live() const { return live_; }
  uint64_t peak() const { return peak_; }
  uint64_t reserved() const { return reserved_; }
  uint64_t mallocs() const { return mallocs_; }

  // Size classes: 512-byte steps up to 1 MiB, then 8 steps per power of two (≤ 12.5% waste).
  static uint64_t bucket(uint64_t bytes);

 private:
  struct Block {
    uint64_t requested;
    uint64_t size;
  };
  std::map<uint64_t, std::vector<void*>> free_;  // size class → cached blocks
  std::unordered_map<void*, Block> used_;
  uint64_t live_ = 0;
  uint64_t peak_ = 0;
  uint64_t reserved_ = 0;
  uint64_t mallocs_ = 0;
};
