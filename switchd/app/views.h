// The views of the switch: what show, vmq.show, stats, events and fdb.show
// answer (docs/protocol.md), built from the model, the datapath and the
// switch's own state. Read only; the caller holds the switch's lock.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "switchd/app/state_store.h"
#include "switchd/core/model.h"
#include "switchd/dp/datapath.h"

namespace xvmq::switchd {

// One general receive queue's counters, read once.
struct QueueStats {
  QueueInfo queue;
  uint64_t rx_default = 0, rx_stack = 0, rx_vmq = 0, rx_vm = 0, tx = 0;
  std::array<uint64_t, static_cast<size_t>(Drop::Count)> drops{};
  uint64_t xsk[kXskStats] = {};
  PoolState pool;
  // The worker's drops by reason, with the kernel's two receive drops.
  std::map<std::string, uint64_t> drop_reasons() const;
};

// The datapath's counters at one moment: what `stats` shows and what a
// metrics scrape reads.
struct StatsSnapshot {
  std::optional<Counters> classifier;  // none when the read failed
  std::map<std::string, NicTotals> nics;
  std::vector<QueueStats> queues;
  std::vector<DedicatedInfo> dedicated;
  size_t fdb_size = 0, fdb_capacity = 0;
  uint64_t fdb_learned = 0, fdb_learn_refused = 0;
  std::map<uint16_t, uint64_t> vlan_frames;  // VLANs that forwarded frames
  uint32_t burst_budget = 0;
};

// The switch for the metrics: its NICs, vmq pool, uplink and counters.
struct SwitchSnapshot {
  struct NicSummary {
    std::string port;
    NicState state;
    std::optional<uint32_t> vmq_id;
  };
  struct UplinkSummary {
    std::string name;
    AttachMode mode;
    std::string driver;
  };
  size_t ports = 0;
  std::vector<NicSummary> nics;  // the ports that have one
  uint32_t max_vmqs = 0;
  size_t free_vmqs = 0;
  std::optional<UplinkSummary> uplink;  // attached
  StatsSnapshot stats;                  // empty without an uplink
};

StatsSnapshot read_stats(const DatapathApi& dp);

// What the views read, borrowed from the switch.
struct Views {
  const Model& model;
  const DatapathApi* dp;  // none without an uplink
  const std::optional<UplinkConfig>& uplink;
  const std::optional<HostPort>& host_port;
  const FdbStatics& fdb_static;
  const DatapathOptions& dp_opts;

  nlohmann::json show() const;
  nlohmann::json uplink_view() const;  // show's "uplink" (null when none is attached)
  nlohmann::json port(const Port& p) const;
  nlohmann::json port(const std::string& name) const { return port(model.port(name)); }
  nlohmann::json nic(const std::string& port_name) const { return port(port_name)["nic"]; }
  nlohmann::json vmq_show() const;
  nlohmann::json stats() const;
  nlohmann::json events(uint64_t since) const;  // {"events": [...]}
  nlohmann::json fdb_show() const;
  SwitchSnapshot snapshot() const;

 private:
  nlohmann::json host() const;
  nlohmann::json steering(const Nic& n, const std::optional<SteeringState>& ss) const;
  nlohmann::json buffers(const std::optional<SteeringState>& ss) const;
  nlohmann::json affinity(const std::optional<SteeringState>& ss, const std::optional<DeliveryState>& ds) const;
  nlohmann::json queue_view(const QueueInfo& q) const;
};

// ISO 8601 UTC with milliseconds, as events show their time.
std::string iso_time(std::chrono::system_clock::time_point t);

}  // namespace xvmq::switchd
