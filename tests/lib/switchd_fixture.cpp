#include "tests/lib/switchd_fixture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace xvmq::test {

using namespace std::chrono_literals;
using xvmq::control::ControlClient;
using xvmq::control::Response;
namespace fs = std::filesystem;

namespace {
constexpr const char* kPinRoot = "/sys/fs/bpf/xvmq";
}

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int cpu_count() {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
}

json last_json(const std::string& out) {
  std::istringstream in(out);
  std::string line;
  json j;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') j = json::parse(line, nullptr, false);
  return j;
}

uint64_t u64(const json& j, std::initializer_list<const char*> path) {
  const json* p = &j;
  for (const char* k : path) {
    if (!p->is_object() || !p->contains(k)) return 0;
    p = &(*p)[k];
  }
  return p->is_number_unsigned() ? p->get<uint64_t>() : 0;
}

std::string Bg::text(std::chrono::seconds limit) {
  if (out.wait_for(limit) != std::future_status::ready) {
    ADD_FAILURE() << "still running after " << limit.count() << " s: " << cmd;
    return "";
  }
  return out.get();
}

json Bg::wait(std::chrono::seconds limit) {
  if (out.wait_for(limit) != std::future_status::ready) {
    ADD_FAILURE() << "still running after " << limit.count() << " s: " << cmd;
    return nullptr;
  }
  std::string t = out.get();
  json j = last_json(t);
  if (!j.is_object()) ADD_FAILURE() << "no JSON from: " << cmd << "\n" << t;
  return j;
}

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// setpriv's spelling of a capability set: -all,+bpf,+net_admin
std::string setpriv_caps(const std::vector<std::string>& caps) {
  std::string out = "-all";
  for (const auto& c : caps) out += ",+" + lower(c.substr(4));
  return out;
}

// prlimit's spelling of a systemd limit: infinity, or a number with K, M, G.
std::string prlimit_value(const std::string& v) {
  if (v == "infinity") return "unlimited";
  uint64_t n = std::strtoull(v.c_str(), nullptr, 10);
  switch (v.empty() ? ' ' : v.back()) {
    case 'K':
      n <<= 10;
      break;
    case 'M':
      n <<= 20;
      break;
    case 'G':
      n <<= 30;
      break;
    default:
      break;
  }
  return std::to_string(n);
}

}  // namespace

namespace {

// The [Service] settings of one unit file or drop-in that the fixture applies.
void read_unit(const std::string& unit, UnitPrivileges* u) {
  std::ifstream in(unit);
  EXPECT_TRUE(in.good()) << "cannot read " << unit;
  std::string line, section;
  while (std::getline(in, line)) {
    while (!line.empty() && line.back() == '\\') {  // continuation
      std::string next;
      if (!std::getline(in, next)) break;
      line = line.substr(0, line.size() - 1) + " " + next;
    }
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      section = line;
      continue;
    }
    if (section != "[Service]") continue;
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    // Lists add up over lines and drop-ins; an empty assignment resets one.
    auto caps = [&](std::vector<std::string>* set) {
      if (value.empty()) set->clear();
      EXPECT_TRUE(value.empty() || value[0] != '~') << unit << ": " << key << "=~ (a deny list) is not read here";
      for (const auto& w : words(value)) set->push_back(w);
    };
    if (key == "CapabilityBoundingSet")
      caps(&u->bounding);
    else if (key == "AmbientCapabilities")
      caps(&u->ambient);
    else if (key == "NoNewPrivileges")
      u->no_new_privileges = value == "yes" || value == "true" || value == "1";
    else if (key == "LimitMEMLOCK")
      u->memlock = value;
    else if (key == "LimitRTPRIO")
      u->rtprio = value;
  }
}

}  // namespace

UnitPrivileges unit_privileges(const std::vector<std::string>& files) {
  UnitPrivileges u;
  for (const auto& f : files) read_unit(f, &u);
  return u;
}

