#include "switchd/app/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>

#include <cerrno>
#include <exception>
#include <map>

namespace xvmq::switchd {
namespace {

using nlohmann::json;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

double num(const json& j) { return j.is_number() ? j.get<double>() : 0.0; }

std::string str(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number()) return j.dump();
  return "";
}

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
    if (f.type == MetricType::Counter) m.counter.value = value;
    else m.gauge.value = value;
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

std::vector<MetricFamily> metric_families(const json& snapshot) {
  json snap = snapshot;  // operator[] of a non-const json: a missing key reads as null
  json& show = snap["show"];
  json& stats = snap["stats"];
  Families f;
  using T = MetricType;
  f.declare("xvmq_uplink_info", T::Gauge, "The attached uplink: 1, with its XDP mode and driver as labels.");
  f.declare("xvmq_classifier_frames_total", T::Counter,
            "Frames the classifier did not give to a vmq, by reason (vmq 0, the default queue, among them).");
  f.declare("xvmq_classifier_bytes_total", T::Counter, "Bytes received of the frames counted by reason.");
  f.declare("xvmq_vmq_rx_frames_total", T::Counter,
            "Frames the classifier redirected to a vmq's socket (vmq 0: reached a default socket).");
  f.declare("xvmq_vmq_rx_bytes_total", T::Counter, "Bytes delivered to a vmq's socket, after any tag strip.");
  f.declare("xvmq_vmqs_max", T::Gauge, "Size of the vmq pool.");
  f.declare("xvmq_vmqs_free", T::Gauge, "vmqs of the pool that no NIC holds.");
  f.declare("xvmq_nic_state", T::Gauge, "A VM NIC's lifecycle state: 1 for the current one.");
  f.declare("xvmq_nic_frames_total", T::Counter,
            "Frames of a VM NIC: path fast (its vmq), default (the software switch), from_vm (sent by the VM).");
  f.declare("xvmq_nic_bytes_total", T::Counter, "Bytes of a VM NIC, by path as xvmq_nic_frames_total.");
  f.declare("xvmq_nic_drops_total", T::Counter, "Frames to or from a VM NIC that the switch dropped, by reason.");
  f.declare("xvmq_queue_rx_frames_total", T::Counter,
            "Frames a general receive queue's worker took from its sockets: default, vmq or vm.");
  f.declare("xvmq_queue_tx_frames_total", T::Counter, "Frames a general receive queue's worker sent.");
  f.declare("xvmq_queue_drops_total", T::Counter, "Frames a general receive queue's worker dropped, by reason.");
  f.declare("xvmq_queue_buffers", T::Gauge, "A general receive queue's UMEM buffers: free, in_fill, in_flight.");
  f.declare("xvmq_queue_buffers_capacity", T::Gauge, "A general receive queue's UMEM buffers in all.");
  f.declare("xvmq_dedicated_queue_rx_frames_total", T::Counter,
            "Frames a dedicated (hardware-steered) queue's worker took from its vmq socket.");
  f.declare("xvmq_dedicated_queue_tx_frames_total", T::Counter, "Frames a dedicated queue's worker sent.");
  f.declare("xvmq_dedicated_queue_buffers", T::Gauge, "A dedicated queue's UMEM buffers: free, in_fill, in_flight.");
  f.declare("xvmq_dedicated_queue_buffers_capacity", T::Gauge, "A dedicated queue's UMEM buffers in all.");
  f.declare("xvmq_fdb_entries", T::Gauge, "MACs learned behind the uplink.");
  f.declare("xvmq_fdb_capacity", T::Gauge, "MACs the forwarding table holds at most (--fdb-size).");
  f.declare("xvmq_fdb_learned_total", T::Counter, "MACs learned behind the uplink.");
  f.declare("xvmq_fdb_learn_refused_total", T::Counter, "MACs not learned because the table was full.");
  f.declare("xvmq_vlan_frames_total", T::Counter, "Frames the software switch handled, by VLAN.");

  json& vmqs = show["vmqs"];
  if (vmqs.is_object()) {
    f.add("xvmq_vmqs_max", {}, num(vmqs["max"]));
    f.add("xvmq_vmqs_free", {}, static_cast<double>(vmqs["free"].is_array() ? vmqs["free"].size() : 0));
  }
  json& up = show["uplink"];
  const std::string uplink = up.is_object() ? str(up["name"]) : "";
  std::map<std::string, std::string> nic_of_vmq;  // vmq id -> port
  for (json& p : show["ports"]) {
    json& nic = p["nic"];
    if (!nic.is_object()) continue;
    if (nic["vmq"].is_number()) nic_of_vmq[str(nic["vmq"])] = str(p["name"]);
    for (const char* s : {"created", "connected", "disconnected"})
      f.add("xvmq_nic_state", {{"uplink", uplink}, {"port", str(p["name"])}, {"state", s}}, str(nic["state"]) == s ? 1 : 0);
  }
  if (!up.is_object()) return f.take();
  f.add("xvmq_uplink_info", {{"uplink", uplink}, {"mode", str(up["mode"])}, {"driver", str(up["driver"])}}, 1);

  json& cls = stats["classifier"];
  if (cls.is_object()) {
    for (auto& [reason, c] : cls["reasons"].items()) {
      f.add("xvmq_classifier_frames_total", {{"uplink", uplink}, {"reason", reason}}, num(c["frames"]));
      f.add("xvmq_classifier_bytes_total", {{"uplink", uplink}, {"reason", reason}}, num(c["bytes"]));
    }
    // Every vmq that counted, and every vmq a NIC holds (0 until it counts).
    std::map<std::string, std::pair<double, double>> rx;
    for (const auto& [id, _] : nic_of_vmq) rx[id] = {0, 0};
    for (auto& [id, c] : cls["vmqs"].items()) rx[id] = {num(c["frames"]), num(c["bytes"])};
    for (const auto& [id, v] : rx) {
      Labels l{{"uplink", uplink}, {"vmq", id}, {"nic", id == "0" ? "" : nic_of_vmq.count(id) ? nic_of_vmq[id] : ""}};
      f.add("xvmq_vmq_rx_frames_total", l, v.first);
      f.add("xvmq_vmq_rx_bytes_total", l, v.second);
    }
  }
  for (auto& [port, n] : stats["nics"].items()) {
    for (const char* path : {"fast", "default", "from_vm"}) {
      Labels l{{"uplink", uplink}, {"port", port}, {"path", path}};
      f.add("xvmq_nic_frames_total", l, num(n[std::string(path) + "_frames"]));
      f.add("xvmq_nic_bytes_total", l, num(n[std::string(path) + "_bytes"]));
    }
    for (auto& [reason, v] : n["drops"].items())
      f.add("xvmq_nic_drops_total", {{"uplink", uplink}, {"port", port}, {"reason", reason}}, num(v));
  }
  auto buffers = [&](const std::string& prefix, const Labels& l, json& b) {
    for (const char* s : {"free", "in_fill", "in_flight"}) {
      Labels ls = l;
      ls.push_back({"state", s});
      f.add(prefix + "_buffers", ls, num(b[s]));
    }
    f.add(prefix + "_buffers_capacity", l, num(b["total"]));
  };
  for (json& q : stats["queues"]) {
    Labels l{{"uplink", uplink}, {"queue", str(q["queue"])}, {"cpu", str(q["cpu"])}};
    for (const char* s : {"default", "vmq", "vm"}) {
      Labels ls = l;
      ls.push_back({"socket", s});
      f.add("xvmq_queue_rx_frames_total", ls, num(q[std::string("rx_") + s]));
    }
    f.add("xvmq_queue_tx_frames_total", l, num(q["tx"]));
    for (auto& [reason, v] : q["drops"].items()) {
      Labels ls = l;
      ls.push_back({"reason", reason});
      f.add("xvmq_queue_drops_total", ls, num(v));
    }
    buffers("xvmq_queue", l, q["buffers"]);
  }
  for (json& d : stats["dedicated"]) {
    Labels l{{"uplink", uplink}, {"queue", str(d["queue"])}, {"cpu", str(d["cpu"])}, {"nic", str(d["nic"])}};
    f.add("xvmq_dedicated_queue_rx_frames_total", l, num(d["rx_vmq"]));
    f.add("xvmq_dedicated_queue_tx_frames_total", l, num(d["tx"]));
    buffers("xvmq_dedicated_queue", l, d["buffers"]);
  }
  json& fdb = stats["fdb"];
  if (fdb.is_object()) {
    f.add("xvmq_fdb_entries", {{"uplink", uplink}}, num(fdb["size"]));
    f.add("xvmq_fdb_capacity", {{"uplink", uplink}}, num(fdb["capacity"]));
    f.add("xvmq_fdb_learned_total", {{"uplink", uplink}}, num(fdb["learned"]));
    f.add("xvmq_fdb_learn_refused_total", {{"uplink", uplink}}, num(fdb["learn_refused"]));
  }
  for (auto& [vlan, v] : stats["vlans"].items())
    f.add("xvmq_vlan_frames_total", {{"uplink", uplink}, {"vlan", vlan}}, num(v["frames"]));
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
