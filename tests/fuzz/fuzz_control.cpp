// Fuzz target: request lines of the control protocol (docs/protocol.md),
// answered as switchd answers them (control::answer over Switch::handle),
// the switch on an in-memory datapath (tests/lib/fake_datapath.h).
//
// The input is one or more lines; each gets its response, checked:
//   - one JSON line: {"v": 1, "id", "ok", "result" | "error"}, the request's
//     id echoed, an error kind of the protocol, no exception escaped a
//     handler (the server logs those: a bug);
//   - a refused request changes nothing (show, config.export, fdb.show);
// and at the end the switch, restarted from its state file, exports the
// same configuration.
//
// The switch's host-port code calls rtnetlink for real: the target runs in
// its own network and mount namespaces (made in LLVMFuzzerInitialize, or it
// refuses to run), with the netdevs the docs' examples name. Each input
// starts from a fresh switch and state directory.
//
// A line deeper or larger than control::Limits is refused (usage, id null)
// before it is parsed, so that no recursion grows with the input: checked
// here too, on lines up to -max_len (each input runs on a 1 MiB stack, so
// recursion that the shape check missed overflows early). XVMQ_FUZZ_VERBOSE=1
// prints every request and its response.
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <string_view>

#include "control/control.h"
#include "switchd/app/control_handler.h"
#include "switchd/host/netlink.h"
#include "switchd/host/service.h"
#include "tests/lib/fake_datapath.h"

using namespace xvmq;
using namespace xvmq::switchd;
using nlohmann::json;

namespace {

std::string g_state_dir;
std::set<std::string> g_links;  // the namespace's netdevs after setup
bool g_verbose = false;         // XVMQ_FUZZ_VERBOSE=1: every request and response on stderr

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "fuzz_control: %s\n", why.c_str());
  std::abort();
}

void check(bool ok, const std::string& what, std::string_view line, const std::string& response) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_control: invariant broken: %s\n  request:  %.*s\n  response: %s\n", what.c_str(),
               static_cast<int>(std::min<size_t>(line.size(), 2000)), line.data(), response.c_str());
  std::abort();
}

std::set<std::string> links() {
  std::set<std::string> out;
  if (struct if_nameindex* ni = if_nameindex()) {
    for (auto* i = ni; i->if_index; i++) out.insert(i->if_name);
    if_freenameindex(ni);
  }
  return out;
}

void private_namespaces() {
  if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0)
    die(std::string("unshare(CLONE_NEWNET|CLONE_NEWNS): ") + std::strerror(errno) +
        "; refusing to run outside a private network namespace (run as root)");
  if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    die(std::string("make / private: ") + std::strerror(errno));
  // This namespace's netdevs in /sys/class/net (the switch reads a few there).
  if (mount("sysfs", "/sys", "sysfs", 0, nullptr) != 0) die(std::string("mount sysfs: ") + std::strerror(errno));
  std::ofstream("/proc/sys/net/ipv6/conf/all/disable_ipv6") << 1;
  std::ofstream("/proc/sys/net/ipv6/conf/default/disable_ipv6") << 1;
  // The uplinks and backends of docs/protocol.md and tools/examples/switch.toml.
  uint8_t n = 1;
  for (const char* dev : {"up0", "eth1", "vm1-host", "vm2-host", "vm3-host", "vm4-host"}) {
    Mac mac{0x02, 0xfe, 0, 0, 0, n++};
    if (auto st = netlink::create_veth(dev, std::string(dev).substr(0, 9) + "-p", 2, mac); !st)
      die("create veth " + std::string(dev) + ": " + st.error().message);
    (void)netlink::set_up(dev, true);
  }
  (void)netlink::set_up("lo", true);
}

// What a refused request must leave as it was.
json observed(Switch& sw) {
  json out = json::array();
  for (const char* op : {"show", "config.export", "fdb.show"}) {
    try {
      out.push_back(sw.handle(op, json::object()));
    } catch (const Refused& r) {
      out.push_back(r.error.message);
    }
  }
  return out;
}

std::unique_ptr<Switch> start_switch() {
  SwitchOptions o;
  o.state_dir = g_state_dir;
  o.open_datapath = test::FakeDatapath::factory();
  o.datapath.fdb_size = 64;  // nothing is learned here; fdb.show walks every slot
  auto sw = Switch::start(o);
  if (!sw) die("start the switch: " + sw.error().message);
  return std::move(sw.value());
}

// Back to the namespace as set up: netdevs a host port made go.
void reset_links() {
  for (const auto& dev : links())
    if (!g_links.count(dev)) (void)netlink::delete_link(dev);
}

