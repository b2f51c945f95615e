// The switch: what each control operation does, in order, and what is
// kept across restarts. The model decides whether a step is allowed; the
// datapath acts; the state file is written after every change.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

#include "switchd/config.h"
#include "switchd/datapath.h"
#include "switchd/model.h"

namespace xvmq::switchd {

struct SwitchOptions {
  std::string state_dir = "/var/lib/xvmq";
  uint32_t max_vmqs = 2;
  DatapathOptions datapath;
};

class Switch {
 public:
  // Load the saved state, adopt the uplink's classifier and reconnect every
  // NIC that was connected.
  static Result<std::unique_ptr<Switch>> start(const SwitchOptions& opts);
  ~Switch();

  // The control handler (switchd/control.h): throws Refused on a refusal.
  nlohmann::json handle(const std::string& op, const nlohmann::json& args);

  // Detach the classifier from the uplink instead of leaving it to pass
  // frames (shutdown with --detach-on-exit).
  void detach_uplink();

  // Shutdown: remove the NICs' filters (frames to their MACs then go to the
  // default queue, or to the host stack once the sockets are closed).
  void clear_filters();

  // {"show": ..., "stats": ...} under one lock: what a metrics scrape reads.
  nlohmann::json snapshot();

 private:
  explicit Switch(const SwitchOptions& opts);
  void persist();
  void restore();
  NicSpec spec_of(const std::string& port, uint32_t vmq) const;
  // One op, with mu_ held.
  nlohmann::json handle_op(const std::string& op, const nlohmann::json& args);
  // config.apply and config.export (switchd/switch_config.cpp), with mu_ held.
  nlohmann::json config_apply(const nlohmann::json& args);
  nlohmann::json config_export() const;
  std::optional<UplinkConfig> uplink_config() const;
  nlohmann::json show() const;
  nlohmann::json stats() const;
  nlohmann::json port_json(const Port& p) const;
  void event_logged(size_t before);

  SwitchOptions opts_;
  std::string state_path_;
  std::mutex mu_;
  Model model_;
  std::string uplink_;  // the uplink's name, empty when none
  AttachMode uplink_mode_ = AttachMode::Auto;
  std::string uplink_host_;  // "stack", "port" or "" (the uplink had no host addresses)
  std::unique_ptr<Datapath> dp_;
};

}  // namespace xvmq::switchd
