// One receive queue of the uplink and the thread that serves it.
//
// The worker owns the queue's buffer pool: one UMEM, shared by every socket
// it has, on the uplink's queue (the default queue's socket and one socket
// per vmq) and on the same queue of each connected VM NIC's backend netdev
// (each with its own fill and completion rings, fact 3 of DESIGN.md). It
// moves frames between those sockets by passing descriptors: no copy in user
// space except when one frame must leave in two shapes (tagged, untagged).
//
// All socket and table changes run on the worker's thread, sent as commands
// (mailbox.h); the per-frame path takes no lock and allocates nothing.
// Frames from other threads (a dedicated queue's VM, the host's stack)
// arrive on handoff rings, one per source (handoff_ring.h). The buffer
// pool and the sockets are xsk/'s; the worker's jobs are in
// queue_worker.cpp (sockets and their lifecycle), worker_loop.cpp (the
// thread: receive, transmit, completions, the refill rule) and
// worker_switch.cpp (carrying out the switch's decisions, VLAN shapes by
// vlan_tag.h).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "loader/abi.h"
#include "switchd/core/forwarding.h"
#include "switchd/dp/handoff_ring.h"
#include "switchd/dp/mailbox.h"
#include "xsk/socket.h"
#include "xsk/umem_pool.h"

