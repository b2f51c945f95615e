#include "tools/switchctl/output.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>

namespace xvmq::switchctl {
namespace {

using json = nlohmann::json;

std::string text(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// j[key], or null when j is not an object or has no such key.
const json& field(const json& j, const char* key) {
  static const json none;
  if (!j.is_object()) return none;
  auto it = j.find(key);
  return it == j.end() ? none : *it;
}

// Columns two spaces apart; numbers right-aligned when every cell of the column is one.
void print_table(const std::vector<std::string>& titles, const std::vector<std::vector<std::string>>& rows) {
  size_t n = titles.size();
  std::vector<size_t> width(n);
  std::vector<bool> numeric(n, !rows.empty());
  for (size_t c = 0; c < n; ++c) width[c] = titles[c].size();
  for (const auto& row : rows)
    for (size_t c = 0; c < n; ++c) {
      width[c] = std::max(width[c], row[c].size());
      if (row[c].empty() || row[c].find_first_not_of("0123456789.-") != std::string::npos) numeric[c] = false;
    }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t c = 0; c < n; ++c) {
      std::string pad(width[c] - cells[c].size(), ' ');
      out += numeric[c] ? pad + cells[c] : cells[c] + (c + 1 < n ? pad : "");
      if (c + 1 < n) out += "  ";
    }
    std::printf("%s\n", out.c_str());
  };
  line(titles);
  for (const auto& row : rows) line(row);
}

// "key value, key value" of the scalar fields of an object, nested ones dotted.
// Bytes as MiB ("62.0 MiB") or, under a MiB, KiB ("96 KiB"); "-" when absent.
std::string mib(const json& v) {
  if (!v.is_number()) return "-";
  char buf[32];
  const double b = v.get<double>();
  if (b < 1048576.0)
    std::snprintf(buf, sizeof(buf), "%.0f KiB", b / 1024.0);
  else
    std::snprintf(buf, sizeof(buf), "%.1f MiB", b / 1048576.0);
  return buf;
}

void scalars(const json& j, const std::string& prefix, std::vector<std::string>& out) {
  for (auto& [key, v] : j.items()) {
    if (v.is_object())
      scalars(v, prefix + key + ".", out);
    else if (!v.is_array())
      out.push_back(prefix + key + " " + text(v));
  }
}

std::string joined(const std::vector<std::string>& parts, const std::string& sep = ", ") {
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : sep) + p;
  return s;
}

void numbers(const json& j, const std::string& name, std::vector<std::vector<std::string>>& rows) {
  if (j.is_number())
    rows.push_back({name, j.is_number_float() ? [&] {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.1f", j.get<double>());
    return std::string(buf);
  }() : j.dump()});
  if (j.is_object())
    for (auto& [key, v] : j.items()) numbers(v, name.empty() ? key : name + "." + key, rows);
  if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i)
      numbers(j[i], name.empty() ? std::to_string(i) : name + "." + std::to_string(i), rows);
}

// The vmq's CPU: "2" as given (--cpu), "2 (spread)" as the datapath spread
// it, "receiving" for a tap's vmq delivered by the CPU that receives it.
std::string vmq_cpu_cell(const json& nic) {
  const json& cpu = field(nic, "vmq_cpu");
  if (!cpu.is_number()) return "-";
  if (field(nic, "vmq_cpu_source") == "receiving") return "receiving";
  return text(cpu) + (field(nic, "vmq_cpu_source") == "spread" ? " (spread)" : "");
}

// A column a newer switchd reports (a row's cells at `at`), only when one does.
void add_column(std::vector<std::string>& titles, std::vector<std::vector<std::string>>& rows, size_t at,
                const std::vector<std::string>& names, const std::vector<std::vector<std::string>>& cells) {
  titles.insert(titles.begin() + static_cast<std::ptrdiff_t>(at), names.begin(), names.end());
  for (size_t i = 0; i < rows.size(); i++)
    rows[i].insert(rows[i].begin() + static_cast<std::ptrdiff_t>(at), cells[i].begin(), cells[i].end());
}

