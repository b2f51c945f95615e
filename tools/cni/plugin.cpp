#include "tools/cni/plugin.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <vector>

#include "common/fd.h"
#include "control/control.h"
#include "tools/cni/ipam.h"
#include "tools/cni/rtnl.h"

namespace xvmq::cni {

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// switchd over its control socket: a transport failure is "try again later"
// (code 11), a refusal code 100 with switchd's kind and words.
class Switchd {
 public:
  static std::optional<Switchd> connect(const std::string& socket, CniError* err) {
    auto c = control::ControlClient::connect(socket, 10s);
    if (!c) {
      *err = {kTryAgainLater, "switchd is not reachable at " + socket + ": " + c.error().message,
              "start switchd (or fix the configuration's socket), then try again"};
      return std::nullopt;
    }
    return Switchd(std::move(c.value()), socket);
  }

  std::optional<json> call(const std::string& op, const json& args, CniError* err) {
    auto r = client_.call(op, args);
    if (!r) {
      *err = {kTryAgainLater, "switchd at " + socket_ + ": " + op + ": " + r.error().message, ""};
      return std::nullopt;
    }
    if (!r->ok) {
      *err = {kSwitchdRefused, "switchd refused " + op + ": " + r->message + " (" + r->kind + ")", args.dump()};
      return std::nullopt;
    }
    return r->result;
  }

  // The port named `name` as `show` has it, or null.
  std::optional<json> port(const std::string& name, CniError* err) {
    auto show = call("show", json::object(), err);
    if (!show) return std::nullopt;
    for (const auto& p : (*show)["ports"])
      if (p.value("name", "") == name) return p;
    return json(nullptr);
  }

 private:
  Switchd(control::ControlClient c, std::string socket) : client_(std::move(c)), socket_(std::move(socket)) {}
  control::ControlClient client_;
  std::string socket_;
};

// Steps to undo when a later one fails, last first.
class Undo {
 public:
  void push(std::function<void()> f) { steps_.push_back(std::move(f)); }
  void commit() { steps_.clear(); }
  ~Undo() {
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) (*it)();
  }

 private:
  std::vector<std::function<void()>> steps_;
};

std::string owner_of(const json& port) { return port.contains("owner") ? port["owner"].value("container_id", "") : ""; }

// A port this container made, or none: another's is refused (code 102).
bool port_is_ours(const json& port, const RuntimeEnv& env, CniError* err) {
  const std::string owner = owner_of(port);
  if (owner.empty() || owner == env.container_id) return true;
  *err = {kAlreadyExists,
          "switchd's port " + port.value("name", "") + " belongs to container " + owner + ", not " + env.container_id,
          "the host end's name is a hash of the container ID and the interface; this is a collision"};
  return false;
}

// The port and its NIC out of switchd, step by step from the state it is in.
bool remove_port(Switchd& sw, const json& port, CniError* err) {
  if (port.is_null()) return true;
  const std::string name = port.value("name", "");
  const json by_port{{"port", name}}, by_name{{"name", name}};
  if (port["nic"].is_object()) {
    if (port["nic"].value("state", "") == "connected" && !sw.call("nic.disconnect", by_port, err)) return false;
    if (!sw.call("nic.delete", by_port, err)) return false;
  }
  if (port.value("state", "") == "created" && !sw.call("port.teardown", by_name, err)) return false;
  return sw.call("port.delete", by_name, err).has_value();
}

bool uplink_matches(Switchd& sw, const NetConf& conf, CniError* err) {
  auto show = sw.call("show", json::object(), err);
  if (!show) return false;
  const json& up = (*show)["uplink"];
  const std::string name = up.is_object() ? up.value("name", "") : "";
  if (name == conf.uplink) return true;
  *err = {kWrongUplink,
          name.empty() ? "switchd has no uplink attached; the configuration names uplink " + conf.uplink
                       : "switchd's uplink is " + name + ", the configuration names " + conf.uplink,
          "attach it first: switchctl uplink attach " + conf.uplink};
  return false;
}

CniError kernel(const Error& e, const std::string& what) {
  return {e.code == EEXIST ? kAlreadyExists : kKernel, what + ": " + e.message, ""};
}

