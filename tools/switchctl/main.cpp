// switchctl: drive switchd over its control socket (docs/protocol.md).
// Input is checked here before anything is sent, so that a typo costs no
// round trip and never reaches switchd; switchd checks it again.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <variant>

#include <signal.h>
#include <unistd.h>

#include "common/mac.h"
#include "common/names.h"
#include "control/control.h"
#include "tools/cli/parse.h"
#include "tools/switchctl/output.h"

namespace {

using json = nlohmann::json;
using namespace xvmq;

// Exit codes of docs/protocol.md's table. 1, "switchd cannot be reached", also
// stands for a kind newer than this switchctl.
int exit_code(const std::string& kind) {
  auto k = control::parse_error_kind(kind);
  if (!k) return 1;
  switch (*k) {
    case control::ErrorKind::Usage:
      return 2;
    case control::ErrorKind::NotFound:
      return 3;
    case control::ErrorKind::WrongState:
      return 4;
    case control::ErrorKind::Exists:
      return 5;
    case control::ErrorKind::Exhausted:
      return 6;
    case control::ErrorKind::Kernel:
      return 7;
    case control::ErrorKind::UnsupportedVersion:
      return 8;
    case control::ErrorKind::Permission:
      return 9;
  }
  return 1;
}

const CLI::Validator kName(
    [](std::string& s) {
      return valid_name(s) ? std::string()
                           : "'" + s + "' is not a valid name: 1 to 15 of A-Z a-z 0-9 _ . -, not starting with - or .";
    },
    "NAME", "NAME");

const CLI::Validator kBackend(
    [](std::string& s) {
      return valid_backend(s) ? std::string() : "'" + s + "' is not a backend: " + std::string(kBackendRule);
    },
    "BACKEND", "BACKEND");

// Lower-cases a valid MAC in place. Only ':' separates (parse_mac also takes '-').
std::string check_mac(std::string& s) {
  auto mac = s.find('-') == std::string::npos ? parse_mac(s) : std::nullopt;
  if (!mac) return "'" + s + "' is not a MAC address like 02:00:00:00:00:01";
  s = format_mac(*mac);
  if (is_multicast(*mac)) return "'" + s + "' is a multicast MAC; a NIC needs a unicast one";
  if (*mac == Mac{}) return "'" + s + "' is the all-zero MAC; a NIC needs a unicast one";
  return {};
}

const CLI::Validator kMac(check_mac, "MAC", "MAC");

const CLI::Validator kSeq(
    [](std::string& s) {
      bool digits = !s.empty() && s.size() <= 19 && s.find_first_not_of("0123456789") == std::string::npos;
      return digits ? std::string() : "'" + s + "' is not a sequence number (0 or more)";
    },
    "N", "SEQ");

// config.apply's steps, numbered, as the commands that do the same.
void print_steps(const json& result, bool dry_run) {
  const json& steps = result.value("steps", json::array());
  if (steps.empty()) {
    std::printf("nothing to do\n");
    return;
  }
  size_t i = 0;
  for (const auto& s : steps) std::printf("%zu. %s\n", ++i, s.value("command", "").c_str());
  if (dry_run)
    std::printf("dry run: %zu step(s), nothing changed\n", i);
  else
    std::printf("applied %zu step(s)\n", i);
}

volatile sig_atomic_t g_interrupted = 0;

// SIGINT and SIGTERM end --watch and --follow cleanly (exit 0).
void on_interrupt(int) { g_interrupted = 1; }

void catch_interrupts() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// Sleeps `seconds`, waking early on an interrupt; false when interrupted.
bool pause_for(double seconds) {
  auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!g_interrupted && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return !g_interrupted;
}

constexpr const char* kExitCodes =
    "Exit codes: 0 done; 1 switchd unreachable (not running, wrong --socket, or no answer within --timeout);\n"
    "2 usage (bad option, name, MAC, VLAN or CPU); 3 not found; 4 wrong state (the message names the steps\n"
    "allowed); 5 exists; 6 exhausted: no vmq or port left, --max-nics reached, switchd out of file descriptors,\n"
    "or switchd full (too many connections, try again); 7 the kernel refused; 8 unsupported protocol version;\n"
    "9 permission denied.\n"
    "Errors are one line on stderr. --json (before or after the verb) prints results as JSON (docs/protocol.md).";

// One request, and how to say that it was done.
struct Call {
  std::string op;
  json args = json::object();
  std::string object;  // "nic vm1"
  std::string done;    // said when the result carries no state
  bool say_done = false;
};

// switchd refused the connection as full, before reading the request: not
// the request's fault, and not switchd being down.
bool refused_as_full(const control::Response& r) { return !r.ok && r.id.is_null() && r.kind == "exhausted"; }

int full(const std::string& socket, const control::Response& r) {
  std::string m = r.message.starts_with("switchd is full") ? r.message : "switchd is full: " + r.message;
  std::fprintf(stderr, "switchctl: %s (exhausted; %s served nothing)\n", m.c_str(), socket.c_str());
  return exit_code(r.kind);
}

// A transport failure: exit 1.
int unreachable(const std::string& op, const std::string& socket, const xvmq::Error& e) {
  std::fprintf(stderr, "switchctl: %s at %s: %s%s\n", op.c_str(), socket.c_str(), e.message.c_str(),
               e.code == ETIMEDOUT ? " (see --timeout)" : "");
  return 1;
}

// A failed call of a loop: transport (exit 1) or refusal (its class).
int failed(const std::string& op, const std::string& socket, const xvmq::Result<control::Response>& r) {
  if (!r) return unreachable(op, socket, r.error());
  if (refused_as_full(r.value())) return full(socket, r.value());
  std::fprintf(stderr, "switchctl: %s: %s (%s)\n", op.c_str(), r->message.c_str(), r->kind.c_str());
  return exit_code(r->kind);
}

// stats --watch: a sample per interval, printed as rates per second over it.
int watch_stats(control::ControlClient& client, const std::string& socket, double interval, uint64_t count,
                bool as_json) {
  catch_interrupts();
  auto r = client.call("stats");
  if (!r || !r->ok) return failed("stats", socket, r);
  json before = r->result;
  auto t0 = std::chrono::steady_clock::now();
  const bool tty = isatty(STDOUT_FILENO);
  for (uint64_t n = 1; count == 0 || n <= count; n++) {
    if (!pause_for(interval)) break;
    r = client.call("stats");
    if (!r || !r->ok) return failed("stats", socket, r);
    auto t1 = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(t1 - t0).count();
    json per_second = switchctl::rates(before, r->result, dt);
    if (as_json) {
      std::printf("%s\n",
                  json{{"sample", n}, {"interval_s", dt}, {"rates", per_second}, {"stats", r->result}}.dump().c_str());
    } else {
      if (tty)
        std::printf("\033[H\033[2J");
      else if (n > 1)
        std::printf("\n");
      std::printf("switchctl stats --watch: rates per second over %.2f s (sample %llu; Ctrl-C to stop)\n", dt,
                  static_cast<unsigned long long>(n));
      switchctl::print_stats(per_second);
    }
    std::fflush(stdout);
    before = r->result;
    t0 = t1;
  }
  return 0;
}

// events --follow: a long poll (docs/protocol.md): "events" with since=<last
// seq> and wait_ms, which switchd answers as soon as an event is newer, or
// empty once wait_ms has passed; then again.
constexpr uint32_t kFollowWaitMs = 30000;

int follow_events(control::ControlClient& client, const std::string& socket, json args, bool as_json) {
  catch_interrupts();
  client.interrupt_on(&g_interrupted);
  client.set_timeout(client.timeout() + std::chrono::milliseconds(kFollowWaitMs));
  bool header = true;
  bool first = true;
  do {
    // The first answers at once: the events so far (or a header).
    if (!first) args["wait_ms"] = kFollowWaitMs;
    first = false;
    auto r = client.call("events", args);
    if (g_interrupted) break;
    if (!r || !r->ok) return failed("events", socket, r);
    const json& evs = r->result["events"];
    if (as_json) {
      for (const json& e : evs) std::printf("%s\n", e.dump().c_str());
      std::fflush(stdout);
    } else if (!evs.empty() || header) {
      switchctl::print_event_rows(evs, header);
      header = false;
    }
    // switchd keeps the last 4096 events: a gap means the follower fell behind.
    if (!evs.empty() && args.contains("since") &&
        evs.front()["seq"].get<uint64_t>() > args["since"].get<uint64_t>() + 1)
      std::fprintf(stderr, "switchctl: events %llu to %llu were dropped from switchd's log before they were read\n",
                   static_cast<unsigned long long>(args["since"].get<uint64_t>() + 1),
                   static_cast<unsigned long long>(evs.front()["seq"].get<uint64_t>() - 1));
    if (!evs.empty()) args["since"] = evs.back()["seq"];
  } while (!g_interrupted);
  return 0;
}

// The command line: every option's value, bound by CLI11, and the request
// the chosen command makes.
struct Cli {
  CLI::App app{
      "Drive switchd, xvmq's extensible switch: its uplink, switch ports, VM NICs and their vmqs.\n"
      "A VM NIC follows Hyper-V's steps: port create, nic create, nic connect, nic disconnect,\n"
      "nic delete, port teardown, port delete.",
      "switchctl"};
  std::string socket = control::kDefaultSocket;
  bool raw_json = false;
  double timeout_s = 10;