// show's ports: a row per port; below, why a NIC got less than it asked for.
void print_ports_table(const json& ports) {
  if (!ports.is_array() || ports.empty()) {
    std::printf("ports: none\n");
    return;
  }
  std::vector<std::vector<std::string>> rows, delivery;
  std::vector<std::string> notes, buffers;
  bool any_buffers = false, any_delivery = false;
  for (const json& p : ports) {
    const json& nic = field(p, "nic");
    const json& steering = field(nic, "steering");
    std::string steer = text(field(steering, "mode"));
    if (field(steering, "queue").is_number()) steer += " q" + text(field(steering, "queue"));
    std::string cpus;
    for (const json& c : field(field(nic, "affinity"), "cpus")) cpus += (cpus.empty() ? "" : ",") + text(c);
    rows.push_back({text(field(p, "name")), text(field(p, "state")), text(field(nic, "state")), text(field(nic, "mac")),
                    text(field(nic, "vlan")), text(field(nic, "backend")), text(field(nic, "vmq")),
                    text(field(nic, "path")), steer, cpus.empty() ? "-" : cpus});
    const json& reserved = field(field(nic, "buffers"), "reserved_bytes");
    buffers.push_back(reserved.is_number() ? mib(reserved) : "-");
    any_buffers |= reserved.is_number();
    // Delivery: xsk* when the NIC got xsk although it asked for kernel or auto.
    const json& why = field(nic, "delivery_why");
    const bool fell_back = why.is_string() && !why.get<std::string>().empty();
    delivery.push_back({text(field(nic, "delivery")) + (fell_back ? "*" : ""), vmq_cpu_cell(nic)});
    any_delivery |= field(nic, "delivery").is_string();
    if (fell_back)
      notes.push_back(text(field(p, "name")) + ": " + text(field(nic, "delivery")) + "* delivery (" +
                      text(field(nic, "delivery_requested")) + " requested; " + why.get<std::string>() + ")");
    if (field(steering, "reason").is_string() && !field(steering, "reason").get<std::string>().empty())
      notes.push_back(text(field(p, "name")) + ": software steering (hardware requested; " +
                      field(steering, "reason").get<std::string>() + ")");
  }
  std::vector<std::string> titles{"PORT",    "STATE", "NIC-STATE", "MAC",      "VLAN",
                                  "BACKEND", "VMQ",   "PATH",      "STEERING", "CPUS"};
  if (any_delivery) add_column(titles, rows, 8, {"DELIVERY", "VMQ-CPU"}, delivery);
  // The buffers reserved for each NIC (a switchd that reports them).
  if (any_buffers) {
    titles.push_back("BUFFERS");
    for (size_t i = 0; i < rows.size(); i++) rows[i].push_back(buffers[i]);
  }
  print_table(titles, rows);
  for (const auto& n : notes) std::printf("%s\n", n.c_str());
}

}  // namespace

std::string summary(const std::string& object, const std::string& done, const json& result, bool say_done) {
  const json& state = field(result, "state");
  bool use_state = state.is_string() && !say_done;
  std::string line = object + ": " + (use_state ? state.get<std::string>() : done);
  std::vector<std::string> extra;
  for (const char* key : {"mode", "vmq", "state"}) {
    if (use_state && key == std::string_view("state")) continue;
    const json& v = field(result, key);
    if (v.is_primitive() && !v.is_null()) extra.push_back(std::string(key) + " " + text(v));
  }
  if (!extra.empty()) line += " (" + joined(extra) + ")";
  return line;
}

void print_show(const json& result) {
  const json& uplink = field(result, "uplink");
  if (uplink.is_object() && !uplink.empty()) {
    json rest = uplink;
    rest.erase("name");
    std::vector<std::string> parts;
    scalars(rest, "", parts);
    std::printf("uplink %s%s%s\n", text(field(uplink, "name")).c_str(), parts.empty() ? "" : ": ",
                joined(parts).c_str());
    const json& moved = field(field(uplink, "host"), "moved");
    for (const char* what : {"addresses", "routes"}) {
      std::vector<std::string> items;
      for (const json& a : field(moved, what)) items.push_back(text(a));
      if (moved.is_object())
        std::printf("host port: %s moved from the uplink: %s\n", what, items.empty() ? "none" : joined(items).c_str());
    }
    // Receive buffers per queue: the UMEM (pinned by the kernel) and its rule.
    std::vector<std::vector<std::string>> rows;
    for (const json& q : field(uplink, "queues")) {
      const json& b = field(q, "buffers");
      if (!b.is_object()) continue;
      rows.push_back({text(field(q, "queue")), text(field(q, "cpu")), mib(field(b, "umem_bytes")),
                      text(field(b, "frames")), text(field(b, "uplink_reserve")), text(field(b, "headroom")),
                      text(field(b, "burst_budget")), text(field(b, "nic_floor")),
                      text(field(b, "nics")) + "/" + text(field(b, "nic_capacity"))});
    }
    if (!rows.empty())
      print_table({"QUEUE", "CPU", "UMEM", "FRAMES", "RESERVE", "HEADROOM", "BURST", "FLOOR", "NICS"}, rows);
  } else {
    std::printf("uplink: none\n");
  }

  print_ports_table(field(result, "ports"));

  const json& vmqs = field(result, "vmqs");
  std::vector<std::string> parts;
  if (vmqs.is_object()) scalars(vmqs, "", parts);
  if (!parts.empty()) std::printf("vmqs: %s\n", joined(parts).c_str());
}

