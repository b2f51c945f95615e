// The MAC addresses learned behind the uplink, per VLAN, shared by every
// queue worker without a lock: a bounded open-addressing table of 64-bit
// words claimed with compare-and-swap. At its bound learning stops (and is
// counted); known traffic is not affected, since forwarding never needs a
// learned entry. A flood of source MACs cannot grow memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "loader/abi.h"

namespace xvmq::switchd {

class Fdb {
 public:
  explicit Fdb(uint32_t capacity);

  enum class Learned { Known, Added, Full };
  // From any worker. now_s: a coarse clock in seconds.
  Learned learn(const Mac& mac, uint16_t vlan, uint32_t now_s);

  // Drop entries not seen for age_s seconds (one thread: the aging timer).
  size_t expire(uint32_t now_s, uint32_t age_s);
  size_t flush();

  struct Entry {
    Mac mac;
    uint16_t vlan;
    uint32_t age_s;
  };
  std::vector<Entry> entries(uint32_t now_s) const;
  uint32_t size() const { return count_.load(std::memory_order_relaxed); }
  uint32_t capacity() const { return capacity_; }
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  static constexpr uint64_t kEmpty = 0, kTombstone = ~0ull;
  static constexpr uint32_t kProbes = 16;
  struct Slot {
    std::atomic<uint64_t> key{kEmpty};
    std::atomic<uint32_t> seen{0};
  };
  uint32_t index(uint64_t key) const;

  uint32_t capacity_;
  uint32_t mask_;
  std::unique_ptr<Slot[]> slots_;
  std::atomic<uint32_t> count_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace xvmq::switchd
