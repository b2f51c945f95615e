// The kernel side of the switch: the classifier on the uplink, one worker
// per receive queue, and per connected NIC its sockets and the VM port
// program on its backend netdev.
//
// Order is what keeps frames from dead ends: on connect, sockets on every
// queue and their slots come first and the filter last; on disconnect the
// filter goes first. Destroying a Datapath closes its sockets and leaves
// the classifier attached with its pins: with no sockets it passes frames
// to the host stack until a new switchd adopts it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "loader/classifier.h"
#include "loader/kernel_delivery.h"
#include "loader/vmport.h"
#include "switchd/dp/backend_watch.h"
#include "switchd/dp/datapath_api.h"
#include "switchd/core/fdb.h"
#include "switchd/core/forwarding.h"
#include "switchd/dp/fdb_aging.h"
#include "switchd/dp/queue_worker.h"
#include "switchd/dp/stack_reader.h"

namespace xvmq::switchd {

enum class FlowRules { Ethtool, External };

struct DatapathOptions {
  std::string pin_root = "/sys/fs/bpf/xvmq";
  AttachMode mode = AttachMode::Auto;
  WorkerOptions worker;
  std::map<uint32_t, int> queue_cpus;  // receive queue -> CPU; others by default
  // The highest receive queues, kept for hardware-steered vmqs.
  uint32_t dedicated_queues = 0;
  // Ethtool: program the NIC's RX flow rule for each; External: trust that
  // the NIC already steers (rules made by other tooling).
  FlowRules flow_rules = FlowRules::Ethtool;
  uint32_t vmq_umem_frames = 2048;  // a hardware-steered vmq's own UMEM
  // VM NICs connected at once, at most: every queue's UMEM reserves each
  // one's floors (WorkerOptions, docs/architecture.md "Receive buffers").
  uint32_t max_nics = 1024;
  uint32_t fdb_size = 8192;  // MACs learned behind the uplink, at most
  uint32_t fdb_age_s = 300;  // forgotten when not seen for this long
  // Frames to the uplink's own MAC go to the host's stack (the host keeps
  // its addresses on the uplink and has no host port).
  bool host_stack = false;
  // Kernel delivery: frames a vmq processor's CPUMAP queue holds. Its
  // kernel thread runs at the workers' priority (worker.rt_priority).
  uint32_t cpu_queue = 4096;
  // Dynamic VMQ by load (docs/architecture.md, "Deliveries"): frames a
  // second a receiving CPU delivers to kernel-delivered vmqs from which
  // they go to their processors; below half of it the receiving CPU
  // delivers them itself again. 0: always to their processors.
  uint32_t spread_above = 100000;
  // A tap's guest turned on more queues than the tap had at connect: bind
  // the NIC's sockets again (the switch, under its lock; false: busy now).
  // Called from the backend watch's thread. Unset: a warning instead.
  std::function<bool(const std::string& nic)> backend_grew;
};

// A NIC as the datapath takes it: its descriptor and the vmq it was given.
struct NicBinding {
  NicDesc nic;
  uint32_t vmq_id = 0;  // 0: none, the default queue's software path
};

// How a connected NIC's vmq is steered.
struct SteeringState {
  bool requested_hw = false;
  bool hardware = false;
  std::string reason;  // why software although hardware was requested
  int queue = -1;      // the dedicated queue
  int cpu = -1;
  std::optional<uint32_t> rule_location;
};

// How a connected NIC's vmq reaches it (NicDesc::delivery as resolved).
struct DeliveryState {
  Delivery effective = Delivery::Xsk;  // Kernel or Xsk
  int cpu = -1;                        // the vmq's processor (kernel delivery); -1: its queues' workers
  std::string cpu_source;              // "configured" (--cpu) or "spread"
  std::string why;                     // why xsk although kernel was requested or auto
};

struct QueueInfo {
  uint32_t queue;
  int cpu;
  std::string cpu_source;  // "configured", "beside the interrupt's CPU N", "spread, beside CPU N"
};

struct DedicatedInfo {
  QueueInfo queue;
  std::string nic;
  PoolState pool;
  uint64_t rx_vmq = 0, tx = 0;
};

// The buffer rule of a general queue for an uplink with `general` general
// and `reserved` dedicated queues: the options each worker gets (frames 0
// in `opts.worker`: the rule's minimum). An error names the rule when
// --umem-frames is below it.
Result<WorkerOptions> general_worker_options(const DatapathOptions& opts, uint32_t general, uint32_t reserved);
// Backend sockets one NIC has on a general queue: its own, and the reserved
// queues that worker serves for it.
inline uint32_t sockets_per_nic(uint32_t general, uint32_t reserved) { return 1 + (reserved + general - 1) / general; }
// A hardware-steered vmq's own UMEM (one NIC): the same rule for one socket.
WorkerOptions dedicated_worker_options(const DatapathOptions& opts);

// Counters of one NIC, summed over queues.
struct NicTotals {
  uint64_t fast_frames = 0, fast_bytes = 0, default_frames = 0, default_bytes = 0;
  uint64_t from_vm_frames = 0, from_vm_bytes = 0;
  uint64_t vhost_rx_frames = 0, vhost_rx_bytes = 0;  // placed into a vhost-user guest's receive ring
  std::map<std::string, uint64_t> drops;
  uint64_t xsk_backend[kXskStats] = {}, xsk_vmq[kXskStats] = {};
  uint64_t kernel_out_frames = 0;  // sent on by its VM port program, in XDP
  uint64_t forced_moves = 0;       // vmq moves made before the old processor caught up
  // Kernel delivery: the backend netdev's own tx_dropped since it began. Not
  // one of `drops`: a tap counts there the frames backend_ring_full counts.
  uint64_t backend_tx_dropped = 0;
};

class Datapath : public DatapathApi {
 public:
  static Result<std::unique_ptr<Datapath>> open(const std::string& uplink, const DatapathOptions& opts);
  ~Datapath();