uint64_t capability_mask(const std::vector<std::string>& names) {
  // linux/capability.h, 0 to CAP_LAST_CAP.
  static const char* const kNames[] = {"CAP_CHOWN",
                                       "CAP_DAC_OVERRIDE",
                                       "CAP_DAC_READ_SEARCH",
                                       "CAP_FOWNER",
                                       "CAP_FSETID",
                                       "CAP_KILL",
                                       "CAP_SETGID",
                                       "CAP_SETUID",
                                       "CAP_SETPCAP",
                                       "CAP_LINUX_IMMUTABLE",
                                       "CAP_NET_BIND_SERVICE",
                                       "CAP_NET_BROADCAST",
                                       "CAP_NET_ADMIN",
                                       "CAP_NET_RAW",
                                       "CAP_IPC_LOCK",
                                       "CAP_IPC_OWNER",
                                       "CAP_SYS_MODULE",
                                       "CAP_SYS_RAWIO",
                                       "CAP_SYS_CHROOT",
                                       "CAP_SYS_PTRACE",
                                       "CAP_SYS_PACCT",
                                       "CAP_SYS_ADMIN",
                                       "CAP_SYS_BOOT",
                                       "CAP_SYS_NICE",
                                       "CAP_SYS_RESOURCE",
                                       "CAP_SYS_TIME",
                                       "CAP_SYS_TTY_CONFIG",
                                       "CAP_MKNOD",
                                       "CAP_LEASE",
                                       "CAP_AUDIT_WRITE",
                                       "CAP_AUDIT_CONTROL",
                                       "CAP_SETFCAP",
                                       "CAP_MAC_OVERRIDE",
                                       "CAP_MAC_ADMIN",
                                       "CAP_SYSLOG",
                                       "CAP_WAKE_ALARM",
                                       "CAP_BLOCK_SUSPEND",
                                       "CAP_AUDIT_READ",
                                       "CAP_PERFMON",
                                       "CAP_BPF",
                                       "CAP_CHECKPOINT_RESTORE"};
  uint64_t mask = 0;
  for (const auto& n : names) {
    auto it = std::find(std::begin(kNames), std::end(kNames), n);
    if (it == std::end(kNames))
      ADD_FAILURE() << "unknown capability " << n;
    else
      mask |= uint64_t{1} << (it - std::begin(kNames));
  }
  return mask;
}

std::vector<std::string> unit_launcher(const UnitPrivileges& u) {
  std::vector<std::string> cmd;
  // Raising a hard limit needs CAP_SYS_RESOURCE, which systemd has and a
  // container may not (then the limit stays as it is: see the README).
  static const bool can_raise = [] {
    if (sh("/usr/bin/prlimit --memlock=unlimited:unlimited true") == 0) return true;
    std::fprintf(stderr,
                 "switchd_fixture: cannot raise resource limits here (no CAP_SYS_RESOURCE): switchd runs "
                 "with this process's LimitMEMLOCK and LimitRTPRIO\n");
    return false;
  }();
  if (can_raise && (!u.memlock.empty() || !u.rtprio.empty())) {
    cmd.push_back("/usr/bin/prlimit");
    if (!u.memlock.empty()) cmd.push_back("--memlock=" + prlimit_value(u.memlock) + ":" + prlimit_value(u.memlock));
    if (!u.rtprio.empty()) cmd.push_back("--rtprio=" + u.rtprio + ":" + u.rtprio);
  }
  // As root (no User=), the bounding set is what switchd keeps; the
  // inheritable and ambient sets follow AmbientCapabilities= as systemd sets them.
  cmd.insert(cmd.end(), {"/usr/bin/setpriv", "--bounding-set", setpriv_caps(u.bounding), "--inh-caps",
                         setpriv_caps(u.ambient), "--ambient-caps", setpriv_caps(u.ambient)});
  if (u.no_new_privileges) cmd.push_back("--no-new-privs");
  // switchd dies with the test: a test killed mid-run (a timeout, a crash)
  // leaves no daemon holding its namespaces' XDP programs and sockets.
  cmd.insert(cmd.end(), {"--pdeathsig", "KILL", "--"});
  return cmd;
}

Bg background(const std::string& cmd) {
  return Bg{cmd, std::async(std::launch::async, [cmd] {
              std::string out;
              sh(cmd, &out);
              return out;
            })};
}