  std::optional<Call> call;
  std::string name, mode, mac, backend, vmq, steering, delivery, host, host_netdev;
  int host_vlan = 0;
  std::vector<int> trunk;
  int native_vlan = 0;
  bool spoofing = false;
  int vlan = 0;
  // vmq allocate/free --policy: the NIC's vmq policy changes with its vmq (what apply does).
  std::string policy;
  CLI::Option* alloc_policy = nullptr;
  CLI::Option* free_policy = nullptr;
  // A vmq's processor: nic create --vmq-cpu, vmq allocate/set --cpu.
  int cpu = 0;
  CLI::Option* alloc_cpu = nullptr;
  bool spread = false;
  std::string config_file;
  bool dry_run = false;
  std::string fdb_mac, fdb_port;
  int fdb_vlan = 0;
  bool watch = false, follow = false;
  double interval = 1.0;
  uint64_t watch_count = 0;
  uint64_t since = 0;
};

CLI::App* group(Cli& cli, const char* noun, const char* help, const std::string& example) {
  CLI::App* g = cli.app.add_subcommand(noun, help);
  g->footer("Example: " + example);
  g->require_subcommand(1);
  g->fallthrough();
  return g;
}

CLI::App* step(CLI::App* g, const char* verb, const std::string& help, const std::string& example) {
  CLI::App* s = g->add_subcommand(verb, help);
  s->footer("Example: " + example);
  return s;
}

// A step whose only argument is the name of its object.
CLI::App* named(Cli& cli, CLI::App* g, const char* verb, const std::string& help, const std::string& key,
                const std::string& done) {
  std::string noun = g->get_name();
  CLI::App* s = step(g, verb, help, "switchctl " + noun + " " + verb + " vm1");
  s->add_option(key == "name" ? "NAME" : "PORT", cli.name, noun == "port" ? "switch port" : "the NIC's port")
      ->required()
      ->check(kName);
  s->callback([&cli, s, noun, key, done] {
    // A vmq step returns the NIC and leaves its state as it was.
    bool vmq_step = noun == "vmq";
    cli.call = Call{
        noun + "." + s->get_name(), {{key, cli.name}}, (vmq_step ? "nic " : noun + " ") + cli.name, done, vmq_step};
  });
  return s;
}

// A step that sends `op` with no arguments.
void plain(Cli& cli, CLI::App* s, const std::string& op, const std::string& object = {}, const std::string& done = {}) {
  s->callback([&cli, op, object, done] { cli.call = Call{op, json::object(), object, done, false}; });
}

void add_global_options(Cli& cli) {
  CLI::App& app = cli.app;
  app.footer(std::string("Example: switchctl port create vm1 && switchctl nic create vm1 --mac 02:00:00:00:00:01 "
                         "--backend vm1-host && switchctl nic connect vm1\n") +
             kExitCodes);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--socket", cli.socket, "switchd's control socket")->envname("XVMQ_SOCKET")->capture_default_str();
  app.add_flag("--json", cli.raw_json, "print the result as switchd sent it (JSON)");
  app.add_option("--timeout", cli.timeout_s,
                 "seconds to wait for switchd to answer a request (events --follow: "
                 "beyond its long poll)")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
}

void add_uplink(Cli& cli) {
  CLI::App* uplink = group(cli, "uplink", "the uplink NIC whose receive queues switchd classifies",
                           "switchctl uplink attach eth1 --mode native");
  CLI::App* attach = step(uplink, "attach", "attach switchd's classifier to the uplink netdev NAME",
                          "switchctl uplink attach eth0 --mode native");
  attach->add_option("NAME", cli.name, "uplink netdev")->required()->check(kName);
  CLI::Option* mode_opt = attach
                              ->add_option("--mode", cli.mode,
                                           "XDP mode: auto (native, then skb), native, skb, "
                                           "offload; default auto")
                              ->check(CLI::IsMember({"auto", "native", "skb", "offload"}));
  CLI::Option* host_opt = attach
                              ->add_option("--host", cli.host,
                                           "an uplink with host addresses: stack (frames to its MAC reach the "
                                           "host's stack) or port (the host moves its addresses to a host port)")
                              ->check(CLI::IsMember({"stack", "port"}));
  CLI::Option* host_netdev_opt = attach
                                     ->add_option("--host-netdev", cli.host_netdev,
                                                  "--host port: the host's netdev (default: NAME truncated "
                                                  "to 10, then -host)")
                                     ->check(kName);
  CLI::Option* host_vlan_opt =
      attach->add_option("--host-vlan", cli.host_vlan, "--host port: the host port's access VLAN (default 0, untagged)")
          ->check(CLI::Range(0, 4094));
  attach->callback([&cli, mode_opt, host_opt, host_netdev_opt, host_vlan_opt] {
    cli.call = Call{"uplink.attach", {{"name", cli.name}}, "uplink " + cli.name, "attached", false};
    if (mode_opt->count()) cli.call->args["mode"] = cli.mode;
    if (host_opt->count()) cli.call->args["host"] = cli.host;
    if (host_netdev_opt->count()) cli.call->args["host_netdev"] = cli.host_netdev;
    if (host_vlan_opt->count()) cli.call->args["host_vlan"] = cli.host_vlan;
  });
  plain(cli, step(uplink, "detach", "detach switchd from its uplink", "switchctl uplink detach"), "uplink.detach",
        "uplink", "detached");
}

void add_port(Cli& cli) {
  CLI::App* port = group(cli, "port", "switch ports: create, teardown, delete", "switchctl port create vm1");
  named(cli, port, "create", "create a switch port", "name", "created");
  named(cli, port, "teardown", "tear down port NAME once its NIC is deleted", "name", "torn down");
  named(cli, port, "delete", "delete a torn-down port", "name", "deleted");
}

void add_nic_create(Cli& cli, CLI::App* nic) {
  CLI::App* create = step(nic, "create", "create the NIC of port PORT on the host-side netdev BACKEND",
                          "switchctl nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host --vlan 10\n"
                          "  switchctl nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --trunk 10,20 "
                          "--native-vlan 30");
  create->add_option("PORT", cli.name, "the port of the NIC")->required()->check(kName);
  create->add_option("--mac", cli.mac, "the NIC's unicast MAC, like 02:00:00:00:00:01")->required()->transform(kMac);
  create
      ->add_option("--backend", cli.backend,
                   "host-side netdev (a veth end or a VM's tap), or vhost-user:PATH (switchd serves a QEMU guest's "
                   "virtio-net on that Unix socket)")
      ->required()
      ->check(kBackend);
  CLI::Option* vmq_opt = create
                             ->add_option("--vmq", cli.vmq,
                                          "off: software path only; auto: a vmq when one is "
                                          "free (default auto)")
                             ->check(CLI::IsMember({"off", "auto"}));
  CLI::Option* vlan_opt =
      create->add_option("--vlan", cli.vlan, "VLAN 0..4094, 0 = untagged")->check(CLI::Range(0, 4094));
  CLI::Option* steering_opt =
      create->add_option("--steering", cli.steering, "software (XDP), or hardware (NIC flow rules); default software")
          ->check(CLI::IsMember({"software", "hardware"}));
  CLI::Option* trunk_opt =
      create->add_option("--trunk", cli.trunk, "a trunk NIC carrying these VLANs tagged, e.g. 10,20")
          ->delimiter(',')
          ->check(CLI::Range(1, 4094))
          ->excludes(vlan_opt);
  CLI::Option* native_opt =
      create->add_option("--native-vlan", cli.native_vlan, "a trunk NIC's VLAN for its untagged frames")
          ->check(CLI::Range(0, 4094))
          ->needs(trunk_opt);
  create->add_flag("--allow-mac-spoofing", cli.spoofing, "let the VM send from other source MACs (default: dropped)");
  CLI::Option* delivery_opt =
      create
          ->add_option("--delivery", cli.delivery,
                       "how its vmq's frames reach the VM: kernel (redirected to the backend on the vmq's CPU), xsk "
                       "(switchd's AF_XDP sockets) or auto (kernel where the backend takes it; default)")
          ->check(CLI::IsMember({"auto", "kernel", "xsk"}));
  CLI::Option* vmq_cpu_opt =
      create->add_option("--vmq-cpu", cli.cpu, "the CPU its vmq's frames are processed on (default: spread)")
          ->check(CLI::Range(0, 1023));
  create->callback([&cli, vmq_opt, vlan_opt, steering_opt, trunk_opt, native_opt, delivery_opt, vmq_cpu_opt] {
    cli.call = Call{"nic.create",
                    {{"port", cli.name}, {"mac", cli.mac}, {"backend", cli.backend}},
                    "nic " + cli.name,
                    "created",
                    false};
    json& args = cli.call->args;
    if (vmq_opt->count()) args["vmq"] = cli.vmq;
    if (vlan_opt->count()) args["vlan"] = cli.vlan;
    if (steering_opt->count()) args["steering"] = cli.steering;
    if (trunk_opt->count()) {
      args["vlan_mode"] = "trunk";
      args["trunk_vlans"] = cli.trunk;
    }
    if (native_opt->count()) args["native_vlan"] = cli.native_vlan;
    if (cli.spoofing) args["allow_mac_spoofing"] = true;
    if (delivery_opt->count()) args["delivery"] = cli.delivery;
    if (vmq_cpu_opt->count()) args["vmq_cpu"] = cli.cpu;
  });
}

void add_nic(Cli& cli) {
  CLI::App* nic = group(cli, "nic", "VM NICs, one per port, named by their port", "switchctl nic connect vm1");
  add_nic_create(cli, nic);
  named(cli, nic, "connect", "connect the NIC of port PORT: traffic flows", "port", "connected");
  named(cli, nic, "disconnect", "disconnect the NIC of port PORT: traffic stops", "port", "disconnected");
  named(cli, nic, "delete", "delete the disconnected NIC of port PORT", "port", "deleted");
}

void add_vmq_set(Cli& cli, CLI::App* vmqs) {
  CLI::App* set = step(vmqs, "set", "move the vmq of port PORT's NIC to a CPU (--cpu N), or spread it (--spread)",
                       "switchctl vmq set vm1 --cpu 2\n  switchctl vmq set vm1 --spread");
  set->add_option("PORT", cli.name, "the NIC's port")->required()->check(kName);
  CLI::Option* cpu_opt =
      set->add_option("--cpu", cli.cpu, "the CPU its frames are processed on")->check(CLI::Range(0, 1023));
  CLI::Option* spread_opt =
      set->add_flag("--spread", cli.spread, "no CPU of its own: the vmqs are spread over the CPUs")->excludes(cpu_opt);
  set->callback([&cli, cpu_opt, spread_opt] {
    if (!cpu_opt->count() && !spread_opt->count()) throw CLI::RequiredError("--cpu N or --spread");
    const bool spread = spread_opt->count() > 0;
    cli.call = Call{"vmq.set",
                    {{"port", cli.name}, {"cpu", spread ? json(nullptr) : json(cli.cpu)}},
                    "nic " + cli.name,
                    spread ? "vmq spread over the CPUs" : "vmq on CPU " + std::to_string(cli.cpu),
                    true};
  });
}

void add_vmq(Cli& cli) {
  CLI::App* vmqs =
      group(cli, "vmq", "a NIC's vmq: its own receive queue filter, the fast path", "switchctl vmq allocate vm1");
  CLI::App* allocate = named(cli, vmqs, "allocate", "give the NIC of port PORT a vmq", "port", "vmq allocated");
  CLI::App* release =
      named(cli, vmqs, "free", "return the vmq of port PORT's NIC; it stays on the software path", "port", "vmq freed");
  add_vmq_set(cli, vmqs);
  plain(cli,
        step(vmqs, "show", "every allocated vmq: its NIC, its filters in the classifier, its CPUs, what it received",
             "switchctl vmq show --json"),
        "vmq.show");
  cli.alloc_policy = allocate->add_option("--policy", cli.policy, "also set the NIC's vmq policy to auto")
                         ->check(CLI::IsMember({"auto"}));
  cli.free_policy = release->add_option("--policy", cli.policy, "also set the NIC's vmq policy to off")
                        ->check(CLI::IsMember({"off"}));
  cli.alloc_cpu = allocate->add_option("--cpu", cli.cpu, "the CPU its frames are processed on (default: spread)")
                      ->check(CLI::Range(0, 1023));
}

void add_apply(Cli& cli) {
  CLI::App* apply = step(&cli.app, "apply",
                         "move switchd to the configuration in FILE (TOML, see README), with only "
                         "the lifecycle steps needed, and print them",
                         "switchctl apply /etc/xvmq/switch.toml --dry-run");
  apply->add_option("FILE", cli.config_file, "the configuration file")->required();
  apply->add_flag("--dry-run", cli.dry_run, "print the steps, change nothing");
  apply->callback([&cli] {
    cli.call = Call{"config.apply", {{"source", cli.config_file}, {"dry_run", cli.dry_run}}, {}, {}, false};
  });
}

void add_config(Cli& cli) {
  CLI::App* config = group(cli, "config", "the running configuration as a file", "switchctl config show");
  plain(cli,
        step(config, "show", "the running configuration as TOML that switchctl apply takes", "switchctl config show"),
        "config.export");
}

void add_fdb(Cli& cli) {
  CLI::App* fdb = group(cli, "fdb", "the forwarding table: MACs learned behind the uplink, and the NICs' own",
                        "switchctl fdb show --json");
  plain(cli, step(fdb, "show", "every entry: MAC, VLAN, port, age", "switchctl fdb show"), "fdb.show");
  plain(cli, step(fdb, "flush", "forget the MACs learned behind the uplink", "switchctl fdb flush"), "fdb.flush", "fdb",
        "flushed");
  CLI::App* fdb_add = step(fdb, "add",
                           "a static entry: MAC on VLAN is behind port PORT's NIC (a container or nested "
                           "guest of that VM); the NIC may send from it",
                           "switchctl fdb add 02:00:00:00:10:01 --port vm1 --vlan 10");
  fdb_add->add_option("MAC", cli.fdb_mac, "the station's unicast MAC")->required()->transform(kMac);
  fdb_add->add_option("--port", cli.fdb_port, "the port whose NIC it is behind")->required()->check(kName);
  fdb_add->add_option("--vlan", cli.fdb_vlan, "one of the NIC's VLANs, 0..4094 (default 0)")
      ->check(CLI::Range(0, 4094));
  fdb_add->callback([&cli] {
    cli.call = Call{"fdb.add",
                    {{"mac", cli.fdb_mac}, {"vlan", cli.fdb_vlan}, {"port", cli.fdb_port}},
                    "fdb " + cli.fdb_mac + " vlan " + std::to_string(cli.fdb_vlan),
                    "added (port " + cli.fdb_port + ")",
                    true};
  });
  CLI::App* fdb_del = step(fdb, "del", "remove a static entry", "switchctl fdb del 02:00:00:00:10:01 --vlan 10");
  fdb_del->add_option("MAC", cli.fdb_mac, "the entry's MAC")->required()->transform(kMac);
  fdb_del->add_option("--vlan", cli.fdb_vlan, "the entry's VLAN (default 0)")->check(CLI::Range(0, 4094));
  fdb_del->callback([&cli] {
    cli.call = Call{"fdb.del",
                    {{"mac", cli.fdb_mac}, {"vlan", cli.fdb_vlan}},
                    "fdb " + cli.fdb_mac + " vlan " + std::to_string(cli.fdb_vlan),
                    "deleted",
                    true};
  });
}

void add_show(Cli& cli) {
  plain(cli, step(&cli.app, "show", "the uplink, the ports with their NICs, and the vmqs", "switchctl show"), "show");
}

void add_stats(Cli& cli) {
  CLI::App* stats = step(&cli.app, "stats", "counters per reason, vmq, port, receive queue, CPU and drop reason",
                         "switchctl stats --watch --interval 2");
  stats->add_flag("--watch", cli.watch,
                  "show rates per second every interval until interrupted (Ctrl-C); with "
                  "--json, one JSON object per interval");
  CLI::Option* interval_opt =
      stats->add_option("--interval", cli.interval, "seconds between --watch samples (0.1..3600, default 1)")
          ->check(CLI::Range(0.1, 3600.0));
  CLI::Option* count_opt = stats->add_option("--count", cli.watch_count, "with --watch: stop after N intervals")
                               ->check(CLI::Range(1, 1000000));
  interval_opt->needs("--watch");
  count_opt->needs("--watch");
  plain(cli, stats, "stats");
}

void add_events(Cli& cli) {
  CLI::App* events =
      step(&cli.app, "events", "the lifecycle steps switchd recorded, oldest first", "switchctl events --since 42");
  CLI::Option* since_opt =
      events->add_option("--since", cli.since, "only events with a sequence number above N")->check(kSeq);
  events->add_flag("--follow", cli.follow,
                   "then print new events as they happen, until interrupted (Ctrl-C); with "
                   "--json, one event object per line");
  events->footer("Example: switchctl events --since 42\n  switchctl events --follow --json");
  events->callback([&cli, since_opt] {
    cli.call = Call{"events", json::object(), {}, {}, false};
    if (since_opt->count()) cli.call->args["since"] = cli.since;
  });
}

// The commands, in the order of --help.
constexpr void (*kCommands[])(Cli&) = {add_uplink, add_port, add_nic,  add_vmq,   add_apply,
                                       add_config, add_fdb,  add_show, add_stats, add_events};

// apply: the file goes in the request (switchd may not be able to read it);
// 0, or exit code 2 when it cannot be read or is too large.
int read_config(Cli& cli) {
  std::ifstream in(cli.config_file);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) {
    std::fprintf(stderr, "switchctl: apply %s: cannot read it\n", cli.config_file.c_str());
    return 2;
  }
  if (text.str().size() > control::kMaxConfigBytes) {
    std::fprintf(stderr,
                 "switchctl: apply %s: the file is %zu bytes; switchd takes a configuration of at most %zu "
                 "(%zu KiB)\n",
                 cli.config_file.c_str(), text.str().size(), control::kMaxConfigBytes, control::kMaxConfigBytes >> 10);
    return 2;
  }
  cli.call->args["config"] = text.str();
  return 0;
}

