#include "switchd/app/state_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace xvmq::switchd {

using nlohmann::json;

namespace {

void write_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw Refused(ErrorKind::Kernel, "write state " + tmp + ": " + std::strerror(errno));
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0)
    throw Refused(ErrorKind::Kernel, "write state " + path + ": " + std::strerror(errno));
  int dir = ::open(std::filesystem::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

json port_to_json(const Port& p) {
  json j{{"name", p.name}, {"state", to_string(p.state)}, {"nic", nullptr}};
  if (p.owner) j["owner"] = owner_json(*p.owner);
  if (p.nic) {
    const Nic& n = *p.nic;
    j["nic"] = nic_fields(n.desc);
    j["nic"]["steering"] = to_string(n.desc.steering);
    j["nic"]["state"] = to_string(n.state);
    j["nic"]["vmq"] = n.vmq_id ? json(*n.vmq_id) : json(nullptr);
  }
  return j;
}

Port port_from_json(const json& p) {
  Port port{.name = p.at("name").get<std::string>(),
            .state = p.at("state").get<std::string>() == "torn_down" ? PortState::TornDown : PortState::Created};
  if (p.contains("owner") && p["owner"].is_object()) {
    const json& o = p["owner"];
    port.owner = PortOwner{.container_id = o.value("container_id", ""),
                           .ifname = o.value("ifname", ""),
                           .network = o.value("network", "")};
    // A record this switchd would refuse is dropped, not trusted.
    if (!check_owner(*port.owner).empty()) port.owner.reset();
  }
  if (!p.contains("nic") || p["nic"].is_null()) return port;
  const json& n = p["nic"];
  const std::string st = n.at("state").get<std::string>();
  port.nic = Nic{.desc = nic_from_state(port.name, n),
                 .state = st == "connected"      ? NicState::Connected
                          : st == "disconnected" ? NicState::Disconnected
                                                 : NicState::Created};
  if (n.contains("vmq") && !n["vmq"].is_null()) port.nic->vmq_id = n["vmq"].get<uint32_t>();
  return port;
}

json uplink_to_json(const UplinkConfig& u, const std::optional<HostPort>& hp) {
  json j{{"name", u.name}, {"mode", to_string(u.mode)}, {"host", u.host}};
  if (u.host == "port") {
    j["host_netdev"] = u.host_netdev;
    j["host_vlan"] = u.host_vlan;
  }
  if (hp)
    j["host_port"] = {{"port", hp->port}, {"netdev", hp->netdev},       {"backend", hp->backend},
                      {"vlan", hp->vlan}, {"addresses", hp->addresses}, {"routes", hp->routes}};
  return j;
}

UplinkConfig uplink_from_json(const json& u) {
  return UplinkConfig{.name = u.at("name").get<std::string>(),
                      .mode = parse_attach_mode(u.value("mode", "auto")).value_or(AttachMode::Auto),
                      .host = u.value("host", ""),
                      .host_netdev = u.value("host_netdev", ""),
                      .host_vlan = u.value("host_vlan", uint16_t{0})};
}

std::optional<HostPort> host_port_from_json(const json& u) {
  const json& h = u.value("host_port", json(nullptr));
  if (!h.is_object()) return std::nullopt;
  return HostPort{.port = h.value("port", "host"),
                  .netdev = h.at("netdev").get<std::string>(),
                  .backend = h.at("backend").get<std::string>(),
                  .vlan = h.value("vlan", uint16_t{0}),
                  .addresses = h.value("addresses", std::vector<std::string>{}),
                  .routes = h.value("routes", std::vector<std::string>{})};
}

}  // namespace

std::optional<SavedState> StateStore::load() const {
  std::ifstream in(path_);
  if (!in) return std::nullopt;
  json s;
  try {
    s = json::parse(in);
  } catch (const json::exception& e) {
    throw Refused(ErrorKind::Usage, "state " + path_ + " is not valid JSON: " + e.what());
  }
  if (s.value("version", 0) != 1) throw Refused(ErrorKind::Usage, "state " + path_ + ": unknown version");
  SavedState out;
  for (const auto& p : s.value("ports", json::array())) out.ports.push_back(port_from_json(p));
  for (const auto& e : s.value("fdb_static", json::array()))
    if (auto mac = parse_mac(e.at("mac").get<std::string>()))
      out.fdb_static[{*mac, e.value("vlan", uint16_t{0})}] = e.at("port").get<std::string>();
  if (s.contains("uplink") && !s["uplink"].is_null()) {
    out.uplink = uplink_from_json(s["uplink"]);
    out.host_port = host_port_from_json(s["uplink"]);
  }
  return out;
}

void StateStore::save(const std::map<std::string, Port>& ports, const std::optional<UplinkConfig>& uplink,
                      const std::optional<HostPort>& host_port, const FdbStatics& fdb_static) const {
  json ps = json::array();
  for (const auto& [_, p] : ports) ps.push_back(port_to_json(p));
  json statics = json::array();
  for (const auto& [key, port] : fdb_static)
    statics.push_back({{"mac", format_mac(key.first)}, {"vlan", key.second}, {"port", port}});
  json s{{"version", 1},
         {"uplink", uplink ? uplink_to_json(*uplink, host_port) : json(nullptr)},
         {"ports", ps},
         {"fdb_static", statics}};
  write_atomic(path_, s.dump(2) + "\n");
}

}  // namespace xvmq::switchd
