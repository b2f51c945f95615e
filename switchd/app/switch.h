// The switch: what each control operation does, in order, and what is
// kept across restarts. The model decides whether a step is allowed; the
// datapath acts; the state file is written after every change.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "switchd/core/config.h"
#include "switchd/dp/datapath.h"
#include "switchd/core/model.h"

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
  uint32_t max_vmqs = 2;
  DatapathOptions datapath;
  DatapathFactory open_datapath = open_kernel_datapath;  // tests and fuzzers give an in-memory one
};

class Switch {
 public:
  // Load the saved state, adopt the uplink's classifier and reconnect every
  // NIC that was connected.
  static Result<std::unique_ptr<Switch>> start(const SwitchOptions& opts);
  ~Switch();

  // The control handler (control/control.h): throws Refused on a refusal.
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

  // {"show": ..., "stats": ...} under one lock: what a metrics scrape reads.
  nlohmann::json snapshot();

 private:
  explicit Switch(const SwitchOptions& opts);
  void persist();
  void restore();
  NicSpec spec_of(const std::string& port, uint32_t vmq) const;
  // One op, with mu_ held.
  nlohmann::json handle_op(const std::string& op, const nlohmann::json& args);
  // config.apply and config.export (switchd/app/switch_config.cpp), with mu_ held.
  nlohmann::json config_apply(const nlohmann::json& args);
  nlohmann::json config_export() const;
  std::optional<UplinkConfig> uplink_config() const;
  std::map<std::string, Port> config_ports() const;
  nlohmann::json show() const;
  nlohmann::json host_json() const;
  nlohmann::json stats() const;
  nlohmann::json port_json(const Port& p) const;
  void event_logged(size_t before);
  // host=port: the host port's veth pair, its NIC connected, then the
  // host's addresses and routes moved from the uplink onto it; all or nothing.
  void make_host_port(const std::string& uplink, const std::string& netdev, uint16_t vlan);
  // Addresses and routes back to the uplink, NIC gone, veth pair deleted.
  // Best effort (returns what failed, "" when nothing did).
  std::string remove_host_port();
  void refuse_on_host_port(const std::string& op, const std::string& port) const;

  SwitchOptions opts_;
  std::string state_path_;
  std::mutex mu_;
  Model model_;
  std::string uplink_;  // the uplink's name, empty when none
  AttachMode uplink_mode_ = AttachMode::Auto;
  std::string uplink_host_;  // "stack", "port" or "" (the uplink had no host addresses)
  std::unique_ptr<DatapathApi> dp_;
  std::function<void()> event_hook_;

  // Hyper-V's "management OS shares this adapter": an internal port whose
  // netdev on the host carries the host's addresses (host=port).
  struct HostPort {
    std::string port = "host";  // the switch port and its NIC
    std::string netdev;         // the host's end of the veth pair
    std::string backend;        // the switch's end: the NIC's backend
    uint16_t vlan = 0;
    std::vector<std::string> addresses, routes;  // moved from the uplink at attach
  };
  std::optional<HostPort> host_port_;
  // Static FDB entries: (MAC, VLAN) -> the port whose NIC has that MAC behind it.
  std::map<std::pair<Mac, uint16_t>, std::string> fdb_static_;
  std::vector<std::pair<Mac, uint16_t>> statics_of(const std::string& port) const;
  nlohmann::json vmq_show() const;
  nlohmann::json fdb_add(const nlohmann::json& args);
  nlohmann::json fdb_del(const nlohmann::json& args);
  // host=port's choices, kept to make the host port again after a
  // shutdown that removed it (--detach-on-exit).
  std::string host_netdev_;
  uint16_t host_vlan_ = 0;
};

}  // namespace xvmq::switchd
