#include "switchd/app/switch.h"

#include <algorithm>
#include <filesystem>
#include <functional>

#include "loader/netdev.h"
#include "switchd/app/ops.h"
#include "switchd/host/netlink.h"
#include "switchd/host/service.h"

namespace xvmq::switchd {

using nlohmann::json;

namespace {

ErrorKind kind_of(const Error& e) {
  return e.code == ENODEV || e.code == ENOENT                       ? ErrorKind::NotFound
         : e.code == EINVAL                                         ? ErrorKind::Usage
         : e.code == ENOSPC || e.code == EMFILE || e.code == ENFILE ? ErrorKind::Exhausted
                                                                    : ErrorKind::Kernel;
}

// The host port's netdevs: the host's end, by default named after the
// uplink, and the switch's end named after the host's (15 characters at most).
std::string host_backend(const std::string& netdev) { return netdev.substr(0, 12) + "-sw"; }

// CPUs as a list with ranges: "0-3,6".
std::string cpu_list(std::vector<int> cpus) {
  std::sort(cpus.begin(), cpus.end());
  std::string list;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) j++;
    list += (list.empty() ? "" : ",") + std::to_string(cpus[i]) + (j > i ? "-" + std::to_string(cpus[j]) : "");
    i = j + 1;
  }
  return list.empty() ? "none" : list;
}

std::string vlan_list(const std::vector<uint16_t>& vlans) {
  std::string list;
  for (uint16_t v : vlans) list += (list.empty() ? "" : ", ") + std::to_string(v);
  return list.empty() ? "none" : list;
}

// Steps that changed the host, undone backwards when a later one fails: a
// refused attach leaves the host as it found it.
class Undo {
 public:
  explicit Undo(std::string what) : what_(std::move(what)) {}
  void push(std::function<Status()> step) { steps_.push_back(std::move(step)); }
  void run() {
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it)
      if (Status st = (*it)(); !st)
        service::log(service::Level::Warn, "%s: undo: %s", what_.c_str(), st.error().message.c_str());
    steps_.clear();
  }

 private:
  std::string what_;
  std::vector<std::function<Status()>> steps_;
};

// The host's addresses and routes move from the uplink to the host port's
// netdev: onto the host port first, so the host always has them somewhere.
void move_addresses(const std::string& uplink, const std::string& netdev, const std::vector<netlink::Address>& addrs,
                    const std::vector<netlink::Route>& routes, Undo& undo, const std::function<void(Status)>& check) {
  for (const auto& a : addrs) {
    check(netlink::add_address(netdev, a));
    undo.push([&] { return netlink::delete_address(netdev, a); });
  }
  for (const auto& r : routes) {
    check(netlink::delete_route(uplink, r));
    undo.push([&] { return netlink::add_route(uplink, r); });
  }
  for (auto it = addrs.rbegin(); it != addrs.rend(); ++it) {  // secondaries first
    const auto& a = *it;
    check(netlink::delete_address(uplink, a));
    undo.push([&] { return netlink::add_address(uplink, a); });
  }
  for (const auto& r : routes) {
    check(netlink::add_route(netdev, r));
    undo.push([&] { return netlink::delete_route(netdev, r); });
  }
}

}  // namespace

Result<std::unique_ptr<DatapathApi>> open_kernel_datapath(const std::string& uplink, const DatapathOptions& opts) {
  auto dp = Datapath::open(uplink, opts);
  if (!dp) return dp.error();
  return std::unique_ptr<DatapathApi>(std::move(dp.value()));
}

Switch::Switch(const SwitchOptions& opts)
    : opts_(opts), store_(opts.state_dir + "/state.json"), model_(opts.max_vmqs) {}

// Under the lock: the backend watch's thread may be asking for the switch
// (backend_grew), and must find it whole or busy.
Switch::~Switch() {
  std::lock_guard lock(mu_);
  dp_.reset();
}

