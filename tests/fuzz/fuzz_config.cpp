// Fuzz target: the configuration file (switchd/core/config.h, docs/configuration.md)
// and config.apply's planner, without a switch.
//
// For a file that parses:
//   - to_toml writes it back so that it parses to the same (a fixed point);
//   - from each of a few running states (empty; the example file applied;
//     one with a disconnected NIC and a torn-down port), the plan's steps,
//     done on a lifecycle model as switchd would do them, are all allowed,
//     and leave a switch from which the plan is empty.
// Any other outcome is an error message "SOURCE:LINE: reason".
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "switchd/core/config.h"
#include "switchd/core/model.h"

using namespace xvmq;
using namespace xvmq::switchd;
using nlohmann::json;

namespace {

constexpr uint32_t kMaxVmqs = 2;

struct Running {
  Model model{kMaxVmqs};
  std::optional<UplinkConfig> uplink;
};

[[noreturn]] void broken(const std::string& what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_config: invariant broken: %s\n%s\n", what.c_str(), detail.c_str());
  std::abort();
}

std::string plan_text(const std::vector<Step>& steps) {
  std::string s;
  for (const auto& st : steps) s += "  " + st.command() + "  " + st.args.dump() + "\n";
  return s;
}

// One step as Switch::handle_op does it, on the model alone (the
// datapath's part always succeeds here). Throws Refused as the op would.
void execute(Running& r, const Step& s) {
  const json& a = s.args;
  auto connected = [&] {
    std::string busy;
    for (const auto& [name, p] : r.model.ports())
      if (p.nic && p.nic->state == NicState::Connected) busy += name + " ";
    return busy;
  };
  if (s.op == "uplink.attach") {
    if (r.uplink) throw Refused(ErrorKind::WrongState, "an uplink is attached");
    UplinkConfig u;
    u.name = a.at("name");
    u.mode = parse_attach_mode(a.value("mode", "auto")).value();
    u.host = a.value("host", "");
    if (u.host == "port") {
      u.host_netdev = a.value("host_netdev", default_host_netdev(u.name));
      u.host_vlan = a.value("host_vlan", uint16_t{0});
    }
    r.uplink = u;
  } else if (s.op == "uplink.detach") {
    if (!r.uplink) throw Refused(ErrorKind::NotFound, "no uplink is attached");
    if (auto busy = connected(); !busy.empty()) throw Refused(ErrorKind::WrongState, "nics still connected: " + busy);
    r.uplink.reset();
  } else if (s.op == "port.create") {
    r.model.port_create(a.at("name"));
  } else if (s.op == "port.teardown") {
    r.model.port_teardown(a.at("name"));
  } else if (s.op == "port.delete") {
    r.model.port_delete(a.at("name"));
  } else if (s.op == "nic.create") {
    r.model.nic_create(a.at("port"), nic_from_args(a));
  } else if (s.op == "nic.connect") {
    const std::string port = a.at("port");
    r.model.check_nic_connect(port);
    if (!r.uplink) throw Refused(ErrorKind::WrongState, "nic.connect: no uplink is attached");
    const Nic& n = r.model.nic(port);
    if (!n.vmq_id && n.desc.vmq_policy == VmqPolicy::Auto && !r.model.free_vmqs().empty()) r.model.vmq_allocate(port);
    r.model.nic_connect(port);
  } else if (s.op == "nic.disconnect") {
    r.model.nic_disconnect(a.at("port"));
  } else if (s.op == "nic.delete") {
    r.model.nic_delete(a.at("port"));
  } else if (s.op == "vmq.allocate" || s.op == "vmq.free") {
    const std::string port = a.at("port");
    const bool alloc = s.op == "vmq.allocate";
    const Nic& n = r.model.nic(port);
    if (alloc && !n.vmq_id && !r.model.free_vmqs().empty() && n.state != NicState::Disconnected)
      r.model.vmq_allocate(port);
    if (!alloc && n.vmq_id) r.model.vmq_free(port);
    if (a.contains("policy")) r.model.set_vmq_policy(port, alloc ? VmqPolicy::Auto : VmqPolicy::Off, s.op);
  } else if (s.op == "vmq.set") {
    const json& cpu = a.at("cpu");
    r.model.set_vmq_cpu(a.at("port"), cpu.is_null() ? std::nullopt : std::optional<uint32_t>(cpu.get<uint32_t>()),
                        s.op);
  } else {
    broken("the planner made an unknown op", s.op);
  }
}

// A configuration as TOML, its trunks' VLAN lists sorted: the order of
// a list is not a difference the planner acts on.
std::string normal_toml(SwitchConfig c) {
  for (auto& [_, p] : c.ports)
    if (p.nic) std::sort(p.nic->vlans.trunk_vlans.begin(), p.nic->vlans.trunk_vlans.end());
  return to_toml(c);
}

std::vector<Running> g_states;

Running from(const SwitchConfig& c) {
  Running r;
  for (const auto& s : plan(r.model.ports(), r.uplink, c)) execute(r, s);
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_states.emplace_back();  // nothing yet
  std::ifstream in(EXAMPLE_CONFIG);
  std::stringstream text;
  text << in.rdbuf();
  auto example = parse_config(text.str(), "example");
  if (!example) broken("the example configuration parses", example.error().message);
  g_states.push_back(from(*example));
  // A NIC that was disconnected and a port torn down: the planner must
  // recreate the one and delete the other.
  Running odd = from(*example);
  odd.model.nic_disconnect("vm1");
  odd.model.nic_delete("vm3");
  odd.model.port_teardown("vm3");
  g_states.push_back(std::move(odd));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto parsed = parse_config(text, "fuzz.toml");
  if (!parsed) {
    const std::string& m = parsed.error().message;
    if (!m.starts_with("fuzz.toml:") || m.find(": ", 10) == std::string::npos)
      broken("an error says SOURCE:LINE: reason", m);
    return 0;
  }
  const SwitchConfig& want = *parsed;

  // Written back, it reads the same.
  const std::string toml = to_toml(want);
  auto again = parse_config(toml, "written");
  if (!again) broken("to_toml's output parses", again.error().message + "\n" + toml);
  if (to_toml(*again) != toml) broken("to_toml is a fixed point", toml + "\n---\n" + to_toml(*again));

  for (const Running& start : g_states) {
    Running r = start;
    const auto steps = plan(r.model.ports(), r.uplink, want);
    for (const Step& s : steps) {
      try {
        execute(r, s);
      } catch (const Refused& e) {
        broken("every planned step is allowed", "step " + s.command() + " refused: " + e.error.message + "\nplan:\n" +
                                                    plan_text(steps) + "file:\n" + text);
      }
    }
    const auto rest = plan(r.model.ports(), r.uplink, want);
    if (!rest.empty())
      broken("after the plan, nothing is left to do",
             "left:\n" + plan_text(rest) + "plan was:\n" + plan_text(steps) + "file:\n" + text);
    if (normal_toml(current_config(r.model.ports(), r.uplink)) != normal_toml(want))
      broken("after the plan, the switch exports the file",
             to_toml(current_config(r.model.ports(), r.uplink)) + "\n---\n" + toml);
  }
  return 0;
}