namespace {

// A counter's cell: an integer as is, a rate (a float) with one decimal.
std::string cell(const json& v) {
  if (v.is_number_float()) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.1f", v.get<double>());
    return buf;
  }
  return v.is_null() ? "0" : text(v);
}

double value(const json& v) { return v.is_number() ? v.get<double>() : 0.0; }

json sum_values(const json& obj) {
  bool fl = false;
  double n = 0;
  for (auto& [_, v] : obj.items()) {
    fl |= v.is_number_float();
    n += value(v);
  }
  return fl ? json(n) : json(static_cast<uint64_t>(n));
}

json add(const json& a, const json& b) {
  if (a.is_number_float() || b.is_number_float()) return value(a) + value(b);
  return static_cast<uint64_t>(value(a) + value(b));
}

void section(const char* title) { std::printf("\n%s\n", title); }

}  // namespace

namespace {

using Rows = std::vector<std::vector<std::string>>;

// The switch: every frame the classifier saw, by where it went.
void print_classifier(const json& cls) {
  Rows rows;
  section("CLASSIFIER (per reason)");
  for (auto& [reason, c] : field(cls, "reasons").items())
    rows.push_back({reason, cell(field(c, "frames")), cell(field(c, "bytes"))});
  print_table({"REASON", "FRAMES", "BYTES"}, rows);

  section("VMQS (classifier deliveries; vmq 0 = default queue)");
  rows.clear();
  for (auto& [vmq, c] : field(cls, "vmqs").items())
    rows.push_back({vmq, cell(field(c, "frames")), cell(field(c, "bytes"))});
  print_table({"VMQ", "FRAMES", "BYTES"}, rows);
}

void print_ports(const json& result) {
  Rows rows, delivery, vhost;
  bool any_delivery = false, any_vhost = false;
  section("PORTS (per VM NIC)");
  for (auto& [port, n] : field(result, "nics").items()) {
    rows.push_back({port, cell(field(n, "fast_frames")), cell(field(n, "fast_bytes")), cell(field(n, "default_frames")),
                    cell(field(n, "default_bytes")), cell(field(n, "from_vm_frames")), cell(field(n, "from_vm_bytes")),
                    cell(sum_values(field(n, "drops")))});
    delivery.push_back({text(field(n, "delivery"))});
    any_delivery |= field(n, "delivery").is_string();
    // vhost-user NICs: what reached the guest's ring (a NIC with a guest
    // that never read, or none yet, shows it by its vhost_ drops).
    const json& frames = field(n, "vhost_rx_frames");
    vhost.push_back({cell(frames)});
    auto positive = [](const json& v) { return v.is_number_unsigned() && v.get<uint64_t>() > 0; };
    any_vhost |= positive(frames) || positive(field(field(n, "drops"), "vhost_not_ready"));
  }
  std::vector<std::string> titles{"PORT",          "FAST-FRAMES",    "FAST-BYTES",    "DEFAULT-FRAMES",
                                  "DEFAULT-BYTES", "FROM-VM-FRAMES", "FROM-VM-BYTES", "DROPS"};
  if (any_vhost) add_column(titles, rows, 7, {"VHOST-RX-FRAMES"}, vhost);
  if (any_delivery) add_column(titles, rows, 1, {"DELIVERY"}, delivery);
  print_table(titles, rows);
}

// The receive queues, then their workers' CPUs with the queues summed.
void print_queues(const json& result) {
  Rows rows;
  section("RECEIVE QUEUES");
  std::map<std::string, std::vector<json>> per_cpu;  // cpu -> rx, tx, drops
  auto cpu_add = [&](const std::string& cpu, const json& rx, const json& tx, const json& drops) {
    auto& c = per_cpu[cpu];
    if (c.empty()) c = {json(0), json(0), json(0)};
    c[0] = add(c[0], rx);
    c[1] = add(c[1], tx);
    c[2] = add(c[2], drops);
  };
  for (const json& q : field(result, "queues")) {
    const json& b = field(q, "buffers");
    json drops = sum_values(field(q, "drops"));
    rows.push_back({text(field(q, "queue")), text(field(q, "cpu")), "general", "-", cell(field(q, "rx_default")),
                    cell(field(q, "rx_vmq")), cell(field(q, "rx_vm")), cell(field(q, "tx")), cell(drops),
                    text(field(b, "free")), text(field(b, "in_fill")), text(field(b, "above_floor")),
                    text(field(b, "in_flight")), text(field(b, "total"))});
    cpu_add(text(field(q, "cpu")), add(add(field(q, "rx_default"), field(q, "rx_vmq")), field(q, "rx_vm")),
            field(q, "tx"), drops);
  }
  for (const json& d : field(result, "dedicated")) {
    const json& b = field(d, "buffers");
    rows.push_back({text(field(d, "queue")), text(field(d, "cpu")), "dedicated", text(field(d, "nic")), "0",
                    cell(field(d, "rx_vmq")), "0", cell(field(d, "tx")), "0", text(field(b, "free")),
                    text(field(b, "in_fill")), text(field(b, "above_floor")), text(field(b, "in_flight")),
                    text(field(b, "total"))});
    cpu_add(text(field(d, "cpu")), field(d, "rx_vmq"), field(d, "tx"), json(0));
  }
  print_table({"QUEUE", "CPU", "KIND", "NIC", "RX-DEFAULT", "RX-VMQ", "RX-VM", "TX", "DROPS", "BUF-FREE", "BUF-FILL",
               "BUF-ABOVE-FLOOR", "BUF-FLIGHT", "BUF-TOTAL"},
              rows);

  section("CPUS (workers' queues summed)");
  rows.clear();
  for (const auto& [cpu, c] : per_cpu) rows.push_back({cpu, cell(c[0]), cell(c[1]), cell(c[2])});
  print_table({"CPU", "RX", "TX", "DROPS"}, rows);
}

// Every frame not delivered, by reason and where it was counted.
void print_drops(const json& result, const json& cls) {
  Rows rows;
  section("DROPS (per reason)");
  for (const char* r : {"runt", "truncated_tag", "strip_error", "too_big"})
    rows.push_back({r, "classifier", cell(field(field(field(cls, "reasons"), r), "frames"))});
  std::map<std::string, json> sw;
  for (const json& q : field(result, "queues"))
    for (auto& [reason, v] : field(q, "drops").items()) sw[reason] = add(sw.count(reason) ? sw[reason] : json(0), v);
  for (const auto& [reason, v] : sw) rows.push_back({reason, "switch", cell(v)});
  for (auto& [port, n] : field(result, "nics").items())
    for (auto& [reason, v] : field(n, "drops").items())
      if (value(v) != 0) rows.push_back({reason, "port " + port, cell(v)});
  print_table({"REASON", "WHERE", "FRAMES"}, rows);
}

// The fdb, the software switch's VLANs, and counters a newer switchd added
// (shown by their path).
void print_fdb_vlans_other(const json& result) {
  const json& fdb = field(result, "fdb");
  if (fdb.is_object())
    std::printf("\nfdb: %s of %s entries, learned %s, learning refused %s\n", text(field(fdb, "size")).c_str(),
                text(field(fdb, "capacity")).c_str(), cell(field(fdb, "learned")).c_str(),
                cell(field(fdb, "learn_refused")).c_str());
  Rows rows;
  for (auto& [vlan, v] : field(result, "vlans").items()) rows.push_back({vlan, cell(field(v, "frames"))});
  if (!rows.empty()) {
    section("VLANS (software switch)");
    print_table({"VLAN", "FRAMES"}, rows);
  }
  rows.clear();
  for (auto& [key, v] : result.items())
    if (key != "classifier" && key != "nics" && key != "queues" && key != "dedicated" && key != "fdb" && key != "vlans")
      numbers(v, key, rows);
  if (!rows.empty()) {
    section("OTHER");
    print_table({"COUNTER", "VALUE"}, rows);
  }
}

}  // namespace