Result<std::unique_ptr<Switch>> Switch::start(const SwitchOptions& opts) {
  std::unique_ptr<Switch> sw(new Switch(opts));
  std::error_code ec;
  std::filesystem::create_directories(opts.state_dir, ec);
  if (ec) return Error{ec.value(), "state directory " + opts.state_dir + ": " + ec.message()};
  try {
    std::lock_guard lock(sw->mu_);  // the datapath's threads may ask for it already
    sw->restore();
  } catch (const Refused& r) {
    return Error{EINVAL, r.error.message};
  }
  return sw;
}

Views Switch::views() const {
  return Views{.model = model_,
               .dp = dp_.get(),
               .uplink = uplink_,
               .host_port = host_port_,
               .fdb_static = fdb_static_,
               .dp_opts = opts_.datapath};
}

void Switch::restore() {
  auto saved = store_.load();
  if (!saved) return;
  for (Port& p : saved->ports) model_.restore(std::move(p));
  fdb_static_ = std::move(saved->fdb_static);
  uplink_ = std::move(saved->uplink);
  if (uplink_) {
    host_port_ = std::move(saved->host_port);
    // Adopted as it is: its addresses and routes were moved at attach.
    if (host_port_ && !netlink::link_exists(host_port_->netdev))
      service::log(service::Level::Warn, "restore host port: netdev %s is gone (its addresses with it)",
                   host_port_->netdev.c_str());
    restore_uplink();
  }
  service::log(service::Level::Info, "restored %zu port(s)%s from %s", model_.ports().size(),
               !uplink_ ? "" : (", uplink " + uplink_->name + (dp_->adopted() ? " (classifier adopted)" : "")).c_str(),
               store_.path().c_str());
}

void Switch::restore_uplink() {
  DatapathOptions o = opts_.datapath;
  o.backend_grew = [this](const std::string& nic) { return backend_grew(nic); };
  o.mode = uplink_->mode;
  o.host_stack = uplink_->host == "stack";
  auto dp = opts_.open_datapath(uplink_->name, o);
  if (!dp) throw Refused(ErrorKind::Kernel, "restore uplink " + uplink_->name + ": " + dp.error().message);
  dp_ = std::move(dp.value());
  std::vector<NicBinding> connected;
  for (const auto& [name, port] : model_.ports()) {
    if (!port.nic || port.nic->state != NicState::Connected) continue;
    NicBinding b = binding(name, port.nic->vmq_id.value_or(0));
    if (auto st = dp_->connect(b); !st)
      service::log(service::Level::Warn, "restore nic %s: %s", name.c_str(), st.error().message.c_str());
    else
      connected.push_back(std::move(b));
  }
  (void)dp_->reconcile_filters(connected);
  // Shut down with --detach-on-exit, the host port went with the uplink: make it again.
  if (uplink_->host == "port" && !host_port_) {
    try {
      make_host_port(uplink_->name,
                     uplink_->host_netdev.empty() ? default_host_netdev(uplink_->name) : uplink_->host_netdev,
                     uplink_->host_vlan);
      persist();
    } catch (const Refused& r) {
      service::log(service::Level::Warn, "restore uplink %s: the host port: %s", uplink_->name.c_str(),
                   r.error.message.c_str());
    }
  }
}

void Switch::persist() { store_.save(model_.ports(), uplink_, host_port_, fdb_static_); }

void Switch::changed(uint64_t before) {
  persist();
  const auto& ev = model_.events();
  for (const auto& e : ev)
    if (e.seq > before)
      service::log(service::Level::Info, "event %llu %s %s: %s -> %s (%s)", static_cast<unsigned long long>(e.seq),
                   iso_time(e.time).c_str(), e.object.c_str(), e.from.c_str(), e.to.c_str(), e.step.c_str());
  if (last_event() > before && event_hook_) event_hook_();
}

NicBinding Switch::binding(const std::string& port, uint32_t vmq_id) const {
  NicBinding b{.nic = model_.nic(port).desc, .vmq_id = vmq_id};
  b.nic.statics = statics_of(port);
  return b;
}

std::vector<StaticEntry> Switch::statics_of(const std::string& port) const {
  std::vector<StaticEntry> out;
  for (const auto& [key, p] : fdb_static_)
    if (p == port) out.push_back(key);
  return out;
}

json Switch::handle(const std::string& op, const json& args) {
  std::lock_guard lock(mu_);
  return run_op(*this, op, args);
}

