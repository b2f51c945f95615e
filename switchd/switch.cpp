#include "switchd/switch.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "switchd/service.h"

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
  return e.code == ENODEV || e.code == ENOENT ? ErrorKind::NotFound : e.code == EINVAL ? ErrorKind::Usage : ErrorKind::Kernel;
}

}  // namespace

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
  if (s.contains("uplink") && !s["uplink"].is_null()) {
    uplink_ = s["uplink"].at("name").get<std::string>();
    uplink_mode_ = parse_attach_mode(s["uplink"].value("mode", "auto")).value_or(AttachMode::Auto);
    uplink_host_ = s["uplink"].value("host", "");
    auto dp = Datapath::open(uplink_, [&] {
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
  json s{{"version", 1},
         {"uplink", uplink_.empty() ? json(nullptr)
                                    : json{{"name", uplink_}, {"mode", to_string(uplink_mode_)}, {"host", uplink_host_}}},
         {"ports", ports}};
  write_atomic(state_path_, s.dump(2) + "\n");
}

NicSpec Switch::spec_of(const std::string& port, uint32_t vmq) const {
  const Nic& n = model_.nic(port);
  NicSpec spec{port, n.config.mac, n.config.vlan, n.config.backend, vmq, n.config.steering == Steering::Hardware};
  spec.vlans = n.config.vlans();
  spec.allow_mac_spoofing = n.config.allow_mac_spoofing;
  return spec;
}

void Switch::event_logged(size_t before) {
  const auto& ev = model_.events();
  size_t n = ev.empty() ? 0 : ev.back().seq;
  for (const auto& e : ev)
    if (e.seq > before && e.seq <= n)
      service::log(service::Level::Info, "event %llu %s %s: %s -> %s (%s)", static_cast<unsigned long long>(e.seq),
                   iso_time(e.time).c_str(), e.object.c_str(), e.from.c_str(), e.to.c_str(), e.step.c_str());
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
                {"steering", steering}};
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

json Switch::show() const {
  json uplink = nullptr;
  if (dp_) {
    json queues = json::array();
    for (const auto& q : dp_->queues()) queues.push_back({{"queue", q.queue}, {"cpu", q.cpu}, {"cpu_from", q.cpu_source}});
    json general = json::array(), dedicated = json::array();
    for (const auto& q : dp_->queues()) general.push_back(q.queue);
    for (const auto& q : dp_->reserved()) dedicated.push_back(q.queue);
    uplink = {{"name", uplink_}, {"mode", to_string(dp_->mode())}, {"driver", dp_->driver()},
              {"adopted", dp_->adopted()}, {"queues", queues}, {"host", uplink_host_.empty() ? "none" : uplink_host_},
              {"general_queues", general}, {"dedicated_queues", dedicated},
              {"frame_size", opts_.datapath.worker.frame_size},
              {"max_frame", max_frame(opts_.datapath.worker.frame_size)},
              {"umem_frames_per_queue", opts_.datapath.worker.frames}};
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
    for (uint32_t r = 0; r < XVMQ_REASON_MAX; r++)
      reasons[std::string(reason_name(r))] = {{"frames", c->reason[r].frames}, {"bytes", c->reason[r].bytes}};
    for (uint32_t v = 0; v < XVMQ_MAX_VMQS; v++)
      if (c->vmq[v].frames) vmqs[std::to_string(v)] = {{"frames", c->vmq[v].frames}, {"bytes", c->vmq[v].bytes}};
    out["classifier"] = {{"reasons", reasons}, {"vmqs", vmqs}};
  }
  for (const auto& [name, t] : dp_->nic_totals())
    out["nics"][name] = {{"fast_frames", t.fast_frames}, {"fast_bytes", t.fast_bytes},
                         {"default_frames", t.default_frames}, {"default_bytes", t.default_bytes},
                         {"from_vm_frames", t.from_vm_frames}, {"from_vm_bytes", t.from_vm_bytes},
                         {"drops", t.drops}};
  for (const auto& d : dp_->dedicated())
    out["dedicated"].push_back({{"queue", d.queue.queue}, {"cpu", d.queue.cpu}, {"nic", d.nic}, {"rx_vmq", d.rx_vmq},
                                {"tx", d.tx},
                                {"buffers", {{"total", d.pool.total}, {"free", d.pool.free}, {"in_fill", d.pool.in_fill},
                                             {"in_flight", d.pool.in_flight}}}});
  size_t i = 0;
  for (const auto& [q, pool] : dp_->pools()) {
    const QueueCounters& c = dp_->queue_counters(i++);
    json drops = json::object();
    for (size_t d = 0; d < static_cast<size_t>(Drop::Count); d++) drops[std::string(to_string(static_cast<Drop>(d)))] = c.drops[d].load();
    out["queues"].push_back({{"queue", q.queue}, {"cpu", q.cpu},
                             {"rx_default", c.rx_default.load()}, {"rx_vmq", c.rx_vmq.load()}, {"rx_vm", c.rx_vm.load()},
                             {"tx", c.tx.load()}, {"drops", drops},
                             {"buffers", {{"total", pool.total}, {"free", pool.free}, {"in_fill", pool.in_fill},
                                          {"in_flight", pool.in_flight}}}});
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
  } else if (op == "stats") {
    return stats();
  } else if (op == "events") {
    uint64_t since = args.value("since", uint64_t{0});
    json evs = json::array();
    for (const auto& e : model_.events())
      if (e.seq > since)
        evs.push_back({{"seq", e.seq}, {"time", iso_time(e.time)}, {"object", e.object}, {"from", e.from}, {"to", e.to}, {"step", e.step}});
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
    return {{"entries", entries}, {"size", dp_->fdb().size()}, {"capacity", dp_->fdb().capacity()}};
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
    if (auto addrs = host_addresses(name); !addrs.empty() && host.empty()) {
      std::string list;
      for (const auto& a : addrs) list += (list.empty() ? "" : ", ") + a;
      throw Refused(ErrorKind::WrongState,
                    "uplink.attach " + name + ": it carries host addresses (" + list +
                        "); choose host=stack (frames to its MAC keep reaching the host's stack) or host=port "
                        "(the host moves its addresses to a host port: a NIC like a VM's on a netdev of the host)");
    }
    DatapathOptions o = opts_.datapath;
    o.mode = *mode;
    o.host_stack = host == "stack";
    auto dp = Datapath::open(name, o);
    if (!dp) throw Refused(kind_of(dp.error()), "uplink.attach " + name + ": " + dp.error().message);
    dp_ = std::move(dp.value());
    uplink_ = name;
    uplink_mode_ = *mode;
    uplink_host_ = host;
    model_.record("uplink " + name, "none", "attached (" + std::string(to_string(dp_->mode())) + ")", "uplink.attach");
    result = show()["uplink"];
  } else if (op == "uplink.detach") {
    if (!dp_) throw Refused(ErrorKind::NotFound, "no uplink is attached");
    std::string busy;
    for (const auto& [name, p] : model_.ports())
      if (p.nic && p.nic->state == NicState::Connected) busy += (busy.empty() ? "" : ", ") + name;
    if (!busy.empty())
      throw Refused(ErrorKind::WrongState, "uplink.detach: nics still connected: " + busy + "; nic.disconnect them first");
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
    model_.port_teardown(name);
    result = port_json(model_.port(name));
  } else if (op == "port.delete") {
    model_.port_delete(arg_name(args, "name"));
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
    model_.check_nic_disconnect(port);
    if (auto st = dp_->disconnect(port); !st)
      service::log(service::Level::Warn, "nic.disconnect %s: %s", port.c_str(), st.error().message.c_str());
    model_.nic_disconnect(port);
    result = port_json(model_.port(port))["nic"];
  } else if (op == "nic.delete") {
    std::string port = arg_name(args, "port");
    model_.nic_delete(port);
    if (dp_) dp_->forget(port);
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
  if (dp_) (void)dp_->detach();
  dp_.reset();
}

}  // namespace xvmq::switchd