void SwitchdFixture::SetUp() {
  XVMQ_REQUIRE_PRIVILEGES();
  active_ = true;
  // Named namespaces leave a file in the shared /run/netns: unique names.
  prefix_ = prefix_tag_ + std::to_string(getpid()) + "-";
  char tmpl[] = "/tmp/xvmq-switchd-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  dir_ = tmpl;
  sock_ = dir_ + "/switchd.sock";
  log_ = dir_ + "/switchd.log";
  sh("rm -rf " + std::string(kPinRoot));
  ASSERT_TRUE(sh_ok("mkdir -p " + std::string(kPinRoot)));

  std::vector<std::string> names{"ext"};
  for (int i = 1; i <= vm_count_; i++) names.push_back(vm(i));
  for (const auto& n : names) {
    ASSERT_TRUE(sh_ok("ip netns add " + ns(n)));
    made_ns_.push_back(n);
    ASSERT_TRUE(sh_ok(in(n, "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")));
    ASSERT_TRUE(sh_ok("ip -n " + ns(n) + " link set lo up"));
  }
  ASSERT_TRUE(sh_ok("ip link add up0 numrxqueues 2 numtxqueues 2 type veth peer name ext0 netns " + ns("ext") +
                    " numrxqueues 2 numtxqueues 2"));
  ASSERT_TRUE(sh_ok("ip link set up0 up && ip -n " + ns("ext") + " link set ext0 up"));
  if (!offloads().empty()) {
    ASSERT_TRUE(sh_ok(in("ext", "ethtool -K ext0 " + offloads())));
  }
  for (int i = 1; i <= vm_count_; i++) {
    const std::string q = std::to_string(vm_queues_);
    ASSERT_TRUE(sh_ok("ip link add " + vm(i) + "-host numrxqueues " + q + " numtxqueues " + q +
                      " type veth peer name eth0 netns " + ns(vm(i)) + " address " + mac_of(i) + " numrxqueues " + q +
                      " numtxqueues " + q));
    ASSERT_TRUE(sh_ok("ip link set " + vm(i) + "-host up && ip -n " + ns(vm(i)) + " link set eth0 up"));
    if (!offloads().empty()) {
      ASSERT_TRUE(sh_ok(in(vm(i), "ethtool -K eth0 " + offloads())));
    }
  }
  ASSERT_NO_FATAL_FAILURE(start_switchd());
}

std::string SwitchdFixture::offloads() const {
  if (offloads_off_) return std::string("tx off gso off tso off gro ") + (vm_gro_ ? "on" : "off");
  return vm_gro_ ? "gro on" : "";
}