void print_stats(const json& result) {
  const json& cls = field(result, "classifier");
  if (result.is_object() && cls.is_null()) {
    std::printf("no uplink attached: no counters\n");
    return;
  }
  if (!field(cls, "reasons").is_object()) {
    // A shape this switchctl does not know: every number, by its path.
    Rows rows;
    numbers(result, "", rows);
    print_table({"COUNTER", "VALUE"}, rows);
    return;
  }
  print_classifier(cls);
  print_ports(result);
  print_queues(result);
  print_drops(result, cls);
  print_fdb_vlans_other(result);
}

json rates(const json& before, const json& after, double seconds, const std::string& key) {
  // Gauges and identifiers keep their value; counters become per second.
  static const std::vector<std::string> kept{"queue",     "cpu",  "nic",      "total",       "free",        "in_fill",
                                             "in_flight", "size", "capacity", "above_floor", "burst_budget"};
  if (after.is_object()) {
    json out = json::object();
    for (auto& [k, v] : after.items()) out[k] = rates(field(before, k.c_str()), v, seconds, k);
    return out;
  }
  if (after.is_array()) {
    json out = json::array();
    for (size_t i = 0; i < after.size(); ++i)
      out.push_back(rates(before.is_array() && i < before.size() ? before[i] : json(), after[i], seconds, key));
    return out;
  }
  if (!after.is_number() || std::find(kept.begin(), kept.end(), key) != kept.end()) return after;
  double d = value(after) - value(before);
  return seconds > 0 && d > 0 ? d / seconds : 0.0;
}

