#include "switchd/core/fdb.h"

#include <bit>

namespace xvmq::switchd {

Fdb::Fdb(uint32_t capacity) : capacity_(capacity) {
  uint32_t slots = std::bit_ceil(std::max<uint32_t>(capacity, 8) * 2);
  mask_ = slots - 1;
  slots_ = std::make_unique<Slot[]>(slots);
}

uint32_t Fdb::index(uint64_t key) const { return static_cast<uint32_t>((key * 0x9e3779b97f4a7c15ull) >> 32) & mask_; }

Fdb::Learned Fdb::learn(const Mac& mac, uint16_t vlan, uint32_t now_s) {
  const uint64_t k = xvmq_filter_word(mac.data(), vlan);
  if (k == kEmpty || k == kTombstone) return Learned::Known;  // never a station's
  for (int attempt = 0; attempt < 2; attempt++) {
    int64_t free = -1;
    uint64_t seen_there = kEmpty;
    const uint32_t first = index(k);
    for (uint32_t i = 0; i < kProbes; i++) {
      Slot& s = slots_[(first + i) & mask_];
      uint64_t v = s.key.load(std::memory_order_acquire);
      if (v == k) {
        if (s.seen.load(std::memory_order_relaxed) != now_s) s.seen.store(now_s, std::memory_order_relaxed);
        return Learned::Known;
      }
      if ((v == kTombstone || v == kEmpty) && free < 0) {
        free = (first + i) & mask_;
        seen_there = v;
      }
      if (v == kEmpty) break;
    }
    // Reserve a place under the bound first, so that workers learning at
    // the same moment cannot overshoot it.
    if (free < 0 || count_.fetch_add(1, std::memory_order_relaxed) >= capacity_) {
      if (free >= 0) count_.fetch_sub(1, std::memory_order_relaxed);
      refused_.fetch_add(1, std::memory_order_relaxed);
      return Learned::Full;
    }
    Slot& s = slots_[static_cast<uint32_t>(free)];
    s.seen.store(now_s, std::memory_order_relaxed);
    if (s.key.compare_exchange_strong(seen_there, k, std::memory_order_acq_rel)) return Learned::Added;
    count_.fetch_sub(1, std::memory_order_relaxed);
    // Another worker took the slot meanwhile: look again.
  }
  refused_.fetch_add(1, std::memory_order_relaxed);
  return Learned::Full;
}

size_t Fdb::expire(uint32_t now_s, uint32_t age_s) {
  size_t n = 0;
  for (uint32_t i = 0; i <= mask_; i++) {
    Slot& s = slots_[i];
    uint64_t v = s.key.load(std::memory_order_acquire);
    if (v == kEmpty || v == kTombstone) continue;
    if (now_s - s.seen.load(std::memory_order_relaxed) <= age_s) continue;
    if (s.key.compare_exchange_strong(v, kTombstone, std::memory_order_acq_rel)) {
      count_.fetch_sub(1, std::memory_order_relaxed);
      n++;
    }
  }
  return n;
}

size_t Fdb::flush() { return expire(UINT32_MAX, 0); }

std::vector<Fdb::Entry> Fdb::entries(uint32_t now_s) const {
  std::vector<Entry> out;
  for (uint32_t i = 0; i <= mask_; i++) {
    uint64_t v = slots_[i].key.load(std::memory_order_acquire);
    if (v == kEmpty || v == kTombstone) continue;
    Entry e{};
    for (size_t b = 0; b < 6; b++) e.mac[b] = static_cast<uint8_t>(v >> (8 * b));
    e.vlan = static_cast<uint16_t>(v >> 48);
    e.age_s = now_s - slots_[i].seen.load(std::memory_order_relaxed);
    out.push_back(e);
  }
  return out;
}

}  // namespace xvmq::switchd
