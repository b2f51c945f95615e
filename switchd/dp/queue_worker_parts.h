// The queue worker's private parts, shared by its units: queue_worker.cpp
// (sockets and their lifecycle), worker_loop.cpp (the thread, receive,
// transmit, completions, refill) and worker_switch.cpp (carrying out the
// switch's decisions, frames handed over by other threads).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "switchd/dp/queue_worker.h"
#include "switchd/dp/vhost_user.h"
#include "xsk/socket.h"

namespace xvmq::switchd {

constexpr uint32_t kTagHeadroom = 64;  // UMEM frame headroom: room to push a VLAN tag in place
constexpr uint32_t kBatch = 64;        // descriptors per receive pass, egresses per chunk
constexpr uint32_t kKicksPerPass = 4;  // sends (32 frames each in copy mode) per socket and pass

inline void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// A (netdev, queue) on the worker's UMEM: its fill and completion rings.
struct QueueWorker::Ctx : xsk::FillComp {
  std::string ifname;
  bool active = false;  // received since the worker's last refill
  Sock* tx_sock = nullptr;
};

struct QueueWorker::Sock {
  enum Kind { Default, Vmq, Backend } kind = Default;
  uint64_t seen[kXskStats] = {};  // the kernel's counters at the last look
  std::unique_ptr<xsk::Socket> xs;
  Ctx* ctx = nullptr;
  Nic* nic = nullptr;        // its NIC; a vmq socket being taken away has none
  uint32_t outstanding = 0;  // sent, not yet completed
  bool queued_kick = false;
};

struct QueueWorker::Nic {
  WorkerNic cfg;
  std::unique_ptr<Ctx> ctx;  // the backend's (netdev, queue); none when cfg.owner delivers
  Sock* backend = nullptr;   // delivers, and receives what the VM sends on this queue
  Sock* vmq_sock = nullptr;
  // The backend's reserved queues this worker serves: receive only.
  std::vector<std::pair<std::unique_ptr<Ctx>, Sock*>> extras;
  bool removing = false;
  int port = -1;  // its index in ports_, -1: not a port (being removed)
  // A vhost-user backend (cfg.vhost): frames are copied into and out of the
  // guest's rings of pair `vhost_pair` here; the control socket too when
  // this worker is the owner (cfg.owner none).
  VhostUserDevice* vhost = nullptr;
  uint32_t vhost_pair = 0;
};

// Frames handed to this worker by one other thread.
struct QueueWorker::Inbox {
  Inbox(uint32_t frames, uint32_t slot_bytes, std::string nic) : ring(frames, slot_bytes), nic(std::move(nic)) {}
  HandoffRing ring;
  // Frames another worker switched, each to the NIC its tag names (a
  // delivery ring from the worker of queue `source`).
  bool deliveries = false;
  uint32_t source = 0;
  std::string nic;      // whose VM sent them; empty: the uplink's, through the host's stack
  Nic* from = nullptr;  // that NIC while it is connected here (rebuild_ports)
};

}  // namespace xvmq::switchd