// A tap's guest turned on queues the NIC had no sockets for at connect (the
// guest's driver enabling multiqueue after the NIC was connected, or ethtool
// -L): the datapath takes the NIC off and binds it again on all of them. The
// lifecycle state does not change; if binding fails, the NIC is disconnected
// and says why. Only tried: an op under way makes the watch ask again.
bool Switch::backend_grew(const std::string& port) {
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  const auto& ports = model_.ports();
  auto it = ports.find(port);
  if (!dp_ || it == ports.end() || !it->second.nic || it->second.nic->state != NicState::Connected) return true;
  const uint32_t vmq = it->second.nic->vmq_id.value_or(0);
  if (auto st = dp_->disconnect(port); !st) {
    service::log(service::Level::Warn, "nic %s: its backend's new queues: %s", port.c_str(),
                 st.error().message.c_str());
    return true;
  }
  if (auto st = dp_->connect(binding(port, vmq)); !st) {
    service::log(service::Level::Error,
                 "nic %s: binding its backend's new queues failed: %s; the NIC is disconnected (nic delete, then nic "
                 "create and nic connect it again)",
                 port.c_str(), st.error().message.c_str());
    const uint64_t before = last_event();
    model_.nic_disconnect(port);
    changed(before);
  }
  return true;
}

void Switch::on_event(std::function<void()> hook) {
  std::lock_guard lock(mu_);
  event_hook_ = std::move(hook);
}

SwitchSnapshot Switch::snapshot() {
  std::lock_guard lock(mu_);
  return views().snapshot();
}

void Switch::clear_filters() {
  std::lock_guard lock(mu_);
  if (!dp_) return;
  if (auto st = dp_->reconcile_filters({}); !st)
    service::log(service::Level::Warn, "clear filters on %s: %s", uplink_->name.c_str(), st.error().message.c_str());
}

void Switch::detach_uplink() {
  std::lock_guard lock(mu_);
  if (host_port_ && dp_) {
    if (std::string errs = remove_host_port(); !errs.empty())
      service::log(service::Level::Warn, "detach %s: host port: %s", uplink_->name.c_str(), errs.c_str());
    persist();
  }
  if (dp_) (void)dp_->detach();
  dp_.reset();
}

// A static FDB entry: MAC on VLAN is behind port P's NIC (a container or a
// nested guest of that VM). Frames to it on that VLAN go to the NIC, and the
// NIC may send from it without allow_mac_spoofing. The NIC's own MAC needs
// no entry; a MAC has one port per VLAN.
void Switch::check_fdb_add(const std::string& port, const StaticEntry& key) const {
  const auto& [mac, vlan] = key;
  const std::string on = format_mac(mac) + " on VLAN " + std::to_string(vlan);
  if (is_multicast(mac) || mac == Mac{})
    throw Refused(ErrorKind::Usage,
                  "fdb.add: " + format_mac(mac) + " is not a unicast MAC; an entry names one station");
  const PortVlans& vlans = model_.nic(port).desc.vlans;  // not_found, naming the port, when it has no NIC
  if (!vlans.carries(vlan))
    throw Refused(ErrorKind::Usage, "fdb.add: nic " + port + " is not on VLAN " + std::to_string(vlan) +
                                        "; it carries " + vlan_list(vlans.carried()));
  for (const auto& [name, p] : model_.ports())
    if (p.nic && p.nic->desc.mac == mac && p.nic->desc.vlans.carries(vlan))
      throw Refused(ErrorKind::Exists, "fdb.add: " + on + " is nic " + name + "'s own MAC");
  if (auto it = fdb_static_.find(key); it != fdb_static_.end())
    throw Refused(ErrorKind::Exists, "fdb.add: " + on + " is already behind port " + it->second + " (fdb.del first)");
  if (fdb_static_.size() >= kMaxStaticFdb)
    throw Refused(ErrorKind::Exhausted, "fdb.add: switchd has " + std::to_string(fdb_static_.size()) +
                                            " static entries, the most it keeps (limit " +
                                            std::to_string(kMaxStaticFdb) + "); fdb.del one first");
}