namespace xvmq::switchd {

// The longest frame a UMEM buffer of frame_size bytes holds: the kernel
// keeps XDP_PACKET_HEADROOM (256) and the workers 64 bytes to push a tag.
constexpr uint32_t max_frame(uint32_t frame_size) { return frame_size - 256 - 64; }

// Receive buffers of one queue (docs/architecture.md, "Receive buffers").
// Every fill ring has a floor it is always refilled to: the uplink's queue
// its reserve, each socket on a VM NIC's backend nic_floor. Above its floor
// a backend socket that received since the worker's last pass may be
// refilled up to burst_cap while all that the backend sockets hold above
// their floors stays within burst_budget, shared equally among the active
// ones (one alone may have it all up to its cap). A live socket's fill buffers
// cannot be taken back, so what an idle socket still holds above its floor
// keeps counting against the budget until the kernel receives into it: the
// budget bounds what can be stuck, and the floors are never at risk.
struct WorkerOptions {
  uint32_t frames = 0;  // UMEM frames of this queue; 0: min_frames() of the rule
  uint32_t frame_size = 4096;
  uint32_t ring_size = 1024;       // the uplink's sockets: rx/tx ring entries; every fill/completion ring
  uint32_t nic_ring_size = 512;    // rx/tx ring entries of the sockets on VM NICs' backends
  uint32_t nic_inflight = 256;     // frames in flight to one NIC before drops
  uint32_t uplink_reserve = 1024;  // the uplink's fill ring: its floor
  uint32_t headroom = 512;         // frames for transmit and copies, never posted to a fill ring
  uint32_t burst_budget = 2048;    // all backend sockets of the queue above their floors, at most
  uint32_t burst_cap = 512;        // one backend socket's fill ring, at most
  uint32_t nic_floor = 12;         // each backend socket's fill ring, at least
  uint32_t max_sockets = 1024;     // backend sockets on the queue, at most (the NIC capacity x sockets per NIC)
  bool busy_poll = false;          // spin instead of sleeping in epoll_wait()
  int rt_priority = 10;            // SCHED_FIFO priority of the worker thread, 0: the normal scheduler
};

// The rule's parts from the ring sizes: the uplink's reserve is its ring,
// the burst budget two rings, the headroom half a ring; a backend socket's
// cap is its rx ring (what it can hold before the worker drains it).
inline void derive_buffer_rule(WorkerOptions& o) {
  o.uplink_reserve = o.ring_size;
  o.headroom = o.ring_size / 2;
  o.burst_budget = 2 * o.ring_size;
  o.burst_cap = std::max(o.nic_floor, o.nic_ring_size);
}

// frames = uplink reserve + headroom + burst budget + sockets x floor.
//
// The kernel gives every (netdev, queue) bound to a UMEM a buffer pool
// whose heads array has an entry per UMEM frame (struct xdp_buff_xsk, 128
// bytes on 6.18 x86-64), allocated by kvcalloc: page-order rounded when it
// comes from kmalloc. So each backend socket costs frames x 128 bytes of
// kernel memory, rounded up to a power of two: the defaults keep a queue's
// UMEM under 16384 frames (2 MiB per socket).
constexpr uint64_t kKernelPoolBytesPerFrame = 128;
inline uint64_t kernel_pool_bytes(uint32_t frames) {
  uint64_t b = uint64_t{frames} * kKernelPoolBytesPerFrame, p = 4096;
  while (p < b) p <<= 1;
  return p;
}
inline uint64_t min_frames(const WorkerOptions& o) {
  return uint64_t{o.uplink_reserve} + o.headroom + o.burst_budget + uint64_t{o.max_sockets} * o.nic_floor;
}

// Why the software path did not deliver a frame (per NIC or per queue).
enum class Drop : uint32_t {
  UnknownUnicast,  // from the uplink, to no connected NIC
  SpoofedSource,   // a VM sent with a source MAC not its NIC's
  TaggedOnAccess,  // a tagged frame from an access NIC
  VlanNotAllowed,  // a trunk NIC sent on a VLAN it does not carry, or untagged without a native VLAN
  NoPort,          // no port to send to
  Backpressure,    // the NIC has nic_inflight frames in flight
  TxRingFull,      // the destination socket's ring is full
  NoBuffer,        // no free frame to make a second copy
  Malformed,       // shorter than an Ethernet header or a truncated tag
  VhostNotReady,   // a vhost-user NIC whose guest's receive ring is not live (no QEMU, rings stopped)
  VhostRxRingFull, // the guest's receive ring has no buffers posted (a guest that does not read)
  VhostBadRing,    // the guest's ring or a frame it sent was malformed or too long
  Count
};
std::string_view to_string(Drop d);

// What the kernel counts at an AF_XDP socket (XDP_STATISTICS). rx_dropped
// and rx_ring_full are frames lost before the socket's ring; the others
// count events (a fill ring found empty, bad descriptors from switchd).
enum class XskStat : uint32_t { RxDropped, RxRingFull, RxFillRingEmpty, RxInvalidDescs, TxInvalidDescs, Count };
constexpr size_t kXskStats = static_cast<size_t>(XskStat::Count);
std::string_view to_string(XskStat s);

// Counters one worker keeps for one NIC: single writer, relaxed.
struct NicCounters {
  std::atomic<uint64_t> fast_frames{0}, fast_bytes{0};        // arrived on the NIC's vmq socket
  std::atomic<uint64_t> default_frames{0}, default_bytes{0};  // arrived on the default queue
  std::atomic<uint64_t> from_vm_frames{0}, from_vm_bytes{0};  // sent by the VM
  std::atomic<uint64_t> drops[static_cast<size_t>(Drop::Count)]{};
  std::atomic<uint64_t> xsk_backend[kXskStats]{};  // its backend's sockets: frames from the VM
  std::atomic<uint64_t> xsk_vmq[kXskStats]{};      // its vmq's sockets on the uplink: frames to the VM
  std::atomic<uint64_t> vhost_rx_frames{0}, vhost_rx_bytes{0};  // placed into a vhost-user guest's receive ring
};

struct QueueCounters {
  std::atomic<uint64_t> rx_default{0}, rx_vmq{0}, rx_vm{0}, tx{0};
  std::atomic<uint64_t> rx_stack{0};  // group frames from the uplink, read from the host's stack (host=stack)
  std::atomic<uint64_t> drops[static_cast<size_t>(Drop::Count)]{};
  std::atomic<uint64_t> learned{0}, learn_refused{0};
  std::atomic<uint64_t> xsk[kXskStats]{};     // every socket of this worker, summed
  std::atomic<uint64_t> vlan_frames[4096]{};  // frames the software switch forwarded, by VLAN
};

// A connected NIC as the worker sees it: its descriptor and what only
// this worker keeps for it.
struct WorkerNic {
  NicDesc nic;
  int vmq = 0;                            // 0: none
  std::shared_ptr<NicCounters> counters;  // this worker's counters for the NIC
  // Backend queues this worker also serves for the NIC (reserved queues no
  // dedicated worker has the NIC on, and a backend's queues beyond the
  // uplink's): the VM may transmit on any queue.
  std::vector<uint32_t> extra_queues;
  // The backend has no queue of this worker's number (it has fewer queues
  // than the uplink): no socket on it here. What this worker delivers to
  // the NIC is copied into `owner`'s delivery ring from this worker, tagged
  // with `delivery_id`, and sent on by the owner's backend socket.
  class QueueWorker* owner = nullptr;
  HandoffRing* deliver_ring = nullptr;
  uint32_t delivery_id = 0;  // unique per connect, the same on every worker
  // A backend whose queues in use change while it is connected (a tap,
  // whose guest turns queues on and off: ethtool -L): their number as last
  // read (BackendWatch), null when fixed. This worker, the `index`th general
  // one, delivers on its own socket only while index < that number, else
  // through `fallbacks[index % number]` (general worker i and its delivery
  // ring from this one, i < index) as if it had no socket on the backend.
  std::shared_ptr<const std::atomic<uint32_t>> live_queues;
  std::vector<std::pair<class QueueWorker*, HandoffRing*>> fallbacks;
  uint32_t index = 0;
  // A vhost-user backend (vhost_user.h), shared by the workers: this one
  // serves queue pair `queue()` when the guest enabled it, else hands its
  // deliveries to `owner`, the first worker, which also serves the socket.
  std::shared_ptr<class VhostUserDevice> vhost;
};

// The fds a NIC's sockets got on one worker, for the classifier's and the
// VM port program's slots.
struct NicSockets {
  std::vector<std::pair<uint32_t, int>> backend;  // (backend queue, fd)
  int vmq_fd = -1;
};

// Frames of the buffer pool, by where they are (for leak checks).
struct PoolState {
  uint32_t total = 0, free = 0, in_fill = 0, in_flight = 0;
  uint32_t above_floor = 0;  // held in backend sockets' fill rings above their floors (counts against the burst budget)
};

class QueueWorker {
 public:
  QueueWorker(std::string uplink, uint32_t queue, int cpu, WorkerOptions opts, class Fdb* fdb = nullptr);
  ~QueueWorker();  // stops the thread, closes every socket
  QueueWorker(const QueueWorker&) = delete;
  QueueWorker& operator=(const QueueWorker&) = delete;

