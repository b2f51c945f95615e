#include "switchd/app/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>

#include <cerrno>
#include <exception>
#include <map>

namespace xvmq::switchd {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// Families in declaration order; a family is declared once with its help
// and type, so its HELP and TYPE lines appear even while it has no samples.
class Families {
 public:
  void declare(const std::string& name, MetricType type, const std::string& help) {
    index_[name] = out_.size();
    out_.push_back(MetricFamily{name, help, type, {}});
  }
  void add(const std::string& name, Labels labels, double value) {
    MetricFamily& f = out_.at(index_.at(name));
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter)
      m.counter.value = value;
    else
      m.gauge.value = value;
    f.metric.push_back(std::move(m));
  }
  std::vector<MetricFamily> take() { return std::move(out_); }

 private:
  std::vector<MetricFamily> out_;
  std::map<std::string, size_t> index_;
};

class SwitchCollectable : public prometheus::Collectable {
 public:
  explicit SwitchCollectable(Snapshot snapshot) : snapshot_(std::move(snapshot)) {}
  std::vector<MetricFamily> Collect() const override { return metric_families(snapshot_()); }

 private:
  Snapshot snapshot_;
};

}  // namespace

Result<std::string> parse_listen(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Error{EINVAL, "--metrics-listen '" + text + "': " + why + "; use PORT (on 127.0.0.1) or ADDR:PORT"};
  };
  auto colon = text.rfind(':');
  std::string host = colon == std::string::npos ? "127.0.0.1" : text.substr(0, colon);
  std::string port = colon == std::string::npos ? text : text.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) < 1 || std::stoul(port) > 65535)
    return bad("the port must be 1..65535");
  if (host.empty()) return bad("the address is empty");
  if (host.front() == '[' ? host.back() != ']' : host.find_first_of(":[]/ ") != std::string::npos)
    return bad("an IPv6 address goes in brackets, [::1]:PORT");
  return host + ":" + port;
}