// The connection, or the exit code (after saying why): 9 without
// permission, 1 when switchd cannot be reached.
std::variant<control::ControlClient, int> connect(const Cli& cli) {
  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(cli.timeout_s * 1000 + 0.5));
  auto client = control::ControlClient::connect(cli.socket, timeout);
  if (client) return std::move(client.value());
  int err = client.error().code;
  if (err == EACCES || err == EPERM) {
    std::fprintf(stderr, "switchctl: %s: switchctl needs root or switchd's group (switchd --group)\n",
                 client.error().message.c_str());
    return 9;
  }
  std::fprintf(stderr,
               "switchctl: cannot reach switchd: %s; is switchd running? Start it, or point --socket "
               "or XVMQ_SOCKET at its socket\n",
               client.error().message.c_str());
  return 1;
}

void print_result(const Cli& cli, const json& result) {
  const std::string& op = cli.call->op;
  if (cli.raw_json)
    std::printf("%s\n", result.dump(2).c_str());
  else if (op == "show")
    switchctl::print_show(result);
  else if (op == "stats")
    switchctl::print_stats(result);
  else if (op == "events")
    switchctl::print_events(result);
  else if (op == "fdb.show")
    switchctl::print_fdb(result);
  else if (op == "vmq.show")
    switchctl::print_vmqs(result);
  else if (op == "config.apply")
    print_steps(result, cli.dry_run);
  else if (op == "config.export")
    std::printf("%s", result.value("config", "").c_str());
  else
    std::printf("%s\n", switchctl::summary(cli.call->object, cli.call->done, result, cli.call->say_done).c_str());
}

