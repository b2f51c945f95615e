// The free frames of one UMEM, and how many sends still hold each frame.
//
// A frame is free (in the pool), or out: posted to a fill ring, received,
// or being transmitted. A frame sent to several destinations (a flood)
// goes back to the pool when the last of them completes; a received frame
// that nothing sent goes back at once. Single-threaded: the queue's worker
// (or a tool's one thread) owns it. Batch operations, as Open vSwitch's
// lib/netdev-afxdp-pool.c, for the fill and completion rings.
#pragma once

#include <cstdint>
#include <vector>

namespace xvmq::xsk {

class UmemPool {
 public:
  static constexpr uint64_t kNone = UINT64_MAX;

  // frames x frame_size bytes, every frame free; pop() hands out frame 0 first.
  UmemPool(uint32_t frames, uint32_t frame_size);

  uint32_t total() const { return static_cast<uint32_t>(refs_.size()); }
  uint32_t size() const { return static_cast<uint32_t>(free_.size()); }  // free frames
  bool empty() const { return free_.empty(); }
  uint32_t frame_size() const { return frame_size_; }
  // Frames put back while already free (a bug upstream): refused, counted.
  uint64_t double_frees() const { return double_frees_; }

  // The frame an address (a descriptor's, with headroom) lies in: its base.
  uint64_t base(uint64_t addr) const { return addr - addr % frame_size_; }

  // A free frame's base address, or kNone.
  uint64_t pop() {
    if (free_.empty()) return kNone;
    const uint64_t a = free_.back();
    free_.pop_back();
    state_[a / frame_size_] = kOut;
    return a;
  }
  // Up to n free frames into out; returns how many.
  uint32_t pop_n(uint64_t* out, uint32_t n);
  // The frame of addr back to the pool.
  void push(uint64_t addr) {
    const uint64_t b = base(addr);
    uint8_t& s = state_[b / frame_size_];
    if (s == kFree) {
      double_frees_++;
      return;
    }
    s = kFree;
    free_.push_back(b);
  }
  void push_n(const uint64_t* addrs, uint32_t n);

  // One more send holds the frame of addr.
  void hold(uint64_t addr) { refs_[addr / frame_size_]++; }
  uint16_t holds(uint64_t addr) const { return refs_[addr / frame_size_]; }
  // A send of the frame completed: back to the pool when it was the last.
  void complete(uint64_t addr) {
    uint16_t& r = refs_[addr / frame_size_];
    if (r == 0 || --r == 0) push(addr);
  }
  // Done with a frame here (received, copied into, or a second copy): back
  // to the pool unless a send still holds it.
  void free_if_unheld(uint64_t addr) {
    if (refs_[addr / frame_size_] == 0) push(addr);
  }

 private:
  enum : uint8_t { kOut = 0, kFree = 1 };
  uint32_t frame_size_;
  std::vector<uint64_t> free_;
  std::vector<uint16_t> refs_;  // per frame: sends still holding it
  std::vector<uint8_t> state_;  // per frame: kFree or kOut
  uint64_t double_frees_ = 0;
};

}  // namespace xvmq::xsk
