// A VM NIC whose backend is `vhost-user:PATH`: switchd serves PATH as a
// vhost-user backend (the "slave"), QEMU connects as the client, and the
// queue worker that owns the NIC moves frames between its UMEM and the
// guest's virtio-net rings itself: one copy each way, no skb, no netdev.
//
// Written here rather than on DPDK's librte_vhost (docs/architecture.md,
// "vhost-user backends"): in 22.11 the library allocates its device,
// virtqueues and memory table from rte_malloc's heap and runs its socket thread through
// rte_ctrl_thread_create, both of which need rte_eal_init (EAL's memory,
// hugepage or --no-huge setup, its own threads and signal handling) in a
// daemon that has none of that; and its ring processing, the part worth
// sharing, is mbuf-based, which an external backend does without anyway.
// What a net backend needs of the protocol is small: one socket, a memory
// table of a few fds, two split rings per queue pair.
//
// What the guest is offered: VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF and
// VHOST_USER_F_PROTOCOL_FEATURES (protocol feature MQ only: as many queue
// pairs as the uplink has general queue workers, and VIRTIO_NET_F_MQ when
// that is more than one), VIRTIO_RING_F_EVENT_IDX (notifications in both
// directions only where the other side asked for them). No checksum or
// segmentation offloads, no indirect descriptors: frames cross the switch
// whole and checked. The MAC and the link status are
// QEMU's (its config space).
//
// Threads: the control socket is served by one worker (the first); queue
// pair p's rings by worker p, whose epoll has their kick eventfds. Each pair
// has a lock, taken per frame by its worker and by the control side when it
// changes that pair's rings; the memory table and a client going away take
// them all. All indices and addresses from the guest are bounded before use.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"

namespace xvmq::switchd {

class VhostUserDevice {
 public:
  enum class Rx { Ok, NotReady, RingFull, BadRing };

  // Listen on `path` (a stale socket file there is replaced), offering one
  // queue pair per entry of `epoll_fds`: pair p's kick eventfds go into
  // epoll_fds[p], the control socket's into epoll_fds[0] (data.ptr = this).
  static Result<std::unique_ptr<VhostUserDevice>> listen(const std::string& path, std::vector<int> epoll_fds,
                                                         const std::string& nic);
  ~VhostUserDevice();  // closes the connection, unmaps guest memory, removes the socket file
  VhostUserDevice(const VhostUserDevice&) = delete;
  VhostUserDevice& operator=(const VhostUserDevice&) = delete;

  // Accept QEMU and serve its messages (the control worker only): never
  // blocks for long (a message's payload follows its header at once).
  void poll_control();
  uint32_t pairs() const { return static_cast<uint32_t>(rings_.size() / 2); }
  // Whether pair p's receive ring is live (memory mapped, ring started and enabled).
  bool rx_live(uint32_t p) const;
  // One frame into pair p's receive ring (header, mergeable buffers, used
  // ring); the notification waits for flush().
  Rx deliver(uint32_t p, const uint8_t* frame, uint32_t len);
  // Copy the next frame the guest sent on pair p into `dst` (at most `cap`
  // bytes): its length, 0 when there is none. A frame longer than cap is
  // dropped (its buffers returned), counted in *too_long.
  uint32_t next_tx(uint32_t p, uint8_t* dst, uint32_t cap, uint64_t* too_long);
  // Clear pair p's kicks, and notify the guest of what deliver() and
  // next_tx() completed on it, unless it suppressed notifications.
  void flush(uint32_t p);
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
    uint16_t signalled_used = 0;  // the used index at the last notification (event index)
    bool signalled_valid = false;
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
  void set_fd(int& slot, int fd, int epoll_fd);  // epoll_fd -1: not watched
  std::vector<std::unique_lock<std::mutex>> lock_all();
  void unmap_all();
  void drop_client();  // QEMU went away: rings, memory and fds dropped, back to listening
  void complete(Ring& r, uint16_t head, uint32_t len);

  std::string path_, nic_;
  int listen_fd_ = -1, conn_fd_ = -1, epoll_fd_ = -1;
  std::vector<int> pair_epoll_;
  uint64_t features_ = 0, protocol_features_ = 0;
  uint32_t hdr_len_ = 12;
  std::vector<Region> regions_;
  std::vector<Ring> rings_;  // 2p: pair p's receive queue (the guest's), 2p + 1: its transmit queue
  std::unique_ptr<std::mutex[]> locks_;  // one per pair
};

}  // namespace xvmq::switchd
