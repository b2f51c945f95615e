#include "tools/cni/netconf.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

#include "common/names.h"

namespace xvmq::cni {

using nlohmann::json;

std::string print_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json CniError::to_json() const {
  json j{{"cniVersion", kCniVersion}, {"code", code}, {"msg", msg}};
  if (!details.empty()) j["details"] = details;
  return j;
}

namespace {

// CNI_CONTAINERID's and a network name's rule: alphanumerics, _ . -.
bool id_chars(const std::string& v, std::size_t max = 255) {
  if (v.empty() || v.size() > max) return false;
  for (unsigned char c : v)
    if (!std::isalnum(c) && c != '_' && c != '.' && c != '-') return false;
  return true;
}

// The spec's interface name rule: at most 15 bytes, no '/', ':' or space, not . or ..
bool ifname_ok(const std::string& v) {
  if (v.empty() || v.size() > 15 || v == "." || v == "..") return false;
  for (unsigned char c : v)
    if (c == '/' || c == ':' || std::isspace(c) || !std::isprint(c)) return false;
  return true;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : "; ") + s;
  return out;
}

std::string shown(const json& v) {
  std::string s = v.dump();
  return s.size() > 64 ? s.substr(0, 61) + "..." : s;
}

std::optional<Mac> unicast_mac(const json& v) {
  if (!v.is_string()) return std::nullopt;
  auto m = parse_mac(v.get<std::string>());
  if (!m || is_multicast(*m) || *m == Mac{}) return std::nullopt;
  return m;
}

std::optional<uint16_t> vlan_of(const json& v, int lo) {
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > 4094) return std::nullopt;
  return v.get<uint16_t>();
}

struct Checker {
  const json& j;
  NetConf& c;
  std::vector<std::string> bad;

  // A required string that passes `ok`.
  void string(const char* key, std::string* out, bool required, bool (*ok)(const std::string&), const char* rule) {
    if (!j.contains(key)) {
      if (required) bad.push_back(std::string(key) + ": missing (" + rule + ")");
      return;
    }
    if (!j[key].is_string() || !ok(j[key].get<std::string>())) {
      bad.push_back(std::string(key) + " " + shown(j[key]) + ": " + rule);
      return;
    }
    *out = j[key].get<std::string>();
  }

  void trunk() {
    const json& t = j["trunk"];
    if (!t.is_object())
      return bad.push_back("trunk: must be an object {\"vlans\": [1..4094, ...], \"native_vlan\": N}");
    for (const auto& [k, _] : t.items())
      if (k != "vlans" && k != "native_vlan")
        bad.push_back("trunk." + k + ": not a field of trunk (vlans, native_vlan)");
    Trunk tr;
    if (!t.contains("vlans") || !t["vlans"].is_array() || t["vlans"].empty())
      bad.push_back("trunk.vlans: must be a non-empty list of VLANs 1..4094");
    else
      for (const auto& v : t["vlans"]) {
        auto id = vlan_of(v, 1);
        if (!id)
          bad.push_back("trunk.vlans: " + shown(v) + " is not a VLAN 1..4094");
        else
          tr.vlans.push_back(*id);
      }
    if (t.contains("native_vlan")) {
      auto id = vlan_of(t["native_vlan"], 0);
      if (!id) bad.push_back("trunk.native_vlan " + shown(t["native_vlan"]) + ": must be an integer 0..4094");
      tr.native_vlan = id;
    }
    c.trunk = tr;
  }

  void vlans() {
    if (j.contains("vlan") && j.contains("trunk")) bad.push_back("vlan and trunk: give one of them, not both");
    if (j.contains("vlan")) {
      auto id = vlan_of(j["vlan"], 0);
      if (!id) bad.push_back("vlan " + shown(j["vlan"]) + ": must be an integer 0..4094 (0: untagged)");
      c.vlan = id.value_or(0);
    }
    if (j.contains("trunk")) trunk();
  }