void print_event_rows(const json& events, bool header) {
  // Fixed widths: a followed stream cannot know its longest cell.
  if (header) std::printf("%-6s  %-24s  %-16s  %-20s  %-20s  %s\n", "SEQ", "TIME", "OBJECT", "FROM", "TO", "STEP");
  for (const json& e : events)
    std::printf("%6s  %-24s  %-16s  %-20s  %-20s  %s\n", text(field(e, "seq")).c_str(), text(field(e, "time")).c_str(),
                text(field(e, "object")).c_str(), text(field(e, "from")).c_str(), text(field(e, "to")).c_str(),
                text(field(e, "step")).c_str());
  std::fflush(stdout);
}

void print_events(const json& result) {
  const json& events = field(result, "events");
  if (!events.is_array() || events.empty()) {
    std::printf("no events\n");
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const json& e : events)
    rows.push_back({text(field(e, "seq")), text(field(e, "time")), text(field(e, "object")), text(field(e, "from")),
                    text(field(e, "to")), text(field(e, "step"))});
  print_table({"SEQ", "TIME", "OBJECT", "FROM", "TO", "STEP"}, rows);
}

void print_fdb(const json& result) {
  std::vector<std::vector<std::string>> rows;
  for (const json& e : field(result, "entries"))
    rows.push_back({text(field(e, "mac")), text(field(e, "vlan")), text(field(e, "port")),
                    field(e, "added").is_boolean()    ? "static (added)"
                    : field(e, "static").is_boolean() ? "static (NIC)"
                                                      : text(field(e, "age_s")) + "s"});
  print_table({"MAC", "VLAN", "PORT", "AGE"}, rows);
  std::printf("learned %s of at most %s\n", text(field(result, "size")).c_str(),
              text(field(result, "capacity")).c_str());
}

void print_vmqs(const json& result) {
  std::vector<std::vector<std::string>> rows, delivery;
  bool any_delivery = false;
  for (const json& v : field(result, "vmqs")) {
    delivery.push_back({text(field(v, "delivery"))});
    any_delivery |= field(v, "delivery").is_string();
    std::vector<std::string> filters;
    for (const json& f : field(v, "filters"))
      filters.push_back(text(field(f, "mac")) + " vlan " + text(field(f, "vlan")) +
                        (field(f, "strip_tag").is_boolean() && f["strip_tag"].get<bool>() ? " strip" : ""));
    std::vector<std::string> cpus;
    for (const json& c : field(field(v, "affinity"), "cpus")) cpus.push_back(text(c));
    rows.push_back({text(field(v, "vmq")), text(field(v, "nic")), text(field(v, "nic_state")),
                    filters.empty() ? "-" : joined(filters), cpus.empty() ? "-" : joined(cpus, ","),
                    text(field(v, "steering")), text(field(v, "frames"))});
  }
  std::vector<std::string> titles{"VMQ", "NIC", "NIC-STATE", "FILTERS", "CPUS", "STEERING", "FRAMES"};
  if (any_delivery) add_column(titles, rows, 4, {"DELIVERY"}, delivery);
  print_table(titles, rows);
  std::vector<std::string> free;
  for (const json& f : field(result, "free")) free.push_back(text(f));
  std::printf("vmqs: max %s, free %s\n", text(field(result, "max")).c_str(),
              free.empty() ? "none" : joined(free, ",").c_str());
}

}  // namespace xvmq::switchctl
