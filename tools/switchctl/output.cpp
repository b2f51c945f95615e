#include "tools/switchctl/output.h"

#include <algorithm>
#include <cstdio>
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
void scalars(const json& j, const std::string& prefix, std::vector<std::string>& out) {
  for (auto& [key, v] : j.items()) {
    if (v.is_object()) scalars(v, prefix + key + ".", out);
    else if (!v.is_array()) out.push_back(prefix + key + " " + text(v));
  }
}

std::string joined(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : ", ") + p;
  return s;
}

void numbers(const json& j, const std::string& name, std::vector<std::vector<std::string>>& rows) {
  if (j.is_number()) rows.push_back({name, j.dump()});
  if (j.is_object())
    for (auto& [key, v] : j.items()) numbers(v, name.empty() ? key : name + "." + key, rows);
  if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i) numbers(j[i], name.empty() ? std::to_string(i) : name + "." + std::to_string(i), rows);
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
      if (moved.is_object()) std::printf("host port: %s moved from the uplink: %s\n", what, items.empty() ? "none" : joined(items).c_str());
    }
  } else {
    std::printf("uplink: none\n");
  }

  const json& ports = field(result, "ports");
  if (!ports.is_array() || ports.empty()) {
    std::printf("ports: none\n");
  } else {
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> notes;
    for (const json& p : ports) {
      const json& nic = field(p, "nic");
      const json& steering = field(nic, "steering");
      std::string steer = text(field(steering, "mode"));
      if (field(steering, "queue").is_number()) steer += " q" + text(field(steering, "queue"));
      std::string cpus;
      for (const json& c : field(field(nic, "affinity"), "cpus")) cpus += (cpus.empty() ? "" : ",") + text(c);
      rows.push_back({text(field(p, "name")), text(field(p, "state")), text(field(nic, "state")),
                      text(field(nic, "mac")), text(field(nic, "vlan")), text(field(nic, "backend")),
                      text(field(nic, "vmq")), text(field(nic, "path")), steer, cpus.empty() ? "-" : cpus});
      if (field(steering, "reason").is_string() && !field(steering, "reason").get<std::string>().empty())
        notes.push_back(text(field(p, "name")) + ": software steering (hardware requested; " +
                        field(steering, "reason").get<std::string>() + ")");
    }
    print_table({"PORT", "STATE", "NIC-STATE", "MAC", "VLAN", "BACKEND", "VMQ", "PATH", "STEERING", "CPUS"}, rows);
    for (const auto& n : notes) std::printf("%s\n", n.c_str());
  }

  const json& vmqs = field(result, "vmqs");
  std::vector<std::string> parts;
  if (vmqs.is_object()) scalars(vmqs, "", parts);
  if (!parts.empty()) std::printf("vmqs: %s\n", joined(parts).c_str());
}

void print_stats(const json& result) {
  std::vector<std::vector<std::string>> rows;
  numbers(result, "", rows);
  if (rows.empty()) {
    std::printf("no counters\n");
    return;
  }
  print_table({"COUNTER", "VALUE"}, rows);
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
                    field(e, "static").is_boolean() ? "static" : text(field(e, "age_s")) + "s"});
  print_table({"MAC", "VLAN", "PORT", "AGE"}, rows);
  std::printf("learned %s of at most %s\n", text(field(result, "size")).c_str(), text(field(result, "capacity")).c_str());
}

}  // namespace xvmq::switchctl
