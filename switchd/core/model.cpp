#include "switchd/core/model.h"

#include <algorithm>
#include <cctype>

namespace xvmq::switchd {

std::string_view to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Usage:
      return "usage";
    case ErrorKind::NotFound:
      return "not_found";
    case ErrorKind::WrongState:
      return "wrong_state";
    case ErrorKind::Exists:
      return "exists";
    case ErrorKind::Exhausted:
      return "exhausted";
    case ErrorKind::Kernel:
      return "kernel";
    case ErrorKind::Permission:
      return "permission";
  }
  return "?";
}

std::string_view to_string(PortState s) { return s == PortState::Created ? "created" : "torn_down"; }

std::string_view to_string(NicState s) {
  switch (s) {
    case NicState::Created:
      return "created";
    case NicState::Connected:
      return "connected";
    case NicState::Disconnected:
      return "disconnected";
  }
  return "?";
}

namespace {

// The steps allowed from a state, as the error message names them.
std::string port_steps(const Port& p) {
  if (p.state == PortState::TornDown) return "port.delete";
  if (!p.nic) return "nic.create, port.teardown";
  return "nic steps only (the port has a NIC)";
}

std::string nic_steps(const Nic& n) {
  switch (n.state) {
    case NicState::Created:
      return n.vmq_id ? "nic.connect, nic.delete, vmq.free" : "nic.connect, nic.delete, vmq.allocate";
    case NicState::Connected:
      return n.vmq_id ? "nic.disconnect, vmq.free" : "nic.disconnect, vmq.allocate";
    case NicState::Disconnected:
      return n.vmq_id ? "nic.delete, vmq.free" : "nic.delete";
  }
  return "";
}

}  // namespace

Model::Model(uint32_t max_vmqs) : max_vmqs_(std::min<uint32_t>(max_vmqs, XVMQ_MAX_VMQS - 1)) {}

const Port& Model::port(const std::string& name) const {
  auto it = ports_.find(name);
  if (it == ports_.end()) throw Refused(ErrorKind::NotFound, "port " + name + " does not exist");
  return it->second;
}

Port& Model::mut_port(const std::string& name) { return const_cast<Port&>(port(name)); }

const Nic& Model::nic(const std::string& name) const {
  const Port& p = port(name);
  if (!p.nic)
    throw Refused(ErrorKind::NotFound, "port " + name + " has no NIC (port is " + std::string(to_string(p.state)) +
                                           "; allowed: " + port_steps(p) + ")");
  return *p.nic;
}

Nic& Model::mut_nic(const std::string& name) { return const_cast<Nic&>(nic(name)); }

void Model::wrong_nic_state(const std::string& port, const Nic& n, const std::string& step) const {
  throw Refused(ErrorKind::WrongState, step + ": nic " + port + " is " + std::string(to_string(n.state)) +
                                           "; allowed from there: " + nic_steps(n));
}

void Model::record(const std::string& object, std::string_view from, std::string_view to, const std::string& step) {
  events_.push_back({next_seq_++, std::chrono::system_clock::now(), object, std::string(from), std::string(to), step});
  if (events_.size() > 4096) events_.pop_front();
}

namespace {

bool owner_id_chars(const std::string& v) {
  for (unsigned char c : v)
    if (!std::isalnum(c) && c != '_' && c != '.' && c != '-') return false;
  return true;
}

}  // namespace

std::string check_owner(const PortOwner& o) {
  const std::string limit = std::to_string(kMaxOwnerField);
  if (o.container_id.empty() || o.container_id.size() > kMaxOwnerField || !owner_id_chars(o.container_id))
    return "owner.container_id '" + o.container_id.substr(0, 64) + "': use 1 to " + limit +
           " characters of A-Z a-z 0-9 _ . -";
  if (!o.network.empty() && (o.network.size() > kMaxOwnerField || !owner_id_chars(o.network)))
    return "owner.network '" + o.network.substr(0, 64) + "': use 1 to " + limit + " characters of A-Z a-z 0-9 _ . -";
  bool bad_if = o.ifname.size() > 15 || o.ifname == "." || o.ifname == "..";
  for (unsigned char c : o.ifname) bad_if |= c == '/' || c == ':' || std::isspace(c) || !std::isprint(c);
  if (bad_if)
    return "owner.ifname '" + o.ifname.substr(0, 64) +
           "': use 1 to 15 printable characters, no '/', ':' or space, not . or ..";
  return "";
}

nlohmann::json owner_json(const PortOwner& o) {
  nlohmann::json j{{"container_id", o.container_id}};
  if (!o.ifname.empty()) j["ifname"] = o.ifname;
  if (!o.network.empty()) j["network"] = o.network;
  return j;
}