json nic_args(const NetConf& conf, const std::string& host, const Mac& mac) {
  json a{{"port", host}, {"mac", format_mac(mac)}, {"backend", host}, {"vmq", conf.vmq}};
  if (conf.trunk) {
    a["vlan_mode"] = "trunk";
    a["trunk_vlans"] = conf.trunk->vlans;
    if (conf.trunk->native_vlan) a["native_vlan"] = *conf.trunk->native_vlan;
  } else {
    a["vlan_mode"] = "access";
    a["vlan"] = conf.vlan;
  }
  if (!conf.delivery.empty()) a["delivery"] = conf.delivery;
  return a;
}

// Addresses and routes of the IPAM result on `dev`, in the thread's namespace now.
bool configure(const std::string& dev, const json& ipam, CniError* err) {
  if (auto st = rtnl::set_up(dev); !st) return *err = kernel(st.error(), "container"), false;
  std::optional<rtnl::Prefix> gw4, gw6;
  for (const auto& ip : ipam["ips"]) {
    auto p = rtnl::parse_prefix(ip.value("address", ""));
    if (!p)
      return *err = {kIpamFailed, "the IPAM result's address " + ip.dump() + " is not an address/prefix", ""}, false;
    if (auto st = rtnl::add_address(dev, *p); !st) return *err = kernel(st.error(), "container"), false;
    auto gw = ip.contains("gateway") ? rtnl::parse_prefix(ip.value("gateway", ""), true) : std::nullopt;
    auto& slot = p->family == AF_INET ? gw4 : gw6;
    if (gw && !slot) slot = gw;
  }
  for (const auto& r : ipam.value("routes", json::array())) {
    auto dst = rtnl::parse_prefix(r.value("dst", ""));
    if (!dst) return *err = {kIpamFailed, "the IPAM result's route " + r.dump() + " has no dst prefix", ""}, false;
    auto gw = r.contains("gw") ? rtnl::parse_prefix(r.value("gw", ""), true) : (dst->family == AF_INET ? gw4 : gw6);
    if (auto st = rtnl::add_route(dev, *dst, gw); !st) return *err = kernel(st.error(), "container"), false;
  }
  return true;
}

// The container's side: its interface up with the IPAM result; its MAC.
std::optional<Mac> configure_container(const RuntimeEnv& env, const json& ipam, CniError* err) {
  auto ns = rtnl::NetnsScope::enter(env.netns);
  if (!ns) return *err = {kUnknownContainer, ns.error().message, ""}, std::nullopt;
  if (!configure(env.ifname, ipam, err)) return std::nullopt;
  // Without it switchd's delivery "auto" falls back to xsk (show says why).
  (void)rtnl::gro_on(env.ifname);
  auto mac = rtnl::link_mac(env.ifname);
  if (!mac) return *err = kernel(mac.error(), "container"), std::nullopt;
  return *mac;
}

// So that a fabric that knew these addresses elsewhere learns where they are now.
void announce(const RuntimeEnv& env, const json& ipam) {
  auto ns = rtnl::NetnsScope::enter(env.netns);
  if (!ns) return;
  for (const auto& ip : ipam["ips"])
    if (auto p = rtnl::parse_prefix(ip.value("address", "")); p && p->family == AF_INET)
      (void)rtnl::gratuitous_arp(env.ifname, *p);
}

// The veth pair, its host end up; refuses names in use (code 102).
bool make_veth(const RuntimeEnv& env, const std::string& host, const std::optional<Mac>& mac, CniError* err) {
  Fd netns(::open(env.netns.c_str(), O_RDONLY | O_CLOEXEC));
  if (netns.get() < 0)
    return *err = {kUnknownContainer, "network namespace " + env.netns + ": " + std::strerror(errno), ""}, false;
  if (rtnl::link_exists(host))
    return *err = {kAlreadyExists,
                   "the host end " + host + " exists already (ADD twice for container " + env.container_id + " and " +
                       env.ifname + "? DEL first)",
                   ""},
           false;
  {
    auto ns = rtnl::NetnsScope::enter(env.netns);
    if (!ns) return *err = {kUnknownContainer, ns.error().message, ""}, false;
    if (rtnl::link_exists(env.ifname))
      return *err = {kAlreadyExists, "the container has an interface " + env.ifname + " already", ""}, false;
  }
  if (auto st = rtnl::create_veth(host, env.ifname, netns.get(), mac); !st)
    return *err = kernel(st.error(), "host"), false;
  return true;
}