void SwitchdFixture::TearDown() {
  if (!active_) return;
  stop_switchd(SIGTERM);
  // Whatever a test left running in its namespaces (a server, a sender): by
  // process id, each of them started by this test.
  for (const auto& n : made_ns_) {
    std::string pids;
    sh("ip netns pids " + ns(n), &pids);
    std::istringstream s(pids);
    for (pid_t p; s >> p;)
      if (p > 1 && p != getpid()) kill(p, SIGKILL);
  }
  sh("ip link del up0");
  for (int i = 1; i <= vm_count_; i++) sh("ip link del " + vm(i) + "-host");
  for (const auto& n : made_ns_) sh("ip netns del " + ns(n));
  check_log();
  if (HasFailure()) std::fprintf(stderr, "---- switchd log (%s)\n%s----\n", log_.c_str(), slurp(log_).c_str());
  sh("rm -rf " + std::string(kPinRoot));
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void SwitchdFixture::start_switchd() {
  std::vector<std::string> extra;
  if (cpu_count() >= 2) extra = {"--queue-cpus", "0:0,1:1"};
  extra.insert(extra.end(), switchd_extra_.begin(), switchd_extra_.end());
  ASSERT_NO_FATAL_FAILURE(spawn_switchd(extra));
  ASSERT_NO_FATAL_FAILURE(wait_ready());
}

void SwitchdFixture::spawn_switchd(const std::vector<std::string>& extra, const std::vector<std::string>& env) {
  std::vector<std::string> units{XVMQ_UNIT_FILE};
  units.insert(units.end(), unit_dropins_.begin(), unit_dropins_.end());
  std::vector<std::string> args = unit_launcher(unit_privileges(units));
  args.insert(args.end(), {SWITCHD_PATH, "--socket", sock_, "--state-dir", dir_ + "/state", "--pin-root", kPinRoot,
                           "--max-vmqs", std::to_string(max_vmqs_)});
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // This process's environment, less the variables `env` sets again.
  std::vector<std::string> env_s = env;
  for (char** e = environ; *e; e++) {
    std::string var(*e);
    bool replaced = false;
    for (const auto& v : env) replaced |= var.substr(0, var.find('=') + 1) == v.substr(0, v.find('=') + 1);
    if (!replaced) env_s.push_back(var);
  }
  std::vector<char*> envp;
  for (auto& v : env_s) envp.push_back(v.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ASSERT_EQ(rc, 0) << "spawn " << argv[0] << ": " << strerror(rc);
}

void SwitchdFixture::wait_ready() {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      FAIL() << "switchd exited (status " << status << ") before its socket was ready";
    }
    if (auto c = ControlClient::connect(sock_, 10s)) {
      ctl_.emplace(std::move(c.value()));
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  FAIL() << "switchd's socket " << sock_ << " not ready after 10 s";
}

void SwitchdFixture::stop_switchd(int sig) {
  ctl_.reset();
  if (pid_ <= 0) return;
  kill(pid_, sig);
  for (int i = 0; i < 500; i++) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  ADD_FAILURE() << "switchd did not stop on signal " << sig << " within 5 s";
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

bool SwitchdFixture::switchd_alive() { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }

void SwitchdFixture::check_log() {
  std::istringstream in(slurp(log_));
  std::string line;
  while (std::getline(in, line)) {
    std::string low = lower(line);
    if (low.find("error") == std::string::npos && low.find("failed") == std::string::npos) continue;
    bool expected = false;
    for (const auto& e : expected_log_) expected |= line.find(e) != std::string::npos;
    if (!expected) ADD_FAILURE() << "unexpected switchd log line: " << line;
  }
}

Response SwitchdFixture::request(const std::string& op, const json& args) {
  if (!ctl_) {
    ADD_FAILURE() << op << ": not connected to switchd";
    return {};
  }
  auto r = ctl_->call(op, args);
  if (!r) {
    ADD_FAILURE() << op << ": transport: " << r.error().message;
    return {};
  }
  return r.value();
}

json SwitchdFixture::call(const std::string& op, const json& args) {
  Response r = request(op, args);
  if (!r.ok) ADD_FAILURE() << op << " " << args.dump() << " refused: " << r.kind << ": " << r.message;
  return r.result;
}

void SwitchdFixture::expect_refused(const std::string& op, const json& args, const std::string& kind,
                                    std::initializer_list<std::string> words) {
  SCOPED_TRACE(op + " " + args.dump());
  // The switch's state, less the host netdev's packet counters: the
  // kernel may send on it (IPv6 ND, ARP) between the two looks.
  auto state = [&] {
    json s = call("show");
    if (s.contains("uplink") && s["uplink"].is_object() && s["uplink"].contains("host") &&
        s["uplink"]["host"].is_object())
      s["uplink"]["host"].erase("netdev_stats");
    return s;
  };
  json before = state();
  Response r = request(op, args);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.kind, kind) << r.message;
  for (const auto& w : words) EXPECT_NE(r.message.find(w), std::string::npos) << "'" << w << "' not in: " << r.message;
  EXPECT_EQ(state(), before);
}

json SwitchdFixture::add_vm(int i, const std::string& vmq, const std::string& steering) {
  call("port.create", {{"name", vm(i)}});
  json nic{{"port", vm(i)}, {"mac", mac_of(i)}, {"backend", vm(i) + "-host"}, {"vmq", vmq}};
  if (!steering.empty()) nic["steering"] = steering;
  if (!delivery_.empty() && vmq != "off") nic["delivery"] = delivery_;
  call("nic.create", nic);
  return call("nic.connect", {{"port", vm(i)}});
}

json SwitchdFixture::nic_of(const json& show, const std::string& port) {
  for (const auto& p : show["ports"])
    if (p["name"] == port) return p["nic"];
  return nullptr;
}

std::optional<xvmq_vmq_conf> SwitchdFixture::vmq_conf(uint32_t vmq) {
  const std::string path = std::string(kPinRoot) + "/up0/" + XVMQ_MAP_VMQS;
  const int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    ADD_FAILURE() << "open " << path << ": " << strerror(errno);
    return std::nullopt;
  }
  xvmq_vmq_conf c{};
  const bool ok = bpf_map_lookup_elem(fd, &vmq, &c) == 0;
  if (!ok) ADD_FAILURE() << "look up vmq " << vmq << " in " << path << ": " << strerror(errno);
  close(fd);
  return ok ? std::optional(c) : std::nullopt;
}

namespace {

// The map of an XDP program named `name` (as the kernel keeps it: 15 characters), or -1.
int prog_map_fd(int prog_fd, const std::string& name) {
  uint32_t ids[64] = {};
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  info.nr_map_ids = 64;
  info.map_ids = reinterpret_cast<uint64_t>(ids);
  if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) return -1;
  for (uint32_t i = 0; i < std::min<uint32_t>(info.nr_map_ids, 64); i++) {
    const int fd = bpf_map_get_fd_by_id(ids[i]);
    if (fd < 0) continue;
    bpf_map_info mi{};
    uint32_t ml = sizeof(mi);
    if (bpf_obj_get_info_by_fd(fd, &mi, &ml) == 0 && name.substr(0, BPF_OBJ_NAME_LEN - 1) == mi.name) return fd;
    close(fd);
  }
  return -1;
}

}  // namespace

