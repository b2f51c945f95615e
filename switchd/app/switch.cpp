#include "switchd/app/switch.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>

#include "loader/netdev.h"
#include "switchd/host/netlink.h"
#include "switchd/host/service.h"

namespace xvmq::switchd {

using nlohmann::json;

namespace {

std::string iso_time(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

std::string arg_string(const json& args, const char* name) {
  if (!args.contains(name)) throw Refused(ErrorKind::Usage, std::string("missing argument '") + name + "'");
  if (!args[name].is_string()) throw Refused(ErrorKind::Usage, std::string("argument '") + name + "' must be a string");
  return args[name].get<std::string>();
}

std::string arg_name(const json& args, const char* name) {
  std::string v = arg_string(args, name);
  if (!valid_name(v))
    throw Refused(ErrorKind::Usage, std::string(name) + " '" + v +
                                        "': use 1 to 15 characters of A-Z a-z 0-9 _ . -, not starting with - or .");
  return v;
}

// The key of an fdb op: `mac`, and `vlan` 0..4094 (default 0).
std::pair<Mac, uint16_t> fdb_key_arg(const json& args, const std::string& op) {
  const std::string text = arg_string(args, "mac");
  auto mac = parse_mac(text);
  if (!mac) throw Refused(ErrorKind::Usage, op + ": mac '" + text + "' is not a MAC address (aa:bb:cc:dd:ee:ff)");
  const json& v = args.contains("vlan") ? args["vlan"] : json(0);
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > XVMQ_VLAN_MAX)
    throw Refused(ErrorKind::Usage, op + ": vlan must be an integer 0..4094");
  return {*mac, v.get<uint16_t>()};
}

// Write a file so that a reader sees the old or the new content, never a part.
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

// vmq.allocate and vmq.free may set the NIC's vmq policy too: only to the
// one that matches the step (auto for allocate, off for free).
std::optional<VmqPolicy> policy_arg(const json& args, VmqPolicy fits, const std::string& step) {
  if (!args.contains("policy")) return std::nullopt;
  std::string want(to_string(fits));
  if (!args["policy"].is_string() || args["policy"].get<std::string>() != want)
    throw Refused(ErrorKind::Usage, step + ": policy must be \"" + want + "\"");
  return fits;
}

ErrorKind kind_of(const Error& e) {
  return e.code == ENODEV || e.code == ENOENT                                   ? ErrorKind::NotFound
         : e.code == EINVAL                                                   ? ErrorKind::Usage
         : e.code == ENOSPC || e.code == EMFILE || e.code == ENFILE ? ErrorKind::Exhausted
                                                                              : ErrorKind::Kernel;
}

// The host port's netdevs: the host's end, by default named after the
// uplink, and the switch's end named after the host's (15 characters at most).
std::string host_backend(const std::string& netdev) { return netdev.substr(0, 12) + "-sw"; }

// What the kernel counted at AF_XDP sockets, by name.
json xsk_json(const uint64_t (&v)[kXskStats]) {
  json j = json::object();
  for (size_t i = 0; i < kXskStats; i++) j[std::string(to_string(static_cast<XskStat>(i)))] = v[i];
  return j;
}

}  // namespace

Result<std::unique_ptr<DatapathApi>> open_kernel_datapath(const std::string& uplink, const DatapathOptions& opts) {
  auto dp = Datapath::open(uplink, opts);
  if (!dp) return dp.error();
  return std::unique_ptr<DatapathApi>(std::move(dp.value()));
}

Switch::Switch(const SwitchOptions& opts)
    : opts_(opts), state_path_(opts.state_dir + "/state.json"), model_(opts.max_vmqs) {}

Switch::~Switch() = default;

Result<std::unique_ptr<Switch>> Switch::start(const SwitchOptions& opts) {
  std::unique_ptr<Switch> sw(new Switch(opts));
  std::error_code ec;
  std::filesystem::create_directories(opts.state_dir, ec);
  if (ec) return Error{ec.value(), "state directory " + opts.state_dir + ": " + ec.message()};
  try {
    sw->restore();
  } catch (const Refused& r) {
    return Error{EINVAL, r.error.message};
  }
  return sw;
}

void Switch::restore() {
  std::ifstream in(state_path_);
  if (!in) return;
  json s;
  try {
    s = json::parse(in);
  } catch (const json::exception& e) {
    throw Refused(ErrorKind::Usage, "state " + state_path_ + " is not valid JSON: " + e.what());
  }
  if (s.value("version", 0) != 1) throw Refused(ErrorKind::Usage, "state " + state_path_ + ": unknown version");
  for (const auto& p : s.value("ports", json::array())) {
    Port port{p.at("name").get<std::string>(),
              p.at("state").get<std::string>() == "torn_down" ? PortState::TornDown : PortState::Created, std::nullopt};
    if (p.contains("nic") && !p["nic"].is_null()) {
      const json& n = p["nic"];
      Nic nic;
      nic.config.mac = parse_mac(n.at("mac").get<std::string>()).value_or(Mac{});
      nic.config.backend = n.at("backend").get<std::string>();
      nic.config.vlan = n.value("vlan", 0);
      nic.config.vlan_mode = n.value("vlan_mode", "access") == "trunk" ? VlanMode::Trunk : VlanMode::Access;
      nic.config.trunk_vlans = n.value("trunk_vlans", std::vector<uint16_t>{});
      if (n.contains("native_vlan") && !n["native_vlan"].is_null()) nic.config.native_vlan = n["native_vlan"].get<uint16_t>();
      nic.config.allow_mac_spoofing = n.value("allow_mac_spoofing", false);
      nic.config.vmq = n.value("vmq_policy", "auto") == "off" ? VmqPolicy::Off : VmqPolicy::Auto;
      nic.config.steering = n.value("steering", "software") == "hardware" ? Steering::Hardware : Steering::Software;
      std::string st = n.at("state").get<std::string>();
      nic.state = st == "connected" ? NicState::Connected : st == "disconnected" ? NicState::Disconnected : NicState::Created;
      if (n.contains("vmq") && !n["vmq"].is_null()) nic.vmq = n["vmq"].get<uint32_t>();
      port.nic = nic;
    }
    model_.restore(std::move(port));
  }
  for (const auto& e : s.value("fdb_static", json::array()))
    if (auto mac = parse_mac(e.at("mac").get<std::string>()))
      fdb_static_[{*mac, e.value("vlan", uint16_t{0})}] = e.at("port").get<std::string>();
  if (s.contains("uplink") && !s["uplink"].is_null()) {
    uplink_ = s["uplink"].at("name").get<std::string>();
    uplink_mode_ = parse_attach_mode(s["uplink"].value("mode", "auto")).value_or(AttachMode::Auto);
    uplink_host_ = s["uplink"].value("host", "");
    host_netdev_ = s["uplink"].value("host_netdev", "");
    host_vlan_ = s["uplink"].value("host_vlan", uint16_t{0});
    if (const json& h = s["uplink"].value("host_port", json(nullptr)); h.is_object()) {
      HostPort hp;
      hp.port = h.value("port", "host");
      hp.netdev = h.at("netdev").get<std::string>();
      hp.backend = h.at("backend").get<std::string>();
      hp.vlan = h.value("vlan", uint16_t{0});
      hp.addresses = h.value("addresses", std::vector<std::string>{});
      hp.routes = h.value("routes", std::vector<std::string>{});
      // Adopted as it is: its addresses and routes were moved at attach.
      if (!netlink::link_exists(hp.netdev))
        service::log(service::Level::Warn, "restore host port: netdev %s is gone (its addresses with it)", hp.netdev.c_str());
      host_port_ = hp;
    }
    auto dp = opts_.open_datapath(uplink_, [&] {
      DatapathOptions o = opts_.datapath;
      o.mode = uplink_mode_;
      o.host_stack = uplink_host_ == "stack";
      return o;
    }());
    if (!dp) throw Refused(ErrorKind::Kernel, "restore uplink " + uplink_ + ": " + dp.error().message);
    dp_ = std::move(dp.value());
    std::vector<NicSpec> connected;
    for (const auto& [name, port] : model_.ports()) {
      if (!port.nic || port.nic->state != NicState::Connected) continue;
      NicSpec spec = spec_of(name, port.nic->vmq.value_or(0));
      if (auto st = dp_->connect(spec); !st)
        service::log(service::Level::Warn, "restore nic %s: %s", name.c_str(), st.error().message.c_str());
      else
        connected.push_back(spec);
    }
    (void)dp_->reconcile_filters(connected);
    // Shut down with --detach-on-exit, the host port went with the uplink: make it again.
    if (uplink_host_ == "port" && !host_port_) {
      try {
        make_host_port(uplink_, host_netdev_.empty() ? default_host_netdev(uplink_) : host_netdev_, host_vlan_);
        persist();
      } catch (const Refused& r) {
        service::log(service::Level::Warn, "restore uplink %s: the host port: %s", uplink_.c_str(), r.error.message.c_str());
      }
    }
  }
  service::log(service::Level::Info, "restored %zu port(s)%s from %s", model_.ports().size(),
               uplink_.empty() ? "" : (", uplink " + uplink_ + (dp_->adopted() ? " (classifier adopted)" : "")).c_str(),
               state_path_.c_str());
}

void Switch::persist() {
  json ports = json::array();
  for (const auto& [name, p] : model_.ports()) {
    json j{{"name", name}, {"state", to_string(p.state)}, {"nic", nullptr}};
    if (p.nic) {
      const Nic& n = *p.nic;
      j["nic"] = {{"mac", format_mac(n.config.mac)}, {"backend", n.config.backend}, {"vlan", n.config.vlan},
                  {"vlan_mode", to_string(n.config.vlan_mode)}, {"trunk_vlans", n.config.trunk_vlans},
                  {"native_vlan", n.config.native_vlan ? json(*n.config.native_vlan) : json(nullptr)},
                  {"allow_mac_spoofing", n.config.allow_mac_spoofing},
                  {"vmq_policy", to_string(n.config.vmq)}, {"steering", to_string(n.config.steering)},
                  {"state", to_string(n.state)}, {"vmq", n.vmq ? json(*n.vmq) : json(nullptr)}};
    }
    ports.push_back(j);
  }
  json uplink = nullptr;
  if (!uplink_.empty()) {
    uplink = {{"name", uplink_}, {"mode", to_string(uplink_mode_)}, {"host", uplink_host_}};
    if (uplink_host_ == "port") {
      uplink["host_netdev"] = host_netdev_;
      uplink["host_vlan"] = host_vlan_;
    }
    if (host_port_)
      uplink["host_port"] = {{"port", host_port_->port}, {"netdev", host_port_->netdev}, {"backend", host_port_->backend},
                             {"vlan", host_port_->vlan}, {"addresses", host_port_->addresses},
                             {"routes", host_port_->routes}};
  }
  json statics = json::array();
  for (const auto& [key, port] : fdb_static_)
    statics.push_back({{"mac", format_mac(key.first)}, {"vlan", key.second}, {"port", port}});
  json s{{"version", 1}, {"uplink", uplink}, {"ports", ports}, {"fdb_static", statics}};
  write_atomic(state_path_, s.dump(2) + "\n");
}

NicSpec Switch::spec_of(const std::string& port, uint32_t vmq) const {
  const Nic& n = model_.nic(port);
  NicSpec spec;
  spec.name = port;
  spec.mac = n.config.mac;
  spec.vlan = n.config.vlan;
  spec.backend = n.config.backend;
  spec.vmq = vmq;
  spec.hardware = n.config.steering == Steering::Hardware;
  spec.vlans = n.config.vlans();
  spec.allow_mac_spoofing = n.config.allow_mac_spoofing;
  spec.statics = statics_of(port);
  return spec;
}

// Every allocated vmq: its NIC, the filters the classifier holds for it (read
// back from the kernel's table), where its frames are served (affinity) and
// what the classifier delivered to it.
json Switch::vmq_show() const {
  std::map<uint32_t, json> filters;
  Counters counted{};
  if (dp_) {
    // A vmq shown without its filters would look broken: a failed read is the answer.
    auto all = dp_->filters();
    if (!all) throw Refused(ErrorKind::Kernel, "vmq.show: reading the classifier's filters: " + all.error().message);
    for (const auto& [key, value] : *all)
      filters[value.vmq].push_back({{"mac", format_mac(key.mac)},
                                    {"vlan", key.vlan == XVMQ_VLAN_ANY ? json("any") : json(key.vlan)},
                                    {"strip_tag", value.strip_tag}});
    auto c = dp_->classifier_counters();
    if (!c) throw Refused(ErrorKind::Kernel, "vmq.show: reading the classifier's counters: " + c.error().message);
    counted = *c;
  }
  json vmqs = json::array();
  for (const auto& [name, p] : model_.ports()) {
    if (!p.nic || !p.nic->vmq) continue;
    const uint32_t id = *p.nic->vmq;
    const json nic = port_json(p)["nic"];
    vmqs.push_back({{"vmq", id}, {"nic", name}, {"nic_state", to_string(p.nic->state)},
                    {"filters", filters.count(id) ? filters[id] : json::array()},
                    {"affinity", nic.value("affinity", json(nullptr))},
                    {"steering", nic.contains("steering") ? nic["steering"].value("mode", "") : ""},
                    {"frames", id < counted.vmq.size() ? counted.vmq[id].frames : 0},
                    {"bytes", id < counted.vmq.size() ? counted.vmq[id].bytes : 0}});
  }
  return {{"max", model_.max_vmqs()}, {"free", model_.free_vmqs()}, {"vmqs", vmqs}};
}

std::vector<std::pair<Mac, uint16_t>> Switch::statics_of(const std::string& port) const {
  std::vector<std::pair<Mac, uint16_t>> out;
  for (const auto& [key, p] : fdb_static_)
    if (p == port) out.push_back(key);
  return out;
}

// A static FDB entry: MAC on VLAN is behind port P's NIC (a container or a
// nested guest of that VM). Frames to it on that VLAN go to the NIC, and the
// NIC may send from it without allow_mac_spoofing. The NIC's own MAC needs
// no entry; a MAC has one port per VLAN.
json Switch::fdb_add(const json& args) {
  std::string port = arg_name(args, "port");
  const auto [mac, vlan] = fdb_key_arg(args, "fdb.add");
  if (is_multicast(mac) || mac == Mac{})
    throw Refused(ErrorKind::Usage, "fdb.add: " + format_mac(mac) + " is not a unicast MAC; an entry names one station");
  const Nic& nic = model_.nic(port);  // not_found, naming the port, when it has no NIC
  const auto carried = nic.config.carried();
  if (std::find(carried.begin(), carried.end(), vlan) == carried.end()) {
    std::string list;
    for (uint16_t c : carried) list += (list.empty() ? "" : ", ") + std::to_string(c);
    throw Refused(ErrorKind::Usage, "fdb.add: nic " + port + " is not on VLAN " + std::to_string(vlan) +
                                        "; it carries " + (list.empty() ? "none" : list));
  }
  for (const auto& [name, p] : model_.ports())
    if (p.nic && p.nic->config.mac == mac) {
      const auto on = p.nic->config.carried();
      if (std::find(on.begin(), on.end(), vlan) != on.end())
        throw Refused(ErrorKind::Exists, "fdb.add: " + format_mac(mac) + " on VLAN " + std::to_string(vlan) +
                                             " is nic " + name + "'s own MAC");
    }
  if (auto it = fdb_static_.find({mac, vlan}); it != fdb_static_.end())
    throw Refused(ErrorKind::Exists, "fdb.add: " + format_mac(mac) + " on VLAN " + std::to_string(vlan) +
                                         " is already behind port " + it->second + " (fdb.del first)");
  if (fdb_static_.size() >= kMaxStaticFdb)
    throw Refused(ErrorKind::Exhausted, "fdb.add: switchd has " + std::to_string(fdb_static_.size()) +
                                            " static entries, the most it keeps (limit " +
                                            std::to_string(kMaxStaticFdb) + "); fdb.del one first");
  fdb_static_[{mac, vlan}] = port;
  if (dp_)
    if (auto st = dp_->set_statics(port, statics_of(port)); !st) {
      fdb_static_.erase({mac, vlan});
      (void)dp_->set_statics(port, statics_of(port));
      throw Refused(ErrorKind::Kernel, "fdb.add: " + st.error().message);
    }
  persist();
  return {{"mac", format_mac(mac)}, {"vlan", vlan}, {"port", port}, {"static", true}, {"added", true}};
}

json Switch::fdb_del(const json& args) {
  const auto [mac, vlan] = fdb_key_arg(args, "fdb.del");
  auto it = fdb_static_.find({mac, vlan});
  if (it == fdb_static_.end())
    throw Refused(ErrorKind::NotFound, "fdb.del: no static entry for " + format_mac(mac) + " on VLAN " +
                                           std::to_string(vlan) + " (switchctl fdb show lists them)");
  const std::string port = it->second;
  fdb_static_.erase(it);
  if (dp_) (void)dp_->set_statics(port, statics_of(port));
  persist();
  return {};
}

void Switch::event_logged(size_t before) {
  const auto& ev = model_.events();
  size_t n = ev.empty() ? 0 : ev.back().seq;
  for (const auto& e : ev)
    if (e.seq > before && e.seq <= n)
      service::log(service::Level::Info, "event %llu %s %s: %s -> %s (%s)", static_cast<unsigned long long>(e.seq),
                   iso_time(e.time).c_str(), e.object.c_str(), e.from.c_str(), e.to.c_str(), e.step.c_str());
  if (n > before && event_hook_) event_hook_();
}

void Switch::on_event(std::function<void()> hook) {
  std::lock_guard lock(mu_);
  event_hook_ = std::move(hook);
}

json Switch::port_json(const Port& p) const {
  json j{{"name", p.name}, {"state", to_string(p.state)}, {"nic", nullptr}};
  if (p.nic) {
    const Nic& n = *p.nic;
    bool fast = n.vmq && n.state == NicState::Connected;
    auto ss = dp_ ? dp_->steering(p.name) : std::nullopt;
    json steering{{"requested", to_string(n.config.steering)},
                  {"mode", ss && ss->hardware ? "hardware" : "software"},
                  {"reason", ss ? ss->reason : ""},
                  {"queue", ss && ss->hardware ? json(ss->queue) : json(nullptr)},
                  {"cpu", ss && ss->hardware ? json(ss->cpu) : json(nullptr)},
                  {"flow_rules", dp_ && dp_->flow_rules() == FlowRules::External ? "external" : "ethtool"},
                  {"umem_frames", ss && ss->hardware ? json(dp_->vmq_umem_frames()) : json(nullptr)}};
    j["nic"] = {{"state", to_string(n.state)},
                {"mac", format_mac(n.config.mac)},
                {"vlan", n.config.vlan},
                {"vlan_mode", to_string(n.config.vlan_mode)},
                {"trunk_vlans", n.config.trunk_vlans},
                {"native_vlan", n.config.native_vlan ? json(*n.config.native_vlan) : json(nullptr)},
                {"allow_mac_spoofing", n.config.allow_mac_spoofing},
                {"backend", n.config.backend},
                {"vmq_policy", to_string(n.config.vmq)},
                {"vmq", n.vmq ? json(*n.vmq) : json(nullptr)},
                {"path", n.state != NicState::Connected ? "none" : fast ? "vmq" : "default"},
                {"steering", steering},
                {"buffers", nullptr}};
    if (n.state == NicState::Connected && dp_) {
      // Reserved for it in every general queue's UMEM: a floor per socket
      // on its backend (a hardware-steered vmq has its own UMEM besides).
      const WorkerOptions& w = dp_->worker_options();
      const uint64_t sockets = uint64_t{dp_->nic_sockets_per_queue()} * dp_->queues().size();
      const uint64_t frames = sockets * w.nic_floor;
      j["nic"]["buffers"] = {{"sockets", sockets},
                             {"reserved_frames", frames},
                             {"reserved_bytes", frames * w.frame_size},
                             {"kernel_pool_bytes", sockets * kernel_pool_bytes(w.frames)},
                             {"own_umem_bytes", ss && ss->hardware ? uint64_t{dp_->vmq_umem_frames()} * w.frame_size : 0}};
    }
    if (fast && ss && ss->hardware) {
      j["nic"]["affinity"] = {{"cpus", json::array({ss->cpu})},
                              {"by", "dedicated queue " + std::to_string(ss->queue) + " (hardware steering)"}};
    } else if (fast && dp_) {
      // Software steering: the NIC's frames arrive on whatever queue RSS
      // picks, so every queue's CPU serves its vmq (as VMMQ does).
      json cpus = json::array();
      for (const auto& q : dp_->queues()) cpus.push_back(q.cpu);
      j["nic"]["affinity"] = {{"cpus", cpus}, {"by", "every general receive queue (software steering)"}};
    }
  }
  return j;
}

json Switch::host_json() const {
  json h{{"mode", uplink_host_.empty() ? "none" : uplink_host_}};
  if (host_port_) {
    h["port"] = host_port_->port;
    h["netdev"] = host_port_->netdev;
    h["backend"] = host_port_->backend;
    h["vlan"] = host_port_->vlan;
    h["moved"] = {{"addresses", host_port_->addresses}, {"routes", host_port_->routes}};
    if (auto st = netlink::link_stats(host_port_->netdev); st)
      h["netdev_stats"] = {{"rx_packets", st->rx_packets}, {"tx_packets", st->tx_packets},
                           {"rx_dropped", st->rx_dropped}, {"tx_dropped", st->tx_dropped}};
  }
  return h;
}

json Switch::show() const {
  json uplink = nullptr;
  if (dp_) {
    json queues = json::array();
    const WorkerOptions& w = dp_->worker_options();
    const uint64_t umem_bytes = uint64_t{w.frames} * w.frame_size;
    for (const auto& q : dp_->queues())
      queues.push_back({{"queue", q.queue}, {"cpu", q.cpu}, {"cpu_from", q.cpu_source},
                        {"buffers", {{"umem_bytes", umem_bytes},
                                     {"frames", w.frames},
                                     {"uplink_reserve", w.uplink_reserve},
                                     {"headroom", w.headroom},
                                     {"burst_budget", w.burst_budget},
                                     {"burst_cap", w.burst_cap},
                                     {"nic_floor", w.nic_floor},
                                     {"sockets_per_nic", dp_->nic_sockets_per_queue()},
                                     {"nic_capacity", dp_->max_nics()},
                                     {"kernel_pool_bytes_per_socket", kernel_pool_bytes(w.frames)},
                                     {"nics", dp_->connected_count()}}}});
    json general = json::array(), dedicated = json::array();
    for (const auto& q : dp_->queues()) general.push_back(q.queue);
    for (const auto& q : dp_->reserved()) dedicated.push_back(q.queue);
    uplink = {{"name", uplink_}, {"mode", to_string(dp_->mode())}, {"driver", dp_->driver()},
              {"adopted", dp_->adopted()}, {"queues", queues}, {"host", host_json()},
              {"general_queues", general}, {"dedicated_queues", dedicated},
              {"frame_size", opts_.datapath.worker.frame_size},
              {"max_frame", max_frame(opts_.datapath.worker.frame_size)},
              {"umem_frames_per_queue", w.frames},
              {"max_nics", dp_->max_nics()},
              {"pinned_bytes", umem_bytes * dp_->queues().size()}};
  }
  json ports = json::array();
  for (const auto& [_, p] : model_.ports()) ports.push_back(port_json(p));
  json vmqs{{"max", model_.max_vmqs()}, {"free", model_.free_vmqs()}};
  return {{"uplink", uplink}, {"ports", ports}, {"vmqs", vmqs}};
}

json Switch::stats() const {
  json out{{"classifier", nullptr}, {"nics", json::object()}, {"queues", json::array()}, {"dedicated", json::array()}};
  if (!dp_) return out;
  uint64_t learned = 0, refused = 0;
  std::vector<uint64_t> vlans(4096, 0);
  for (size_t q = 0; q < dp_->queues().size(); q++) {
    const QueueCounters& c = dp_->queue_counters(q);
    learned += c.learned.load();
    refused += c.learn_refused.load();
    for (size_t v = 0; v < vlans.size(); v++) vlans[v] += c.vlan_frames[v].load(std::memory_order_relaxed);
  }
  out["fdb"] = {{"size", dp_->fdb().size()}, {"capacity", dp_->fdb().capacity()}, {"learned", learned},
                {"learn_refused", refused}};
  out["vlans"] = json::object();
  for (size_t v = 0; v < vlans.size(); v++)
    if (vlans[v]) out["vlans"][std::to_string(v)] = {{"frames", vlans[v]}};
  if (auto c = dp_->classifier_counters(); c) {
    json reasons = json::object(), vmqs = json::object();
    for (uint32_t r = 0; r < XVMQ_REASON_COUNT; r++)
      reasons[std::string(reason_name(r))] = {{"frames", c->reason[r].frames}, {"bytes", c->reason[r].bytes}};
    for (uint32_t v = 0; v < XVMQ_MAX_VMQS; v++)
      if (c->vmq[v].frames) vmqs[std::to_string(v)] = {{"frames", c->vmq[v].frames}, {"bytes", c->vmq[v].bytes}};
    out["classifier"] = {{"reasons", reasons}, {"vmqs", vmqs}};
  }
  for (const auto& [name, t] : dp_->nic_totals())
    out["nics"][name] = {{"fast_frames", t.fast_frames}, {"fast_bytes", t.fast_bytes},
                         {"default_frames", t.default_frames}, {"default_bytes", t.default_bytes},
                         {"from_vm_frames", t.from_vm_frames}, {"from_vm_bytes", t.from_vm_bytes},
                         {"drops", t.drops}, {"xsk", {{"backend", xsk_json(t.xsk_backend)}, {"vmq", xsk_json(t.xsk_vmq)}}}};
  for (const auto& d : dp_->dedicated())
    out["dedicated"].push_back({{"queue", d.queue.queue}, {"cpu", d.queue.cpu}, {"nic", d.nic}, {"rx_vmq", d.rx_vmq},
                                {"tx", d.tx},
                                {"buffers", {{"total", d.pool.total}, {"free", d.pool.free}, {"in_fill", d.pool.in_fill},
                                             {"in_flight", d.pool.in_flight}, {"above_floor", d.pool.above_floor}}}});
  size_t i = 0;
  for (const auto& [q, pool] : dp_->pools()) {
    const QueueCounters& c = dp_->queue_counters(i++);
    json drops = json::object();
    for (size_t d = 0; d < static_cast<size_t>(Drop::Count); d++) drops[std::string(to_string(static_cast<Drop>(d)))] = c.drops[d].load();
    uint64_t xsk[kXskStats];
    for (size_t x = 0; x < kXskStats; x++) xsk[x] = c.xsk[x].load();
    drops["xsk_rx_dropped"] = xsk[static_cast<size_t>(XskStat::RxDropped)];
    drops["xsk_rx_ring_full"] = xsk[static_cast<size_t>(XskStat::RxRingFull)];
    out["queues"].push_back({{"queue", q.queue}, {"cpu", q.cpu},
                             {"rx_default", c.rx_default.load()}, {"rx_stack", c.rx_stack.load()}, {"rx_vmq", c.rx_vmq.load()}, {"rx_vm", c.rx_vm.load()},
                             {"tx", c.tx.load()}, {"drops", drops}, {"xsk", xsk_json(xsk)},
                             {"buffers", {{"total", pool.total}, {"free", pool.free}, {"in_fill", pool.in_fill},
                                          {"in_flight", pool.in_flight}, {"above_floor", pool.above_floor},
                                          {"burst_budget", dp_->worker_options().burst_budget}}}});
  }
  return out;
}

json Switch::handle(const std::string& op, const json& args) {
  std::lock_guard lock(mu_);
  if (op == "config.apply") return config_apply(args);
  if (op == "config.export") return config_export();
  return handle_op(op, args);
}

json Switch::handle_op(const std::string& op, const json& args) {
  const uint64_t before = model_.events().empty() ? 0 : model_.events().back().seq;
  json result = json::object();

  if (op == "show") {
    return show();
  } else if (op == "vmq.show") {
    return vmq_show();
  } else if (op == "stats") {
    return stats();
  } else if (op == "events") {
    uint64_t since = args.value("since", uint64_t{0});
    uint32_t wait_ms = 0;
    if (args.contains("wait_ms")) {
      const json& w = args["wait_ms"];
      if (!w.is_number_integer() || w.get<int64_t>() < 0 || w.get<int64_t>() > kMaxEventsWaitMs)
        throw Refused(ErrorKind::Usage, "events: wait_ms must be an integer 0.." + std::to_string(kMaxEventsWaitMs) +
                                            " (milliseconds to wait for an event newer than since)");
      wait_ms = w.get<uint32_t>();
    }
    json evs = json::array();
    for (const auto& e : model_.events())
      if (e.seq > since)
        evs.push_back({{"seq", e.seq}, {"time", iso_time(e.time)}, {"object", e.object}, {"from", e.from}, {"to", e.to}, {"step", e.step}});
    if (evs.empty() && wait_ms > 0) throw NotYet{wait_ms, {{"events", evs}}};
    return {{"events", evs}};
  } else if (op == "fdb.show") {
    if (!dp_) throw Refused(ErrorKind::NotFound, "no uplink is attached");
    json entries = json::array();
    for (const auto& e : dp_->fdb().entries(Datapath::now_s()))
      entries.push_back({{"mac", format_mac(e.mac)}, {"vlan", e.vlan}, {"port", "uplink"}, {"age_s", e.age_s}});
    for (const auto& [name, p] : model_.ports())
      if (p.nic && p.nic->state == NicState::Connected)
        for (uint16_t v : p.nic->config.carried())
          entries.push_back({{"mac", format_mac(p.nic->config.mac)}, {"vlan", v}, {"port", name}, {"static", true}});
    for (const auto& [key, port] : fdb_static_)
      entries.push_back({{"mac", format_mac(key.first)}, {"vlan", key.second}, {"port", port}, {"static", true},
                         {"added", true}});
    return {{"entries", entries}, {"size", dp_->fdb().size()}, {"capacity", dp_->fdb().capacity()}};
  } else if (op == "fdb.add") {
    return fdb_add(args);
  } else if (op == "fdb.del") {
    return fdb_del(args);
  } else if (op == "fdb.flush") {
    if (!dp_) throw Refused(ErrorKind::NotFound, "no uplink is attached");
    return {{"flushed", dp_->fdb().flush()}};
  } else if (op == "uplink.attach") {
    std::string name = arg_name(args, "name");
    auto mode = parse_attach_mode(args.value("mode", "auto"));
    if (!mode) throw Refused(ErrorKind::Usage, "mode '" + args.value("mode", "") + "': use auto, native, skb or offload");
    if (dp_)
      throw Refused(name == uplink_ ? ErrorKind::Exists : ErrorKind::WrongState,
                    "uplink " + uplink_ + " is attached (mode " + std::string(to_string(dp_->mode())) +
                        "); one uplink per switchd: uplink.detach first");
    // Attaching must never cut the host off silently: where do its addresses go?
    std::string host = args.value("host", "");
    if (!host.empty() && host != "stack" && host != "port")
      throw Refused(ErrorKind::Usage, "host '" + host + "': use stack (frames to " + name +
                                          "'s MAC reach the host's stack) or port (the host moves its addresses to a host port)");
    std::string host_netdev;
    uint16_t host_vlan = 0;
    if (host == "port") {
      host_netdev = args.contains("host_netdev") ? arg_name(args, "host_netdev") : default_host_netdev(name);
      if (args.contains("host_vlan")) {
        const json& v = args["host_vlan"];
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > XVMQ_VLAN_MAX)
          throw Refused(ErrorKind::Usage, "host_vlan must be an integer 0..4094 (0: untagged)");
        host_vlan = v.get<uint16_t>();
      }
      if (model_.ports().count("host"))
        throw Refused(ErrorKind::Exists, "uplink.attach " + name + " host=port: port 'host' exists (state " +
                                             std::string(to_string(model_.port("host").state)) +
                                             "); the host port takes that name: delete it first");
    } else if (args.contains("host_netdev") || args.contains("host_vlan")) {
      throw Refused(ErrorKind::Usage, "host_netdev and host_vlan go with host=port");
    }
    auto addrs = netlink::addresses(name);
    if (!addrs) throw Refused(kind_of(addrs.error()), "uplink.attach " + name + ": " + addrs.error().message);
    if (!addrs->empty() && host.empty()) {
      std::string list;
      for (const auto& a : *addrs) list += (list.empty() ? "" : ", ") + a.str();
      throw Refused(ErrorKind::WrongState,
                    "uplink.attach " + name + ": it carries host addresses (" + list +
                        "); choose host=stack (frames to its MAC keep reaching the host's stack) or host=port "
                        "(the host moves its addresses to a host port: a NIC like a VM's on a netdev of the host)");
    }
    DatapathOptions o = opts_.datapath;
    o.mode = *mode;
    o.host_stack = host == "stack";
    auto dp = opts_.open_datapath(name, o);
    if (!dp) throw Refused(kind_of(dp.error()), "uplink.attach " + name + ": " + dp.error().message);
    dp_ = std::move(dp.value());
    if (host == "port") {
      try {
        make_host_port(name, host_netdev, host_vlan);
      } catch (const Refused&) {
        if (auto st = dp_->detach(); !st)
          service::log(service::Level::Warn, "uplink.attach %s: undo: %s", name.c_str(), st.error().message.c_str());
        dp_.reset();
        throw;
      }
    }
    uplink_ = name;
    uplink_mode_ = *mode;
    uplink_host_ = host;
    host_netdev_ = host_netdev;
    host_vlan_ = host_vlan;
    model_.record("uplink " + name, "none", "attached (" + std::string(to_string(dp_->mode())) + ")", "uplink.attach");
    result = show()["uplink"];
  } else if (op == "uplink.detach") {
    if (!dp_) throw Refused(ErrorKind::NotFound, "no uplink is attached");
    std::string busy;
    for (const auto& [name, p] : model_.ports())
      if (p.nic && p.nic->state == NicState::Connected && !(host_port_ && name == host_port_->port))
        busy += (busy.empty() ? "" : ", ") + name;
    if (!busy.empty())
      throw Refused(ErrorKind::WrongState, "uplink.detach: nics still connected: " + busy + "; nic.disconnect them first");
    if (host_port_)
      if (std::string errs = remove_host_port(); !errs.empty())
        service::log(service::Level::Warn, "uplink.detach %s: host port: %s", uplink_.c_str(), errs.c_str());
    if (auto st = dp_->detach(); !st) throw Refused(ErrorKind::Kernel, "uplink.detach " + uplink_ + ": " + st.error().message);
    dp_.reset();
    model_.record("uplink " + uplink_, "attached", "none", "uplink.detach");
    uplink_.clear();
  } else if (op == "port.create") {
    std::string name = arg_string(args, "name");
    model_.port_create(name);
    result = port_json(model_.port(name));
  } else if (op == "port.teardown") {
    std::string name = arg_name(args, "name");
    refuse_on_host_port(op, name);
    model_.port_teardown(name);
    result = port_json(model_.port(name));
  } else if (op == "port.delete") {
    std::string name = arg_name(args, "name");
    refuse_on_host_port(op, name);
    model_.port_delete(name);
  } else if (op == "nic.create") {
    std::string port = arg_name(args, "port");
    NicConfig c = nic_config_from_args(args);
    model_.nic_create(port, c);
    result = port_json(model_.port(port))["nic"];
  } else if (op == "nic.connect") {
    std::string port = arg_name(args, "port");
    model_.check_nic_connect(port);
    if (!dp_) throw Refused(ErrorKind::WrongState, "nic.connect: no uplink is attached; allowed first: uplink.attach");
    const Nic& n = model_.nic(port);
    uint32_t vmq = n.vmq.value_or(0);
    auto free = model_.free_vmqs();
    if (!vmq && n.config.vmq == VmqPolicy::Auto && !free.empty()) vmq = free.front();
    if (auto st = dp_->connect(spec_of(port, vmq)); !st)
      throw Refused(kind_of(st.error()), "nic.connect " + port + ": " + st.error().message);
    if (auto ss = dp_->steering(port); ss && ss->requested_hw && !ss->hardware)
      service::log(service::Level::Warn, "nic %s: software steering (hardware requested; %s)", port.c_str(), ss->reason.c_str());
    if (vmq && !n.vmq) model_.vmq_allocate(port);
    model_.nic_connect(port);
    result = port_json(model_.port(port))["nic"];
  } else if (op == "nic.disconnect") {
    std::string port = arg_name(args, "port");
    refuse_on_host_port(op, port);
    model_.check_nic_disconnect(port);
    // No uplink (a state file that says connected without one): nothing to tell.
    if (!dp_)
      service::log(service::Level::Warn, "nic.disconnect %s: no uplink is attached; nothing to disconnect", port.c_str());
    else if (auto st = dp_->disconnect(port); !st)
      service::log(service::Level::Warn, "nic.disconnect %s: %s", port.c_str(), st.error().message.c_str());
    model_.nic_disconnect(port);
    result = port_json(model_.port(port))["nic"];
  } else if (op == "nic.delete") {
    std::string port = arg_name(args, "port");
    refuse_on_host_port(op, port);
    model_.nic_delete(port);
    if (dp_) dp_->forget(port);
    std::erase_if(fdb_static_, [&](const auto& e) { return e.second == port; });  // they were its NIC's
  } else if (op == "vmq.allocate") {
    std::string port = arg_name(args, "port");
    auto policy = policy_arg(args, VmqPolicy::Auto, "vmq.allocate");
    const Nic& n = model_.nic(port);
    auto free = model_.free_vmqs();
    // With policy auto the NIC takes a vmq when one can be had, as at connect.
    if (!policy || (!n.vmq && !free.empty() && n.state != NicState::Disconnected)) {
      if (!n.vmq && !free.empty() && n.state == NicState::Connected && dp_)
        if (auto st = dp_->set_vmq(spec_of(port, 0), free.front()); !st)
          throw Refused(ErrorKind::Kernel, "vmq.allocate " + port + ": " + st.error().message);
      model_.vmq_allocate(port);
    }
    if (policy) model_.set_vmq_policy(port, *policy, "vmq.allocate");
    result = port_json(model_.port(port))["nic"];
  } else if (op == "vmq.free") {
    std::string port = arg_name(args, "port");
    auto policy = policy_arg(args, VmqPolicy::Off, "vmq.free");
    const Nic& n = model_.nic(port);
    if (!policy || n.vmq) {
      if (n.vmq && n.state == NicState::Connected && dp_)
        if (auto st = dp_->set_vmq(spec_of(port, *n.vmq), 0); !st)
          throw Refused(st.error().code == EBUSY ? ErrorKind::WrongState : ErrorKind::Kernel, "vmq.free " + port + ": " + st.error().message);
      model_.vmq_free(port);
    }
    if (policy) model_.set_vmq_policy(port, *policy, "vmq.free");
    result = port_json(model_.port(port))["nic"];
  } else {
    throw Refused(ErrorKind::Usage, "unknown op '" + op + "'");
  }
  // Every op that gets here changed the configuration.
  persist();
  event_logged(before);
  return result;
}

