#include "switchd/app/ops.h"

#include <array>

#include "switchd/app/switch.h"

namespace xvmq::switchd {

using nlohmann::json;

namespace {

[[noreturn]] void usage(const std::string& message) { throw Refused(ErrorKind::Usage, message); }

std::string arg_string(const json& args, const char* name) {
  if (!args.contains(name)) usage(std::string("missing argument '") + name + "'");
  if (!args[name].is_string()) usage(std::string("argument '") + name + "' must be a string");
  return args[name].get<std::string>();
}

std::string arg_name(const json& args, const char* name) {
  std::string v = arg_string(args, name);
  if (!valid_name(v)) usage(std::string(name) + " '" + v + "': " + kNameRule);
  return v;
}

// An integer 0..4094 or the refusal `message`.
uint16_t vlan_value(const json& v, const std::string& message) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > XVMQ_VLAN_MAX) usage(message);
  return v.get<uint16_t>();
}

}  // namespace

NameArgs parse_name_args(const json& args, bool checked) {
  return {.name = checked ? arg_name(args, "name") : arg_string(args, "name")};
}

PortCreateArgs parse_port_create_args(const json& args) {
  PortCreateArgs a{.name = arg_string(args, "name")};
  if (!args.contains("owner") || args["owner"].is_null()) return a;
  const json& o = args["owner"];
  const char* shape =
      "port.create: owner must be a string (the container ID) or an object {container_id, ifname, network} of "
      "strings";
  if (o.is_string()) {
    a.owner = PortOwner{.container_id = o.get<std::string>()};
  } else {
    if (!o.is_object()) usage(shape);
    PortOwner owner;
    for (const auto& [key, v] : o.items()) {
      std::string* field = key == "container_id" ? &owner.container_id
                           : key == "ifname"     ? &owner.ifname
                           : key == "network"    ? &owner.network
                                                 : nullptr;
      if (!field)
        usage("port.create: owner." + key.substr(0, 64) + " is not a field of owner (container_id, ifname, network)");
      if (!v.is_string()) usage("port.create: owner." + key + " must be a string");
      *field = v.get<std::string>();
    }
    if (!o.contains("container_id")) usage("port.create: owner.container_id is missing (the container's ID)");
    if (o.contains("ifname") && owner.ifname.empty()) usage("port.create: owner.ifname is empty");
    if (o.contains("network") && owner.network.empty()) usage("port.create: owner.network is empty");
    a.owner = std::move(owner);
  }
  if (std::string why = check_owner(*a.owner); !why.empty()) usage("port.create: " + why);
  return a;
}

PortArgs parse_port_args(const json& args) { return {.port = arg_name(args, "port")}; }

NicCreateArgs parse_nic_create_args(const json& args) {
  NicCreateArgs a{.port = arg_name(args, "port")};
  a.nic = nic_from_args(args);
  a.nic.name = a.port;
  return a;
}

VmqArgs parse_vmq_args(const json& args, VmqPolicy fits, const std::string& step) {
  VmqArgs a{.port = arg_name(args, "port")};
  if (fits == VmqPolicy::Auto && args.contains("cpu") && !args["cpu"].is_null())
    a.cpu = cpu_arg(args["cpu"], step + ": cpu");
  if (!args.contains("policy")) return a;
  const std::string want(to_string(fits));
  if (!args["policy"].is_string() || args["policy"].get<std::string>() != want)
    usage(step + ": policy must be \"" + want + "\"");
  a.policy = fits;
  return a;
}

VmqSetArgs parse_vmq_set_args(const json& args) {
  VmqSetArgs a{.port = arg_name(args, "port")};
  if (!args.contains("cpu"))
    usage("vmq.set: missing argument 'cpu' (the vmq's CPU, or null to spread the vmqs over the CPUs)");
  if (!args["cpu"].is_null()) a.cpu = cpu_arg(args["cpu"], "vmq.set: cpu");
  return a;
}