  void ipam() {
    if (!j.contains("ipam")) return bad.push_back("ipam: missing (an object with the IPAM plugin's \"type\")");
    const json& i = j["ipam"];
    if (!i.is_object()) return bad.push_back("ipam " + shown(i) + ": must be an object");
    c.ipam = i;
    if (!i.contains("type") || !i["type"].is_string() || !id_chars(i["type"].get<std::string>(), 64))
      return bad.push_back("ipam.type " + (i.contains("type") ? shown(i["type"]) : std::string("(missing)")) +
                           ": must name the IPAM plugin in CNI_PATH (1 to 64 of A-Z a-z 0-9 _ . -)");
    c.ipam_type = i["type"].get<std::string>();
  }

  void runtime_config() {
    const json& r = j["runtimeConfig"];
    if (!r.is_object()) return bad.push_back("runtimeConfig: must be an object");
    if (!r.contains("mac")) return;
    c.runtime_mac = unicast_mac(r["mac"]);
    if (!c.runtime_mac)
      bad.push_back("runtimeConfig.mac " + shown(r["mac"]) + ": must be a unicast MAC aa:bb:cc:dd:ee:ff");
  }

  void known_keys() {
    static const std::set<std::string> known{
        "cniVersion", "name", "type", "socket", "uplink", "vlan",          "trunk",      "vmq",
        "delivery",   "mac",  "ipam", "dns",    "args",   "runtimeConfig", "prevResult", "capabilities"};
    for (const auto& [k, _] : j.items())
      if (!known.count(k)) bad.push_back(k.substr(0, 64) + ": not a field of xvmq-cni's configuration");
  }

  void run() {
    known_keys();
    string(
        "name", &c.name, true, [](const std::string& v) { return id_chars(v); },
        "the network's name, 1 to 255 of A-Z a-z 0-9 _ . -");
    string(
        "type", &c.type, true, [](const std::string& v) { return v == "xvmq-cni"; }, "must be \"xvmq-cni\"");
    string(
        "socket", &c.socket, false, [](const std::string& v) { return !v.empty() && v[0] == '/' && v.size() <= 107; },
        "switchd's control socket: an absolute path of at most 107 bytes");
    string(
        "uplink", &c.uplink, true, [](const std::string& v) { return valid_name(v); },
        "the uplink switchd has attached: a netdev name, 1 to 15 of A-Z a-z 0-9 _ . -");
    string(
        "vmq", &c.vmq, false, [](const std::string& v) { return v == "auto" || v == "off"; },
        "must be \"auto\" or \"off\"");
    string(
        "delivery", &c.delivery, false, [](const std::string& v) { return v == "auto" || v == "kernel" || v == "xsk"; },
        "must be \"auto\", \"kernel\" or \"xsk\"");
    vlans();
    if (j.contains("mac") && !(c.mac = unicast_mac(j["mac"])))
      bad.push_back("mac " + shown(j["mac"]) + ": must be a unicast MAC aa:bb:cc:dd:ee:ff");
    ipam();
    if (j.contains("runtimeConfig")) runtime_config();
    if (j.contains("prevResult")) {
      if (!j["prevResult"].is_object())
        bad.push_back("prevResult: must be an object (a CNI result)");
      else
        c.prev_result = j["prevResult"];
    }
  }
};

}  // namespace