// One request and its answer.
int call_once(const Cli& cli, control::ControlClient& client) {
  auto response = client.call(cli.call->op, cli.call->args);
  if (!response) return unreachable(cli.call->op, cli.socket, response.error());
  if (refused_as_full(*response)) return full(cli.socket, *response);
  if (!response->ok) {
    const std::string& m = response->message;
    const std::string& op = cli.call->op;
    std::string prefix = m.starts_with(op + ":") || m.starts_with(op + " ") ? "" : op + ": ";
    std::fprintf(stderr, "switchctl: %s%s (%s)\n", prefix.c_str(), m.c_str(), response->kind.c_str());
    return exit_code(response->kind);
  }
  print_result(cli, response->result);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Cli cli;
  add_global_options(cli);
  for (auto add : kCommands) add(cli);
  if (auto rc = xvmq::cli::parse(cli.app, argc, argv, "switchctl")) return *rc;
  if (!cli.call) return 2;  // require_subcommand makes this unreachable
  if (cli.alloc_policy->count() || cli.free_policy->count()) cli.call->args["policy"] = cli.policy;
  if (cli.alloc_cpu->count()) cli.call->args["cpu"] = cli.cpu;
  if (cli.call->op == "config.apply")
    if (int rc = read_config(cli)) return rc;
  auto connected = connect(cli);
  if (auto* rc = std::get_if<int>(&connected)) return *rc;
  auto& client = std::get<control::ControlClient>(connected);
  if (cli.watch) return watch_stats(client, cli.socket, cli.interval, cli.watch_count, cli.raw_json);
  if (cli.follow) return follow_events(client, cli.socket, cli.call->args, cli.raw_json);
  return call_once(cli, client);
}
