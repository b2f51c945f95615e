// Frames handed from one thread to a queue worker: a bounded ring with one
// producer and one consumer, each frame copied into a slot of its own.
//
// One ring per (source, destination): a dedicated queue's worker hands
// what its VM sends to a general worker (which knows every port), and the
// host's stack reader hands group frames from the uplink to the first
// general worker. The ring itself says whose frames they are: nothing on
// the per-frame path looks a name up. A worker whose NIC has no backend
// queue of its own on that worker's queue hands frames already switched to
// the worker that owns one (a delivery ring): each frame carries a tag,
// the NIC's delivery id. No lock; a full ring refuses the frame and counts
// it, as does a frame longer than a slot.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

namespace xvmq::switchd {

class HandoffRing {
 public:
  // At least `frames` slots (rounded up to a power of two) of `slot_bytes` each.
  HandoffRing(uint32_t frames, uint32_t slot_bytes) : slot_bytes_(slot_bytes) {
    uint32_t n = 1;
    while (n < frames) n <<= 1;
    mask_ = n - 1;
    lens_ = std::make_unique<uint32_t[]>(n);
    tags_ = std::make_unique<uint32_t[]>(n);
    // Not value-initialised: pages are touched only as slots are used.
    bytes_.reset(new uint8_t[static_cast<size_t>(n) * slot_bytes]);
  }
  HandoffRing(const HandoffRing&) = delete;
  HandoffRing& operator=(const HandoffRing&) = delete;

  uint32_t capacity() const { return mask_ + 1; }
  uint32_t slot_bytes() const { return slot_bytes_; }

  // Producer: copy a frame in; false (and counted) if full or too long.
  bool push(std::span<const uint8_t> frame, uint32_t tag = 0) {
    if (frame.size() > slot_bytes_) {
      too_long_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const uint32_t head = head_.load(std::memory_order_relaxed);
    if (head - tail_.load(std::memory_order_acquire) > mask_) {
      full_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const uint32_t i = head & mask_;
    std::memcpy(slot(i), frame.data(), frame.size());
    lens_[i] = static_cast<uint32_t>(frame.size());
    tags_[i] = tag;
    head_.store(head + 1, std::memory_order_release);
    return true;
  }

  // Consumer.
  bool empty() const { return tail_.load(std::memory_order_relaxed) == head_.load(std::memory_order_acquire); }
  // The oldest frame, valid until pop(); empty if none.
  std::span<const uint8_t> front() const {
    const uint32_t tail = tail_.load(std::memory_order_relaxed);
    if (tail == head_.load(std::memory_order_acquire)) return {};
    const uint32_t i = tail & mask_;
    return {slot(i), lens_[i]};
  }
  // The oldest frame's tag (front() not empty).
  uint32_t front_tag() const { return tags_[tail_.load(std::memory_order_relaxed) & mask_]; }
  void pop() { tail_.store(tail_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }
  // Frames refused since the last look, by reason.
  uint64_t take_full() { return full_.exchange(0, std::memory_order_relaxed); }
  uint64_t take_too_long() { return too_long_.exchange(0, std::memory_order_relaxed); }

 private:
  uint8_t* slot(uint32_t i) const { return bytes_.get() + static_cast<size_t>(i) * slot_bytes_; }

  uint32_t slot_bytes_;
  uint32_t mask_ = 0;
  std::unique_ptr<uint32_t[]> lens_;
  std::unique_ptr<uint32_t[]> tags_;
  std::unique_ptr<uint8_t[]> bytes_;
  alignas(64) std::atomic<uint32_t> head_{0};  // written by the producer
  alignas(64) std::atomic<uint32_t> tail_{0};  // written by the consumer
  std::atomic<uint64_t> full_{0}, too_long_{0};
};

}  // namespace xvmq::switchd