std::array<uint64_t, XVMQ_PORT_COUNT> SwitchdFixture::vmport_counts(const std::string& backend) {
  std::array<uint64_t, XVMQ_PORT_COUNT> out{};
  const int ifindex = static_cast<int>(if_nametoindex(backend.c_str()));
  uint32_t prog_id = 0;
  if (!ifindex || bpf_xdp_query_id(ifindex, 0, &prog_id) != 0 || !prog_id) return out;
  const int prog_fd = bpf_prog_get_fd_by_id(prog_id);
  if (prog_fd < 0) return out;
  const int fd = prog_map_fd(prog_fd, "xvmq_port_counts");
  close(prog_fd);
  if (fd < 0) {
    ADD_FAILURE() << backend << ": its XDP program (id " << prog_id << ") has no xvmq_port_counts";
    return out;
  }
  std::vector<xvmq_counter> per(static_cast<size_t>(std::max(libbpf_num_possible_cpus(), 1)));
  for (uint32_t k = 0; k < XVMQ_PORT_COUNT; k++)
    if (bpf_map_lookup_elem(fd, &k, per.data()) == 0)
      for (const auto& c : per) out[k] += c.frames;
  close(fd);
  return out;
}

void SwitchdFixture::require_delivery(const std::string& port, const std::string& want) {
  SCOPED_TRACE("nic " + port + ", want delivery " + want);
  const json nic = nic_of(call("show"), port);
  ASSERT_TRUE(nic.is_object()) << "no NIC on port " << port;
  ASSERT_EQ(nic.value("state", ""), "connected") << nic.dump();
  ASSERT_TRUE(nic["vmq"].is_number_unsigned()) << "no vmq: " << nic.dump();
  if (nic.contains("delivery")) {
    ASSERT_EQ(nic["delivery"], want) << "why: " << nic.value("delivery_why", "?") << "\n" << nic.dump();
  }
  const auto conf = vmq_conf(nic["vmq"].get<uint32_t>());
  ASSERT_TRUE(conf.has_value());
  ASSERT_EQ((conf->flags & XVMQ_VMQ_F_KERNEL) != 0, want == "kernel")
      << "the classifier's conf of vmq " << nic["vmq"] << ": flags " << conf->flags << ", cpu " << conf->cpu;
}

Bg SwitchdFixture::receive(int v, int seconds, const std::string& extra) {
  std::string ready = dir_ + "/ready-" + std::to_string(v) + "-" + std::to_string(next_ready_++);
  Bg b = background(in(vm(v), std::string(FRAME_TOOL) + " recv --dev eth0 --seconds " + std::to_string(seconds) +
                                  " --ready " + ready + " " + extra));
  for (int i = 0; i < 500 && !fs::exists(ready); i++) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(fs::exists(ready)) << "receiver in vm" << v << " not ready";
  return b;
}