void answer_line(Switch& sw, std::string_view line) {
  const json before = observed(sw);
  const bool bad_shape = !control::check_shape(line).empty();
  bool close = false;
  control::Handler handler = [&](const std::string& op, const json& args) { return handle_control(sw, op, args); };
  // The server logs exactly the exceptions that escaped a handler (a bug);
  // the response's text cannot tell them apart, since it echoes the op.
  std::string escaped;
  const std::string response =
      control::answer(handler, line, close, [&](const std::string& what) { escaped += what + "\n"; });
  if (g_verbose) std::fprintf(stderr, "> %.*s\n< %s", static_cast<int>(line.size()), line.data(), response.c_str());

  check(!response.empty() && response.back() == '\n' && response.find('\n') == response.size() - 1, "one response line",
        line, response);
  json r = json::parse(response, nullptr, false);
  check(r.is_object() && r.value("v", json()) == control::kProtocolVersion && r.contains("id") && r.contains("ok") &&
            r["ok"].is_boolean(),
        "response has v, id and ok", line, response);
  if (bad_shape) {  // refused before parsing: nothing known of the request
    check(r["id"].is_null() && !r["ok"].get<bool>() && !close && r.contains("error") &&
              r["error"].value("kind", json()) == "usage",
          "a line past the limits refused (usage, id null) without closing", line, response);
    check(observed(sw) == before, "a line past the limits changes nothing", line, response);
    return;
  }
  json req = json::parse(line, nullptr, false);
  json id = req.is_object() && req.contains("id") && req["id"].is_number_integer() ? req["id"] : json();
  check(r["id"] == id, "the request's id echoed", line, response);
  check(close == req.is_discarded(), "close exactly when the line is not JSON", line, response);
  if (r["ok"].get<bool>()) {
    check(r.contains("result") && r["result"].is_object(), "ok has an object result", line, response);
    return;
  }
  check(r.contains("error") && r["error"].is_object() && r["error"].value("kind", json()).is_string() &&
            r["error"].value("message", json()).is_string(),
        "an error has kind and message", line, response);
  const std::string kind = r["error"]["kind"];
  const std::string message = r["error"]["message"];
  check(control::parse_error_kind(kind).has_value(), "a known error kind", line, response);
  check(escaped.empty(), "no internal error (an exception escaped a handler): " + escaped, line, response);
  // A refused request changes nothing; a failed config.apply whose undo
  // failed too says so and is the one exception.
  if (message.find("between the two configurations") == std::string::npos)
    check(observed(sw) == before, "a refused request changes nothing", line, response);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  private_namespaces();
  g_links = links();
  char tmpl[] = "/dev/shm/xvmq-fuzz-control.XXXXXX";
  char tmpl_tmp[] = "/tmp/xvmq-fuzz-control.XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (!dir) dir = mkdtemp(tmpl_tmp);
  if (!dir) die(std::string("mkdtemp: ") + std::strerror(errno));
  g_state_dir = dir;
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(g_state_dir, ec);
  });
  g_verbose = std::getenv("XVMQ_FUZZ_VERBOSE") != nullptr;
  service::init_log(static_cast<service::Level>(0));  // nothing: the switch's logs are noise here
  return 0;
}

namespace {

void run(std::string_view input) {
  std::error_code ec;
  std::filesystem::remove(g_state_dir + "/state.json", ec);
  {
    auto sw = start_switch();
    while (!input.empty()) {
      size_t nl = input.find('\n');
      std::string_view line = input.substr(0, nl);
      input.remove_prefix(nl == std::string_view::npos ? input.size() : nl + 1);
      answer_line(*sw, line);
    }
    // What was saved is what runs: a restarted switch exports the same.
    const json exported = sw->handle("config.export", json::object());
    sw.reset();
    auto again = start_switch();
    const json restored = again->handle("config.export", json::object());
    if (restored != exported) {
      std::fprintf(stderr,
                   "fuzz_control: invariant broken: restart changed the configuration\n--- before\n%s\n--- after\n%s\n",
                   exported["config"].get<std::string>().c_str(), restored["config"].get<std::string>().c_str());
      std::abort();
    }
  }
  reset_links();
}

}  // namespace

// Each input runs on a thread with a 1 MiB stack, an eighth of the control
// server thread's: recursion that grows with the input's nesting overflows
// at a depth a fuzzer reaches within -max_len, instead of only past 16,000
// levels (32 KB of brackets), which it practically never builds.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 1 << 20);
  pthread_t thread;
  auto job = [](void* p) -> void* {
    run(*static_cast<std::string_view*>(p));
    return nullptr;
  };
  if (int err = pthread_create(&thread, &attr, job, &input); err != 0)
    die(std::string("pthread_create: ") + std::strerror(err));
  pthread_attr_destroy(&attr);
  pthread_join(thread, nullptr);
  return 0;
}
