#include "switchd/core/config.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>

#include <toml++/toml.h>

namespace xvmq::switchd {

using nlohmann::json;

namespace {

const std::set<std::string> kTopKeys{"uplink", "port"};
const std::set<std::string> kUplinkKeys{"name", "mode", "host", "host_netdev", "host_vlan"};
const std::set<std::string> kPortKeys{"name", "nic"};
const std::set<std::string> kNicKeys{
    "mac",      "backend",  "vmq",     "vlan_mode",          "vlan",     "trunk_vlans", "native_vlan",
    "steering", "delivery", "vmq_cpu", "allow_mac_spoofing", "connected"};

// A refusal in the file: the line says where.
struct Bad {
  int line;
  std::string message;
};

int line_of(const toml::node& n) { return static_cast<int>(n.source().begin.line); }

// The limits of config.h on the file's bytes, before toml++ sees them. The
// scan knows TOML's strings and comments, so that brackets and dots inside
// them do not count; a dot counts towards a key's parts until something that
// cannot be inside a dotted key (a value's ',', '=', ':', a newline...).
void check_shape(std::string_view text) {
  if (text.size() > kMaxConfigBytes) {
    int line = 1 + static_cast<int>(std::count(text.begin(), text.begin() + kMaxConfigBytes, '\n'));
    throw Bad{line, "the file is " + std::to_string(text.size()) + " bytes, more than the limit of " +
                        std::to_string(kMaxConfigBytes) + " (" + std::to_string(kMaxConfigBytes >> 10) + " KiB)"};
  }
  enum { Plain, Basic, Literal, MultiBasic, MultiLiteral, Comment } state = Plain;
  int line = 1;
  std::size_t depth = 0, dots = 0;
  // At a run of 3 to 5 quotes q (a multi-line string's delimiter with up to
  // two quotes of its content): their number.
  auto run = [&](std::size_t i, char q) {
    std::size_t n = 0;
    while (i + n < text.size() && text[i + n] == q) ++n;
    return n;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') ++line;
    switch (state) {
      case Comment:
        if (c == '\n') state = Plain, dots = 0;
        continue;
      case Basic:
      case MultiBasic:
        if (c == '\\') {
          if (i + 1 < text.size() && text[++i] == '\n') ++line;
        } else if (state == Basic && (c == '"' || c == '\n')) {
          state = Plain;
        } else if (state == MultiBasic && c == '"' && run(i, '"') >= 3) {
          i += std::min<std::size_t>(run(i, '"'), 5) - 1;
          state = Plain;
        }
        continue;
      case Literal:
        if (c == '\'' || c == '\n') state = Plain;
        continue;
      case MultiLiteral:
        if (c == '\'' && run(i, '\'') >= 3) {
          i += std::min<std::size_t>(run(i, '\''), 5) - 1;
          state = Plain;
        }
        continue;
      case Plain:
        break;
    }
    switch (c) {
      case '#':
        state = Comment;
        break;
      case '"':
        state = run(i, '"') >= 3 ? MultiBasic : Basic;
        if (state == MultiBasic) i += 2;
        break;
      case '\'':
        state = run(i, '\'') >= 3 ? MultiLiteral : Literal;
        if (state == MultiLiteral) i += 2;
        break;
      case '[':
      case '{':
        if (++depth > kMaxConfigDepth)
          throw Bad{line, "arrays and inline tables nest more than " + std::to_string(kMaxConfigDepth) +
                              " deep; the nesting depth limit is " + std::to_string(kMaxConfigDepth)};
        dots = 0;
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        dots = 0;
        break;
      case '.':
        if (++dots >= kMaxKeyParts)
          throw Bad{line, "a dotted key of more than " + std::to_string(kMaxKeyParts) + " parts; the limit is " +
                              std::to_string(kMaxKeyParts)};
        break;
      default:
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != ' ' && c != '\t') dots = 0;
    }
  }
}

std::string joined(const std::set<std::string>& keys) {
  std::string s;
  for (const auto& k : keys) s += (s.empty() ? "" : ", ") + k;
  return s;
}

void only_known(const toml::table& t, const std::set<std::string>& known, const std::string& where) {
  for (auto&& [key, node] : t)
    if (!known.count(std::string(key.str())))
      throw Bad{static_cast<int>(key.source().begin.line),
                where + ": unknown key '" + std::string(key.str()) + "' (known: " + joined(known) + ")"};
}

std::string string_at(const toml::table& t, const char* key, const std::string& where) {
  const toml::node* n = t.get(key);
  if (!n) throw Bad{line_of(t), where + ": missing key '" + key + "'"};
  if (!n->is_string()) throw Bad{line_of(*n), where + ": " + key + " must be a string"};
  return n->value<std::string>().value();
}

// A TOML value as the op's JSON argument; the op's checks then judge it.
json to_json(const toml::node& n) {
  if (n.is_string()) return n.value<std::string>().value();
  if (n.is_integer()) return n.value<int64_t>().value();
  if (n.is_boolean()) return n.value<bool>().value();
  if (n.is_floating_point()) return n.value<double>().value();
  if (const toml::array* a = n.as_array()) {
    json out = json::array();
    for (const auto& e : *a) out.push_back(to_json(e));
    return out;
  }
  return json::object();  // a table or a date: ill-typed for every key
}

// The key of a NIC table that a refusal of nic.create is about.
std::string key_of(std::string_view m) {
  auto has = [&](std::string_view w) { return m.find(w) != std::string_view::npos; };
  if (m.starts_with("argument '")) return std::string(m.substr(10, m.find('\'', 10) - 10));
  if (has("need vlan_mode trunk")) return "vlan_mode";
  if (m.starts_with("mac") || m.starts_with("MAC")) return "mac";
  if (m.starts_with("backend")) return "backend";
  if (m.starts_with("trunk_vlans") || m.starts_with("trunk VLAN")) return "trunk_vlans";
  if (m.starts_with("native")) return "native_vlan";
  if (m.starts_with("vlan_mode") || has("a trunk NIC needs")) return "vlan_mode";
  if (m.starts_with("vlan") || m.starts_with("VLAN")) return "vlan";
  if (m.starts_with("allow_mac_spoofing")) return "allow_mac_spoofing";
  if (m.starts_with("vmq_cpu")) return "vmq_cpu";
  if (m.starts_with("vmq")) return "vmq";
  if (m.starts_with("delivery")) return "delivery";
  if (m.starts_with("steering")) return "steering";
  return "";
}

std::string strip_step(std::string m) {
  for (const char* p : {"nic.create: ", "port.create: "})
    if (m.starts_with(p)) return m.substr(std::string_view(p).size());
  return m;
}

UplinkConfig parse_uplink(const toml::node& u) {
  const toml::table* t = u.as_table();
  if (!t) throw Bad{line_of(u), "uplink must be a table ([uplink])"};
  only_known(*t, kUplinkKeys, "uplink");
  UplinkConfig up;
  up.name = string_at(*t, "name", "uplink");
  if (!valid_name(up.name)) throw Bad{line_of(*t->get("name")), "uplink: name '" + up.name + "': " + kNameRule};
  if (t->get("mode")) {
    std::string m = string_at(*t, "mode", "uplink");
    auto mode = parse_attach_mode(m);
    if (!mode) throw Bad{line_of(*t->get("mode")), "uplink: mode '" + m + "': use auto, native, skb or offload"};
    up.mode = *mode;
  }
  if (t->get("host")) {
    up.host = string_at(*t, "host", "uplink");
    if (up.host != "stack" && up.host != "port")
      throw Bad{line_of(*t->get("host")), "uplink: host '" + up.host +
                                              "': use stack (frames to its MAC reach the host's stack) or port "
                                              "(the host moves its addresses to a host port)"};
  }
  if (const toml::node* n = t->get("host_netdev")) {
    if (up.host != "port") throw Bad{line_of(*n), "uplink: host_netdev goes with host = \"port\""};
    up.host_netdev = string_at(*t, "host_netdev", "uplink");
    if (!valid_name(up.host_netdev))
      throw Bad{line_of(*n), "uplink: host_netdev '" + up.host_netdev + "': " + kNameRule};
  }
  if (const toml::node* n = t->get("host_vlan")) {
    if (up.host != "port") throw Bad{line_of(*n), "uplink: host_vlan goes with host = \"port\""};
    auto v = n->value<int64_t>();
    if (!v || *v < 0 || *v > XVMQ_VLAN_MAX)
      throw Bad{line_of(*n), "uplink: host_vlan must be an integer 0..4094 (0: untagged)"};
    up.host_vlan = static_cast<uint16_t>(*v);
  }
  if (up.host == "port" && up.host_netdev.empty()) up.host_netdev = default_host_netdev(up.name);
  return up;
}

// A [port.nic] table, through nic.create's own checks on `scratch`.
void parse_nic(const toml::node& nn, PortConfig& pc, Model& scratch, bool has_uplink) {
  const std::string where = "port '" + pc.name + "'";
  const toml::table* nt = nn.as_table();
  if (!nt) throw Bad{line_of(nn), where + ": nic must be a table ([port.nic])"};
  only_known(*nt, kNicKeys, where + ": nic");
  json args{{"port", pc.name}};
  for (auto&& [key, v] : *nt) args[std::string(key.str())] = to_json(v);
  if (args.contains("connected")) {
    if (!args["connected"].is_boolean())
      throw Bad{line_of(*nt->get("connected")), where + ": connected must be true or false"};
    pc.connected = args["connected"].get<bool>();
    args.erase("connected");
  }
  // A file may leave vlan_mode out where the keys say it.
  if (!args.contains("vlan_mode") && (args.contains("trunk_vlans") || args.contains("native_vlan")))
    args["vlan_mode"] = "trunk";
  try {
    NicDesc c = nic_from_args(args);
    c.name = pc.name;
    scratch.nic_create(pc.name, c);
    pc.nic = c;
  } catch (const Refused& r) {
    std::string m = strip_step(r.error.message);
    std::string key = key_of(m);
    const toml::node* at = key.empty() ? nullptr : nt->get(key);
    throw Bad{at ? line_of(*at) : line_of(*nt), where + ": " + m};
  }
  if (pc.connected && !has_uplink)
    throw Bad{line_of(*nt), where + ": a connected NIC needs an [uplink]; add one, or set connected = false"};
}

PortConfig parse_port(const toml::table& t, Model& scratch, bool has_uplink) {
  only_known(t, kPortKeys, "port");
  PortConfig pc;
  pc.line = line_of(t);
  pc.name = string_at(t, "name", "port");
  try {
    scratch.port_create(pc.name);
  } catch (const Refused& r) {
    throw Bad{line_of(*t.get("name")), strip_step(r.error.message)};
  }
  if (const toml::node* nn = t.get("nic")) parse_nic(*nn, pc, scratch, has_uplink);
  return pc;
}

SwitchConfig parse_table(const toml::table& root) {
  only_known(root, kTopKeys, "top level");
  SwitchConfig out;
  if (const toml::node* u = root.get("uplink")) out.uplink = parse_uplink(*u);
  // Every port and NIC goes through the model's own steps, so the file meets
  // exactly the rules of port.create and nic.create (names, MACs, VLANs,
  // duplicates of names, of MACs on a VLAN and of backends).
  Model scratch(XVMQ_MAX_VMQS - 1);
  const toml::node* p = root.get("port");
  if (!p) return out;
  const toml::array* ports = p->as_array();
  if (!ports || !ports->is_array_of_tables()) throw Bad{line_of(*p), "port must be an array of tables ([[port]])"};
  if (ports->size() > kMaxPorts)
    throw Bad{line_of(*ports->get(kMaxPorts)), "more than " + std::to_string(kMaxPorts) +
                                                   " ports ([[port]] tables); the limit is " +
                                                   std::to_string(kMaxPorts)};
  for (const toml::node& pn : *ports) {
    PortConfig pc = parse_port(*pn.as_table(), scratch, out.uplink.has_value());
    out.ports[pc.name] = std::move(pc);
  }
  return out;
}

std::string toml_list(const std::vector<uint16_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

Result<SwitchConfig> parse_config(std::string_view text, const std::string& source) {
  try {
    check_shape(text);
    return parse_table(toml::parse(text, source));
  } catch (const toml::parse_error& e) {
    return Error{EINVAL, source + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description())};
  } catch (const Bad& b) {
    return Error{EINVAL, source + ":" + std::to_string(b.line) + ": " + b.message};
  }
}

SwitchConfig current_config(const std::map<std::string, Port>& ports, const std::optional<UplinkConfig>& uplink) {
  SwitchConfig c;
  c.uplink = uplink;
  for (const auto& [name, p] : ports) {
    PortConfig pc{name, std::nullopt, true, 0};
    if (p.nic) {
      pc.nic = p.nic->desc;
      pc.connected = p.nic->state == NicState::Connected;
    }
    c.ports[name] = pc;
  }
  return c;
}

std::string to_toml(const SwitchConfig& c) {
  std::ostringstream o;
  if (c.uplink) {
    o << "[uplink]\nname = \"" << c.uplink->name << "\"\nmode = \"" << to_string(c.uplink->mode) << "\"\n";
    if (!c.uplink->host.empty()) o << "host = \"" << c.uplink->host << "\"\n";
    if (c.uplink->host == "port")
      o << "host_netdev = \"" << c.uplink->host_netdev << "\"\nhost_vlan = " << c.uplink->host_vlan << "\n";
  }
  for (const auto& [name, p] : c.ports) {
    o << "\n[[port]]\nname = \"" << name << "\"\n";
    if (!p.nic) continue;
    const NicDesc& n = *p.nic;
    o << "[port.nic]\nmac = \"" << format_mac(n.mac) << "\"\nbackend = \"" << n.backend << "\"\n";
    if (n.vlans.mode == VlanMode::Access) {
      o << "vlan = " << n.vlans.access << "\n";
    } else {
      o << "vlan_mode = \"trunk\"\ntrunk_vlans = " << toml_list(n.vlans.trunk_vlans) << "\n";
      if (n.vlans.native) o << "native_vlan = " << *n.vlans.native << "\n";
    }
    o << "vmq = \"" << to_string(n.vmq_policy) << "\"\nsteering = \"" << to_string(n.steering) << "\"\n"
      << "delivery = \"" << to_string(n.delivery) << "\"\n";
    if (n.vmq_cpu) o << "vmq_cpu = " << *n.vmq_cpu << "\n";
    o << "allow_mac_spoofing = " << (n.allow_mac_spoofing ? "true" : "false") << "\n"
      << "connected = " << (p.connected ? "true" : "false") << "\n";
  }
  return o.str();
}

std::string default_host_netdev(const std::string& uplink) { return uplink.substr(0, 10) + "-host"; }

std::string Step::command() const {
  auto s = [&](const char* k) { return args.contains(k) && args[k].is_string() ? args[k].get<std::string>() : ""; };
  std::string verb = op;
  std::replace(verb.begin(), verb.end(), '.', ' ');
  std::string cmd = "switchctl " + verb;
  if (op == "uplink.attach") {
    cmd += " " + s("name");
    if (!s("mode").empty() && s("mode") != "auto") cmd += " --mode " + s("mode");
    if (!s("host").empty()) cmd += " --host " + s("host");
    if (!s("host_netdev").empty()) cmd += " --host-netdev " + s("host_netdev");
    if (args.contains("host_vlan")) cmd += " --host-vlan " + std::to_string(args["host_vlan"].get<int>());
  } else if (op.starts_with("port.")) {
    cmd += " " + s("name");
  } else if (op.starts_with("nic.") || op.starts_with("vmq.")) {
    cmd += " " + s("port");
  }
  if (op == "nic.create") {
    cmd += " --mac " + s("mac") + " --backend " + s("backend");
    if (s("vlan_mode") == "trunk") {
      std::string list;
      for (const auto& v : args["trunk_vlans"]) list += (list.empty() ? "" : ",") + std::to_string(v.get<int>());
      cmd += " --trunk " + list;
      if (args.contains("native_vlan")) cmd += " --native-vlan " + std::to_string(args["native_vlan"].get<int>());
    } else if (args.value("vlan", 0) != 0) {
      cmd += " --vlan " + std::to_string(args["vlan"].get<int>());
    }
    if (s("vmq") == "off") cmd += " --vmq off";
    if (s("steering") == "hardware") cmd += " --steering hardware";
    if (args.value("allow_mac_spoofing", false)) cmd += " --allow-mac-spoofing";
    if (!s("delivery").empty() && s("delivery") != "auto") cmd += " --delivery " + s("delivery");
    if (args.contains("vmq_cpu") && args["vmq_cpu"].is_number_integer())
      cmd += " --vmq-cpu " + std::to_string(args["vmq_cpu"].get<int64_t>());
  }
  if (op == "vmq.allocate" || op == "vmq.set") {
    if (args.contains("cpu") && args["cpu"].is_number_integer())
      cmd += " --cpu " + std::to_string(args["cpu"].get<int64_t>());
    else if (op == "vmq.set")
      cmd += " --spread";
  }
  if (!s("policy").empty()) cmd += " --policy " + s("policy");
  return cmd;
}

std::vector<Step> plan(const std::map<std::string, Port>& ports, const std::optional<UplinkConfig>& uplink,
                       const SwitchConfig& desired) {
  const bool uplink_changes = uplink != desired.uplink;
  std::vector<Step> disconnect, del_nic, teardown, del_port, detach, vmq_free, vmq_set, vmq_alloc, attach, create_port,
      create_nic, connect;
  std::set<std::string> kept;  // NICs that stay as they are (but perhaps their vmq or connect)
  for (const auto& [name, p] : ports) {
    auto it = desired.ports.find(name);
    const PortConfig* want = it == desired.ports.end() ? nullptr : &it->second;
    if (p.nic) {
      const Nic& n = *p.nic;
      bool keep = want && want->nic && !uplink_changes && n.state != NicState::Disconnected &&
                  same_but_vmq_policy(n.desc, *want->nic) && (want->connected || n.state != NicState::Connected);
      if (keep) {
        kept.insert(name);
        if (n.desc.vmq_policy != want->nic->vmq_policy) {
          if (want->nic->vmq_policy == VmqPolicy::Off)
            vmq_free.push_back({"vmq.free", {{"port", name}, {"policy", "off"}}});
          else
            vmq_alloc.push_back({"vmq.allocate", {{"port", name}, {"policy", "auto"}}});
        }
        if (const auto& cpu = want->nic->vmq_cpu; n.desc.vmq_cpu != cpu)
          vmq_set.push_back({"vmq.set", {{"port", name}, {"cpu", cpu ? json(*cpu) : json(nullptr)}}});
        if (want->connected && n.state == NicState::Created) connect.push_back({"nic.connect", {{"port", name}}});
      } else {
        if (n.state == NicState::Connected) disconnect.push_back({"nic.disconnect", {{"port", name}}});
        del_nic.push_back({"nic.delete", {{"port", name}}});
      }
    }
    // A torn-down port can only be deleted: one that stays is made again.
    if (!want || p.state == PortState::TornDown) {
      if (p.state == PortState::Created) teardown.push_back({"port.teardown", {{"name", name}}});
      del_port.push_back({"port.delete", {{"name", name}}});
      if (want) create_port.push_back({"port.create", {{"name", name}}});
    }
  }
  if (uplink_changes && uplink) detach.push_back({"uplink.detach", json::object()});
  if (uplink_changes && desired.uplink) {
    json a{{"name", desired.uplink->name}, {"mode", to_string(desired.uplink->mode)}};
    if (!desired.uplink->host.empty()) a["host"] = desired.uplink->host;
    if (desired.uplink->host == "port") {
      a["host_netdev"] = desired.uplink->host_netdev;
      if (desired.uplink->host_vlan) a["host_vlan"] = desired.uplink->host_vlan;
    }
    attach.push_back({"uplink.attach", a});
  }
  for (const auto& [name, want] : desired.ports) {
    if (!ports.count(name)) create_port.push_back({"port.create", {{"name", name}}});
    if (!want.nic || kept.count(name)) continue;
    create_nic.push_back({"nic.create", nic_args(name, *want.nic)});
    if (want.connected) connect.push_back({"nic.connect", {{"port", name}}});
  }
  auto by_name = [](const char* key) {
    return [key](const Step& a, const Step& b) { return a.args[key] < b.args[key]; };
  };
  std::sort(create_port.begin(), create_port.end(), by_name("name"));
  std::sort(connect.begin(), connect.end(), by_name("port"));
  std::vector<Step> out;
  for (auto* kind : {&disconnect, &del_nic, &teardown, &del_port, &detach, &vmq_free, &vmq_set, &vmq_alloc, &attach,
                     &create_port, &create_nic, &connect})
    out.insert(out.end(), kind->begin(), kind->end());
  return out;
}

}  // namespace xvmq::switchd