void Switch::clear_filters() {
  std::lock_guard lock(mu_);
  if (!dp_) return;
  if (auto st = dp_->reconcile_filters({}); !st)
    service::log(service::Level::Warn, "clear filters on %s: %s", uplink_.c_str(), st.error().message.c_str());
}

json Switch::snapshot() {
  std::lock_guard lock(mu_);
  return {{"show", show()}, {"stats", stats()}};
}

void Switch::detach_uplink() {
  std::lock_guard lock(mu_);
  if (host_port_ && dp_) {
    if (std::string errs = remove_host_port(); !errs.empty())
      service::log(service::Level::Warn, "detach %s: host port: %s", uplink_.c_str(), errs.c_str());
    persist();
  }
  if (dp_) (void)dp_->detach();
  dp_.reset();
}

void Switch::make_host_port(const std::string& uplink, const std::string& netdev, uint16_t vlan) {
  const std::string what = "uplink.attach " + uplink + " host=port";
  HostPort hp;
  hp.netdev = netdev;
  hp.backend = host_backend(netdev);
  hp.vlan = vlan;
  auto fail = [&](const Error& e) { return Refused(kind_of(e), what + ": " + e.message); };
  auto mac = netlink::link_mac(uplink);
  if (!mac) throw fail(mac.error());
  auto info = netdev_info(uplink);
  if (!info) throw fail(info.error());
  auto addrs = netlink::addresses(uplink);
  if (!addrs) throw fail(addrs.error());
  auto routes = netlink::routes(uplink);
  if (!routes) throw fail(routes.error());

  // Each step that changed something pushes its undo; a failure runs them
  // backwards, so a refused attach leaves the host as it found it.
  std::vector<std::function<void()>> undo;
  const Model saved = model_;
  auto check = [&](Status st) {
    if (st) return;
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) (*it)();
    model_ = saved;
    throw Refused(kind_of(st.error()), what + ": " + st.error().message + "; undone, nothing changed");
  };
  auto noted = [&](const Status& st) {
    if (!st) service::log(service::Level::Warn, "%s: undo: %s", what.c_str(), st.error().message.c_str());
  };

  if (auto st = netlink::create_veth(netdev, hp.backend, info->rx_queues, *mac); !st) {
    for (const auto& dev : {netdev, hp.backend})
      if (netlink::link_exists(dev))
        throw Refused(ErrorKind::Exists, what + ": " + (dev == netdev ? "host_netdev '" : "the host port's backend '") +
                                             dev + "' already exists on this host; nothing changed" +
                                             (dev == netdev ? "" : " (choose another host_netdev)"));
    throw fail(st.error());
  }
  undo.push_back([&] { noted(netlink::delete_link(netdev)); });
  (void)netlink::disable_ipv6_addresses(hp.backend);  // fails only where IPv6 is off
  check(netlink::tx_offloads_off(netdev));
  check(netlink::set_up(hp.backend, true));
  check(netlink::set_up(netdev, true));

  // The host port: a port and NIC like a VM's, through the normal lifecycle.
  try {
    model_.port_create(hp.port);
    NicConfig c;
    c.mac = *mac;
    c.backend = hp.backend;
    c.vlan = vlan;
    model_.nic_create(hp.port, c);
    model_.check_nic_connect(hp.port);
  } catch (const Refused&) {
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) (*it)();
    model_ = saved;
    throw;
  }
  auto free = model_.free_vmqs();
  const uint32_t vmq = free.empty() ? 0 : free.front();
  check(dp_->connect(spec_of(hp.port, vmq)));
  undo.push_back([&] {
    noted(dp_->disconnect(hp.port));
    dp_->forget(hp.port);
  });
  if (vmq) model_.vmq_allocate(hp.port);
  model_.nic_connect(hp.port);

  // The host's addresses and routes move: onto the host port first, so
  // the host always has them somewhere.
  for (const auto& a : *addrs) {
    check(netlink::add_address(netdev, a));
    undo.push_back([&] { noted(netlink::delete_address(netdev, a)); });
  }
  for (const auto& r : *routes) {
    check(netlink::delete_route(uplink, r));
    undo.push_back([&] { noted(netlink::add_route(uplink, r)); });
  }
  for (auto it = addrs->rbegin(); it != addrs->rend(); ++it) {  // secondaries first
    const auto& a = *it;
    check(netlink::delete_address(uplink, a));
    undo.push_back([&] { noted(netlink::add_address(uplink, a)); });
  }
  for (const auto& r : *routes) {
    check(netlink::add_route(netdev, r));
    undo.push_back([&] { noted(netlink::delete_route(netdev, r)); });
  }
  for (const auto& a : *addrs) hp.addresses.push_back(a.str());
  for (const auto& r : *routes) hp.routes.push_back(r.str());
  service::log(service::Level::Info, "host port %s: netdev %s (backend %s), %zu address(es) and %zu route(s) moved from %s",
               hp.port.c_str(), netdev.c_str(), hp.backend.c_str(), addrs->size(), routes->size(), uplink.c_str());
  host_port_ = hp;
}

std::string Switch::remove_host_port() {
  const HostPort hp = *host_port_;
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
      for (const auto& a : *addrs) note(netlink::add_address(uplink_, a));
    if (routes)
      for (const auto& r : *routes) note(netlink::add_route(uplink_, r));
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
    throw Refused(ErrorKind::WrongState, op + " " + port + ": it is the host port of uplink " + uplink_ + " (netdev " +
                                             host_port_->netdev + ", connected); uplink.detach removes it");
}

}  // namespace xvmq::switchd
