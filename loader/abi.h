// C++ view of bpf/xvmq_abi.h: the same structs, checked for layout here and
// against the BTF of the built object in tests/unit/abi_test.cpp.
#pragma once

#include <linux/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

extern "C" {
#include "bpf/xvmq_abi.h"
}

#include "common/mac.h"  // Mac, parse_mac, format_mac: the keys below are MACs

namespace xvmq {

static_assert(sizeof(xvmq_filter_slot) == 16);
static_assert(offsetof(xvmq_filter_slot, key) == 0);
static_assert(offsetof(xvmq_filter_slot, value) == 8);
static_assert(sizeof(xvmq_counter) == 16);
static_assert(offsetof(xvmq_counter, frames) == 0);
static_assert(offsetof(xvmq_counter, bytes) == 8);

// Reason names as users read them: "miss", "no_socket", ...
std::string_view reason_name(uint32_t reason);
// "XDP_PASS", ... or "?" for a value that is no XDP action.
std::string_view xdp_action_name(uint32_t action);

struct FilterKey {
  Mac mac{};
  uint16_t vlan = XVMQ_VLAN_ANY;  // 0..4094, or XVMQ_VLAN_ANY for MAC-only

  std::string to_string() const;  // "02:00:00:00:00:01 vlan 10" / "... any vlan"
  bool operator==(const FilterKey&) const = default;
};

struct FilterValue {
  uint32_t vmq = 0;
  bool strip_tag = false;

  bool operator==(const FilterValue&) const = default;
};

struct Counter {
  uint64_t frames = 0;
  uint64_t bytes = 0;
};

// Counters summed over CPUs.
struct Counters {
  std::array<Counter, XVMQ_MAX_VMQS> vmq{};
  std::array<Counter, XVMQ_REASON_COUNT> reason{};

  // Frames the classifier saw: each one is in exactly one of vmq[1..] or reason[].
  uint64_t total_frames() const;
};

}  // namespace xvmq
