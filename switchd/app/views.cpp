#include "switchd/app/views.h"

#include <cstdio>
#include <ctime>

#include "switchd/host/netlink.h"

namespace xvmq::switchd {

using nlohmann::json;

std::string iso_time(std::chrono::system_clock::time_point t) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

namespace {

// What the kernel counted at AF_XDP sockets, by name.
json xsk_json(const uint64_t (&v)[kXskStats]) {
  json j = json::object();
  for (size_t i = 0; i < kXskStats; i++) j[std::string(to_string(static_cast<XskStat>(i)))] = v[i];
  return j;
}

json pool_json(const PoolState& p) {
  return {{"total", p.total},
          {"free", p.free},
          {"in_fill", p.in_fill},
          {"in_flight", p.in_flight},
          {"above_floor", p.above_floor}};
}

json counter_json(const Counter& c) { return {{"frames", c.frames}, {"bytes", c.bytes}}; }

json classifier_json(const Counters& c) {
  json reasons = json::object(), vmqs = json::object();
  for (uint32_t r = 0; r < XVMQ_REASON_COUNT; r++) reasons[std::string(reason_name(r))] = counter_json(c.reason[r]);
  for (uint32_t v = 0; v < XVMQ_MAX_VMQS; v++)
    if (c.vmq[v].frames) vmqs[std::to_string(v)] = counter_json(c.vmq[v]);
  return {{"reasons", reasons}, {"vmqs", vmqs}};
}

json nic_totals_json(const NicTotals& t) {
  return {{"fast_frames", t.fast_frames},
          {"fast_bytes", t.fast_bytes},
          {"default_frames", t.default_frames},
          {"default_bytes", t.default_bytes},
          {"from_vm_frames", t.from_vm_frames},
          {"from_vm_bytes", t.from_vm_bytes},
          {"vhost_rx_frames", t.vhost_rx_frames},
          {"vhost_rx_bytes", t.vhost_rx_bytes},
          {"drops", t.drops},
          {"backend_tx_dropped", t.backend_tx_dropped},
          {"xsk", {{"backend", xsk_json(t.xsk_backend)}, {"vmq", xsk_json(t.xsk_vmq)}}}};
}

json queue_stats_json(const QueueStats& q, uint32_t burst_budget) {
  json drops = q.drop_reasons();
  json buffers = pool_json(q.pool);
  buffers["burst_budget"] = burst_budget;
  return {{"queue", q.queue.queue},
          {"cpu", q.queue.cpu},
          {"rx_default", q.rx_default},
          {"rx_stack", q.rx_stack},
          {"rx_vmq", q.rx_vmq},
          {"rx_vm", q.rx_vm},
          {"tx", q.tx},
          {"drops", drops},
          {"xsk", xsk_json(q.xsk)},
          {"buffers", buffers}};
}

// A NIC's delivery and its vmq's processor: what the datapath gave a
// connected NIC, else what was asked for.
void delivery_fields(const NicDesc& d, const std::optional<DeliveryState>& ds, json& nic) {
  nic["delivery"] = to_string(ds ? ds->effective : d.delivery);
  nic["delivery_requested"] = to_string(d.delivery);
  nic["delivery_why"] = ds ? ds->why : "";
  if (ds && ds->effective == Delivery::Kernel && ds->cpu >= 0) {
    nic["vmq_cpu"] = ds->cpu;
    nic["vmq_cpu_source"] = ds->cpu_source;
  } else {
    nic["vmq_cpu"] = d.vmq_cpu ? json(*d.vmq_cpu) : json(nullptr);
    nic["vmq_cpu_source"] = d.vmq_cpu ? json("configured") : json(nullptr);
  }
}

QueueStats queue_stats(const QueueInfo& q, const PoolState& pool, const QueueCounters& c) {
  QueueStats s{.queue = q,
               .rx_default = c.rx_default.load(),
               .rx_stack = c.rx_stack.load(),
               .rx_vmq = c.rx_vmq.load(),
               .rx_vm = c.rx_vm.load(),
               .tx = c.tx.load(),
               .pool = pool};
  for (size_t d = 0; d < s.drops.size(); d++) s.drops[d] = c.drops[d].load();
  for (size_t x = 0; x < kXskStats; x++) s.xsk[x] = c.xsk[x].load();
  return s;
}

}  // namespace

std::map<std::string, uint64_t> QueueStats::drop_reasons() const {
  std::map<std::string, uint64_t> out;
  for (size_t d = 0; d < drops.size(); d++) out[std::string(to_string(static_cast<Drop>(d)))] = drops[d];
  out["xsk_rx_dropped"] = xsk[static_cast<size_t>(XskStat::RxDropped)];
  out["xsk_rx_ring_full"] = xsk[static_cast<size_t>(XskStat::RxRingFull)];
  return out;
}

StatsSnapshot read_stats(const DatapathApi& dp) {
  StatsSnapshot s;
  std::vector<uint64_t> vlans(4096, 0);
  for (size_t q = 0; q < dp.queues().size(); q++) {
    const QueueCounters& c = dp.queue_counters(q);
    s.fdb_learned += c.learned.load();
    s.fdb_learn_refused += c.learn_refused.load();
    for (size_t v = 0; v < vlans.size(); v++) vlans[v] += c.vlan_frames[v].load(std::memory_order_relaxed);
  }
  for (size_t v = 0; v < vlans.size(); v++)
    if (vlans[v]) s.vlan_frames[static_cast<uint16_t>(v)] = vlans[v];
  s.fdb_size = dp.fdb().size();
  s.fdb_capacity = dp.fdb().capacity();
  if (auto c = dp.classifier_counters(); c) s.classifier = *c;
  s.nics = dp.nic_totals();
  s.dedicated = dp.dedicated();
  size_t i = 0;
  for (const auto& [q, pool] : dp.pools()) s.queues.push_back(queue_stats(q, pool, dp.queue_counters(i++)));
  s.burst_budget = dp.worker_options().burst_budget;
  return s;
}

json Views::stats() const {
  json out{{"classifier", nullptr}, {"nics", json::object()}, {"queues", json::array()}, {"dedicated", json::array()}};
  if (!dp) return out;
  const StatsSnapshot s = read_stats(*dp);
  out["fdb"] = {{"size", s.fdb_size},
                {"capacity", s.fdb_capacity},
                {"learned", s.fdb_learned},
                {"learn_refused", s.fdb_learn_refused}};
  out["vlans"] = json::object();
  for (const auto& [v, frames] : s.vlan_frames) out["vlans"][std::to_string(v)] = {{"frames", frames}};
  if (s.classifier) out["classifier"] = classifier_json(*s.classifier);
  for (const auto& [name, t] : s.nics) {
    out["nics"][name] = nic_totals_json(t);
    // Connected: the datapath's delivery; else the one asked for, if the NIC is still there.
    auto ds = dp->delivery(name);
    auto p = model.ports().find(name);
    const NicDesc* d = p != model.ports().end() && p->second.nic ? &p->second.nic->desc : nullptr;
    out["nics"][name]["delivery"] = ds ? json(to_string(ds->effective)) : d ? json(to_string(d->delivery)) : json();
  }
  for (const auto& d : s.dedicated)
    out["dedicated"].push_back({{"queue", d.queue.queue},
                                {"cpu", d.queue.cpu},
                                {"nic", d.nic},
                                {"rx_vmq", d.rx_vmq},
                                {"tx", d.tx},
                                {"buffers", pool_json(d.pool)}});
  for (const auto& q : s.queues) out["queues"].push_back(queue_stats_json(q, s.burst_budget));
  return out;
}

SwitchSnapshot Views::snapshot() const {
  SwitchSnapshot s{.ports = model.ports().size(), .max_vmqs = model.max_vmqs(), .free_vmqs = model.free_vmqs().size()};
  for (const auto& [name, p] : model.ports())
    if (p.nic) s.nics.push_back({.port = name, .state = p.nic->state, .vmq_id = p.nic->vmq_id});
  if (!dp) return s;
  s.uplink =
      SwitchSnapshot::UplinkSummary{.name = uplink ? uplink->name : "", .mode = dp->mode(), .driver = dp->driver()};
  s.stats = read_stats(*dp);
  return s;
}

json Views::steering(const Nic& n, const std::optional<SteeringState>& ss) const {
  const bool hw = ss && ss->hardware;
  return {{"requested", to_string(n.desc.steering)},
          {"mode", hw ? "hardware" : "software"},
          {"reason", ss ? ss->reason : ""},
          {"queue", hw ? json(ss->queue) : json(nullptr)},
          {"cpu", hw ? json(ss->cpu) : json(nullptr)},
          {"flow_rules", dp && dp->flow_rules() == FlowRules::External ? "external" : "ethtool"},
          {"umem_frames", hw ? json(dp->vmq_umem_frames()) : json(nullptr)}};
}

// Reserved for a connected NIC in every general queue's UMEM: a floor per
// socket on its backend (a hardware-steered vmq has its own UMEM besides).
json Views::buffers(const std::optional<SteeringState>& ss) const {
  const WorkerOptions& w = dp->worker_options();
  const uint64_t sockets = uint64_t{dp->nic_sockets_per_queue()} * dp->queues().size();
  const uint64_t frames = sockets * w.nic_floor;
  return {{"sockets", sockets},
          {"reserved_frames", frames},
          {"reserved_bytes", frames * w.frame_size},
          {"kernel_pool_bytes", sockets * kernel_pool_bytes(w.frames)},
          {"own_umem_bytes", ss && ss->hardware ? uint64_t{dp->vmq_umem_frames()} * w.frame_size : 0}};
}

json Views::affinity(const std::optional<SteeringState>& ss, const std::optional<DeliveryState>& ds) const {
  // Kernel delivery: the vmq's CPUMAP entry hands its frames to its processor.
  if (ds && ds->effective == Delivery::Kernel && ds->cpu >= 0)
    return {{"cpus", json::array({ds->cpu})}, {"by", "the vmq's processor (" + ds->cpu_source + ", kernel delivery)"}};
  if (ss && ss->hardware)
    return {{"cpus", json::array({ss->cpu})},
            {"by", "dedicated queue " + std::to_string(ss->queue) + " (hardware steering)"}};
  // Software steering: the NIC's frames arrive on whatever queue RSS
  // picks, so every queue's CPU serves its vmq (as VMMQ does).
  json cpus = json::array();
  for (const auto& q : dp->queues()) cpus.push_back(q.cpu);
  return {{"cpus", cpus}, {"by", "every general receive queue (software steering)"}};
}

json Views::port(const Port& p) const {
  json j{{"name", p.name}, {"state", to_string(p.state)}, {"nic", nullptr}};
  if (p.owner) j["owner"] = owner_json(*p.owner);
  if (!p.nic) return j;
  const Nic& n = *p.nic;
  const bool connected = n.state == NicState::Connected;
  const bool fast = n.vmq_id && connected;
  auto ss = dp ? dp->steering(p.name) : std::nullopt;
  auto ds = dp ? dp->delivery(p.name) : std::nullopt;
  json nic = nic_fields(n.desc);
  delivery_fields(n.desc, ds, nic);
  nic["state"] = to_string(n.state);
  nic["vmq"] = n.vmq_id ? json(*n.vmq_id) : json(nullptr);
  nic["path"] = !connected ? "none" : fast ? "vmq" : "default";
  nic["steering"] = steering(n, ss);
  nic["buffers"] = connected && dp ? buffers(ss) : json(nullptr);
  if (fast && dp) nic["affinity"] = affinity(ss, ds);
  j["nic"] = nic;
  return j;
}

json Views::host() const {
  json h{{"mode", !uplink || uplink->host.empty() ? "none" : uplink->host}};
  if (!host_port) return h;
  h["port"] = host_port->port;
  h["netdev"] = host_port->netdev;
  h["backend"] = host_port->backend;
  h["vlan"] = host_port->vlan;
  h["moved"] = {{"addresses", host_port->addresses}, {"routes", host_port->routes}};
  if (auto st = netlink::link_stats(host_port->netdev); st)
    h["netdev_stats"] = {{"rx_packets", st->rx_packets},
                         {"tx_packets", st->tx_packets},
                         {"rx_dropped", st->rx_dropped},
                         {"tx_dropped", st->tx_dropped}};
  return h;
}

json Views::queue_view(const QueueInfo& q) const {
  const WorkerOptions& w = dp->worker_options();
  return {{"queue", q.queue},
          {"cpu", q.cpu},
          {"cpu_from", q.cpu_source},
          {"buffers",
           {{"umem_bytes", uint64_t{w.frames} * w.frame_size},
            {"frames", w.frames},
            {"uplink_reserve", w.uplink_reserve},
            {"headroom", w.headroom},
            {"burst_budget", w.burst_budget},
            {"burst_cap", w.burst_cap},
            {"nic_floor", w.nic_floor},
            {"sockets_per_nic", dp->nic_sockets_per_queue()},
            {"nic_capacity", dp->max_nics()},
            {"kernel_pool_bytes_per_socket", kernel_pool_bytes(w.frames)},
            {"nics", dp->connected_count()}}}};
}

json Views::uplink_view() const {
  if (!dp) return nullptr;
  const WorkerOptions& w = dp->worker_options();
  const uint64_t umem_bytes = uint64_t{w.frames} * w.frame_size;
  json queues = json::array(), general = json::array(), dedicated = json::array();
  for (const auto& q : dp->queues()) queues.push_back(queue_view(q));
  for (const auto& q : dp->queues()) general.push_back(q.queue);
  for (const auto& q : dp->reserved()) dedicated.push_back(q.queue);
  return {{"name", uplink ? uplink->name : ""},
          {"mode", to_string(dp->mode())},
          {"driver", dp->driver()},
          {"adopted", dp->adopted()},
          {"queues", queues},
          {"host", host()},
          {"general_queues", general},
          {"dedicated_queues", dedicated},
          {"frame_size", dp_opts.worker.frame_size},
          {"max_frame", max_frame(dp_opts.worker.frame_size)},
          {"umem_frames_per_queue", w.frames},
          {"max_nics", dp->max_nics()},
          {"pinned_bytes", umem_bytes * dp->queues().size()}};
}

json Views::show() const {
  json ports = json::array();
  for (const auto& [_, p] : model.ports()) ports.push_back(port(p));
  json vmqs{{"max", model.max_vmqs()}, {"free", model.free_vmqs()}};
  return {{"uplink", uplink_view()}, {"ports", ports}, {"vmqs", vmqs}};
}

// Every allocated vmq: its NIC, the filters the classifier holds for it (read
// back from the kernel's table), where its frames are served (affinity) and
// what the classifier delivered to it.
json Views::vmq_show() const {
  std::map<uint32_t, json> filters;
  Counters counted{};
  if (dp) {
    // A vmq shown without its filters would look broken: a failed read is the answer.
    auto all = dp->filters();
    if (!all) throw Refused(ErrorKind::Kernel, "vmq.show: reading the classifier's filters: " + all.error().message);
    for (const auto& [key, value] : *all)
      filters[value.vmq].push_back({{"mac", format_mac(key.mac)},
                                    {"vlan", key.vlan == XVMQ_VLAN_ANY ? json("any") : json(key.vlan)},
                                    {"strip_tag", value.strip_tag}});
    auto c = dp->classifier_counters();
    if (!c) throw Refused(ErrorKind::Kernel, "vmq.show: reading the classifier's counters: " + c.error().message);
    counted = *c;
  }
  json vmqs = json::array();
  for (const auto& [name, p] : model.ports()) {
    if (!p.nic || !p.nic->vmq_id) continue;
    const uint32_t id = *p.nic->vmq_id;
    const json nic = port(p)["nic"];
    vmqs.push_back({{"vmq", id},
                    {"nic", name},
                    {"nic_state", to_string(p.nic->state)},
                    {"filters", filters.count(id) ? filters[id] : json::array()},
                    {"affinity", nic.value("affinity", json(nullptr))},
                    {"cpu", nic.at("vmq_cpu")},
                    {"delivery", nic.at("delivery")},
                    {"steering", nic.contains("steering") ? nic["steering"].value("mode", "") : ""},
                    {"frames", id < counted.vmq.size() ? counted.vmq[id].frames : 0},
                    {"bytes", id < counted.vmq.size() ? counted.vmq[id].bytes : 0}});
  }
  return {{"max", model.max_vmqs()}, {"free", model.free_vmqs()}, {"vmqs", vmqs}};
}

json Views::events(uint64_t since) const {
  json evs = json::array();
  for (const auto& e : model.events())
    if (e.seq > since)
      evs.push_back({{"seq", e.seq},
                     {"time", iso_time(e.time)},
                     {"object", e.object},
                     {"from", e.from},
                     {"to", e.to},
                     {"step", e.step}});
  return {{"events", evs}};
}

json Views::fdb_show() const {
  if (!dp) throw Refused(ErrorKind::NotFound, "no uplink is attached");
  json entries = json::array();
  for (const auto& e : dp->fdb().entries(Datapath::now_s()))
    entries.push_back({{"mac", format_mac(e.mac)}, {"vlan", e.vlan}, {"port", "uplink"}, {"age_s", e.age_s}});
  for (const auto& [name, p] : model.ports())
    if (p.nic && p.nic->state == NicState::Connected)
      for (uint16_t v : p.nic->desc.vlans.carried())
        entries.push_back({{"mac", format_mac(p.nic->desc.mac)}, {"vlan", v}, {"port", name}, {"static", true}});
  for (const auto& [key, port] : fdb_static)
    entries.push_back(
        {{"mac", format_mac(key.first)}, {"vlan", key.second}, {"port", port}, {"static", true}, {"added", true}});
  return {{"entries", entries}, {"size", dp->fdb().size()}, {"capacity", dp->fdb().capacity()}};
}

}  // namespace xvmq::switchd