  // Create the UMEM and the default queue's socket, start the thread.
  // Returns the default socket's fd for the classifier's slot.
  Result<int> start();
  // A dedicated queue instead: the UMEM is the NIC's own, its vmq socket the
  // only socket on the uplink's queue, and its backend's socket on the same
  // queue delivers. Frames the VM sends on that queue go to `handoff` (a
  // general worker), copied, since they may be for anyone.
  Result<NicSockets> start_dedicated(const WorkerNic& nic, QueueWorker* handoff);

  uint32_t queue() const { return queue_; }
  const WorkerOptions& options() const { return opts_; }
  int epoll_fd() const { return epoll_fd_; }  // for a vhost-user device's eventfds
  int cpu() const { return cpu_; }

  // Sockets of a NIC on this queue: on its backend (returns that fd for
  // the VM port's slot) and, with a vmq, on the uplink (returns its fd in
  // *vmq_fd for the classifier's slot).
  Result<NicSockets> add_nic(const WorkerNic& nic);
  // Give a connected NIC a vmq socket, or take it away (vmq 0).
  Result<int> set_vmq(const std::string& nic, int vmq);
  // Replace the NIC's static FDB entries.
  Status set_statics(const std::string& nic, std::vector<std::pair<Mac, uint16_t>> statics);
  // Stop delivering to the NIC, let its frames in flight complete, close
  // its sockets and take back every buffer they held.
  Status remove_nic(const std::string& nic);

  const QueueCounters& counters() const { return counters_; }
  PoolState pool() const;

  // A frame from the uplink that the classifier passed to the host's
  // stack (host=stack broadcast and multicast), to switch here. One
  // producer thread only (the stack reader): it has a handoff ring of its own.
  void inject_from_uplink(std::span<const uint8_t> frame);

  // A handoff ring for frames that NIC `nic`'s VM sent on a dedicated queue
  // (one producer: that queue's worker), and its removal once the producer
  // has stopped. Any thread.
  HandoffRing* open_handoff(const std::string& nic);
  void close_handoff(HandoffRing* ring);
  // The ring on which the worker of queue `source` hands this worker frames
  // for NICs whose backend socket is here (WorkerNic::owner): made at the
  // first ask, kept while the worker lives. Any thread.
  HandoffRing* delivery_ring(uint32_t source);
  // Make the worker look at its handoff rings and mailbox (any thread).
  void wake();

 private:
  struct Ctx;
  struct Sock;
  struct Nic;
  struct Inbox;