std::optional<NetConf> parse_netconf(const std::string& text, CniError* err) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    *err = {kDecodeFailure, "the network configuration on stdin is not a JSON object",
            text.empty() ? "stdin was empty" : "it begins: " + text.substr(0, 64)};
    return std::nullopt;
  }
  NetConf c;
  if (!j.contains("cniVersion") || !j["cniVersion"].is_string()) {
    *err = {kInvalidConfig, "cniVersion: missing or not a string", "xvmq-cni speaks CNI 1.0.0"};
    return std::nullopt;
  }
  c.cni_version = j["cniVersion"].get<std::string>();
  if (c.cni_version != kCniVersion) {
    *err = {kIncompatibleVersion,
            "cniVersion \"" + c.cni_version.substr(0, 32) + "\" is not supported: xvmq-cni speaks 1.0.0", ""};
    return std::nullopt;
  }
  Checker ch{j, c, {}};
  ch.run();
  if (!ch.bad.empty()) {
    *err = {kInvalidConfig, "invalid network configuration: " + join(ch.bad), ""};
    return std::nullopt;
  }
  return c;
}

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// CNI_ARGS: "K=V;K=V". MAC= is ours; IgnoreUnknown and the rest are let be.
void parse_args(const std::string& args, RuntimeEnv& e, std::vector<std::string>& bad) {
  std::stringstream s(args);
  for (std::string kv; std::getline(s, kv, ';');) {
    if (kv.empty()) continue;
    auto eq = kv.find('=');
    if (eq == std::string::npos) {
      bad.push_back("CNI_ARGS: '" + kv.substr(0, 64) + "' is not KEY=VALUE");
      continue;
    }
    if (kv.substr(0, eq) != "MAC") continue;
    auto m = parse_mac(kv.substr(eq + 1));
    if (!m || is_multicast(*m) || *m == Mac{})
      bad.push_back("CNI_ARGS MAC='" + kv.substr(eq + 1, 32) + "': must be a unicast MAC aa:bb:cc:dd:ee:ff");
    else
      e.args_mac = m;
  }
}

}  // namespace

std::optional<RuntimeEnv> parse_env(CniError* err) {
  RuntimeEnv e{.command = env("CNI_COMMAND"),
               .container_id = env("CNI_CONTAINERID"),
               .netns = env("CNI_NETNS"),
               .ifname = env("CNI_IFNAME"),
               .path = env("CNI_PATH"),
               .args_mac = std::nullopt};
  std::vector<std::string> bad;
  if (e.command != "ADD" && e.command != "DEL" && e.command != "CHECK" && e.command != "VERSION")
    bad.push_back("CNI_COMMAND '" + e.command.substr(0, 32) + "': must be ADD, DEL, CHECK or VERSION");
  if (e.command == "ADD" || e.command == "DEL" || e.command == "CHECK") {
    if (!id_chars(e.container_id))
      bad.push_back("CNI_CONTAINERID '" + e.container_id.substr(0, 64) + "': must be 1 to 255 of A-Z a-z 0-9 _ . -");
    if (!ifname_ok(e.ifname))
      bad.push_back("CNI_IFNAME '" + e.ifname.substr(0, 32) +
                    "': must be 1 to 15 printable bytes, no '/', ':' or space, not . or ..");
    if (e.command != "DEL" && (e.netns.empty() || e.netns[0] != '/'))
      bad.push_back("CNI_NETNS '" + e.netns.substr(0, 64) + "': must be the path of the network namespace");
    if (e.path.empty()) bad.push_back("CNI_PATH: missing (the directories of the IPAM plugins)");
    parse_args(env("CNI_ARGS"), e, bad);
  }
  if (!bad.empty()) {
    *err = {kInvalidEnv, "invalid environment: " + join(bad), ""};
    return std::nullopt;
  }
  return e;
}

std::optional<Mac> wanted_mac(const NetConf& conf, const RuntimeEnv& env) {
  if (conf.runtime_mac) return conf.runtime_mac;
  if (env.args_mac) return env.args_mac;
  return conf.mac;
}

std::string host_name(const std::string& container_id, const std::string& ifname) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a, 64 bits
  for (unsigned char c : container_id + "/" + ifname) h = (h ^ c) * 1099511628211ull;
  char b[16];
  std::snprintf(b, sizeof(b), "xv%012llx", static_cast<unsigned long long>(h >> 16));
  return b;
}

}  // namespace xvmq::cni