json result_of(const RuntimeEnv& env, const std::string& host, const Mac& host_mac, const Mac& mac, const json& ipam) {
  json ips = json::array();
  for (json ip : ipam["ips"]) {
    ip["interface"] = 1;
    ips.push_back(ip);
  }
  json r{{"cniVersion", kCniVersion},
         {"interfaces",
          {{{"name", host}, {"mac", format_mac(host_mac)}},
           {{"name", env.ifname}, {"mac", format_mac(mac)}, {"sandbox", env.netns}}}},
         {"ips", ips}};
  if (ipam.contains("routes")) r["routes"] = ipam["routes"];
  if (ipam.contains("dns")) r["dns"] = ipam["dns"];
  return r;
}

}  // namespace

json version_result() { return {{"cniVersion", kCniVersion}, {"supportedVersions", {kCniVersion}}}; }

std::optional<json> cmd_add(const NetConf& conf, const RuntimeEnv& env, const std::string& text, CniError* err) {
  const std::string host = host_name(env.container_id, env.ifname);
  auto sw = Switchd::connect(conf.socket, err);
  if (!sw || !uplink_matches(*sw, conf, err)) return std::nullopt;
  auto existing = sw->port(host, err);
  if (!existing) return std::nullopt;
  if (!existing->is_null())
    return *err = {kAlreadyExists,
                   "switchd has a port " + host + " for container " + env.container_id + " and " + env.ifname +
                       " already (ADD twice? DEL first)",
                   existing->dump()},
           std::nullopt;
  if (!make_veth(env, host, wanted_mac(conf, env), err)) return std::nullopt;
  Undo undo;
  undo.push([host] { (void)rtnl::delete_link(host); });
  (void)rtnl::no_ipv6_addresses(host);
  if (auto st = rtnl::set_up(host); !st) return *err = kernel(st.error(), "host"), std::nullopt;
  auto host_mac = rtnl::link_mac(host);
  if (!host_mac) return *err = kernel(host_mac.error(), "host"), std::nullopt;
  auto ipam = run_ipam(conf.ipam_type, env.path, "ADD", text, err);
  if (!ipam) return std::nullopt;
  undo.push([&] {
    CniError ignored;
    (void)run_ipam(conf.ipam_type, env.path, "DEL", text, &ignored);
  });
  auto mac = configure_container(env, *ipam, err);
  if (!mac) return std::nullopt;
  json owner{{"container_id", env.container_id}, {"ifname", env.ifname}, {"network", conf.name}};
  if (!sw->call("port.create", {{"name", host}, {"owner", owner}}, err)) return std::nullopt;
  undo.push([&] {
    CniError ignored;
    if (auto p = sw->port(host, &ignored)) (void)remove_port(*sw, *p, &ignored);
  });
  if (!sw->call("nic.create", nic_args(conf, host, *mac), err) || !sw->call("nic.connect", {{"port", host}}, err))
    return std::nullopt;
  undo.commit();
  announce(env, *ipam);
  return result_of(env, host, *host_mac, *mac, *ipam);
}

std::optional<json> cmd_del(const NetConf& conf, const RuntimeEnv& env, const std::string& text, CniError* err) {
  const std::string host = host_name(env.container_id, env.ifname);
  CniError sw_err;
  bool port_gone = false;
  if (auto sw = Switchd::connect(conf.socket, &sw_err)) {
    auto port = sw->port(host, &sw_err);
    if (port && !port_is_ours(*port, env, err)) return std::nullopt;
    port_gone = port && remove_port(*sw, *port, &sw_err);
  }
  // What can go without switchd goes: the veth (its peer with it), the addresses.
  if (auto st = rtnl::delete_link(host); !st && st.error().code != ENODEV)
    return *err = kernel(st.error(), "host"), std::nullopt;
  if (!find_plugin(conf.ipam_type, env.path).empty() && !run_ipam(conf.ipam_type, env.path, "DEL", text, err))
    return std::nullopt;  // a plugin that is not there holds nothing
  if (port_gone) return json(nullptr);
  *err = sw_err;
  err->details = "removed the veth " + host + " and the IPAM allocation; switchd's port " + host +
                 (err->code == kTryAgainLater ? " (if any) is left: DEL again once switchd answers"
                                              : " is left: switchd refused to remove it");
  return std::nullopt;
}

