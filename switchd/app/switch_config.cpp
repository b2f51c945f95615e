// config.apply and config.export: the declarative configuration
// (switchd/core/config.h) on the running switch.
#include <cstdio>

#include "switchd/host/service.h"
#include "switchd/app/switch.h"

namespace xvmq::switchd {

using nlohmann::json;

std::optional<UplinkConfig> Switch::uplink_config() const {
  if (uplink_.empty()) return std::nullopt;
  UplinkConfig u;
  u.name = uplink_;
  u.mode = uplink_mode_;
  u.host = uplink_host_;
  if (uplink_host_ == "port") {
    u.host_netdev = host_netdev_.empty() ? default_host_netdev(uplink_) : host_netdev_;
    u.host_vlan = host_vlan_;
  }
  return u;
}

// The ports a configuration file describes: all but the host port, which
// belongs to the uplink (its [uplink] host = "port").
std::map<std::string, Port> Switch::config_ports() const {
  std::map<std::string, Port> ports = model_.ports();
  if (host_port_) ports.erase(host_port_->port);
  return ports;
}

json Switch::config_export() const {
  return {{"config", "# switchd's running configuration: switchctl apply takes it back\n" +
                         to_toml(current_config(config_ports(), uplink_config()))}};
}

json Switch::config_apply(const json& args) {
  if (!args.contains("config") || !args["config"].is_string())
    throw Refused(ErrorKind::Usage, "config.apply: argument 'config' (the file's TOML text) must be a string");
  if (args.contains("source") && !args["source"].is_string())
    throw Refused(ErrorKind::Usage, "config.apply: argument 'source' must be a string");
  if (args.contains("dry_run") && !args["dry_run"].is_boolean())
    throw Refused(ErrorKind::Usage, "config.apply: argument 'dry_run' must be true or false");
  const std::string source = args.value("source", "config");
  if (source.size() > kMaxSourceBytes)
    throw Refused(ErrorKind::Usage, "config.apply: argument 'source' (the file's name, for messages) is " +
                                        std::to_string(source.size()) + " bytes; the limit is " +
                                        std::to_string(kMaxSourceBytes));
  const bool dry_run = args.value("dry_run", false);
  auto desired = parse_config(args["config"].get<std::string>(), source);
  if (!desired) throw Refused(ErrorKind::Usage, desired.error().message);

  const SwitchConfig before = current_config(config_ports(), uplink_config());
  const std::vector<Step> steps = plan(config_ports(), uplink_config(), *desired);
  json out{{"steps", json::array()}, {"applied", !dry_run}};
  for (const Step& s : steps) out["steps"].push_back({{"op", s.op}, {"args", s.args}, {"command", s.command()}});
  if (dry_run || steps.empty()) return out;

  service::log(service::Level::Info, "config %s: %zu step(s)", source.c_str(), steps.size());
  // A step's refusal as (kind, message), whatever threw it.
  auto run = [&](const Step& s) -> std::optional<SwitchError> {
    try {
      handle_op(s.op, s.args);
      return std::nullopt;
    } catch (const Refused& r) {
      return r.error;
    } catch (const std::exception& e) {
      return SwitchError{ErrorKind::Kernel, s.op + ": " + e.what()};
    }
  };
  for (size_t i = 0; i < steps.size(); i++) {
    service::log(service::Level::Info, "config %s: %zu. %s", source.c_str(), i + 1, steps[i].command().c_str());
    auto failed = run(steps[i]);
    if (!failed) continue;
    std::string msg = "config " + source + ": step " + std::to_string(i + 1) + " of " + std::to_string(steps.size()) +
                      " (" + steps[i].command() + ") failed: " + failed->message;
    // Back to where the apply started: the steps already taken, undone.
    const std::vector<Step> back = plan(config_ports(), uplink_config(), before);
    for (size_t j = 0; j < back.size(); j++) {
      service::log(service::Level::Warn, "config %s: undo %zu. %s", source.c_str(), j + 1, back[j].command().c_str());
      if (auto undo = run(back[j])) {
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