  const std::string& uplink() const { return uplink_; }
  AttachMode mode() const { return mode_; }
  bool adopted() const { return adopted_; }
  const std::string& driver() const { return driver_; }
  const std::vector<QueueInfo>& queues() const { return queues_; }  // general queues
  const std::vector<QueueInfo>& reserved() const { return reserved_; }
  FlowRules flow_rules() const { return opts_.flow_rules; }
  uint32_t vmq_umem_frames() const { return opts_.vmq_umem_frames; }
  // What every general queue's worker was given (its buffer rule resolved).
  const WorkerOptions& worker_options() const { return worker_opts_; }
  uint32_t max_nics() const { return opts_.max_nics; }
  size_t connected_count() const { return connected_.size(); }
  // Backend sockets of one NIC on each general queue.
  uint32_t nic_sockets_per_queue() const {
    return sockets_per_nic(static_cast<uint32_t>(queues_.size()), static_cast<uint32_t>(reserved_.size()));
  }
  std::optional<SteeringState> steering(const std::string& nic) const;
  std::optional<DeliveryState> delivery(const std::string& nic) const;
  // The classifier's filters, as the kernel has them.
  Result<std::vector<std::pair<FilterKey, FilterValue>>> filters() const;
  std::vector<DedicatedInfo> dedicated() const;

  Status connect(const NicBinding& nic);
  Status disconnect(const std::string& name);
  // Give a connected NIC a vmq (sockets, slots, then filter) or take it away (vmq 0).
  Status set_vmq(const NicBinding& nic, uint32_t vmq);
  // Move a connected NIC's vmq to another processor (none: spread), under
  // traffic, losing and reordering nothing (kernel delivery).
  Status set_vmq_cpu(const std::string& nic, std::optional<uint32_t> cpu);
  // Replace a connected NIC's static FDB entries (a NIC not connected gets
  // them from its NicBinding at connect).
  Status set_statics(const std::string& nic, const std::vector<std::pair<Mac, uint16_t>>& statics);
  // Forget a deleted NIC's counters.
  void forget(const std::string& name);
  // Filters that no NIC in `keep` owns are cleared (after a restart).
  Status reconcile_filters(const std::vector<NicBinding>& keep);

