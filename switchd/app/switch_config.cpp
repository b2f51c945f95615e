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
// belongs to the uplink (its [uplink] host = "port"), and the ports with an
// owner, which belong to the orchestrator that made them (xvmq-cni): a file
// neither names nor removes them.
std::map<std::string, Port> Switch::config_ports() const {
  std::map<std::string, Port> ports = model_.ports();
  if (host_port_) ports.erase(host_port_->port);
  std::erase_if(ports, [](const auto& kv) { return kv.second.owner.has_value(); });
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

namespace {

std::string owner_words(const PortOwner& o) {
  std::string w = "container " + o.container_id;
  if (!o.ifname.empty()) w += " (" + o.ifname + ")";
  if (!o.network.empty()) w += ", network " + o.network;
  return w;
}

}  // namespace

// A file cannot take an owned port, nor change the uplink under one: both
// refused before any step, naming the port and its owner.
void Switch::check_owned_ports(const SwitchConfig& desired, const std::string& source) const {
  std::vector<std::string> owned;
  for (const auto& [name, p] : model_.ports()) {
    if (!p.owner) continue;
    if (desired.ports.contains(name))
      throw Refused(ErrorKind::Exists, "config " + source + ": port " + name + " belongs to " + owner_words(*p.owner) +
                                           ", which made it: a configuration file cannot manage it (its orchestrator "
                                           "removes it, e.g. CNI DEL)");
    owned.push_back(name);
  }
  if (owned.empty() || uplink_config() == desired.uplink) return;
  std::string names;
  for (size_t i = 0; i < owned.size() && i < 3; i++) names += (i ? ", " : "") + owned[i];
  if (owned.size() > 3) names += ", ...";
  const std::string from = uplink_ ? "uplink " + uplink_->name : "no uplink";
  const std::string to = desired.uplink ? "uplink " + desired.uplink->name : "no uplink";
  throw Refused(ErrorKind::WrongState, "config " + source + ": the file changes " + from + " to " + to + " under " +
                                           std::to_string(owned.size()) + " port(s) with an owner (" + names +
                                           "); their orchestrator removes them first");
}

json Switch::config_apply(const SwitchConfig& desired, const std::string& source, bool dry_run) {
  check_owned_ports(desired, source);
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