uint64_t SwitchdFixture::netdev_stat(const std::string& where, const std::string& dev, const std::string& stat) {
  std::string path = "/sys/class/net/" + dev + "/statistics/" + stat, out;
  sh(where.empty() ? "cat " + path : in(where, "cat " + path), &out);
  return std::strtoull(out.c_str(), nullptr, 10);
}

void SwitchdFixture::expect_pools_idle() {
  json st;
  for (int i = 0; i < 100; i++) {
    st = call("stats");
    bool idle = !st["queues"].empty();
    for (const auto& q : st["queues"]) {
      const json& b = q["buffers"];
      idle &= b["free"].get<uint64_t>() + b["in_fill"].get<uint64_t>() == b["total"].get<uint64_t>() &&
              b["in_flight"].get<uint64_t>() == 0;
    }
    if (idle) return;
    std::this_thread::sleep_for(10ms);
  }
  ADD_FAILURE() << "buffer pools not idle after 1 s: " << st["queues"].dump();
}

void SwitchdFixture::transfer_with_guest(const std::function<std::string(const std::string&)>& guest,
                                         const std::string& guest_ip, const std::string& ext_ip, int kib_n,
                                         const std::string& what) {
  SCOPED_TRACE(what);
  const std::string kib = std::to_string(kib_n);
  // ext -> guest: the guest listens, ext sends a file and closes.
  const std::string file = dir_ + "/to-guest";
  ASSERT_TRUE(sh_ok("head -c " + std::to_string(kib_n * 1024) + " /dev/urandom > " + file));
  std::string sum;
  sh("sha256sum " + file + " | cut -d' ' -f1", &sum);
  // Listening before ext connects: a guest under TCG on a busy host is slow to start nc.
  guest("rm -f /tmp/rx; nc -l -p 5001 > /tmp/rx & "
        "for i in $(seq 100); do netstat -ltn | grep -q ':5001 ' && break; sleep 0.1; done; "
        "netstat -ltn | grep -q ':5001 '");
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(sh_ok(in("ext", "/usr/bin/python3 -c \"import socket,sys; s=socket.create_connection(('" +
                                  guest_ip + "',5001),timeout=20); s.sendall(open('" + file +
                                  "','rb').read()); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()\"")));
  const std::string got = guest(
      "for i in $(seq 100); do pidof nc >/dev/null || break; sleep 0.1; done; sha256sum /tmp/rx | cut -d' ' -f1");
  const double in_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(got, sum) << "ext -> guest, " << kib << " KiB";

  // guest -> ext: ext listens and hashes what came until EOF.
  Bg server = background(
      in("ext", "/usr/bin/python3 -c \"import socket,hashlib,json; l=socket.create_server(('" + ext_ip +
                    "',5002)); l.settimeout(30); c,_=l.accept(); c.settimeout(30); h=hashlib.sha256(); n=0\n"
                    "while True:\n  b=c.recv(65536)\n  if not b: break\n  h.update(b); n+=len(b)\n"
                    "c.close(); print(json.dumps({'bytes':n,'sha256':h.hexdigest()}))\""));
  // Listening before the guest connects.
  for (int i = 0; i < 100 && sh(in("ext", "ss -Hltn 'sport = :5002' | grep -q 5002")) != 0; i++)
    std::this_thread::sleep_for(100ms);
  const std::string want =
      guest("dd if=/dev/urandom of=/tmp/tx bs=1024 count=" + kib + " 2>/dev/null; sha256sum /tmp/tx | cut -d' ' -f1");
  const auto t1 = std::chrono::steady_clock::now();
  guest("nc " + ext_ip + " 5002 < /tmp/tx");
  const json r = server.wait(40s);
  const double out_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  EXPECT_EQ(u64(r, {"bytes"}), static_cast<uint64_t>(kib_n) * 1024) << r.dump();
  EXPECT_EQ(r.value("sha256", "") + "\n", want) << "guest -> ext";
  std::printf("[ tcp      ] %s: %d KiB in %.2f s into the guest, %.2f s out of it, SHA-256 equal\n", what.c_str(),
              kib_n, in_s, out_s);
}

}  // namespace xvmq::test
