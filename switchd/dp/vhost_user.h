// A VM NIC whose backend is `vhost-user:PATH`: switchd serves PATH as a
// vhost-user backend (the "slave"), QEMU connects as the client, and the
// queue worker that owns the NIC moves frames between its UMEM and the
// guest's virtio-net rings itself: one copy each way, no skb, no netdev.
//
// Written here rather than on DPDK's librte_vhost (docs/architecture.md,
// "vhost-user backends"): in 22.11 the library allocates its device and
// virtqueues from rte_malloc's heap and runs its socket thread through
// rte_ctrl_thread_create, both of which need rte_eal_init (EAL's memory,
// hugepage or --no-huge setup, its own threads and signal handling) in a
// daemon that has none of that; and its ring processing, the part worth
// sharing, is mbuf-based, which an external backend does without anyway.
// What a net backend needs of the protocol is small: one socket, a memory
// table of a few fds, two split rings per queue pair.
//
// What the guest is offered: VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF and
// VHOST_USER_F_PROTOCOL_FEATURES (protocol feature MQ only, answering one
// queue pair). No checksum or segmentation offloads, no indirect
// descriptors, no event index: frames cross the switch whole and checked.
// The MAC and the link status are QEMU's (its config space).
//
// Everything here runs on the owning worker's thread; no locks. All
// indices and addresses from the guest are bounded before use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"

namespace xvmq::switchd {

class VhostUserDevice {
 public:
  enum class Rx { Ok, NotReady, RingFull, BadRing };

  // Listen on `path` (a stale socket file there is replaced). The device
  // registers its fds with `epoll_fd` (the worker's), data.ptr = this.
  static Result<std::unique_ptr<VhostUserDevice>> listen(const std::string& path, int epoll_fd,
                                                         const std::string& nic);
  ~VhostUserDevice();  // closes the connection, unmaps guest memory, removes the socket file
  VhostUserDevice(const VhostUserDevice&) = delete;
  VhostUserDevice& operator=(const VhostUserDevice&) = delete;

  // Accept QEMU, serve its messages, clear the transmit kick: never blocks
  // for long (a message's payload follows its header at once).
  void poll_control();
  // Whether the guest's receive ring is live (memory mapped, ring started and enabled).
  bool rx_live() const;
  // One frame into the guest's receive ring (header, mergeable buffers,
  // used ring); the notification waits for flush().
  Rx deliver(const uint8_t* frame, uint32_t len);
  // Copy the next frame the guest sent into `dst` (at most `cap` bytes):
  // its length, 0 when there is none. A frame longer than cap is dropped
  // (its buffers returned), counted in *too_long.
  uint32_t next_tx(uint8_t* dst, uint32_t cap, uint64_t* too_long);
  // Notify the guest of what deliver() and next_tx() completed, unless it
  // suppressed notifications.
  void flush();
  bool connected() const { return conn_fd_ >= 0; }

 private:
  struct Region {
    uint64_t gpa = 0, size = 0, uva = 0;
    uint8_t* base = nullptr;  // gpa's address here
    void* map = nullptr;
    size_t map_len = 0;
  };
  struct Ring {
    uint32_t num = 0;
    uint64_t desc_uva = 0, avail_uva = 0, used_uva = 0;
    struct Desc* desc = nullptr;
    struct Avail* avail = nullptr;
    struct Used* used = nullptr;
    uint16_t last_avail = 0, last_used = 0;
    int kick = -1, call = -1;
    bool started = false, enabled = false, polled = false, notify = false;
  };
  VhostUserDevice() = default;

  bool live(const Ring& r) const;
  uint8_t* gpa(uint64_t addr, uint64_t len) const;
  uint8_t* uva(uint64_t addr, uint64_t len) const;
  void map_ring(Ring& r);
  void accept_client();
  bool serve_one();  // false: the connection is gone
  bool handle(uint32_t req, uint32_t flags, const uint8_t* payload, uint32_t size, std::vector<int>& fds);
  bool reply(uint32_t req, const void* payload, uint32_t size);
  bool set_mem_table(const uint8_t* payload, uint32_t size, const std::vector<int>& fds);
  bool handle_vring(uint32_t req, const uint8_t* payload, uint32_t size);
  bool set_vring_fd(uint32_t req, uint64_t value, std::vector<int>& fds);
  void reset_rings();
  void set_fd(int& slot, int fd, bool watch);
  void unmap_all();
  void drop_client();  // QEMU went away: rings, memory and fds dropped, back to listening
  void complete(Ring& r, uint16_t head, uint32_t len);

  std::string path_, nic_;
  int listen_fd_ = -1, conn_fd_ = -1, epoll_fd_ = -1;
  uint64_t features_ = 0, protocol_features_ = 0;
  uint32_t hdr_len_ = 12;
  std::vector<Region> regions_;
  Ring rings_[2];  // 0: the guest's receive queue, 1: its transmit queue
};

}  // namespace xvmq::switchd