void Model::port_create(const std::string& name, std::optional<PortOwner> owner) {
  if (owner)
    if (std::string why = check_owner(*owner); !why.empty()) throw Refused(ErrorKind::Usage, "port.create: " + why);
  if (!valid_name(name))
    throw Refused(ErrorKind::Usage,
                  "port name '" + name + "': use 1 to 15 characters of A-Z a-z 0-9 _ . -, not starting with - or .");
  if (auto it = ports_.find(name); it != ports_.end())
    throw Refused(ErrorKind::Exists,
                  "port " + name + " already exists (it is " + std::string(to_string(it->second.state)) + ")");
  if (ports_.size() >= kMaxPorts)
    throw Refused(ErrorKind::Exhausted, "port.create " + name + ": switchd has " + std::to_string(ports_.size()) +
                                            " ports, the most it keeps (limit " + std::to_string(kMaxPorts) +
                                            "); delete one first");
  ports_[name] = Port{name, PortState::Created, std::nullopt, std::move(owner)};
  record("port " + name, "none", "created", "port.create");
}

void Model::port_teardown(const std::string& name) {
  Port& p = mut_port(name);
  if (p.state != PortState::Created || p.nic) {
    std::string why = p.nic ? "it has a NIC (" + std::string(to_string(p.nic->state)) + ")" : "it is torn_down";
    throw Refused(ErrorKind::WrongState, "port.teardown: port " + name + " cannot be torn down: " + why +
                                             "; allowed from there: " + port_steps(p));
  }
  p.state = PortState::TornDown;
  record("port " + name, "created", "torn_down", "port.teardown");
}

void Model::port_delete(const std::string& name) {
  Port& p = mut_port(name);
  if (p.state != PortState::TornDown)
    throw Refused(ErrorKind::WrongState, "port.delete: port " + name + " is " + std::string(to_string(p.state)) +
                                             (p.nic ? " with a NIC" : "") + "; allowed from there: " + port_steps(p));
  ports_.erase(name);
  record("port " + name, "torn_down", "none", "port.delete");
}

void Model::nic_create(const std::string& name, NicDesc c) {
  Port& p = mut_port(name);
  if (p.nic)
    throw Refused(ErrorKind::WrongState, "nic.create: port " + name + " already has a NIC (" +
                                             std::string(to_string(p.nic->state)) + ", MAC " +
                                             format_mac(p.nic->desc.mac) + "); a port has one NIC");
  if (p.state != PortState::Created)
    throw Refused(ErrorKind::WrongState, "nic.create: port " + name + " is " + std::string(to_string(p.state)) +
                                             "; allowed from there: " + port_steps(p));
  if (is_multicast(c.mac) || c.mac == Mac{})
    throw Refused(ErrorKind::Usage, "nic.create: MAC " + format_mac(c.mac) + " is not a unicast station address");
  const PortVlans& vl = c.vlans;
  if (vl.access > XVMQ_VLAN_MAX)
    throw Refused(ErrorKind::Usage, "nic.create: VLAN " + std::to_string(vl.access) + " is outside 0..4094");
  if (vl.mode == VlanMode::Trunk) {
    if (vl.trunk_vlans.empty()) throw Refused(ErrorKind::Usage, "nic.create: a trunk NIC needs at least one VLAN");
    for (uint16_t v : vl.trunk_vlans)
      if (v == 0 || v > XVMQ_VLAN_MAX)
        throw Refused(ErrorKind::Usage, "nic.create: trunk VLAN " + std::to_string(v) + " is outside 1..4094");
    if (vl.native && *vl.native > XVMQ_VLAN_MAX)
      throw Refused(ErrorKind::Usage, "nic.create: native VLAN " + std::to_string(*vl.native) + " is outside 0..4094");
  }
  if (!valid_backend(c.backend))
    throw Refused(ErrorKind::Usage, "nic.create: backend '" + c.backend + "' is not " + std::string(kBackendRule));
  if (is_vhost_user(c.backend) && c.delivery == Delivery::Kernel)
    throw Refused(ErrorKind::Usage, "nic.create: backend " + c.backend +
                                        " takes delivery xsk or auto: kernel delivery redirects into a netdev, and a "
                                        "vhost-user backend has none (switchd copies into the guest's ring)");
  if (c.vmq_cpu && c.delivery == Delivery::Xsk)
    throw Refused(ErrorKind::Usage, "nic.create: vmq_cpu " + std::to_string(*c.vmq_cpu) +
                                        " goes with delivery kernel or auto: with delivery xsk the vmq is served by "
                                        "the workers of its receive queues, on their CPUs (switchd --queue-cpus)");
  for (const auto& [other, q] : ports_) {
    if (!q.nic) continue;
    for (uint16_t v : vl.carried())
      for (uint16_t w : q.nic->desc.vlans.carried())
        if (q.nic->desc.mac == c.mac && v == w)
          throw Refused(ErrorKind::Exists, "nic.create: MAC " + format_mac(c.mac) + " on VLAN " + std::to_string(v) +
                                               " is already in use by nic " + other);
    if (q.nic->desc.backend == c.backend)
      throw Refused(ErrorKind::Exists, "nic.create: backend " + c.backend + " is already used by nic " + other);
  }
  c.name = name;
  p.nic = Nic{.desc = std::move(c)};
  record("nic " + name, "none", "created", "nic.create");
}

