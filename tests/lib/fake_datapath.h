// An in-memory datapath for the switch (switchd/dp/datapath_api.h): no
// classifier, no sockets, no threads. It keeps what a real one would hold
// (connected NICs, their filters and static entries, per-NIC totals, an
// FDB) and refuses what a real one refuses for the reasons a test can see
// (a NIC connected twice, one not connected, an unknown backend), so the
// switch's control logic runs whole: for the fuzzers and kernel-free tests.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "switchd/dp/datapath.h"
#include "switchd/app/switch.h"

namespace xvmq::switchd::test {

struct FakeOptions {
  uint32_t queues = 2;  // general receive queues
  std::string driver = "veth";
  // Whether a NIC's backend netdev exists; by default asks the kernel
  // (rtnetlink, in the caller's network namespace).
  std::function<bool(const std::string&)> backend_exists;
};

class FakeDatapath : public DatapathApi {
 public:
  FakeDatapath(std::string uplink, const DatapathOptions& opts, FakeOptions fake);
  ~FakeDatapath() override;

  // A factory for SwitchOptions::open_datapath. The uplink must exist
  // (fake.backend_exists), as for the real one.
  static DatapathFactory factory(FakeOptions fake = {});

  AttachMode mode() const override { return mode_; }
  bool adopted() const override { return false; }
  const std::string& driver() const override { return fake_.driver; }
  const std::vector<QueueInfo>& queues() const override { return queues_; }
  const std::vector<QueueInfo>& reserved() const override { return reserved_; }
  FlowRules flow_rules() const override { return opts_.flow_rules; }
  uint32_t vmq_umem_frames() const override { return opts_.vmq_umem_frames; }
  const WorkerOptions& worker_options() const override { return worker_; }
  uint32_t max_nics() const override { return opts_.max_nics; }
  size_t connected_count() const override { return connected_.size(); }
  uint32_t nic_sockets_per_queue() const override {
    return sockets_per_nic(static_cast<uint32_t>(queues_.size()), static_cast<uint32_t>(reserved_.size()));
  }
  std::optional<SteeringState> steering(const std::string& nic) const override;
  // Kernel delivery unless xsk was asked for; the vmq's processor as given, else vmq id % 2.
  std::optional<DeliveryState> delivery(const std::string& nic) const override;
  Result<std::vector<std::pair<FilterKey, FilterValue>>> filters() const override;
  std::vector<DedicatedInfo> dedicated() const override { return {}; }

  Status connect(const NicBinding& nic) override;
  Status disconnect(const std::string& name) override;
  Status set_vmq(const NicBinding& nic, uint32_t vmq) override;
  Status set_vmq_cpu(const std::string& nic, std::optional<uint32_t> cpu) override;
  Status set_statics(const std::string& nic, const std::vector<std::pair<Mac, uint16_t>>& statics) override;
  void forget(const std::string& name) override;
  Status reconcile_filters(const std::vector<NicBinding>& keep) override;
  Status detach() override;

  Result<Counters> classifier_counters() const override { return Counters{}; }
  std::map<std::string, NicTotals> nic_totals() const override;
  std::vector<std::pair<QueueInfo, PoolState>> pools() const override;
  const QueueCounters& queue_counters(size_t i) const override { return *counters_.at(i); }
  Fdb& fdb() override { return fdb_; }
  const Fdb& fdb() const override { return fdb_; }

  // For tests: the connected NICs as the switch last gave them.
  const std::map<std::string, NicBinding>& connected() const { return connected_; }
  bool detached() const { return detached_; }
  // For tests: what the switch asked, one line a call ("connect vm1 vmq 1",
  // "set_vmq vm1 0", "disconnect vm1", "forget vm1", "reconcile 2", "detach").
  const std::vector<std::string>& calls() const { return calls_; }
  // For tests: the next connect (set_vmq, set_vmq_cpu) fails with this errno, as the
  // kernel's would, and changes nothing; 0: no failure.
  int fail_next_connect = 0;
  int fail_next_set_vmq = 0;
  int fail_next_set_vmq_cpu = 0;

 private:
  void install(const NicBinding& nic);
  void clear(const NicBinding& nic);

  std::string uplink_;
  DatapathOptions opts_;
  FakeOptions fake_;
  WorkerOptions worker_;  // the buffer rule resolved, as the real one does
  AttachMode mode_;
  std::vector<QueueInfo> queues_, reserved_;
  std::vector<std::unique_ptr<QueueCounters>> counters_;
  Fdb fdb_;
  std::map<std::string, NicBinding> connected_;
  std::map<std::string, bool> known_;  // NICs with totals (connected once, not forgotten)
  std::vector<std::pair<FilterKey, FilterValue>> filters_;
  bool detached_ = false;
  std::vector<std::string> calls_;
};

}  // namespace xvmq::switchd::test
