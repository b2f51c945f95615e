// The writer's side of the classifier's filter table (see bpf/xvmq_abi.h):
// open addressing in an mmapable BPF array, read by XDP without locks.
//
// One writer per table: the process that holds this object. Freed slots go
// to a tombstone and are given to another key only after kQuarantine, so
// a program run that matched the old key never reads the new key's value.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "loader/abi.h"
#include "common/result.h"

namespace xvmq {

class FilterTable {
 public:
  static constexpr std::chrono::milliseconds kQuarantine{20};

  // Map the table of a loaded or adopted xvmq_filters map.
  static Result<std::unique_ptr<FilterTable>> map(int map_fd);
  ~FilterTable();
  FilterTable(const FilterTable&) = delete;
  FilterTable& operator=(const FilterTable&) = delete;

  // Add or change a filter. The key is checked by the caller.
  Status set(const FilterKey& key, const FilterValue& value);
  Status clear(const FilterKey& key);
  std::optional<FilterValue> get(const FilterKey& key) const;
  std::vector<std::pair<FilterKey, FilterValue>> list() const;
  size_t size() const { return live_; }
  size_t tombstones() const { return tombstones_; }

 private:
  using Clock = std::chrono::steady_clock;
  FilterTable() = default;
  uint64_t load_key(uint32_t pos) const;
  // Tombstones followed by a never-used slot, past quarantine, become unused.
  void compact();

  xvmq_filter_slot* slots_ = nullptr;
  size_t bytes_ = 0;
  size_t live_ = 0;
  size_t tombstones_ = 0;
  std::vector<Clock::time_point> freed_at_;
  std::vector<uint64_t> freed_key_;
};

}  // namespace xvmq
