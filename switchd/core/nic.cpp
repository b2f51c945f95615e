#include "switchd/core/nic.h"

#include <algorithm>
#include <set>

#include "common/names.h"
#include "switchd/core/model.h"

namespace xvmq::switchd {

using nlohmann::json;

std::string_view to_string(VmqPolicy p) { return p == VmqPolicy::Off ? "off" : "auto"; }
std::string_view to_string(Steering s) { return s == Steering::Software ? "software" : "hardware"; }
std::string_view to_string(Delivery d) {
  switch (d) {
    case Delivery::Auto:
      return "auto";
    case Delivery::Kernel:
      return "kernel";
    case Delivery::Xsk:
      return "xsk";
  }
  return "?";
}

std::optional<Delivery> delivery_from_string(std::string_view s) {
  for (Delivery d : {Delivery::Auto, Delivery::Kernel, Delivery::Xsk})
    if (to_string(d) == s) return d;
  return std::nullopt;
}

std::string_view to_string(VlanMode m) { return m == VlanMode::Access ? "access" : "trunk"; }

bool PortVlans::carries(uint16_t vlan) const {
  if (mode == VlanMode::Access) return vlan == access;
  return (vlan < allowed.size() && allowed[vlan]) || native == vlan;
}

bool PortVlans::sends_tagged(uint16_t vlan) const { return mode == VlanMode::Trunk && native != vlan; }

std::vector<uint16_t> PortVlans::carried() const {
  if (mode == VlanMode::Access) return {access};
  std::set<uint16_t> all(trunk_vlans.begin(), trunk_vlans.end());
  if (native) all.insert(*native);
  return {all.begin(), all.end()};
}

PortVlans PortVlans::access_vlan(uint16_t vlan) { return PortVlans{.access = vlan}; }

PortVlans PortVlans::trunk(const std::vector<uint16_t>& allowed, std::optional<uint16_t> native) {
  PortVlans v{.mode = VlanMode::Trunk, .trunk_vlans = allowed, .native = native};
  for (uint16_t a : allowed)
    if (a < v.allowed.size()) v.allowed.set(a);
  return v;
}

bool same_but_vmq_policy(const NicDesc& a, const NicDesc& b) {
  auto sorted = [](std::vector<uint16_t> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  const PortVlans &va = a.vlans, &vb = b.vlans;
  return a.mac == b.mac && a.backend == b.backend && va.mode == vb.mode &&
         (va.mode == VlanMode::Trunk || va.access == vb.access) &&
         (va.mode == VlanMode::Access ||
          (sorted(va.trunk_vlans) == sorted(vb.trunk_vlans) && va.native == vb.native)) &&
         a.allow_mac_spoofing == b.allow_mac_spoofing && a.steering == b.steering && a.delivery == b.delivery;
}

json nic_fields(const NicDesc& n) {
  return {{"mac", format_mac(n.mac)},
          {"backend", n.backend},
          {"vlan", n.vlans.access},
          {"vlan_mode", to_string(n.vlans.mode)},
          {"trunk_vlans", n.vlans.trunk_vlans},
          {"native_vlan", n.vlans.native ? json(*n.vlans.native) : json(nullptr)},
          {"allow_mac_spoofing", n.allow_mac_spoofing},
          {"vmq_policy", to_string(n.vmq_policy)},
          {"delivery", to_string(n.delivery)},
          {"vmq_cpu", n.vmq_cpu ? json(*n.vmq_cpu) : json(nullptr)}};
}

NicDesc nic_from_state(const std::string& port, const json& n) {
  std::optional<uint16_t> native;
  if (n.contains("native_vlan") && !n["native_vlan"].is_null()) native = n["native_vlan"].get<uint16_t>();
  const bool trunk = n.value("vlan_mode", "access") == "trunk";
  std::optional<uint32_t> vmq_cpu;  // an older file has none: spread
  if (n.contains("vmq_cpu") && n["vmq_cpu"].is_number_unsigned()) vmq_cpu = n["vmq_cpu"].get<uint32_t>();
  return NicDesc{
      .name = port,
      .mac = parse_mac(n.at("mac").get<std::string>()).value_or(Mac{}),
      .backend = n.at("backend").get<std::string>(),
      .vlans = trunk ? PortVlans::trunk(n.value("trunk_vlans", std::vector<uint16_t>{}), native)
                     : PortVlans::access_vlan(n.value("vlan", uint16_t{0})),
      .allow_mac_spoofing = n.value("allow_mac_spoofing", false),
      .vmq_policy = n.value("vmq_policy", "auto") == "off" ? VmqPolicy::Off : VmqPolicy::Auto,
      .steering = n.value("steering", "software") == "hardware" ? Steering::Hardware : Steering::Software,
      .delivery = delivery_from_string(n.value("delivery", "auto")).value_or(Delivery::Auto),
      .vmq_cpu = vmq_cpu,
  };
}

namespace {

[[noreturn]] void usage(const std::string& message) { throw Refused(ErrorKind::Usage, message); }

std::string str_arg(const json& args, const char* name, const char* dflt) {
  if (!args.contains(name)) {
    if (dflt) return dflt;
    usage(std::string("missing argument '") + name + "'");
  }
  if (!args[name].is_string()) usage(std::string("argument '") + name + "' must be a string");
  return args[name].get<std::string>();
}

uint16_t vlan_arg(const json& args, const char* name) {
  const json& v = args[name];
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > XVMQ_VLAN_MAX)
    usage(std::string(name) + " must be an integer 0..4094");
  return v.get<uint16_t>();
}

std::vector<uint16_t> trunk_arg(const json& list) {
  if (!list.is_array()) usage("trunk_vlans must be a list of VLANs 1..4094");
  if (list.size() > XVMQ_VLAN_MAX)
    usage("trunk_vlans has " + std::to_string(list.size()) + " entries; the limit is " + std::to_string(XVMQ_VLAN_MAX) +
          ", one per VLAN 1..4094");
  std::vector<uint16_t> out;
  for (const json& v : list) {
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > XVMQ_VLAN_MAX)
      usage("trunk_vlans must be a list of VLANs 1..4094");
    out.push_back(v.get<uint16_t>());
  }
  return out;
}

PortVlans vlans_arg(const json& args) {
  std::string mode = str_arg(args, "vlan_mode", "access");
  if (mode != "access" && mode != "trunk") usage("vlan_mode '" + mode + "': use access or trunk");
  const bool trunk = mode == "trunk";
  if (args.contains("vlan") && trunk) usage("vlan is an access NIC's; a trunk takes trunk_vlans and native_vlan");
  if (!trunk) {
    const uint16_t vlan = args.contains("vlan") ? vlan_arg(args, "vlan") : 0;
    if (args.contains("trunk_vlans") || args.contains("native_vlan"))
      usage("trunk_vlans and native_vlan need vlan_mode trunk");
    return PortVlans::access_vlan(vlan);
  }
  std::optional<uint16_t> native;
  if (args.contains("native_vlan")) native = vlan_arg(args, "native_vlan");
  return PortVlans::trunk(args.contains("trunk_vlans") ? trunk_arg(args["trunk_vlans"]) : std::vector<uint16_t>{},
                          native);
}

}  // namespace

