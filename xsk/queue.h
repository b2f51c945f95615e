// AF_XDP sockets of one (netdev, receive queue) on one UMEM, for tools and
// tests that read frames out (xvmq-classify serve, xvmq-bench, the
// classifier's tests): the same Umem, Socket and UmemPool as switchd's
// queue workers, with copy-out receive.
//
// There is one buffer pool per (netdev, queue): every socket on that queue
// shares this object's UMEM and its fill ring (XDP_SHARED_UMEM). The object
// owns the memory, the UMEM and the sockets; it cannot be copied.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "xsk/socket.h"
#include "xsk/umem_pool.h"

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
  int fd(size_t socket) const { return socks_.at(socket)->fd(); }
  size_t sockets() const { return socks_.size(); }
  uint32_t queue() const { return queue_; }

  // Frames waiting on a socket, copied out; their buffers go back to the
  // fill ring. Waits up to timeout_ms for the first one (0: no wait).
  std::vector<std::vector<uint8_t>> receive(size_t socket, size_t max, int timeout_ms = 0);

 private:
  XskQueue(uint32_t frames, uint32_t frame_size) : pool_(frames, frame_size) {}

  std::string ifname_;
  uint32_t queue_ = 0;
  XskOptions opts_;
  xsk::FillComp rings_;
  xsk::UmemPool pool_;
  std::unique_ptr<xsk::Umem> umem_;
  std::vector<std::unique_ptr<xsk::Socket>> socks_;
};

}  // namespace xvmq
