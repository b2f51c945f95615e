// AF_XDP over libxdp: a UMEM, the fill and completion rings of one
// (netdev, queue), and sockets with their rx and tx rings.
//
// One UMEM may serve several (netdev, queue)s, each with its own fill and
// completion rings (DESIGN.md, fact 3); several sockets on one (netdev,
// queue) share that pair (XDP_SHARED_UMEM, fact 2). Nothing here decides
// which socket gets which buffers: the owner of the UmemPool does, with
// the helpers at the end. Objects here own kernel resources and cannot be
// copied; sockets keep pointers to their rings, which must not move.
#pragma once

#include <linux/if_xdp.h>
#include <xdp/xsk.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "xsk/umem_pool.h"

namespace xvmq::xsk {

// The fill and completion rings of one (netdev, queue) on a UMEM.
struct FillComp {
  xsk_ring_prod fill{};
  xsk_ring_cons comp{};
  uint32_t in_fill = 0;  // frames posted to the fill ring, not yet received (kept by the owner)
};

struct UmemConfig {
  uint32_t frames = 4096;
  uint32_t frame_size = 4096;
  uint32_t fill_size = 2048;  // and completion ring entries
  uint32_t headroom = 0;      // bytes before each received frame (room to push a tag)
};

// The packet memory and its registration; the first (netdev, queue)'s
// rings come with it (`first`, which must outlive the UMEM).
class Umem {
 public:
  // `where` names it in errors ("eth0 queue 1").
  static Result<std::unique_ptr<Umem>> create(const UmemConfig& cfg, FillComp& first, const std::string& where);
  ~Umem();
  Umem(const Umem&) = delete;
  Umem& operator=(const Umem&) = delete;

  uint8_t* data() const { return static_cast<uint8_t*>(area_); }
  uint8_t* at(uint64_t addr) const { return data() + addr; }
  xsk_umem* umem() const { return umem_; }
  const UmemConfig& config() const { return cfg_; }

 private:
  Umem() = default;
  UmemConfig cfg_;
  void* area_ = nullptr;
  size_t area_size_ = 0;
  xsk_umem* umem_ = nullptr;
};

struct SocketConfig {
  uint32_t rx_size = 2048;
  uint32_t tx_size = 2048;
  uint16_t bind_flags = XDP_USE_NEED_WAKEUP;
  // A queue a killed process had sockets on is released by a kernel work
  // item after its exit: until then binding says EBUSY. Retry this many
  // times, 10 ms apart (0: fail at once).
  int busy_retries = 0;
};

// One AF_XDP socket bound to (ifname, queue) on a UMEM, sharing `rings`
// with the other sockets of that (netdev, queue). The classifier's XDP
// program is loaded elsewhere (XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD).
class Socket {
 public:
  static Result<std::unique_ptr<Socket>> create(const std::string& ifname, uint32_t queue, Umem& umem, FillComp& rings,
                                                const SocketConfig& cfg);
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  int fd() const { return xsk_socket__fd(xsk_); }
  xsk_ring_cons& rx() { return rx_; }
  xsk_ring_prod& tx() { return tx_; }
  FillComp& rings() const { return *rings_; }

  // Frames waiting in the rx ring (without touching the ring).
  uint32_t rx_ready() const { return *rx_.producer - rx_.cached_cons; }
  // Tell the kernel to transmit; false on an error other than "busy, try
  // again" (EAGAIN, EBUSY, ENOBUFS, ENETDOWN).
  bool kick();
  // Sent descriptors the kernel has not taken yet (copy mode sends a
  // bounded batch per kick).
  bool tx_pending() const { return *tx_.consumer != tx_.cached_prod; }
  // The kernel's counters (XDP_STATISTICS); false if it refused.
  bool statistics(xdp_statistics& st) const;

 private:
  Socket() = default;
  xsk_socket* xsk_ = nullptr;
  xsk_ring_cons rx_{};
  xsk_ring_prod tx_{};
  FillComp* rings_ = nullptr;
};

// Post free frames to a fill ring, up to `want`, all or none of what the
// ring has room for; returns how many (counted in r.in_fill).
uint32_t fill(FillComp& r, UmemPool& pool, uint32_t want);
// Take back what a fill ring still holds (the kernel never used it): only
// once its sockets are closed or about to be.
void reclaim_fill(FillComp& r, UmemPool& pool);
// Completed sends back to the pool (UmemPool::complete); returns how many.
uint32_t complete(FillComp& r, UmemPool& pool, uint32_t max);
// Queue one frame on a socket's tx ring; false if the ring is full.
inline bool tx_one(Socket& s, uint64_t addr, uint32_t len) {
  uint32_t idx = 0;
  if (xsk_ring_prod__reserve(&s.tx(), 1, &idx) != 1) return false;
  xdp_desc* d = xsk_ring_prod__tx_desc(&s.tx(), idx);
  d->addr = addr;
  d->len = len;
  d->options = 0;
  xsk_ring_prod__submit(&s.tx(), 1);
  return true;
}

}  // namespace xvmq::xsk
