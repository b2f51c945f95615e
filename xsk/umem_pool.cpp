#include "xsk/umem_pool.h"

namespace xvmq::xsk {

UmemPool::UmemPool(uint32_t frames, uint32_t frame_size)
    : frame_size_(frame_size), refs_(frames, 0), state_(frames, kFree) {
  free_.reserve(frames);
  for (uint32_t i = frames; i-- > 0;) free_.push_back(static_cast<uint64_t>(i) * frame_size);
}

uint32_t UmemPool::pop_n(uint64_t* out, uint32_t n) {
  if (n > free_.size()) n = static_cast<uint32_t>(free_.size());
  for (uint32_t i = 0; i < n; i++) {
    out[i] = free_.back();
    free_.pop_back();
    state_[out[i] / frame_size_] = kOut;
  }
  return n;
}

void UmemPool::push_n(const uint64_t* addrs, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) push(addrs[i]);
}

}  // namespace xvmq::xsk