void Model::check_nic_step(const std::string& name, NicState from, const std::string& step) const {
  const Nic& n = nic(name);
  if (n.state != from) wrong_nic_state(name, n, step);
}

void Model::move_nic(const std::string& name, NicState from, NicState to, const std::string& step) {
  check_nic_step(name, from, step);
  mut_nic(name).state = to;
  record("nic " + name, to_string(from), to_string(to), step);
}

void Model::check_nic_connect(const std::string& name) const { check_nic_step(name, NicState::Created, "nic.connect"); }

void Model::nic_connect(const std::string& name) {
  move_nic(name, NicState::Created, NicState::Connected, "nic.connect");
}

void Model::check_nic_disconnect(const std::string& name) const {
  check_nic_step(name, NicState::Connected, "nic.disconnect");
}

void Model::nic_disconnect(const std::string& name) {
  move_nic(name, NicState::Connected, NicState::Disconnected, "nic.disconnect");
}

void Model::nic_delete(const std::string& name) {
  const Nic& n = nic(name);
  if (n.state == NicState::Connected) wrong_nic_state(name, n, "nic.delete");
  if (n.vmq_id) record("vmq " + std::to_string(*n.vmq_id), "allocated", "free", "nic.delete");
  std::string from(to_string(n.state));
  mut_port(name).nic.reset();
  record("nic " + name, from, "none", "nic.delete");
}

std::vector<uint32_t> Model::free_vmqs() const {
  std::set<uint32_t> used;
  for (const auto& [_, p] : ports_)
    if (p.nic && p.nic->vmq_id) used.insert(*p.nic->vmq_id);
  std::vector<uint32_t> out;
  for (uint32_t v = 1; v <= max_vmqs_; v++)
    if (!used.count(v)) out.push_back(v);
  return out;
}

void Model::check_vmq_allocate(const std::string& name) const {
  const Nic& n = nic(name);
  if (n.vmq_id)
    throw Refused(ErrorKind::WrongState, "vmq.allocate: nic " + name + " already has vmq " + std::to_string(*n.vmq_id) +
                                             "; allowed from there: " + nic_steps(n));
  if (n.state == NicState::Disconnected) wrong_nic_state(name, n, "vmq.allocate");
  if (free_vmqs().empty())
    throw Refused(ErrorKind::Exhausted, "vmq.allocate: all " + std::to_string(max_vmqs_) + " vmqs are in use; nic " +
                                            name + " stays on the default queue");
}

uint32_t Model::vmq_allocate(const std::string& name) {
  check_vmq_allocate(name);
  auto free = free_vmqs();
  mut_nic(name).vmq_id = free.front();
  record("vmq " + std::to_string(free.front()), "free", "allocated to nic " + name, "vmq.allocate");
  return free.front();
}

void Model::vmq_free(const std::string& name) {
  const Nic& n = nic(name);
  if (!n.vmq_id)
    throw Refused(ErrorKind::WrongState, "vmq.free: nic " + name + " has no vmq; allowed from there: " + nic_steps(n));
  uint32_t v = *n.vmq_id;
  mut_nic(name).vmq_id.reset();
  record("vmq " + std::to_string(v), "allocated to nic " + name, "free", "vmq.free");
}

void Model::set_vmq_policy(const std::string& name, VmqPolicy policy, const std::string& step) {
  Nic& n = mut_nic(name);
  if (n.desc.vmq_policy == policy) return;
  std::string from = "vmq policy " + std::string(to_string(n.desc.vmq_policy));
  n.desc.vmq_policy = policy;
  record("nic " + name, from, "vmq policy " + std::string(to_string(policy)), step);
}

void Model::set_vmq_cpu(const std::string& name, std::optional<uint32_t> cpu, const std::string& step) {
  Nic& n = mut_nic(name);
  if (n.desc.vmq_cpu == cpu) return;
  auto text = [](std::optional<uint32_t> c) { return "vmq cpu " + (c ? std::to_string(*c) : std::string("spread")); };
  std::string from = text(n.desc.vmq_cpu);
  n.desc.vmq_cpu = cpu;
  record("nic " + name, from, text(cpu), step);
}

void Model::restore(Port port) {
  std::string name = port.name;
  ports_[name] = std::move(port);
}

}  // namespace xvmq::switchd