namespace {

struct FamilyDecl {
  const char* name;
  MetricType type;
  const char* help;
};

// lint: data table
constexpr FamilyDecl kFamilies[] = {
    {"xvmq_uplink_info", MetricType::Gauge, "The attached uplink: 1, with its XDP mode and driver as labels."},
    {"xvmq_classifier_frames_total", MetricType::Counter,
     "Frames the classifier did not give to a vmq, by reason (vmq 0, the default queue, among them)."},
    {"xvmq_classifier_bytes_total", MetricType::Counter, "Bytes received of the frames counted by reason."},
    {"xvmq_vmq_rx_frames_total", MetricType::Counter,
     "Frames the classifier redirected to a vmq's socket (vmq 0: reached a default socket)."},
    {"xvmq_vmq_rx_bytes_total", MetricType::Counter, "Bytes delivered to a vmq's socket, after any tag strip."},
    {"xvmq_vmqs_max", MetricType::Gauge, "Size of the vmq pool."},
    {"xvmq_vmqs_free", MetricType::Gauge, "vmqs of the pool that no NIC holds."},
    {"xvmq_nic_state", MetricType::Gauge, "A VM NIC's lifecycle state: 1 for the current one."},
    {"xvmq_nic_frames_total", MetricType::Counter,
     "Frames of a VM NIC: path fast (its vmq), default (the software switch), from_vm (sent by the VM)."},
    {"xvmq_nic_bytes_total", MetricType::Counter, "Bytes of a VM NIC, by path as xvmq_nic_frames_total."},
    {"xvmq_nic_drops_total", MetricType::Counter, "Frames to or from a VM NIC that the switch dropped, by reason."},
    {"xvmq_nic_backend_tx_dropped_total", MetricType::Counter,
     "A kernel-delivered NIC's backend netdev's own tx_dropped since delivery began: the same losses as "
     "xvmq_nic_drops_total's backend_ring_full, seen by the netdev, and frames the host's stack sent it."},
    {"xvmq_nic_vhost_rx_frames_total", MetricType::Counter,
     "Frames placed into a vhost-user guest's receive ring (of its fast and default frames); 0 for other NICs."},
    {"xvmq_nic_vhost_rx_bytes_total", MetricType::Counter,
     "Bytes of the frames placed into a vhost-user guest's ring."},
    {"xvmq_queue_rx_frames_total", MetricType::Counter,
     "Frames a general receive queue's worker took from its sockets: default, vmq or vm."},
    {"xvmq_queue_tx_frames_total", MetricType::Counter, "Frames a general receive queue's worker sent."},
    {"xvmq_queue_drops_total", MetricType::Counter, "Frames a general receive queue's worker dropped, by reason."},
    {"xvmq_queue_buffers", MetricType::Gauge, "A general receive queue's UMEM buffers: free, in_fill, in_flight."},
    {"xvmq_queue_buffers_capacity", MetricType::Gauge, "A general receive queue's UMEM buffers in all."},
    {"xvmq_dedicated_queue_rx_frames_total", MetricType::Counter,
     "Frames a dedicated (hardware-steered) queue's worker took from its vmq socket."},
    {"xvmq_dedicated_queue_tx_frames_total", MetricType::Counter, "Frames a dedicated queue's worker sent."},
    {"xvmq_dedicated_queue_buffers", MetricType::Gauge, "A dedicated queue's UMEM buffers: free, in_fill, in_flight."},
    {"xvmq_dedicated_queue_buffers_capacity", MetricType::Gauge, "A dedicated queue's UMEM buffers in all."},
    {"xvmq_fdb_entries", MetricType::Gauge, "MACs learned behind the uplink."},
    {"xvmq_fdb_capacity", MetricType::Gauge, "MACs the forwarding table holds at most (--fdb-size)."},
    {"xvmq_fdb_learned_total", MetricType::Counter, "MACs learned behind the uplink."},
    {"xvmq_fdb_learn_refused_total", MetricType::Counter, "MACs not learned because the table was full."},
    {"xvmq_vlan_frames_total", MetricType::Counter, "Frames the software switch handled, by VLAN."},
};

double num(uint64_t v) { return static_cast<double>(v); }

Labels with(Labels l, std::string name, std::string value) {
  l.push_back({std::move(name), std::move(value)});
  return l;
}

// The vmq pool and the NICs' states; vmq id -> the port that holds it.
std::map<std::string, std::string> add_nics(Families& f, const SwitchSnapshot& s, const std::string& uplink) {
  f.add("xvmq_vmqs_max", {}, s.max_vmqs);
  f.add("xvmq_vmqs_free", {}, static_cast<double>(s.free_vmqs));
  std::map<std::string, std::string> nic_of_vmq;
  for (const auto& n : s.nics) {
    if (n.vmq_id) nic_of_vmq[std::to_string(*n.vmq_id)] = n.port;
    for (NicState st : {NicState::Created, NicState::Connected, NicState::Disconnected})
      f.add("xvmq_nic_state", {{"uplink", uplink}, {"port", n.port}, {"state", std::string(to_string(st))}},
            n.state == st ? 1 : 0);
  }
  return nic_of_vmq;
}

void add_classifier(Families& f, const Counters& c, const std::string& uplink,
                    const std::map<std::string, std::string>& nic_of_vmq) {
  std::map<std::string, Counter> reasons;
  for (uint32_t r = 0; r < XVMQ_REASON_COUNT; r++) reasons[std::string(reason_name(r))] = c.reason[r];
  for (const auto& [reason, v] : reasons) {
    f.add("xvmq_classifier_frames_total", {{"uplink", uplink}, {"reason", reason}}, num(v.frames));
    f.add("xvmq_classifier_bytes_total", {{"uplink", uplink}, {"reason", reason}}, num(v.bytes));
  }
  // Every vmq that counted, and every vmq a NIC holds (0 until it counts).
  std::map<std::string, Counter> rx;
  for (const auto& [id, _] : nic_of_vmq) rx[id] = {};
  for (uint32_t v = 0; v < XVMQ_MAX_VMQS; v++)
    if (c.vmq[v].frames) rx[std::to_string(v)] = c.vmq[v];
  for (const auto& [id, v] : rx) {
    auto it = nic_of_vmq.find(id);
    Labels l{{"uplink", uplink}, {"vmq", id}, {"nic", id == "0" || it == nic_of_vmq.end() ? "" : it->second}};
    f.add("xvmq_vmq_rx_frames_total", l, num(v.frames));
    f.add("xvmq_vmq_rx_bytes_total", l, num(v.bytes));
  }
}

void add_nic_totals(Families& f, const std::map<std::string, NicTotals>& nics, const std::string& uplink) {
  for (const auto& [port, n] : nics) {
    const std::pair<const char*, std::pair<uint64_t, uint64_t>> paths[] = {
        {"fast", {n.fast_frames, n.fast_bytes}},
        {"default", {n.default_frames, n.default_bytes}},
        {"from_vm", {n.from_vm_frames, n.from_vm_bytes}}};
    for (const auto& [path, v] : paths) {
      Labels l{{"uplink", uplink}, {"port", port}, {"path", path}};
      f.add("xvmq_nic_frames_total", l, num(v.first));
      f.add("xvmq_nic_bytes_total", l, num(v.second));
    }
    for (const auto& [reason, v] : n.drops)
      f.add("xvmq_nic_drops_total", {{"uplink", uplink}, {"port", port}, {"reason", reason}}, num(v));
    f.add("xvmq_nic_backend_tx_dropped_total", {{"uplink", uplink}, {"port", port}}, num(n.backend_tx_dropped));
    f.add("xvmq_nic_vhost_rx_frames_total", {{"uplink", uplink}, {"port", port}}, num(n.vhost_rx_frames));
    f.add("xvmq_nic_vhost_rx_bytes_total", {{"uplink", uplink}, {"port", port}}, num(n.vhost_rx_bytes));
  }
}

void add_buffers(Families& f, const std::string& prefix, const Labels& l, const PoolState& b) {
  f.add(prefix + "_buffers", with(l, "state", "free"), b.free);
  f.add(prefix + "_buffers", with(l, "state", "in_fill"), b.in_fill);
  f.add(prefix + "_buffers", with(l, "state", "in_flight"), b.in_flight);
  f.add(prefix + "_buffers_capacity", l, b.total);
}

void add_queues(Families& f, const StatsSnapshot& s, const std::string& uplink) {
  for (const auto& q : s.queues) {
    Labels l{{"uplink", uplink}, {"queue", std::to_string(q.queue.queue)}, {"cpu", std::to_string(q.queue.cpu)}};
    f.add("xvmq_queue_rx_frames_total", with(l, "socket", "default"), num(q.rx_default));
    f.add("xvmq_queue_rx_frames_total", with(l, "socket", "vmq"), num(q.rx_vmq));
    f.add("xvmq_queue_rx_frames_total", with(l, "socket", "vm"), num(q.rx_vm));
    f.add("xvmq_queue_tx_frames_total", l, num(q.tx));
    for (const auto& [reason, v] : q.drop_reasons()) f.add("xvmq_queue_drops_total", with(l, "reason", reason), num(v));
    add_buffers(f, "xvmq_queue", l, q.pool);
  }
  for (const auto& d : s.dedicated) {
    Labels l{{"uplink", uplink},
             {"queue", std::to_string(d.queue.queue)},
             {"cpu", std::to_string(d.queue.cpu)},
             {"nic", d.nic}};
    f.add("xvmq_dedicated_queue_rx_frames_total", l, num(d.rx_vmq));
    f.add("xvmq_dedicated_queue_tx_frames_total", l, num(d.tx));
    add_buffers(f, "xvmq_dedicated_queue", l, d.pool);
  }
}

void add_fdb(Families& f, const StatsSnapshot& s, const std::string& uplink) {
  f.add("xvmq_fdb_entries", {{"uplink", uplink}}, static_cast<double>(s.fdb_size));
  f.add("xvmq_fdb_capacity", {{"uplink", uplink}}, static_cast<double>(s.fdb_capacity));
  f.add("xvmq_fdb_learned_total", {{"uplink", uplink}}, num(s.fdb_learned));
  f.add("xvmq_fdb_learn_refused_total", {{"uplink", uplink}}, num(s.fdb_learn_refused));
  std::map<std::string, uint64_t> vlans;  // in the order of their names, as before
  for (const auto& [v, frames] : s.vlan_frames) vlans[std::to_string(v)] = frames;
  for (const auto& [vlan, frames] : vlans)
    f.add("xvmq_vlan_frames_total", {{"uplink", uplink}, {"vlan", vlan}}, num(frames));
}

}  // namespace