void Switch::fdb_add(const std::string& port, const StaticEntry& key) {
  check_fdb_add(port, key);
  fdb_static_[key] = port;
  if (dp_)
    if (auto st = dp_->set_statics(port, statics_of(port)); !st) {
      fdb_static_.erase(key);
      (void)dp_->set_statics(port, statics_of(port));
      throw Refused(ErrorKind::Kernel, "fdb.add: " + st.error().message);
    }
}

void Switch::fdb_del(const StaticEntry& key) {
  auto it = fdb_static_.find(key);
  if (it == fdb_static_.end())
    throw Refused(ErrorKind::NotFound, "fdb.del: no static entry for " + format_mac(key.first) + " on VLAN " +
                                           std::to_string(key.second) + " (switchctl fdb show lists them)");
  const std::string port = it->second;
  fdb_static_.erase(it);
  if (dp_) (void)dp_->set_statics(port, statics_of(port));
}

size_t Switch::fdb_flush() {
  if (!dp_) throw Refused(ErrorKind::NotFound, "no uplink is attached");
  return dp_->fdb().flush();
}

void Switch::check_attach(const UplinkConfig& up) const {
  if (dp_)
    throw Refused(uplink_ && up.name == uplink_->name ? ErrorKind::Exists : ErrorKind::WrongState,
                  "uplink " + (uplink_ ? uplink_->name : "") + " is attached (mode " +
                      std::string(to_string(dp_->mode())) + "); one uplink per switchd: uplink.detach first");
  if (up.host == "port" && model_.ports().count("host"))
    throw Refused(ErrorKind::Exists, "uplink.attach " + up.name + " host=port: port 'host' exists (state " +
                                         std::string(to_string(model_.port("host").state)) +
                                         "); the host port takes that name: delete it first");
  // Attaching must never cut the host off silently: where do its addresses go?
  auto addrs = netlink::addresses(up.name);
  if (!addrs) throw Refused(kind_of(addrs.error()), "uplink.attach " + up.name + ": " + addrs.error().message);
  if (!addrs->empty() && up.host.empty()) {
    std::string list;
    for (const auto& a : *addrs) list += (list.empty() ? "" : ", ") + a.str();
    throw Refused(ErrorKind::WrongState,
                  "uplink.attach " + up.name + ": it carries host addresses (" + list +
                      "); choose host=stack (frames to its MAC keep reaching the host's stack) or host=port "
                      "(the host moves its addresses to a host port: a NIC like a VM's on a netdev of the host)");
  }
}

void Switch::uplink_attach(const UplinkConfig& up) {
  check_attach(up);
  DatapathOptions o = opts_.datapath;
  o.backend_grew = [this](const std::string& nic) { return backend_grew(nic); };
  o.mode = up.mode;
  o.host_stack = up.host == "stack";
  auto dp = opts_.open_datapath(up.name, o);
  if (!dp) throw Refused(kind_of(dp.error()), "uplink.attach " + up.name + ": " + dp.error().message);
  dp_ = std::move(dp.value());
  if (up.host == "port") {
    try {
      make_host_port(up.name, up.host_netdev, up.host_vlan);
    } catch (const Refused&) {
      if (auto st = dp_->detach(); !st)
        service::log(service::Level::Warn, "uplink.attach %s: undo: %s", up.name.c_str(), st.error().message.c_str());
      dp_.reset();
      throw;
    }
  }
  uplink_ = up;
  model_.record("uplink " + up.name, "none", "attached (" + std::string(to_string(dp_->mode())) + ")", "uplink.attach");
}

void Switch::uplink_detach() {
  if (!dp_) throw Refused(ErrorKind::NotFound, "no uplink is attached");
  std::string busy;
  for (const auto& [name, p] : model_.ports())
    if (p.nic && p.nic->state == NicState::Connected && !(host_port_ && name == host_port_->port))
      busy += (busy.empty() ? "" : ", ") + name;
  if (!busy.empty())
    throw Refused(ErrorKind::WrongState,
                  "uplink.detach: nics still connected: " + busy + "; nic.disconnect them first");
  if (host_port_)
    if (std::string errs = remove_host_port(); !errs.empty())
      service::log(service::Level::Warn, "uplink.detach %s: host port: %s", uplink_->name.c_str(), errs.c_str());
  if (auto st = dp_->detach(); !st)
    throw Refused(ErrorKind::Kernel, "uplink.detach " + uplink_->name + ": " + st.error().message);
  dp_.reset();
  model_.record("uplink " + uplink_->name, "attached", "none", "uplink.detach");
  uplink_.reset();
}