FdbArgs parse_fdb_args(const json& args, const std::string& step) {
  FdbArgs a;
  if (step == "fdb.add") a.port = arg_name(args, "port");
  const std::string text = arg_string(args, "mac");
  auto mac = parse_mac(text);
  if (!mac) usage(step + ": mac '" + text + "' is not a MAC address (aa:bb:cc:dd:ee:ff)");
  a.key = {*mac,
           vlan_value(args.contains("vlan") ? args["vlan"] : json(0), step + ": vlan must be an integer 0..4094")};
  return a;
}

EventsArgs parse_events_args(const json& args) {
  EventsArgs a{.since = args.value("since", uint64_t{0})};
  if (!args.contains("wait_ms")) return a;
  const json& w = args["wait_ms"];
  if (!w.is_number_integer() || w.get<int64_t>() < 0 || w.get<int64_t>() > kMaxEventsWaitMs)
    usage("events: wait_ms must be an integer 0.." + std::to_string(kMaxEventsWaitMs) +
          " (milliseconds to wait for an event newer than since)");
  a.wait_ms = w.get<uint32_t>();
  return a;
}

UplinkConfig parse_attach_args(const json& args) {
  UplinkConfig up{.name = arg_name(args, "name")};
  auto mode = parse_attach_mode(args.value("mode", "auto"));
  if (!mode) usage("mode '" + args.value("mode", "") + "': use auto, native, skb or offload");
  up.mode = *mode;
  up.host = args.value("host", "");
  if (!up.host.empty() && up.host != "stack" && up.host != "port")
    usage("host '" + up.host + "': use stack (frames to " + up.name +
          "'s MAC reach the host's stack) or port (the host moves its addresses to a host port)");
  if (up.host != "port") {
    if (args.contains("host_netdev") || args.contains("host_vlan"))
      usage("host_netdev and host_vlan go with host=port");
    return up;
  }
  up.host_netdev = args.contains("host_netdev") ? arg_name(args, "host_netdev") : default_host_netdev(up.name);
  if (args.contains("host_vlan"))
    up.host_vlan = vlan_value(args["host_vlan"], "host_vlan must be an integer 0..4094 (0: untagged)");
  return up;
}

ConfigApplyArgs parse_config_apply_args(const json& args) {
  if (!args.contains("config") || !args["config"].is_string())
    usage("config.apply: argument 'config' (the file's TOML text) must be a string");
  if (args.contains("source") && !args["source"].is_string()) usage("config.apply: argument 'source' must be a string");
  if (args.contains("dry_run") && !args["dry_run"].is_boolean())
    usage("config.apply: argument 'dry_run' must be true or false");
  ConfigApplyArgs a{.config = args["config"].get<std::string>(),
                    .source = args.value("source", "config"),
                    .dry_run = args.value("dry_run", false)};
  if (a.source.size() > kMaxSourceBytes)
    usage("config.apply: argument 'source' (the file's name, for messages) is " + std::to_string(a.source.size()) +
          " bytes; the limit is " + std::to_string(kMaxSourceBytes));
  return a;
}

