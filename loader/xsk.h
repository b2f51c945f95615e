// AF_XDP sockets of one (netdev, receive queue) on one UMEM.
//
// There is one buffer pool per (netdev, queue): every socket on that queue
// shares this object's UMEM and its fill ring (XDP_SHARED_UMEM). The object
// owns the memory, the UMEM and the sockets; it cannot be copied.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

struct xsk_umem;
struct xsk_socket;

namespace xvmq {

struct XskOptions {
  uint32_t frames = 4096;      // UMEM frames
  uint32_t frame_size = 4096;  // bytes per frame
  uint32_t ring_size = 2048;   // rx, fill and completion ring entries
  bool zero_copy = false;      // false: XDP_COPY (the only mode veth has)
};

class XskQueue {
 public:
  static Result<std::unique_ptr<XskQueue>> create(const std::string& ifname, uint32_t queue,
                                                  const XskOptions& opts = {});
  ~XskQueue();
  XskQueue(const XskQueue&) = delete;
  XskQueue& operator=(const XskQueue&) = delete;

  // Add a receive socket bound to this queue; returns its index.
  Result<size_t> add_socket();
  int fd(size_t socket) const;
  size_t sockets() const { return xsks_.size(); }
  uint32_t queue() const { return queue_; }

  // Frames waiting on a socket, copied out; their buffers go back to the
  // fill ring. Waits up to timeout_ms for the first one (0: no wait).
  std::vector<std::vector<uint8_t>> receive(size_t socket, size_t max, int timeout_ms = 0);

 private:
  XskQueue() = default;
  void refill();

  struct Rings;
  std::string ifname_;
  uint32_t queue_ = 0;
  XskOptions opts_;
  void* area_ = nullptr;
  size_t area_size_ = 0;
  xsk_umem* umem_ = nullptr;
  std::unique_ptr<Rings> rings_;
  std::vector<xsk_socket*> xsks_;
  std::vector<uint64_t> free_frames_;
};

}  // namespace xvmq
