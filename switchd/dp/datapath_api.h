// What the switch (switchd/app/switch.h) asks of its datapath: the seam
// between the control logic and the kernel. Datapath (switchd/dp/datapath.h)
// is the real one, over libbpf and AF_XDP; tests and fuzzers give the
// switch an in-memory one (tests/lib/fake_datapath.h) through
// SwitchOptions::open_datapath, so every op can run without a kernel.
//
// The value types (NicBinding, QueueInfo, ...) are datapath.h's; they are only
// named here, so that header needs no other change than deriving from this.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loader/abi.h"
#include "loader/classifier.h"
#include "common/result.h"

namespace xvmq::switchd {

class Fdb;
struct QueueCounters;
struct PoolState;
struct WorkerOptions;
struct NicBinding;
struct SteeringState;
struct DeliveryState;
struct QueueInfo;
struct DedicatedInfo;
struct NicTotals;
enum class FlowRules;

class DatapathApi {
 public:
  virtual ~DatapathApi() = default;

  // The uplink as attached.
  virtual AttachMode mode() const = 0;
  virtual bool adopted() const = 0;  // a classifier left by an earlier switchd was taken over
  virtual const std::string& driver() const = 0;
  virtual const std::vector<QueueInfo>& queues() const = 0;  // general queues
  virtual const std::vector<QueueInfo>& reserved() const = 0;
  virtual FlowRules flow_rules() const = 0;
  virtual uint32_t vmq_umem_frames() const = 0;
  // Receive buffers (docs/architecture.md, Receive buffers): what every
  // general queue's worker was given, the NIC capacity, the NICs connected
  // and each NIC's backend sockets per general queue.
  virtual const WorkerOptions& worker_options() const = 0;
  virtual uint32_t max_nics() const = 0;
  virtual size_t connected_count() const = 0;
  virtual uint32_t nic_sockets_per_queue() const = 0;
  virtual std::optional<SteeringState> steering(const std::string& nic) const = 0;
  virtual std::optional<DeliveryState> delivery(const std::string& nic) const = 0;
  // The classifier's filters, as the kernel has them.
  virtual Result<std::vector<std::pair<FilterKey, FilterValue>>> filters() const = 0;
  virtual std::vector<DedicatedInfo> dedicated() const = 0;

  // NICs: sockets, slots and filters (the order is the datapath's business).
  virtual Status connect(const NicBinding& nic) = 0;
  virtual Status disconnect(const std::string& name) = 0;
  virtual Status set_vmq(const NicBinding& nic, uint32_t vmq) = 0;
  // The vmq's processor (kernel delivery); none: spread over the CPUs.
  virtual Status set_vmq_cpu(const std::string& nic, std::optional<uint32_t> cpu) = 0;
  virtual Status set_statics(const std::string& nic, const std::vector<std::pair<Mac, uint16_t>>& statics) = 0;
  virtual void forget(const std::string& name) = 0;
  virtual Status reconcile_filters(const std::vector<NicBinding>& keep) = 0;
  virtual Status detach() = 0;

  // Counters and tables, for show, stats and fdb.*.
  virtual Result<Counters> classifier_counters() const = 0;
  virtual std::map<std::string, NicTotals> nic_totals() const = 0;
  virtual std::vector<std::pair<QueueInfo, PoolState>> pools() const = 0;
  virtual const QueueCounters& queue_counters(size_t i) const = 0;  // i < queues().size()
  virtual Fdb& fdb() = 0;
  virtual const Fdb& fdb() const = 0;
};

}  // namespace xvmq::switchd