  // Detach the classifier and remove its pins (uplink detach).
  Status detach();

  Result<Counters> classifier_counters() const;
  std::map<std::string, NicTotals> nic_totals() const;
  std::vector<std::pair<QueueInfo, PoolState>> pools() const;
  const QueueCounters& queue_counters(size_t i) const { return workers_[i]->counters(); }
  Fdb& fdb() { return *fdb_; }
  const Fdb& fdb() const { return *fdb_; }
  static uint32_t now_s();  // the FDB's clock

 private:
  struct Connected;
  Datapath() = default;
  // open(): the classifier attached, adopted or taken over; then a worker
  // per general queue, the reserved queues noted.
  Status open_classifier();
  Status start_queues(uint32_t rx_queues);
  // connect(): the steering decided, the dedicated worker (hardware
  // steering), the NIC on every general worker; undone on failure.
  SteeringState steer(const NicBinding& nic) const;
  void software_steering(Connected& c, const NetdevInfo& backend) const;
  Status start_dedicated(Connected& c, const std::shared_ptr<NicCounters>& counters);
  Status add_to_workers(Connected& c, const std::vector<std::shared_ptr<NicCounters>>& counters, size_t& done);
  void undo_connect(Connected& c, size_t done);
  // A vhost-user NIC: no netdev, no VM port program (vhost_user.h).
  Status connect_vhost(const NicBinding& nic);
  // The NIC's counters, one per general worker and one for a dedicated one.
  const std::vector<std::shared_ptr<NicCounters>>& nic_counters(const std::string& nic);
  Status install_filter(const NicBinding& nic);
  void clear_filter(const NicBinding& nic);

  std::string uplink_;
  std::string driver_;
  AttachMode mode_ = AttachMode::Native;
  bool adopted_ = false;
  DatapathOptions opts_;
  WorkerOptions worker_opts_;
  std::unique_ptr<Classifier> cls_;
  std::unique_ptr<Fdb> fdb_;
  std::unique_ptr<FdbAging> aging_;
  std::unique_ptr<BackendWatch> backend_watch_;  // taps' queues in use, as their guests change them
  std::vector<std::unique_ptr<QueueWorker>> workers_;
  std::unique_ptr<StackReader> stack_reader_;  // host=stack only
  std::vector<QueueInfo> queues_;
  std::vector<QueueInfo> reserved_;
  std::map<std::string, std::unique_ptr<Connected>> connected_;
  std::map<std::string, std::vector<std::shared_ptr<NicCounters>>> counters_;
  uint32_t last_delivery_id_ = 0;

  // Kernel delivery (docs/architecture.md, "Deliveries").
  DeliveryState decide_delivery(const NicBinding& nic, const NetdevInfo& backend, const SteeringState& ss) const;
  int spread_cpu() const;
  uint32_t vmq_flags(bool receiving_cpu) const;
  bool on_receiving_cpu(bool tap, bool configured) const;
  Status start_kernel(Connected& c);
  void stop_kernel(Connected& c);
  Status use_cpu(uint32_t cpu);
  Status make_cpu(uint32_t cpu);  // the CPU's CPUMAP entry, once
  xvmq_port_conf port_conf(const Connected& c) const;
  void add_kernel_totals(const Connected& c, NicTotals& t, const KernelCounters* kc, const Counters* cls) const;
  Status sync_ports();
  std::unique_ptr<KernelDelivery> kd_;
  bool uplink_xmit_ = false;  // the uplink takes redirected frames (VM egress in XDP)
  std::string uplink_xmit_why_;
  std::map<uint32_t, int> cpu_vmqs_;  // processor -> kernel-delivered vmqs on it
  std::set<uint32_t> cpus_made_;      // processors whose CPUMAP entry this switchd made
  std::map<uint64_t, xvmq_dest> dests_;
  bool dests_complete_ = true;
};

}  // namespace xvmq::switchd
