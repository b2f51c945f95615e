// The switch: what each control operation does, in order, and what is
// kept across restarts. The model decides whether a step is allowed; the
// datapath acts; the state file is written after every change. The ops
// (switchd/app/ops.h) parse requests into the typed calls below and present
// their results (switchd/app/views.h); JSON stays at that edge.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "switchd/app/state_store.h"
#include "switchd/app/views.h"
#include "switchd/core/config.h"
#include "switchd/core/model.h"
#include "switchd/dp/cpu_affinity.h"
#include "switchd/dp/datapath.h"

namespace xvmq::switchd {

// Thrown by Switch::handle for a request that waits for something to happen
// (`events` with `wait_ms` and nothing newer than `since`): switchd's control
// server parks it (control::Wait) and asks again after each event, answering
// `result` once `wait_ms` has passed.
struct NotYet {
  uint32_t wait_ms = 0;
  nlohmann::json result;
};

// Static FDB entries (fdb.add) switchd keeps at most, all NICs together:
// each is in the state file and in every queue worker's port table.
inline constexpr size_t kMaxStaticFdb = 4096;

// The longest `events` may wait (its `wait_ms`), in ms.
inline constexpr uint32_t kMaxEventsWaitMs = 60000;

// Opens the datapath of an uplink (uplink.attach, and a restored uplink at start).
using DatapathFactory =
    std::function<Result<std::unique_ptr<DatapathApi>>(const std::string& uplink, const DatapathOptions& opts)>;

// The real one: Datapath::open, on the kernel.
Result<std::unique_ptr<DatapathApi>> open_kernel_datapath(const std::string& uplink, const DatapathOptions& opts);

struct SwitchOptions {
  std::string state_dir = "/var/lib/xvmq";
  // A vmq is a filter, a CPUMAP route and, on xsk delivery, one socket per
  // uplink queue sharing that queue's buffer pool: cheap enough that the
  // pool, like a server NIC's VMQ count, covers a host's VMs by default.
  uint32_t max_vmqs = 64;
  DatapathOptions datapath;
  DatapathFactory open_datapath = open_kernel_datapath;  // tests and fuzzers give an in-memory one
  // The CPUs switchd may run on: those a vmq's processor may be.
  std::function<std::vector<int>()> allowed_cpus = switchd::allowed_cpus;
};

class Switch {
 public:
  // Load the saved state, adopt the uplink's classifier and reconnect every
  // NIC that was connected.
  static Result<std::unique_ptr<Switch>> start(const SwitchOptions& opts);
  ~Switch();

  // The control handler (control/control.h): one op of docs/protocol.md,
  // under the switch's lock. Throws Refused on a refusal, NotYet to wait.
  nlohmann::json handle(const std::string& op, const nlohmann::json& args);

  // Detach the classifier from the uplink instead of leaving it to pass
  // frames (shutdown with --detach-on-exit).
  void detach_uplink();

  // Shutdown: remove the NICs' filters (frames to their MACs then go to the
  // default queue, or to the host stack once the sockets are closed).
  void clear_filters();

  // Called (under the switch's lock, on the thread of the op) after an op
  // recorded events: wakes the requests parked on `events`.
  void on_event(std::function<void()> hook);

  // The switch and its counters under one lock: what a metrics scrape reads.
  SwitchSnapshot snapshot();

  // The typed ops, called by the ops table (switchd/app/ops.cpp) with the
  // lock held. Each checks everything it can first and throws Refused.
  void uplink_attach(const UplinkConfig& up);
  void uplink_detach();
  void port_create(const std::string& name, std::optional<PortOwner> owner = std::nullopt);
  void port_teardown(const std::string& name);
  void port_delete(const std::string& name);
  void nic_create(const std::string& port, const NicDesc& nic);
  void nic_connect(const std::string& port);
  void nic_disconnect(const std::string& port);
  void nic_delete(const std::string& port);
  // With a policy the NIC's vmq policy is set too (auto for allocate, off
  // for free); with a cpu, the vmq's processor (as vmq_set).
  void vmq_allocate(const std::string& port, std::optional<VmqPolicy> policy, std::optional<uint32_t> cpu = {});
  void vmq_free(const std::string& port, std::optional<VmqPolicy> policy);
  // The NIC's vmq processor (none: spread over the CPUs), moved at once
  // when it is connected.
  void vmq_set(const std::string& port, std::optional<uint32_t> cpu);
  void fdb_add(const std::string& port, const StaticEntry& key);
  void fdb_del(const StaticEntry& key);
  size_t fdb_flush();
  // config.apply (switchd/app/switch_config.cpp): the steps to `desired`,
  // each through the ops table; all or nothing. Returns the steps.
  nlohmann::json config_apply(const SwitchConfig& desired, const std::string& source, bool dry_run);
  std::string config_export() const;

  Views views() const;
  uint64_t last_event() const { return model_.events().empty() ? 0 : model_.events().back().seq; }
  // After an op that changed the configuration: the state file, the events' log lines.
  void changed(uint64_t events_before);

 private:
  explicit Switch(const SwitchOptions& opts);
  void persist();
  void restore();
  void restore_uplink();
  // The NIC as the datapath takes it, with its static entries and vmq id.
  NicBinding binding(const std::string& port, uint32_t vmq_id) const;
  std::optional<UplinkConfig> uplink_config() const;
  std::map<std::string, Port> config_ports() const;
  bool backend_grew(const std::string& port);
  void check_owned_ports(const SwitchConfig& desired, const std::string& source) const;
  std::vector<StaticEntry> statics_of(const std::string& port) const;
  void check_fdb_add(const std::string& port, const StaticEntry& key) const;
  void check_attach(const UplinkConfig& up) const;
  // A CPU switchd may run on, or Refused(Usage) naming those it may.
  void check_cpu_allowed(const std::string& what, uint32_t cpu) const;
  // A processor for the vmq of `nic`: not with delivery xsk (WrongState),
  // and a CPU switchd may run on.
  void check_vmq_cpu(const std::string& step, const NicDesc& nic, uint32_t cpu) const;
  // Moves a connected NIC's vmq to `cpu` in the datapath (nothing when not
  // connected); Refused with the datapath's message.
  void move_vmq_cpu(const std::string& step, const std::string& port, std::optional<uint32_t> cpu);
  // host=port: the host port's veth pair, its NIC connected, then the
  // host's addresses and routes moved from the uplink onto it; all or nothing.
  void make_host_port(const std::string& uplink, const std::string& netdev, uint16_t vlan);
  void connect_host_nic(HostPort& hp, const Mac& mac);
  // Addresses and routes back to the uplink, NIC gone, veth pair deleted.
  // Best effort (returns what failed, "" when nothing did).
  std::string remove_host_port();
  void refuse_on_host_port(const std::string& op, const std::string& port) const;

  SwitchOptions opts_;
  StateStore store_;
  std::mutex mu_;
  Model model_;
  // The uplink as attached (kept, with the datapath closed, after a shutdown
  // with --detach-on-exit, so that a restart attaches it again).
  std::optional<UplinkConfig> uplink_;
  std::unique_ptr<DatapathApi> dp_;
  std::function<void()> event_hook_;
  std::optional<HostPort> host_port_;
  FdbStatics fdb_static_;
};

}  // namespace xvmq::switchd