uint32_t cpu_arg(const json& v, const std::string& name) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxCpu)
    usage(name + " must be a CPU number, an integer 0.." + std::to_string(kMaxCpu) +
          " (null: spread the vmqs over the CPUs)");
  return v.get<uint32_t>();
}

NicDesc nic_from_args(const json& args) {
  NicDesc c;
  std::string mac_text = str_arg(args, "mac", nullptr);
  auto mac = parse_mac(mac_text);
  if (!mac) usage("mac '" + mac_text + "' is not a MAC address (aa:bb:cc:dd:ee:ff)");
  c.mac = *mac;
  c.backend = str_arg(args, "backend", nullptr);
  if (!valid_backend(c.backend)) usage("backend '" + c.backend + "': " + std::string(kBackendRule));
  c.vlans = vlans_arg(args);
  if (args.contains("allow_mac_spoofing")) {
    if (!args["allow_mac_spoofing"].is_boolean()) usage("allow_mac_spoofing must be true or false");
    c.allow_mac_spoofing = args["allow_mac_spoofing"].get<bool>();
  }
  std::string vmq = str_arg(args, "vmq", "auto");
  if (vmq != "auto" && vmq != "off") usage("vmq '" + vmq + "': use auto or off");
  c.vmq_policy = vmq == "off" ? VmqPolicy::Off : VmqPolicy::Auto;
  std::string steering = str_arg(args, "steering", "software");
  if (steering != "software" && steering != "hardware") usage("steering '" + steering + "': use software or hardware");
  c.steering = steering == "hardware" ? Steering::Hardware : Steering::Software;
  const std::string delivery = str_arg(args, "delivery", "auto");
  auto d = delivery_from_string(delivery);
  if (!d)
    usage("delivery '" + delivery +
          "': use auto (kernel where the backend can take it, else xsk), kernel (the kernel redirects the vmq's "
          "frames to the backend) or xsk (switchd's AF_XDP sockets)");
  c.delivery = *d;
  if (is_vhost_user(c.backend) && c.delivery == Delivery::Kernel)
    usage("backend " + c.backend +
          " takes delivery auto or xsk: kernel delivery redirects into a netdev, and a vhost-user backend has none "
          "(switchd copies into the guest's ring)");
  if (args.contains("vmq_cpu") && !args["vmq_cpu"].is_null()) c.vmq_cpu = cpu_arg(args["vmq_cpu"], "vmq_cpu");
  return c;
}

json nic_args(const std::string& port, const NicDesc& c) {
  json a{{"port", port}, {"mac", format_mac(c.mac)}, {"backend", c.backend}, {"vlan_mode", to_string(c.vlans.mode)}};
  if (c.vlans.mode == VlanMode::Access) {
    a["vlan"] = c.vlans.access;
  } else {
    a["trunk_vlans"] = c.vlans.trunk_vlans;
    if (c.vlans.native) a["native_vlan"] = *c.vlans.native;
  }
  a["vmq"] = to_string(c.vmq_policy);
  a["steering"] = to_string(c.steering);
  a["allow_mac_spoofing"] = c.allow_mac_spoofing;
  a["delivery"] = to_string(c.delivery);
  a["vmq_cpu"] = c.vmq_cpu ? json(*c.vmq_cpu) : json(nullptr);
  return a;
}

}  // namespace xvmq::switchd