namespace {

// The container's interface against prevResult: its MAC and addresses.
bool check_container(const RuntimeEnv& env, const json& prev, const Mac& nic_mac, CniError* err) {
  auto ns = rtnl::NetnsScope::enter(env.netns);
  if (!ns) return *err = {kUnknownContainer, ns.error().message, ""}, false;
  auto mac = rtnl::link_mac(env.ifname);
  if (!mac) return *err = {kCheckFailed, "the container's " + env.ifname + ": " + mac.error().message, ""}, false;
  if (*mac != nic_mac)
    return *err = {kCheckFailed,
                   "the container's " + env.ifname + " has MAC " + format_mac(*mac) + ", switchd's NIC " +
                       format_mac(nic_mac),
                   ""},
           false;
  int index = -1, i = 0;
  for (const auto& itf : prev.value("interfaces", json::array())) {
    if (itf.value("name", "") == env.ifname && itf.contains("sandbox")) {
      index = i;
      if (itf.value("mac", "") != format_mac(*mac))
        return *err = {kCheckFailed,
                       env.ifname + " has MAC " + format_mac(*mac) + ", prevResult says " + itf.value("mac", "(none)"),
                       ""},
               false;
    }
    i++;
  }
  if (index < 0)
    return *err = {kCheckFailed, "prevResult has no interface " + env.ifname + " with a sandbox", ""}, false;
  auto have = rtnl::addresses(env.ifname);
  if (!have) return *err = kernel(have.error(), "container"), false;
  for (const auto& ip : prev.value("ips", json::array())) {
    auto p = rtnl::parse_prefix(ip.value("address", ""));
    if (ip.value("interface", -1) != index || !p) continue;
    if (std::find(have->begin(), have->end(), *p) == have->end())
      return *err = {kCheckFailed, env.ifname + " lacks the address " + p->str() + " of prevResult", ""}, false;
  }
  return true;
}

// switchd's port for this container: there, ours, its NIC connected on the host end.
std::optional<Mac> check_port(Switchd& sw, const RuntimeEnv& env, const std::string& host, CniError* err) {
  auto port = sw.port(host, err);
  if (!port) return std::nullopt;
  if (port->is_null()) return *err = {kCheckFailed, "switchd has no port " + host, ""}, std::nullopt;
  if (owner_of(*port) != env.container_id)
    return *err = {kCheckFailed, "switchd's port " + host + " is owned by '" + owner_of(*port) + "'", ""}, std::nullopt;
  const json& nic = (*port)["nic"];
  if (!nic.is_object() || nic.value("state", "") != "connected")
    return *err = {kCheckFailed, "switchd's port " + host + " has no connected NIC: " + nic.dump(), ""}, std::nullopt;
  if (nic.value("backend", "") != host)
    return *err = {kCheckFailed, "switchd's NIC " + host + " has backend " + nic.value("backend", ""), ""},
           std::nullopt;
  auto mac = parse_mac(nic.value("mac", ""));
  if (!mac) return *err = {kCheckFailed, "switchd's NIC " + host + " has no MAC", ""}, std::nullopt;
  return mac;
}

}  // namespace

std::optional<json> cmd_check(const NetConf& conf, const RuntimeEnv& env, const std::string& text, CniError* err) {
  if (conf.prev_result.is_null())
    return *err = {kInvalidConfig, "prevResult: missing; CHECK needs the result of ADD", ""}, std::nullopt;
  const std::string host = host_name(env.container_id, env.ifname);
  if (!run_ipam(conf.ipam_type, env.path, "CHECK", text, err)) return std::nullopt;
  if (!rtnl::link_exists(host)) return *err = {kCheckFailed, "the host end " + host + " is gone", ""}, std::nullopt;
  auto sw = Switchd::connect(conf.socket, err);
  if (!sw) return std::nullopt;
  auto mac = check_port(*sw, env, host, err);
  if (!mac || !check_container(env, conf.prev_result, *mac, err)) return std::nullopt;
  return json(nullptr);
}

}  // namespace xvmq::cni