void Switch::port_create(const std::string& name, std::optional<PortOwner> owner) {
  model_.port_create(name, std::move(owner));
}

void Switch::port_teardown(const std::string& name) {
  refuse_on_host_port("port.teardown", name);
  model_.port_teardown(name);
}

void Switch::port_delete(const std::string& name) {
  refuse_on_host_port("port.delete", name);
  model_.port_delete(name);
}

void Switch::nic_create(const std::string& port, const NicDesc& nic) {
  // With delivery xsk the model refuses any vmq_cpu.
  if (nic.vmq_cpu && nic.delivery != Delivery::Xsk) check_cpu_allowed("nic.create " + port + ": vmq_cpu", *nic.vmq_cpu);
  model_.nic_create(port, nic);
}

void Switch::nic_connect(const std::string& port) {
  model_.check_nic_connect(port);
  if (!dp_) throw Refused(ErrorKind::WrongState, "nic.connect: no uplink is attached; allowed first: uplink.attach");
  const Nic& n = model_.nic(port);
  uint32_t vmq = n.vmq_id.value_or(0);
  auto free = model_.free_vmqs();
  if (!vmq && n.desc.vmq_policy == VmqPolicy::Auto && !free.empty()) vmq = free.front();
  if (auto st = dp_->connect(binding(port, vmq)); !st)
    throw Refused(kind_of(st.error()), "nic.connect " + port + ": " + st.error().message);
  if (auto ss = dp_->steering(port); ss && ss->requested_hw && !ss->hardware)
    service::log(service::Level::Warn, "nic %s: software steering (hardware requested; %s)", port.c_str(),
                 ss->reason.c_str());
  if (vmq && !n.vmq_id) model_.vmq_allocate(port);
  model_.nic_connect(port);
}

void Switch::nic_disconnect(const std::string& port) {
  refuse_on_host_port("nic.disconnect", port);
  model_.check_nic_disconnect(port);
  // No uplink (a state file that says connected without one): nothing to tell.
  if (!dp_)
    service::log(service::Level::Warn, "nic.disconnect %s: no uplink is attached; nothing to disconnect", port.c_str());
  else if (auto st = dp_->disconnect(port); !st)
    service::log(service::Level::Warn, "nic.disconnect %s: %s", port.c_str(), st.error().message.c_str());
  model_.nic_disconnect(port);
}

void Switch::nic_delete(const std::string& port) {
  refuse_on_host_port("nic.delete", port);
  model_.nic_delete(port);
  if (dp_) dp_->forget(port);
  std::erase_if(fdb_static_, [&](const auto& e) { return e.second == port; });  // they were its NIC's
}

void Switch::vmq_allocate(const std::string& port, std::optional<VmqPolicy> policy, std::optional<uint32_t> cpu) {
  const Nic& n = model_.nic(port);
  if (cpu) check_vmq_cpu("vmq.allocate " + port, n.desc, *cpu);
  const std::optional<uint32_t> old_cpu = n.desc.vmq_cpu;
  const bool new_cpu = cpu && cpu != old_cpu;
  // With policy auto the NIC takes a vmq when one can be had, as at connect.
  const bool take = !policy || (!n.vmq_id && !model_.free_vmqs().empty() && n.state != NicState::Disconnected);
  if (take) model_.check_vmq_allocate(port);
  // The processor first, so that the vmq starts on it.
  if (new_cpu) move_vmq_cpu("vmq.allocate", port, cpu);
  if (take && n.state == NicState::Connected && dp_) {
    NicBinding b = binding(port, 0);
    if (cpu) b.nic.vmq_cpu = cpu;
    if (auto st = dp_->set_vmq(b, model_.free_vmqs().front()); !st) {
      if (new_cpu) (void)dp_->set_vmq_cpu(port, old_cpu);
      throw Refused(ErrorKind::Kernel, "vmq.allocate " + port + ": " + st.error().message);
    }
  }
  if (take) model_.vmq_allocate(port);
  if (new_cpu) model_.set_vmq_cpu(port, cpu, "vmq.allocate");
  if (policy) model_.set_vmq_policy(port, *policy, "vmq.allocate");
}