  Status run_on_thread(std::function<Status()> fn);
  // The worker's thread (worker_loop.cpp).
  void loop();
  void set_up_thread();
  uint32_t pass();
  void wait_for_work(uint32_t in_flight);
  uint32_t publish_pool_state();
  void process_rx(Sock& s, uint32_t budget);
  void kick_tx();
  void reap_completions(Ctx& c);
  void refill(Ctx& c, uint32_t target);
  void refill_all();  // every fill ring to its floor, active backend sockets above it within the burst budget
  // Carrying out the switch's decisions (worker_switch.cpp).
  void forward_from_uplink(uint64_t addr, uint32_t len, Nic* vmq_nic);
  void forward_from_vm(Nic& from, uint64_t addr, uint32_t len);
  void execute(const Verdict& v, int ingress, Nic* from, uint64_t addr, uint32_t len);
  void deliver(const Egress& e, uint64_t addr, uint32_t len);
  bool send(Sock& to, Nic* nic, uint64_t addr, uint32_t len);
  void drop(Nic* nic, Drop why);
  void rebuild_ports();
  void drain_inboxes();
  bool inbox_waiting() const;
  void drain_inbox(Inbox& in);
  void hand_off(uint64_t addr, uint32_t len);
  // To a NIC: its backend socket here, or its owner's delivery ring.
  bool to_nic(Nic& n, uint64_t addr, uint32_t len);
  bool hand_to_owner(Nic& n, QueueWorker* owner, HandoffRing* ring, uint64_t addr, uint32_t len);
  void drain_deliveries(Inbox& in);
  // vhost-user NICs (vhost_user.h): what became of a frame for the guest
  // (a VhostUserDevice::Rx), counted; what the guest sent, switched.
  bool guest_took(Nic& n, int result, uint32_t len);
  uint32_t serve_vhost(Nic& n);  // the guest's frames taken
  void wake_owners();
  // Sockets and their lifecycle (queue_worker.cpp).
  Result<Sock*> create_socket(const std::string& ifname, uint32_t queue, Ctx* ctx, uint32_t ring);
  Status open_backend_socket(Nic& n);  // on the NIC's backend, this queue
  Status open_vmq_socket(Nic& n);      // on the uplink, this queue
  Status open_extra_sockets(Nic& n, NicSockets& out);
  Status create_umem();
  void destroy_socket(Sock* s);
  void flush_nic(Nic& n);
  void rebuild_fill_ctxs();
  // Add what the kernel counted at the socket since the last look.
  void read_xsk_stats(Sock& s);

  std::string uplink_;
  uint32_t queue_;
  int cpu_;
  WorkerOptions opts_;
  class Fdb* fdb_ = nullptr;  // shared by the workers; learned from the uplink
  uint32_t now_s_ = 0;        // coarse clock for the FDB, once per loop

  xsk::UmemPool pool_;  // the UMEM's frames: free ones, and the sends holding each
  std::unique_ptr<Ctx> uplink_ctx_;
  std::unique_ptr<xsk::Umem> umem_;
  uint8_t* area_ = nullptr;  // umem_'s memory
  Sock* default_sock_ = nullptr;
  std::vector<std::unique_ptr<Sock>> socks_;
  std::unordered_map<std::string, std::unique_ptr<Nic>> nics_;
  std::vector<NicDesc> ports_;   // the connected NICs, for decide()
  PortIndex port_macs_;          // ports_ by MAC, for decide()
  std::vector<Nic*> port_nics_;  // the same order
  std::vector<Sock*> to_kick_;
  std::vector<Ctx*> fill_ctxs_;  // the backend sockets' fill rings (NICs' and their extras')
  size_t fill_start_ = 0;        // who is first to the burst budget: turns round
  uint32_t above_floor_ = 0;

  QueueCounters counters_;
  std::atomic<uint32_t> pool_free_{0}, pool_fill_{0}, pool_flight_{0}, pool_above_{0};

  std::thread thread_;
  std::atomic<bool> stop_{false};
  int wake_fd_ = -1;
  int epoll_fd_ = -1;  // wake_fd_ and every socket, for the idle worker
  CommandMailbox mailbox_;

  bool dedicated_ = false;
  QueueWorker* handoff_ = nullptr;                  // a dedicated worker's general worker
  HandoffRing* handoff_ring_ = nullptr;             // and its ring there
  std::vector<std::unique_ptr<Inbox>> inboxes_;     // frames handed to this worker, one ring per source
  std::unordered_map<uint32_t, Nic*> by_delivery_;  // NICs whose backend socket is here, by delivery id
  std::vector<QueueWorker*> owners_to_wake_;        // owners handed frames in this pass
  std::vector<Nic*> vhost_nics_;                    // NICs whose vhost-user device is here
};

}  // namespace xvmq::switchd
