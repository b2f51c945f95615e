#include "loader/filter_table.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <thread>

namespace xvmq {
namespace {

constexpr uint32_t kMask = XVMQ_FILTER_SLOTS - 1;

uint64_t word(const FilterKey& k) { return xvmq_filter_word(k.mac.data(), k.vlan); }

FilterKey key_of(uint64_t w) {
  FilterKey k;
  for (size_t i = 0; i < 6; i++) k.mac[i] = static_cast<uint8_t>(w >> (8 * i));
  k.vlan = static_cast<uint16_t>(w >> 48);
  return k;
}

FilterValue value_of(uint64_t v) {
  return FilterValue{XVMQ_FILTER_VMQ(v), (XVMQ_FILTER_FLAGS(v) & XVMQ_FILTER_F_STRIP_TAG) != 0};
}

uint64_t value_word(const FilterValue& v) {
  return xvmq_filter_value_word(v.vmq, v.strip_tag ? XVMQ_FILTER_F_STRIP_TAG : 0);
}

void store(__u64& where, uint64_t what) { std::atomic_ref<__u64>(where).store(what, std::memory_order_release); }

}  // namespace

Result<std::unique_ptr<FilterTable>> FilterTable::map(int map_fd) {
  std::unique_ptr<FilterTable> t(new FilterTable());
  t->bytes_ = sizeof(xvmq_filter_slot) * XVMQ_FILTER_SLOTS;
  void* p = mmap(nullptr, t->bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
  if (p == MAP_FAILED) return make_error(errno, std::string("mmap filter table ") + XVMQ_MAP_FILTERS);
  t->slots_ = static_cast<xvmq_filter_slot*>(p);
  t->freed_at_.assign(XVMQ_FILTER_SLOTS, Clock::time_point{});
  t->freed_key_.assign(XVMQ_FILTER_SLOTS, XVMQ_FILTER_EMPTY);
  // An adopted table: its tombstones' quarantine starts now.
  auto now = Clock::now();
  for (uint32_t i = 0; i < XVMQ_FILTER_SLOTS; i++) {
    uint64_t k = t->load_key(i);
    if (k == XVMQ_FILTER_TOMBSTONE) {
      t->tombstones_++;
      t->freed_at_[i] = now;
      t->freed_key_[i] = XVMQ_FILTER_TOMBSTONE;
    } else if (k != XVMQ_FILTER_EMPTY) {
      t->live_++;
    }
  }
  return t;
}

FilterTable::~FilterTable() {
  if (slots_) munmap(slots_, bytes_);
}

uint64_t FilterTable::load_key(uint32_t pos) const {
  return std::atomic_ref<__u64>(slots_[pos].key).load(std::memory_order_acquire);
}

Status FilterTable::set(const FilterKey& key, const FilterValue& value) {
  const uint64_t w = word(key);
  const uint32_t first = xvmq_filter_hash(w);
  for (int attempt = 0; attempt < 2; attempt++) {
    std::optional<uint32_t> free;
    Clock::time_point wait_until{};
    auto now = Clock::now();
    for (uint32_t i = 0; i < XVMQ_FILTER_PROBES; i++) {
      uint32_t pos = (first + i) & kMask;
      uint64_t k = load_key(pos);
      if (k == w) {  // change in place: one word
        store(slots_[pos].value, value_word(value));
        return {};
      }
      bool usable = k == XVMQ_FILTER_EMPTY ||
                    (k == XVMQ_FILTER_TOMBSTONE && (freed_key_[pos] == w || now - freed_at_[pos] >= kQuarantine));
      if (k == XVMQ_FILTER_TOMBSTONE && !usable) wait_until = std::max(wait_until, freed_at_[pos] + kQuarantine);
      if (usable && !free) free = pos;
      if (k == XVMQ_FILTER_EMPTY) break;  // the key is not further on
    }
    if (live_ >= XVMQ_MAX_FILTERS)
      return Error{E2BIG, "filter " + key.to_string() + ": filter map is full (" + std::to_string(XVMQ_MAX_FILTERS) +
                              " entries); clear a filter first"};
    if (free) {
      uint32_t pos = *free;
      if (load_key(pos) == XVMQ_FILTER_TOMBSTONE) tombstones_--;
      store(slots_[pos].value, value_word(value));
      store(slots_[pos].key, w);
      live_++;
      return {};
    }
    if (attempt == 0) {
      compact();
      if (wait_until > Clock::now()) std::this_thread::sleep_until(wait_until);
    }
  }
  return Error{ENOSPC, "filter " + key.to_string() + ": no free slot within " + std::to_string(XVMQ_FILTER_PROBES) +
                           " slots of its hash (" + std::to_string(live_) + " filters in the table)"};
}

Status FilterTable::clear(const FilterKey& key) {
  const uint64_t w = word(key);
  const uint32_t first = xvmq_filter_hash(w);
  for (uint32_t i = 0; i < XVMQ_FILTER_PROBES; i++) {
    uint32_t pos = (first + i) & kMask;
    uint64_t k = load_key(pos);
    if (k == XVMQ_FILTER_EMPTY) break;
    if (k != w) continue;
    store(slots_[pos].key, XVMQ_FILTER_TOMBSTONE);
    freed_at_[pos] = Clock::now();
    freed_key_[pos] = w;
    live_--;
    tombstones_++;
    if (tombstones_ > XVMQ_FILTER_SLOTS / 16) compact();
    return {};
  }
  return Error{ENOENT, "no filter for " + key.to_string()};
}

std::optional<FilterValue> FilterTable::get(const FilterKey& key) const {
  const uint64_t w = word(key);
  const uint32_t first = xvmq_filter_hash(w);
  for (uint32_t i = 0; i < XVMQ_FILTER_PROBES; i++) {
    uint32_t pos = (first + i) & kMask;
    uint64_t k = load_key(pos);
    if (k == w) return value_of(std::atomic_ref<__u64>(slots_[pos].value).load());
    if (k == XVMQ_FILTER_EMPTY) break;
  }
  return std::nullopt;
}

std::vector<std::pair<FilterKey, FilterValue>> FilterTable::list() const {
  std::vector<std::pair<FilterKey, FilterValue>> out;
  for (uint32_t i = 0; i < XVMQ_FILTER_SLOTS; i++) {
    uint64_t k = load_key(i);
    if (k == XVMQ_FILTER_EMPTY || k == XVMQ_FILTER_TOMBSTONE) continue;
    out.emplace_back(key_of(k), value_of(std::atomic_ref<__u64>(slots_[i].value).load()));
  }
  return out;
}

void FilterTable::compact() {
  // Walk backwards from every unused slot: a tombstone just before an unused
  // slot ends no other key's probe, so it can become unused itself.
  auto now = Clock::now();
  for (uint32_t i = 0; i < XVMQ_FILTER_SLOTS; i++) {
    if (load_key(i) != XVMQ_FILTER_EMPTY) continue;
    uint32_t j = (i + kMask) & kMask;
    while (load_key(j) == XVMQ_FILTER_TOMBSTONE && now - freed_at_[j] >= kQuarantine) {
      store(slots_[j].key, XVMQ_FILTER_EMPTY);
      freed_key_[j] = XVMQ_FILTER_EMPTY;
      tombstones_--;
      j = (j + kMask) & kMask;
    }
  }
}

}  // namespace xvmq