void Switch::vmq_free(const std::string& port, std::optional<VmqPolicy> policy) {
  const Nic& n = model_.nic(port);
  if (!policy || n.vmq_id) {
    if (n.vmq_id && n.state == NicState::Connected && dp_)
      if (auto st = dp_->set_vmq(binding(port, *n.vmq_id), 0); !st)
        throw Refused(st.error().code == EBUSY ? ErrorKind::WrongState : ErrorKind::Kernel,
                      "vmq.free " + port + ": " + st.error().message);
    model_.vmq_free(port);
  }
  if (policy) model_.set_vmq_policy(port, *policy, "vmq.free");
}

void Switch::vmq_set(const std::string& port, std::optional<uint32_t> cpu) {
  const Nic& n = model_.nic(port);
  if (cpu) check_vmq_cpu("vmq.set " + port, n.desc, *cpu);
  if (n.desc.vmq_cpu == cpu) return;  // nothing to move, no event
  move_vmq_cpu("vmq.set", port, cpu);
  model_.set_vmq_cpu(port, cpu, "vmq.set");
}

void Switch::check_cpu_allowed(const std::string& what, uint32_t cpu) const {
  const std::vector<int> allowed = opts_.allowed_cpus();
  if (std::find(allowed.begin(), allowed.end(), static_cast<int>(cpu)) == allowed.end())
    throw Refused(ErrorKind::Usage, what + " " + std::to_string(cpu) +
                                        " is not a CPU switchd may run on; it may run on CPUs " + cpu_list(allowed));
}

void Switch::check_vmq_cpu(const std::string& step, const NicDesc& nic, uint32_t cpu) const {
  if (nic.delivery == Delivery::Xsk) {
    std::vector<int> cpus;
    if (dp_)
      for (const auto& q : dp_->queues()) cpus.push_back(q.cpu);
    throw Refused(ErrorKind::WrongState,
                  step + ": nic " + nic.name + " has delivery xsk: its vmq is served by the workers of its receive " +
                      "queues" + (cpus.empty() ? "" : ", on CPUs " + cpu_list(cpus)) +
                      " (switchd --queue-cpus); a vmq processor goes with delivery kernel or auto");
  }
  check_cpu_allowed(step + ": cpu", cpu);
}

void Switch::move_vmq_cpu(const std::string& step, const std::string& port, std::optional<uint32_t> cpu) {
  if (!dp_ || model_.nic(port).state != NicState::Connected) return;  // the datapath takes it at connect
  if (auto st = dp_->set_vmq_cpu(port, cpu); !st)
    throw Refused(kind_of(st.error()), step + " " + port + ": " + st.error().message);
}

