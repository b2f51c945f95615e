// switchctl: drive switchd over its control socket (switchd/PROTOCOL.md).
// Input is checked here before anything is sent, so that a typo costs no
// round trip and never reaches switchd; switchd checks it again.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <optional>
#include <string>

#include "switchd/control.h"
#include "tools/switchctl/output.h"

namespace {

using json = nlohmann::json;
using namespace xvmq;

// Exit codes of PROTOCOL.md's table. 1, "switchd cannot be reached", also
// stands for a kind newer than this switchctl.
int exit_code(const std::string& kind) {
  auto k = control::parse_error_kind(kind);
  if (!k) return 1;
  switch (*k) {
    case control::ErrorKind::Usage: return 2;
    case control::ErrorKind::NotFound: return 3;
    case control::ErrorKind::WrongState: return 4;
    case control::ErrorKind::Exists: return 5;
    case control::ErrorKind::Exhausted: return 6;
    case control::ErrorKind::Kernel: return 7;
    case control::ErrorKind::UnsupportedVersion: return 8;
    case control::ErrorKind::Permission: return 9;
  }
  return 1;
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 15 || s[0] == '-' || s[0] == '.') return false;
  return s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == std::string::npos;
}

const CLI::Validator kName(
    [](std::string& s) {
      return valid_name(s) ? std::string()
                           : "'" + s + "' is not a valid name: 1 to 15 of A-Z a-z 0-9 _ . -, not starting with - or .";
    },
    "NAME", "NAME");

// Lower-cases a valid MAC in place.
std::string check_mac(std::string& s) {
  std::string bad = "'" + s + "' is not a MAC address like 02:00:00:00:00:01";
  if (s.size() != 17) return bad;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i % 3 == 2 ? s[i] != ':' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return bad;
    s[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
  }
  if (std::stoi(s.substr(0, 2), nullptr, 16) & 1) return "'" + s + "' is a multicast MAC; a NIC needs a unicast one";
  if (s == "00:00:00:00:00:00") return "'" + s + "' is the all-zero MAC; a NIC needs a unicast one";
  return {};
}

const CLI::Validator kMac(check_mac, "MAC", "MAC");

const CLI::Validator kSeq(
    [](std::string& s) {
      bool digits = !s.empty() && s.size() <= 19 && s.find_first_not_of("0123456789") == std::string::npos;
      return digits ? std::string() : "'" + s + "' is not a sequence number (0 or more)";
    },
    "N", "SEQ");