namespace {

// The handlers: parse, act, present.
json do_show(Switch& sw, const json&) { return sw.views().show(); }
json do_vmq_show(Switch& sw, const json&) { return sw.views().vmq_show(); }
json do_stats(Switch& sw, const json&) { return sw.views().stats(); }

json do_events(Switch& sw, const json& args) {
  const EventsArgs a = parse_events_args(args);
  json out = sw.views().events(a.since);
  if (out["events"].empty() && a.wait_ms > 0) throw NotYet{a.wait_ms, out};
  return out;
}

json do_fdb_show(Switch& sw, const json&) { return sw.views().fdb_show(); }

json do_fdb_add(Switch& sw, const json& args) {
  const FdbArgs a = parse_fdb_args(args, "fdb.add");
  sw.fdb_add(a.port, a.key);
  return {
      {"mac", format_mac(a.key.first)}, {"vlan", a.key.second}, {"port", a.port}, {"static", true}, {"added", true}};
}

json do_fdb_del(Switch& sw, const json& args) {
  sw.fdb_del(parse_fdb_args(args, "fdb.del").key);
  return nullptr;  // as it always answered
}

json do_fdb_flush(Switch& sw, const json&) { return {{"flushed", sw.fdb_flush()}}; }

json do_uplink_attach(Switch& sw, const json& args) {
  sw.uplink_attach(parse_attach_args(args));
  return sw.views().uplink_view();
}

json do_uplink_detach(Switch& sw, const json&) {
  sw.uplink_detach();
  return json::object();
}

json do_port_create(Switch& sw, const json& args) {
  const PortCreateArgs a = parse_port_create_args(args);
  sw.port_create(a.name, a.owner);
  return sw.views().port(a.name);
}

json do_port_teardown(Switch& sw, const json& args) {
  const NameArgs a = parse_name_args(args, true);
  sw.port_teardown(a.name);
  return sw.views().port(a.name);
}

json do_port_delete(Switch& sw, const json& args) {
  sw.port_delete(parse_name_args(args, true).name);
  return json::object();
}

json do_nic_create(Switch& sw, const json& args) {
  const NicCreateArgs a = parse_nic_create_args(args);
  sw.nic_create(a.port, a.nic);
  return sw.views().nic(a.port);
}

json do_nic_connect(Switch& sw, const json& args) {
  const PortArgs a = parse_port_args(args);
  sw.nic_connect(a.port);
  return sw.views().nic(a.port);
}

json do_nic_disconnect(Switch& sw, const json& args) {
  const PortArgs a = parse_port_args(args);
  sw.nic_disconnect(a.port);
  return sw.views().nic(a.port);
}

json do_nic_delete(Switch& sw, const json& args) {
  sw.nic_delete(parse_port_args(args).port);
  return json::object();
}

json do_vmq_allocate(Switch& sw, const json& args) {
  const VmqArgs a = parse_vmq_args(args, VmqPolicy::Auto, "vmq.allocate");
  sw.vmq_allocate(a.port, a.policy, a.cpu);
  return sw.views().nic(a.port);
}

json do_vmq_free(Switch& sw, const json& args) {
  const VmqArgs a = parse_vmq_args(args, VmqPolicy::Off, "vmq.free");
  sw.vmq_free(a.port, a.policy);
  return sw.views().nic(a.port);
}

json do_vmq_set(Switch& sw, const json& args) {
  const VmqSetArgs a = parse_vmq_set_args(args);
  sw.vmq_set(a.port, a.cpu);
  return sw.views().nic(a.port);
}

json do_config_apply(Switch& sw, const json& args) {
  const ConfigApplyArgs a = parse_config_apply_args(args);
  auto desired = parse_config(a.config, a.source);
  if (!desired) usage(desired.error().message);
  return sw.config_apply(*desired, a.source, a.dry_run);
}

json do_config_export(Switch& sw, const json&) { return {{"config", sw.config_export()}}; }

constexpr std::array kOps{
    Op{"show", false, do_show},
    Op{"vmq.show", false, do_vmq_show},
    Op{"stats", false, do_stats},
    Op{"events", false, do_events},
    Op{"fdb.show", false, do_fdb_show},
    Op{"fdb.add", true, do_fdb_add},
    Op{"fdb.del", true, do_fdb_del},
    Op{"fdb.flush", false, do_fdb_flush},
    Op{"uplink.attach", true, do_uplink_attach},
    Op{"uplink.detach", true, do_uplink_detach},
    Op{"port.create", true, do_port_create},
    Op{"port.teardown", true, do_port_teardown},
    Op{"port.delete", true, do_port_delete},
    Op{"nic.create", true, do_nic_create},
    Op{"nic.connect", true, do_nic_connect},
    Op{"nic.disconnect", true, do_nic_disconnect},
    Op{"nic.delete", true, do_nic_delete},
    Op{"vmq.allocate", true, do_vmq_allocate},
    Op{"vmq.free", true, do_vmq_free},
    Op{"vmq.set", true, do_vmq_set},
    Op{"config.apply", false, do_config_apply},
    Op{"config.export", false, do_config_export},
};

}  // namespace

std::span<const Op> op_table() { return kOps; }

json run_op(Switch& sw, const std::string& name, const json& args) {
  for (const Op& op : kOps) {
    if (op.name != name) continue;
    const uint64_t before = sw.last_event();
    json result = op.run(sw, args);
    if (op.changes) sw.changed(before);
    return result;
  }
  usage("unknown op '" + name + "'");
}

}  // namespace xvmq::switchd