void Switch::make_host_port(const std::string& uplink, const std::string& netdev, uint16_t vlan) {
  const std::string what = "uplink.attach " + uplink + " host=port";
  HostPort hp{.netdev = netdev, .backend = host_backend(netdev), .vlan = vlan};
  auto fail = [&](const Error& e) { return Refused(kind_of(e), what + ": " + e.message); };
  auto mac = netlink::link_mac(uplink);
  if (!mac) throw fail(mac.error());
  auto info = netdev_info(uplink);
  if (!info) throw fail(info.error());
  auto addrs = netlink::addresses(uplink);
  if (!addrs) throw fail(addrs.error());
  auto routes = netlink::routes(uplink);
  if (!routes) throw fail(routes.error());

  Undo undo(what);
  const Model saved = model_;
  auto check = [&](Status st) {
    if (st) return;
    undo.run();
    model_ = saved;
    throw Refused(kind_of(st.error()), what + ": " + st.error().message + "; undone, nothing changed");
  };
  if (auto st = netlink::create_veth(netdev, hp.backend, info->rx_queues, *mac); !st) {
    for (const auto& dev : {netdev, hp.backend})
      if (netlink::link_exists(dev))
        throw Refused(ErrorKind::Exists, what + ": " + (dev == netdev ? "host_netdev '" : "the host port's backend '") +
                                             dev + "' already exists on this host; nothing changed" +
                                             (dev == netdev ? "" : " (choose another host_netdev)"));
    throw fail(st.error());
  }
  undo.push([&] { return netlink::delete_link(netdev); });
  (void)netlink::disable_ipv6_addresses(hp.backend);  // fails only where IPv6 is off
  check(netlink::tx_offloads_off(netdev));
  check(netlink::set_up(hp.backend, true));
  check(netlink::set_up(netdev, true));

  // The host port: a port and NIC like a VM's, through the normal lifecycle.
  try {
    model_.port_create(hp.port);
    model_.nic_create(hp.port, NicDesc{.mac = *mac, .backend = hp.backend, .vlans = PortVlans::access_vlan(vlan)});
    model_.check_nic_connect(hp.port);
  } catch (const Refused&) {
    undo.run();
    model_ = saved;
    throw;
  }
  auto free = model_.free_vmqs();
  const uint32_t vmq = free.empty() ? 0 : free.front();
  check(dp_->connect(binding(hp.port, vmq)));
  undo.push([&] {
    Status st = dp_->disconnect(hp.port);
    dp_->forget(hp.port);
    return st;
  });
  if (vmq) model_.vmq_allocate(hp.port);
  model_.nic_connect(hp.port);

  move_addresses(uplink, netdev, *addrs, *routes, undo, check);
  for (const auto& a : *addrs) hp.addresses.push_back(a.str());
  for (const auto& r : *routes) hp.routes.push_back(r.str());
  service::log(service::Level::Info,
               "host port %s: netdev %s (backend %s), %zu address(es) and %zu route(s) moved from %s", hp.port.c_str(),
               netdev.c_str(), hp.backend.c_str(), addrs->size(), routes->size(), uplink.c_str());
  host_port_ = hp;
}

std::string Switch::remove_host_port() {
  const HostPort hp = *host_port_;
  const std::string& uplink = uplink_->name;
  std::string errs;
  auto note = [&](const Status& st) {
    if (!st) errs += (errs.empty() ? "" : "; ") + st.error().message;
  };
  // What the host port carries now goes back (an administrator may have
  // changed it since the attach).
  if (netlink::link_exists(hp.netdev)) {
    auto routes = netlink::routes(hp.netdev);
    auto addrs = netlink::addresses(hp.netdev);
    if (!routes) note(routes.error());
    if (!addrs) note(addrs.error());
    if (routes)
      for (const auto& r : *routes) note(netlink::delete_route(hp.netdev, r));
    if (addrs)
      for (const auto& a : *addrs) note(netlink::add_address(uplink, a));
    if (routes)
      for (const auto& r : *routes) note(netlink::add_route(uplink, r));
  } else {
    errs = "netdev " + hp.netdev + " is gone: no address to move back";
  }
  if (model_.ports().count(hp.port)) {
    const Port& p = model_.port(hp.port);
    if (p.nic && p.nic->state == NicState::Connected) {
      if (dp_) note(dp_->disconnect(hp.port));
      model_.nic_disconnect(hp.port);
    }
    if (model_.port(hp.port).nic) model_.nic_delete(hp.port);
    if (dp_) dp_->forget(hp.port);
    if (model_.port(hp.port).state == PortState::Created) model_.port_teardown(hp.port);
    model_.port_delete(hp.port);
  }
  if (netlink::link_exists(hp.netdev)) note(netlink::delete_link(hp.netdev));
  host_port_.reset();
  return errs;
}

void Switch::refuse_on_host_port(const std::string& op, const std::string& port) const {
  if (host_port_ && port == host_port_->port)
    throw Refused(ErrorKind::WrongState, op + " " + port + ": it is the host port of uplink " + uplink_->name +
                                             " (netdev " + host_port_->netdev +
                                             ", connected); uplink.detach removes it");
}

}  // namespace xvmq::switchd
