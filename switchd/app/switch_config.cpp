// config.apply and config.export: the declarative configuration
// (switchd/core/config.h) on the running switch.
#include <cstdio>

#include "switchd/app/ops.h"
#include "switchd/app/switch.h"
#include "switchd/host/service.h"

namespace xvmq::switchd {

using nlohmann::json;

std::optional<UplinkConfig> Switch::uplink_config() const {
  if (!uplink_) return std::nullopt;
  UplinkConfig u = *uplink_;
  if (u.host == "port" && u.host_netdev.empty()) u.host_netdev = default_host_netdev(u.name);
  return u;
}

// The ports a configuration file describes: all but the host port, which
// belongs to the uplink (its [uplink] host = "port").
std::map<std::string, Port> Switch::config_ports() const {
  std::map<std::string, Port> ports = model_.ports();
  if (host_port_) ports.erase(host_port_->port);
  return ports;
}

std::string Switch::config_export() const {
  return "# switchd's running configuration: switchctl apply takes it back\n" +
         to_toml(current_config(config_ports(), uplink_config()));
}

namespace {

// A step's refusal as (kind, message), whatever threw it.
std::optional<SwitchError> run_step(Switch& sw, const Step& s) {
  try {
    run_op(sw, s.op, s.args);
    return std::nullopt;
  } catch (const Refused& r) {
    return r.error;
  } catch (const std::exception& e) {
    return SwitchError{ErrorKind::Kernel, s.op + ": " + e.what()};
  }
}

}  // namespace

json Switch::config_apply(const SwitchConfig& desired, const std::string& source, bool dry_run) {
  const SwitchConfig before = current_config(config_ports(), uplink_config());
  const std::vector<Step> steps = plan(config_ports(), uplink_config(), desired);
  json out{{"steps", json::array()}, {"applied", !dry_run}};
  for (const Step& s : steps) out["steps"].push_back({{"op", s.op}, {"args", s.args}, {"command", s.command()}});
  if (dry_run || steps.empty()) return out;

  service::log(service::Level::Info, "config %s: %zu step(s)", source.c_str(), steps.size());
  for (size_t i = 0; i < steps.size(); i++) {
    service::log(service::Level::Info, "config %s: %zu. %s", source.c_str(), i + 1, steps[i].command().c_str());
    auto failed = run_step(*this, steps[i]);
    if (!failed) continue;
    std::string msg = "config " + source + ": step " + std::to_string(i + 1) + " of " + std::to_string(steps.size()) +
                      " (" + steps[i].command() + ") failed: " + failed->message;
    // Back to where the apply started: the steps already taken, undone.
    const std::vector<Step> back = plan(config_ports(), uplink_config(), before);
    for (size_t j = 0; j < back.size(); j++) {
      service::log(service::Level::Warn, "config %s: undo %zu. %s", source.c_str(), j + 1, back[j].command().c_str());
      if (auto undo = run_step(*this, back[j])) {
        msg += "; undo step " + std::to_string(j + 1) + " (" + back[j].command() + ") failed too: " + undo->message +
               "; the switch is between the two configurations (see switchctl show)";
        service::log(service::Level::Error, "%s", msg.c_str());
        throw Refused(failed->kind, msg);
      }
    }
    msg += "; undone in " + std::to_string(back.size()) + " step(s), nothing changed";
    service::log(service::Level::Error, "%s", msg.c_str());
    throw Refused(failed->kind, msg);
  }
  return out;
}

}  // namespace xvmq::switchd
