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

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "loader/classifier.h"
#include "switchd/queue_worker.h"

namespace xvmq::switchd {

struct DatapathOptions {
  std::string pin_root = "/sys/fs/bpf/xvmq";
  AttachMode mode = AttachMode::Auto;
  WorkerOptions worker;
  std::map<uint32_t, int> queue_cpus;  // receive queue -> CPU; others by default
};

struct NicSpec {
  std::string name;
  Mac mac{};
  uint16_t vlan = 0;
  std::string backend;
  uint32_t vmq = 0;  // 0: none, the default queue's software path
};

struct QueueInfo {
  uint32_t queue;
  int cpu;
  std::string cpu_source;  // "interrupt affinity", "spread", "configured"
};

// Counters of one NIC, summed over queues.
struct NicTotals {
  uint64_t fast_frames = 0, fast_bytes = 0, default_frames = 0, default_bytes = 0;
  uint64_t from_vm_frames = 0, from_vm_bytes = 0;
  std::map<std::string, uint64_t> drops;
};

class Datapath {
 public:
  static Result<std::unique_ptr<Datapath>> open(const std::string& uplink, const DatapathOptions& opts);
  ~Datapath();

  const std::string& uplink() const { return uplink_; }
  AttachMode mode() const { return mode_; }
  bool adopted() const { return adopted_; }
  const std::string& driver() const { return driver_; }
  const std::vector<QueueInfo>& queues() const { return queues_; }

  Status connect(const NicSpec& nic);
  Status disconnect(const std::string& name);
  // Give a connected NIC a vmq (sockets, slots, then filter) or take it away (vmq 0).
  Status set_vmq(const NicSpec& nic, uint32_t vmq);
  // Forget a deleted NIC's counters.
  void forget(const std::string& name);
  // Filters that no NIC in `keep` owns are cleared (after a restart).
  Status reconcile_filters(const std::vector<NicSpec>& keep);

  // Detach the classifier and remove its pins (uplink detach).
  Status detach();

  Result<Counters> classifier_counters() const;
  std::map<std::string, NicTotals> nic_totals() const;
  std::vector<std::pair<QueueInfo, PoolState>> pools() const;
  const QueueCounters& queue_counters(size_t i) const { return workers_[i]->counters(); }

 private:
  class VmPort;
  struct Connected;
  Datapath() = default;
  Status install_filter(const NicSpec& nic);
  void clear_filter(const NicSpec& nic);

  std::string uplink_;
  std::string driver_;
  AttachMode mode_ = AttachMode::Native;
  bool adopted_ = false;
  DatapathOptions opts_;
  std::unique_ptr<Classifier> cls_;
  std::vector<std::unique_ptr<QueueWorker>> workers_;
  std::vector<QueueInfo> queues_;
  std::map<std::string, std::unique_ptr<Connected>> connected_;
  std::map<std::string, std::vector<std::shared_ptr<NicCounters>>> counters_;
};

}  // namespace xvmq::switchd