// One request, and how to say that it was done.
struct Call {
  std::string op;
  json args = json::object();
  std::string object;  // "nic vm1"
  std::string done;    // said when the result carries no state
  bool say_done = false;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Drive switchd, xvmq's extensible switch: its uplink, switch ports, VM NICs and their vmqs.\n"
               "A VM NIC follows Hyper-V's steps: port create, nic create, nic connect, nic disconnect,\n"
               "nic delete, port teardown, port delete.",
               "switchctl"};
  app.footer("Example: switchctl port create vm1 && switchctl nic create vm1 --mac 02:00:00:00:00:01 "
             "--backend vm1-host && switchctl nic connect vm1");
  app.require_subcommand(1);
  app.fallthrough();
  std::string socket = control::kDefaultSocket;
  bool raw_json = false;
  app.add_option("--socket", socket, "switchd's control socket")->envname("XVMQ_SOCKET")->capture_default_str();
  app.add_flag("--json", raw_json, "print the result as switchd sent it (JSON)");

  std::optional<Call> call;
  std::string name, mode, mac, backend, vmq, steering, host;
  std::vector<int> trunk;
  int native_vlan = 0;
  bool spoofing = false;
  int vlan = 0;
  uint64_t since = 0;

  auto group = [&](const char* noun, const char* help) {
    CLI::App* g = app.add_subcommand(noun, help);
    g->require_subcommand(1);
    g->fallthrough();
    return g;
  };
  auto step = [](CLI::App* g, const char* verb, const std::string& help, const std::string& example) {
    CLI::App* s = g->add_subcommand(verb, help);
    s->footer("Example: " + example);
    return s;
  };
  // A step whose only argument is the name of its object.
  auto named = [&](CLI::App* g, const char* verb, const std::string& help, const std::string& key,
                   const std::string& done) {
    std::string noun = g->get_name();
    CLI::App* s = step(g, verb, help, "switchctl " + noun + " " + verb + " vm1");
    s->add_option(key == "name" ? "NAME" : "PORT", name, noun == "port" ? "switch port" : "the NIC's port")
        ->required()
        ->check(kName);
    s->callback([&, s, noun, key, done] {
      // A vmq step returns the NIC and leaves its state as it was.
      bool vmq_step = noun == "vmq";
      call = Call{noun + "." + s->get_name(), {{key, name}}, (vmq_step ? "nic " : noun + " ") + name, done, vmq_step};
    });
    return s;
  };

  CLI::App* uplink = group("uplink", "the uplink NIC whose receive queues switchd classifies");
  CLI::App* attach = step(uplink, "attach", "attach switchd's classifier to the uplink netdev NAME",
                          "switchctl uplink attach eth0 --mode native");
  attach->add_option("NAME", name, "uplink netdev")->required()->check(kName);
  CLI::Option* mode_opt = attach->add_option("--mode", mode, "XDP mode: auto (native, then skb), native, skb, offload; "
                                                             "default auto")
                              ->check(CLI::IsMember({"auto", "native", "skb", "offload"}));
  CLI::Option* host_opt =
      attach->add_option("--host", host, "an uplink with host addresses: stack (frames to its MAC reach the "
                                         "host's stack) or port (the host moves its addresses to a host port)")
          ->check(CLI::IsMember({"stack", "port"}));
  std::string host_netdev;
  int host_vlan = 0;
  CLI::Option* host_netdev_opt =
      attach->add_option("--host-netdev", host_netdev, "--host port: the host's netdev (default: NAME truncated to 10, "
                                                       "then -host)")
          ->check(kName);
  CLI::Option* host_vlan_opt =
      attach->add_option("--host-vlan", host_vlan, "--host port: the host port's access VLAN (default 0, untagged)")
          ->check(CLI::Range(0, 4094));
  attach->callback([&] {
    call = Call{"uplink.attach", {{"name", name}}, "uplink " + name, "attached", false};
    if (mode_opt->count()) call->args["mode"] = mode;
    if (host_opt->count()) call->args["host"] = host;
    if (host_netdev_opt->count()) call->args["host_netdev"] = host_netdev;
    if (host_vlan_opt->count()) call->args["host_vlan"] = host_vlan;
  });
  step(uplink, "detach", "detach switchd from its uplink", "switchctl uplink detach")->callback([&] {
    call = Call{"uplink.detach", json::object(), "uplink", "detached", false};
  });

  CLI::App* port = group("port", "switch ports: create, teardown, delete");
  named(port, "create", "create a switch port", "name", "created");
  named(port, "teardown", "tear down port NAME once its NIC is deleted", "name", "torn down");
  named(port, "delete", "delete a torn-down port", "name", "deleted");

  CLI::App* nic = group("nic", "VM NICs, one per port, named by their port");
  CLI::App* create = step(nic, "create", "create the NIC of port PORT on the host-side netdev BACKEND",
                          "switchctl nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host --vlan 10\n"
                          "  switchctl nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --trunk 10,20 --native-vlan 30");
  create->add_option("PORT", name, "the port of the NIC")->required()->check(kName);
  create->add_option("--mac", mac, "the NIC's unicast MAC, like 02:00:00:00:00:01")->required()->transform(kMac);
  create->add_option("--backend", backend, "host-side netdev: a veth end or a VM's tap")->required()->check(kName);
  CLI::Option* vmq_opt = create->add_option("--vmq", vmq, "off: software path only; auto: a vmq when one is free "
                                                          "(default auto)")
                             ->check(CLI::IsMember({"off", "auto"}));
  CLI::Option* vlan_opt = create->add_option("--vlan", vlan, "VLAN 0..4094, 0 = untagged")->check(CLI::Range(0, 4094));
  CLI::Option* steering_opt =
      create->add_option("--steering", steering, "software (XDP), or hardware (NIC flow rules); default software")
          ->check(CLI::IsMember({"software", "hardware"}));
  CLI::Option* trunk_opt = create->add_option("--trunk", trunk, "a trunk NIC carrying these VLANs tagged, e.g. 10,20")
                               ->delimiter(',')
                               ->check(CLI::Range(1, 4094))
                               ->excludes(vlan_opt);
  CLI::Option* native_opt = create->add_option("--native-vlan", native_vlan, "a trunk NIC's VLAN for its untagged frames")
                                ->check(CLI::Range(0, 4094))
                                ->needs(trunk_opt);
  create->add_flag("--allow-mac-spoofing", spoofing, "let the VM send from other source MACs (default: dropped)");
  create->callback([&] {
    call = Call{"nic.create", {{"port", name}, {"mac", mac}, {"backend", backend}}, "nic " + name, "created", false};
    if (vmq_opt->count()) call->args["vmq"] = vmq;
    if (vlan_opt->count()) call->args["vlan"] = vlan;
    if (steering_opt->count()) call->args["steering"] = steering;
    if (trunk_opt->count()) {
      call->args["vlan_mode"] = "trunk";
      call->args["trunk_vlans"] = trunk;
    }
    if (native_opt->count()) call->args["native_vlan"] = native_vlan;
    if (spoofing) call->args["allow_mac_spoofing"] = true;
  });
  named(nic, "connect", "connect the NIC of port PORT: traffic flows", "port", "connected");
  named(nic, "disconnect", "disconnect the NIC of port PORT: traffic stops", "port", "disconnected");
  named(nic, "delete", "delete the disconnected NIC of port PORT", "port", "deleted");

  CLI::App* vmqs = group("vmq", "a NIC's vmq: its own receive queue filter, the fast path");
  named(vmqs, "allocate", "give the NIC of port PORT a vmq", "port", "vmq allocated");
  named(vmqs, "free", "return the vmq of port PORT's NIC; it stays on the software path", "port", "vmq freed");

  CLI::App* fdb = group("fdb", "the forwarding table: MACs learned behind the uplink, and the NICs' own");
  step(fdb, "show", "every entry: MAC, VLAN, port, age", "switchctl fdb show")->callback([&] {
    call = Call{"fdb.show", json::object(), {}, {}, false};
  });
  step(fdb, "flush", "forget the MACs learned behind the uplink", "switchctl fdb flush")->callback([&] {
    call = Call{"fdb.flush", json::object(), "fdb", "flushed", false};
  });

  step(&app, "show", "the uplink, the ports with their NICs, and the vmqs", "switchctl show")->callback([&] {
    call = Call{"show", json::object(), {}, {}, false};
  });
  step(&app, "stats", "counters: classifier reasons, per vmq, per NIC, per queue", "switchctl stats --json")
      ->callback([&] { call = Call{"stats", json::object(), {}, {}, false}; });
  CLI::App* events = step(&app, "events", "the lifecycle steps switchd recorded, oldest first",
                          "switchctl events --since 42");
  CLI::Option* since_opt =
      events->add_option("--since", since, "only events with a sequence number above N")->check(kSeq);
  events->callback([&] {
    call = Call{"events", json::object(), {}, {}, false};
    if (since_opt->count()) call->args["since"] = since;
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    std::fprintf(stderr, "switchctl: %s (see switchctl --help)\n", what.c_str());
    return 2;
  }
  if (!call) return 2;  // require_subcommand makes this unreachable

  auto client = control::ControlClient::connect(socket);
  if (!client) {
    int err = client.error().code;
    if (err == EACCES || err == EPERM) {
      std::fprintf(stderr, "switchctl: %s: switchctl needs root or switchd's group (switchd --group)\n",
                   client.error().message.c_str());
      return 9;
    }
    std::fprintf(stderr, "switchctl: cannot reach switchd: %s; is switchd running? Start it, or point --socket "
                 "or XVMQ_SOCKET at its socket\n", client.error().message.c_str());
    return 1;
  }
  auto response = client->call(call->op, call->args);
  if (!response) {
    std::fprintf(stderr, "switchctl: %s at %s: %s\n", call->op.c_str(), socket.c_str(),
                 response.error().message.c_str());
    return 1;
  }
  if (!response->ok) {
    const std::string& m = response->message;
    std::string prefix = m.starts_with(call->op + ":") ? "" : call->op + ": ";
    std::fprintf(stderr, "switchctl: %s%s (%s)\n", prefix.c_str(), m.c_str(), response->kind.c_str());
    return exit_code(response->kind);
  }

  const json& result = response->result;
  if (raw_json) std::printf("%s\n", result.dump(2).c_str());
  else if (call->op == "show") switchctl::print_show(result);
  else if (call->op == "stats") switchctl::print_stats(result);
  else if (call->op == "events") switchctl::print_events(result);
  else if (call->op == "fdb.show") switchctl::print_fdb(result);
  else std::printf("%s\n", switchctl::summary(call->object, call->done, result, call->say_done).c_str());
  return 0;
}