std::vector<MetricFamily> metric_families(const SwitchSnapshot& s) {
  Families f;
  for (const auto& d : kFamilies) f.declare(d.name, d.type, d.help);
  const std::string uplink = s.uplink ? s.uplink->name : "";
  const auto nic_of_vmq = add_nics(f, s, uplink);
  if (!s.uplink) return f.take();
  f.add("xvmq_uplink_info",
        {{"uplink", uplink}, {"mode", std::string(to_string(s.uplink->mode))}, {"driver", s.uplink->driver}}, 1);
  if (s.stats.classifier) add_classifier(f, *s.stats.classifier, uplink, nic_of_vmq);
  add_nic_totals(f, s.stats.nics, uplink);
  add_queues(f, s.stats, uplink);
  add_fdb(f, s.stats, uplink);
  return f.take();
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& listen, Snapshot snapshot) {
  auto address = parse_listen(listen);
  if (!address) return address.error();
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->address_ = *address;
  m->collectable_ = std::make_shared<SwitchCollectable>(std::move(snapshot));
  try {
    m->exposer_ = std::make_unique<prometheus::Exposer>(*address, 1);
  } catch (const std::exception& e) {
    return Error{EADDRINUSE, "metrics on " + *address + ": " + e.what() + "; choose another --metrics-listen"};
  }
  m->exposer_->RegisterCollectable(m->collectable_);
  return m;
}

MetricsServer::~MetricsServer() {
  // The exposer's threads end before the collectable (and the switch behind
  // its snapshot) may go.
  exposer_.reset();
}

}  // namespace xvmq::switchd
