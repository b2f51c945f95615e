// The operator's side of switchd, on the real kernel: the built switchctl
// binary against the built switchd (fixture: tests/lib/switchd_fixture.h), with
// real frames from ext to the VMs; the Prometheus endpoint scraped over TCP
// and compared with `switchctl stats --json`; the sd_notify protocol
// through a datagram socket of the test's own; invalid input and its exit
// codes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "loader/classifier.h"
#include "tests/lib/switchd_fixture.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;

constexpr const char* kPinRoot = "/sys/fs/bpf/xvmq";
constexpr int kMetricsPort = 9417;  // on the loopback of this test's own network namespace

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

// GET path from 127.0.0.1:port over a plain TCP socket: the body, or
// nullopt with *err set when nothing listens or the answer is not 200.
std::optional<std::string> http_get(int port, const std::string& path, std::string* err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    *err = std::string("connect: ") + strerror(errno);
    close(fd);
    return std::nullopt;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string resp;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) resp.append(buf, static_cast<size_t>(n));
  close(fd);
  auto end = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.1 200", 0) != 0 || end == std::string::npos) {
    *err = "answer: " + resp.substr(0, 200);
    return std::nullopt;
  }
  return resp.substr(end + 4);
}

// One sample of the text format: name, labels, value.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> type, help;
};

Exposition parse_exposition(const std::string& body) {
  Exposition e;
  static const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$)");
  static const std::regex label(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?)re");
  for (const auto& l : lines_of(body)) {
    std::smatch m;
    if (l.rfind("# TYPE ", 0) == 0) {
      auto sp = l.find(' ', 7);
      e.type[l.substr(7, sp - 7)] = l.substr(sp + 1);
    } else if (l.rfind("# HELP ", 0) == 0) {
      auto sp = l.find(' ', 7);
      e.help[l.substr(7, sp - 7)] = l.substr(sp + 1);
    } else if (std::regex_match(l, m, sample)) {
      Sample s{m[1], {}, std::strtod(m[4].str().c_str(), nullptr)};
      std::string ls = m[3];
      for (std::sregex_iterator it(ls.begin(), ls.end(), label), end; it != end; ++it) s.labels[(*it)[1]] = (*it)[2];
      e.samples.push_back(s);
    } else {
      ADD_FAILURE() << "not a line of the text format: " << l;
    }
  }
  return e;
}

// The value of the one sample of `name` whose labels include `want`.
std::optional<double> metric(const Exposition& e, const std::string& name,
                             const std::map<std::string, std::string>& want) {
  std::optional<double> found;
  for (const auto& s : e.samples) {
    if (s.name != name) continue;
    bool match = true;
    for (const auto& [k, v] : want) match &= s.labels.count(k) && s.labels.at(k) == v;
    if (!match) continue;
    EXPECT_FALSE(found) << "two samples of " << name << " match";
    found = s.value;
  }
  return found;
}

class SwitchctlTest : public SwitchdFixture {
 protected:
  struct Run {
    int rc = -1;
    std::string out, err;
  };
  // The built switchctl against this test's switchd; stdout and stderr apart.
  Run ctl(const std::string& args, const std::string& socket = "") {
    Run r;
    std::string errf = dir_ + "/switchctl.err";
    r.rc = sh("{ " + std::string(SWITCHCTL_PATH) + " --socket " + (socket.empty() ? sock_ : socket) + " " + args +
                  " 2>" + errf + "; }",
              &r.out);
    r.err = slurp(errf);
    return r;
  }
  json ctl_json(const std::string& args) {
    Run r = ctl(args + " --json");
    EXPECT_EQ(r.rc, 0) << args << ": " << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << args << " printed no JSON: " << r.out;
    return j;
  }
  // N frames from ext to vm's MAC, paced; the number the sender sent.
  uint64_t send_frames(int vm, uint64_t n) {
    std::string out;
    sh(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + mac_of(vm) + " --count " + std::to_string(n) +
                     " --rate 2000 --cpu 0 --stream " + std::to_string(vm) + " --timeout 30"),
       &out);
    json j = last_json(out);
    EXPECT_TRUE(j.is_object()) << out;
    return u64(j, {"sent"});
  }
  // stats once no counter moves any more (the frames sent have landed).
  json settled_stats() {
    json a = ctl_json("stats");
    for (int i = 0; i < 50; i++) {
      std::this_thread::sleep_for(100ms);
      json b = ctl_json("stats");
      if (b == a) return b;
      a = b;
    }
    ADD_FAILURE() << "counters still moving after 5 s";
    return a;
  }
};

class MetricsTest : public SwitchctlTest {
 protected:
  MetricsTest() {
    prefix_tag_ = "mt";
    switchd_extra_ = {"--metrics-listen", std::to_string(kMetricsPort)};
  }
};

TEST_F(MetricsTest, ScrapeMatchesStatsJson) {
  attach();
  add_vm(1);
  add_vm(2, "off");
  const uint64_t sent1 = send_frames(1, 300), sent2 = send_frames(2, 200);
  ASSERT_GT(sent1, 0u);
  ASSERT_GT(sent2, 0u);
  const json st = settled_stats();
  std::string err;
  auto body = http_get(kMetricsPort, "/metrics", &err);
  ASSERT_TRUE(body) << err;
  EXPECT_EQ(ctl_json("stats"), st) << "no traffic between stats and the scrape";
  Exposition e = parse_exposition(*body);

  // The same counters, the same values.
  EXPECT_GE(u64(st, {"classifier", "vmqs", "1", "frames"}), sent1);
  EXPECT_EQ(metric(e, "xvmq_vmq_rx_frames_total", {{"uplink", "up0"}, {"vmq", "1"}, {"nic", "vm1"}}),
            double(u64(st, {"classifier", "vmqs", "1", "frames"})));
  EXPECT_EQ(metric(e, "xvmq_vmq_rx_bytes_total", {{"uplink", "up0"}, {"vmq", "1"}, {"nic", "vm1"}}),
            double(u64(st, {"classifier", "vmqs", "1", "bytes"})));
  EXPECT_EQ(metric(e, "xvmq_vmq_rx_frames_total", {{"vmq", "0"}}),
            double(u64(st, {"classifier", "vmqs", "0", "frames"})));
  EXPECT_GE(u64(st, {"classifier", "reasons", "miss", "frames"}), sent2) << "vm2 has no vmq: its frames miss";
  for (auto& [reason, c] : st["classifier"]["reasons"].items())
    EXPECT_EQ(metric(e, "xvmq_classifier_frames_total", {{"uplink", "up0"}, {"reason", reason}}),
              c["frames"].get<double>())
        << reason;
  for (const char* vm : {"vm1", "vm2"})
    for (const char* path : {"fast", "default", "from_vm"}) {
      std::string key = std::string(path) + "_frames";
      EXPECT_EQ(metric(e, "xvmq_nic_frames_total", {{"port", vm}, {"path", path}}),
                double(u64(st, {"nics", vm, key.c_str()})))
          << vm << " " << path;
    }
  EXPECT_GE(u64(st, {"nics", "vm1", "fast_frames"}), sent1);
  EXPECT_GE(u64(st, {"nics", "vm2", "default_frames"}), sent2);
  for (const auto& q : st["queues"]) {
    std::map<std::string, std::string> l{{"queue", q["queue"].dump()}, {"cpu", q["cpu"].dump()}};
    auto with = [&](const char* k, const std::string& v) {
      auto m = l;
      m[k] = v;
      return m;
    };
    EXPECT_EQ(metric(e, "xvmq_queue_rx_frames_total", with("socket", "vmq")), q["rx_vmq"].get<double>());
    EXPECT_EQ(metric(e, "xvmq_queue_rx_frames_total", with("socket", "default")), q["rx_default"].get<double>());
    EXPECT_EQ(metric(e, "xvmq_queue_tx_frames_total", l), q["tx"].get<double>());
    EXPECT_EQ(metric(e, "xvmq_queue_buffers_capacity", l), q["buffers"]["total"].get<double>());
    for (auto& [reason, v] : q["drops"].items())
      EXPECT_EQ(metric(e, "xvmq_queue_drops_total", with("reason", reason)), v.get<double>());
  }
  EXPECT_EQ(metric(e, "xvmq_fdb_capacity", {{"uplink", "up0"}}), st["fdb"]["capacity"].get<double>());
  EXPECT_EQ(metric(e, "xvmq_nic_state", {{"port", "vm1"}, {"state", "connected"}}), 1.0);
  EXPECT_EQ(metric(e, "xvmq_nic_state", {{"port", "vm1"}, {"state", "created"}}), 0.0);
  EXPECT_EQ(metric(e, "xvmq_vmqs_max", {}), 2.0);

  // Conventions: every xvmq family has HELP and TYPE, counters end in
  // _total, and one family has one label set.
  const std::map<std::string, std::set<std::string>> labels{
      {"xvmq_classifier_frames_total", {"uplink", "reason"}},
      {"xvmq_vmq_rx_frames_total", {"uplink", "vmq", "nic"}},
      {"xvmq_nic_frames_total", {"uplink", "port", "path"}},
      {"xvmq_nic_drops_total", {"uplink", "port", "reason"}},
      {"xvmq_nic_backend_tx_dropped_total", {"uplink", "port"}},
      {"xvmq_queue_rx_frames_total", {"uplink", "queue", "cpu", "socket"}},
      {"xvmq_queue_drops_total", {"uplink", "queue", "cpu", "reason"}},
      {"xvmq_queue_buffers", {"uplink", "queue", "cpu", "state"}},
      {"xvmq_fdb_entries", {"uplink"}}};
  std::map<std::string, std::set<std::string>> seen;
  for (const auto& s : e.samples) {
    if (s.name.rfind("xvmq_", 0) != 0) continue;
    std::set<std::string> names;
    for (const auto& [k, _] : s.labels) names.insert(k);
    if (seen.count(s.name)) {
      EXPECT_EQ(seen[s.name], names) << s.name;
    }
    seen[s.name] = names;
    EXPECT_TRUE(e.help.count(s.name)) << s.name << " has no HELP";
    ASSERT_TRUE(e.type.count(s.name)) << s.name << " has no TYPE";
    const bool total = s.name.size() > 6 && s.name.compare(s.name.size() - 6, 6, "_total") == 0;
    EXPECT_EQ(e.type[s.name], total ? "counter" : "gauge") << s.name;
  }
  for (const auto& [name, want] : labels) EXPECT_EQ(seen[name], want) << name;
  EXPECT_EQ(http_get(kMetricsPort, "/other", &err), std::nullopt);
}

TEST_F(SwitchctlTest, NoMetricsEndpointUnlessAsked) {
  std::string err;
  EXPECT_EQ(http_get(kMetricsPort, "/metrics", &err), std::nullopt);
  EXPECT_NE(err.find("refused"), std::string::npos) << err;
  EXPECT_EQ(slurp(log_).find("metrics"), std::string::npos);
}

// sd_notify: READY=1 only once the control socket answers, with the saved
// uplink attached again; STOPPING=1 on SIGTERM; then the classifier is left
// passing frames with no filters.
TEST_F(SwitchctlTest, NotifyReadyAndStopping) {
  attach();
  add_vm(1);
  stop_switchd(SIGTERM);

  std::string notify_path = dir_ + "/notify";
  int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", notify_path.c_str());
  ASSERT_EQ(bind(nfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  auto next_message = [&](std::chrono::milliseconds limit) -> std::string {
    pollfd p{nfd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(limit.count())) != 1) return "";
    char buf[4096];
    ssize_t n = recv(nfd, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  };

  ASSERT_NO_FATAL_FAILURE(spawn_switchd({}, {"NOTIFY_SOCKET=" + notify_path}));

  std::string ready = next_message(10s);
  ASSERT_NE(ready.find("READY=1"), std::string::npos) << "got: '" << ready << "'";
  EXPECT_NE(ready.find("STATUS=serving " + sock_ + ", uplink up0, 1 port(s)"), std::string::npos) << ready;
  // At READY=1 the control socket answers at once, with the state restored.
  auto c = xvmq::control::ControlClient::connect(sock_, 2s);
  ASSERT_TRUE(c) << "control socket not answering at READY=1: " << c.error().message;
  auto show = c->call("show");
  ASSERT_TRUE(show && show->ok);
  EXPECT_EQ(show->result["uplink"]["name"], "up0");
  EXPECT_EQ(show->result["uplink"]["adopted"], true);
  EXPECT_EQ(nic_of(show->result, "vm1")["path"], "vmq");
  auto filters = [&] {
    auto cls = xvmq::Classifier::open({std::string(kPinRoot) + "/up0"});
    EXPECT_TRUE(cls) << cls.error().message;
    auto f = cls ? cls->filters()
                 : xvmq::Result<std::vector<std::pair<xvmq::FilterKey, xvmq::FilterValue>>>(
                       xvmq::Error{EBADF, "no classifier"});
    EXPECT_TRUE(f) << f.error().message;
    return f ? f->size() : size_t{999};
  };
  EXPECT_EQ(filters(), 1u) << "vm1's filter, installed again";
  EXPECT_EQ(next_message(200ms), "") << "one READY=1";

  kill(pid_, SIGTERM);
  std::string stopping = next_message(5s);
  EXPECT_NE(stopping.find("STOPPING=1"), std::string::npos) << "got: '" << stopping << "'";
  int status = 0;
  for (int i = 0; i < 500 && waitpid(pid_, &status, WNOHANG) != pid_; i++) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  pid_ = -1;
  close(nfd);
  auto prog = xvmq::Classifier::query("up0");
  ASSERT_TRUE(prog) << prog.error().message;
  ASSERT_TRUE(prog->has_value()) << "the classifier stays attached";
  EXPECT_EQ((*prog)->name, "xvmq_uplink");
  EXPECT_EQ(filters(), 0u) << "no filters after SIGTERM";
  // Passing: frames to vm1's MAC reach up0's own stack now.
  const uint64_t rx0 = netdev_stat("", "up0", "rx_packets");
  const uint64_t sent = send_frames(1, 50);
  EXPECT_GE(netdev_stat("", "up0", "rx_packets") - rx0, sent);

  // --detach-on-exit: nothing is left on up0.
  switchd_extra_ = {"--detach-on-exit"};
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  stop_switchd(SIGTERM);
  prog = xvmq::Classifier::query("up0");
  ASSERT_TRUE(prog) << prog.error().message;
  EXPECT_FALSE(prog->has_value()) << "detached on exit";
}

// Under systemd, stderr is the journal's stream (JOURNAL_STREAM names its
// device and inode): lines carry sd-daemon priorities; --log-level filters.
TEST_F(SwitchctlTest, LogLevelsAndJournalPriorities) {
  attach();
  stop_switchd(SIGTERM);
  struct stat st {};
  ASSERT_EQ(stat(log_.c_str(), &st), 0);
  const std::string journal = "JOURNAL_STREAM=" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  const size_t from = slurp(log_).size();
  ASSERT_NO_FATAL_FAILURE(spawn_switchd({"--log-level", "debug"}, {journal}));
  ASSERT_NO_FATAL_FAILURE(wait_ready());
  call("port.create", {{"name", "vm1"}});
  request("port.create", {{"name", "vm1"}});  // refused: exists
  stop_switchd(SIGTERM);
  std::string text = slurp(log_).substr(from);
  EXPECT_NE(text.find("<6>ready on " + sock_ + "\n"), std::string::npos) << text;
  EXPECT_NE(text.find("<7>debug: control: port.create {\"name\":\"vm1\"}\n"), std::string::npos) << text;
  EXPECT_NE(text.find("<6>event "), std::string::npos) << text;
  for (const auto& l : lines_of(text)) EXPECT_TRUE(std::regex_search(l, std::regex("^<[3467]>"))) << l;

  // Not the journal (another file): "switchd: " lines; warn hides info.
  const size_t from2 = slurp(log_).size();
  ASSERT_NO_FATAL_FAILURE(spawn_switchd({"--log-level", "warn"}, {"JOURNAL_STREAM=1:1"}));
  ASSERT_NO_FATAL_FAILURE(wait_ready());
  call("port.create", {{"name", "vm2"}});
  stop_switchd(SIGTERM);
  text = slurp(log_).substr(from2);
  EXPECT_EQ(text.find("ready on"), std::string::npos) << text;
  EXPECT_EQ(text.find("event "), std::string::npos) << text;
  EXPECT_EQ(text.find("<"), std::string::npos) << text;
  // And info shows them, unprefixed by a priority.
  const size_t from3 = slurp(log_).size();
  ASSERT_NO_FATAL_FAILURE(spawn_switchd({}, {}));
  ASSERT_NO_FATAL_FAILURE(wait_ready());
  stop_switchd(SIGTERM);
  text = slurp(log_).substr(from3);
  EXPECT_NE(text.find("switchd: ready on " + sock_), std::string::npos) << text;
}

TEST_F(SwitchctlTest, EveryVerbAgainstTheDatapath) {
  json up = ctl_json("uplink attach up0");
  EXPECT_EQ(up["name"], "up0");
  EXPECT_EQ(ctl_json("port create vm1")["state"], "created");
  json nic = ctl_json("nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host");
  EXPECT_EQ(nic["state"], "created");
  nic = ctl_json("nic connect vm1");
  EXPECT_EQ(nic["path"], "vmq");
  EXPECT_EQ(nic["vmq"], 1);
  Run human = ctl("port create vm2");
  EXPECT_EQ(human.rc, 0);
  EXPECT_EQ(human.out, "port vm2: created\n");
  EXPECT_EQ(ctl("nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --vmq off").rc, 0);
  EXPECT_EQ(ctl("nic connect vm2").rc, 0);
  json show = ctl_json("show");
  EXPECT_EQ(nic_of(show, "vm2")["path"], "default");

  // Counters move as frames are sent.
  const json a = settled_stats();
  const uint64_t sent1 = send_frames(1, 200), sent2 = send_frames(2, 100);
  const json b = settled_stats();
  auto delta = [&](std::initializer_list<const char*> p) { return u64(b, p) - u64(a, p); };
  EXPECT_EQ(delta({"classifier", "vmqs", "1", "frames"}), sent1);
  EXPECT_EQ(delta({"nics", "vm1", "fast_frames"}), sent1);
  EXPECT_EQ(delta({"nics", "vm2", "default_frames"}), sent2);
  EXPECT_EQ(delta({"classifier", "reasons", "miss", "frames"}), sent2);
  Run tables = ctl("stats");
  EXPECT_EQ(tables.rc, 0);
  for (const char* t : {"CLASSIFIER", "VMQS", "PORTS", "RECEIVE QUEUES", "CPUS", "DROPS (per reason)"})
    EXPECT_NE(tables.out.find(t), std::string::npos) << t << " in:\n" << tables.out;
  EXPECT_NE(tables.out.find("vm1"), std::string::npos);

  // vmq show: vm1's vmq, its filter read back from the classifier, its CPUs,
  // and the frames the classifier delivered to it; vm2 has none.
  const json vq = ctl_json("vmq show");
  ASSERT_EQ(vq["vmqs"].size(), 1u) << vq.dump();
  const json& v1 = vq["vmqs"][0];
  EXPECT_EQ(v1["vmq"], 1);
  EXPECT_EQ(v1["nic"], "vm1");
  ASSERT_FALSE(v1["filters"].empty()) << v1.dump();
  EXPECT_EQ(v1["filters"][0]["mac"], "02:00:00:00:00:01");
  EXPECT_FALSE(v1["affinity"]["cpus"].empty()) << v1.dump();
  EXPECT_EQ(v1["frames"].get<uint64_t>(), u64(b, {"classifier", "vmqs", "1", "frames"}));
  Run vq_human = ctl("vmq show");
  EXPECT_EQ(vq_human.rc, 0);
  EXPECT_NE(vq_human.out.find("02:00:00:00:00:01 vlan"), std::string::npos) << vq_human.out;

  // --watch: rates while frames flow, one JSON object per interval.
  Bg tx = background(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + mac_of(1) +
                                   " --count 3000 --rate 1000 --cpu 0 --stream 7 --timeout 30"));
  Run watch = ctl("stats --watch --interval 0.5 --count 3 --json");
  tx.wait();
  EXPECT_EQ(watch.rc, 0) << watch.err;
  auto samples = lines_of(watch.out);
  ASSERT_EQ(samples.size(), 3u) << watch.out;
  double moved = 0;
  for (size_t i = 0; i < samples.size(); i++) {
    json s = json::parse(samples[i], nullptr, false);
    ASSERT_TRUE(s.is_object()) << samples[i];
    EXPECT_EQ(s["sample"], i + 1);
    EXPECT_GT(s["interval_s"].get<double>(), 0.0);
    ASSERT_TRUE(s["rates"]["classifier"]["vmqs"].is_object());
    moved += s["rates"]["nics"]["vm1"]["fast_frames"].get<double>();
    EXPECT_EQ(s["rates"]["queues"].size(), s["stats"]["queues"].size());
  }
  EXPECT_GT(moved, 0.0) << "vm1's rate while frames were sent";
  Run watch_human = ctl("stats --watch --interval 0.2 --count 1");
  EXPECT_NE(watch_human.out.find("rates per second"), std::string::npos) << watch_human.out;

  // fdb show: the NICs' own entries.
  json fdb = ctl_json("fdb show");
  bool vm1_static = false;
  for (const auto& e : fdb["entries"]) vm1_static |= e["port"] == "vm1" && e["static"] == true;
  EXPECT_TRUE(vm1_static) << fdb.dump();
  EXPECT_EQ(ctl("fdb flush").rc, 0);
  // fdb add / del: a static entry, listed, then gone; bad input refused.
  Run added = ctl("fdb add 02:00:00:00:10:01 --port vm1 --vlan 0");
  EXPECT_EQ(added.rc, 0) << added.err;
  EXPECT_NE(added.out.find("added (port vm1)"), std::string::npos) << added.out;
  auto has_added = [&] {
    const json f = ctl_json("fdb show");
    for (const auto& e : f["entries"])
      if (e["mac"] == "02:00:00:00:10:01" && e.value("added", false)) return true;
    return false;
  };
  EXPECT_TRUE(has_added());
  EXPECT_EQ(ctl("fdb add 01:00:5e:00:00:01 --port vm1").rc, 2) << "multicast, refused by switchctl";
  EXPECT_EQ(ctl("fdb add 02:00:00:00:10:01 --port vm2").rc, 5) << "already behind vm1";
  EXPECT_EQ(ctl("fdb del 02:00:00:00:10:01").rc, 0);
  EXPECT_FALSE(has_added());
  EXPECT_EQ(ctl("fdb del 02:00:00:00:10:01").rc, 3) << "no such entry";

  // events, and --follow while steps happen.
  json evs = ctl_json("events");
  ASSERT_FALSE(evs["events"].empty());
  const uint64_t last = evs["events"].back()["seq"];
  EXPECT_EQ(ctl_json("events --since " + std::to_string(last))["events"].size(), 0u);
  Bg follow = background("timeout --preserve-status -s INT 3 " + std::string(SWITCHCTL_PATH) + " --socket " + sock_ +
                         " events --follow --json --since " + std::to_string(last));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(ctl("vmq free vm1").rc, 0);
  EXPECT_EQ(nic_of(ctl_json("show"), "vm1")["path"], "default");
  EXPECT_EQ(ctl("vmq allocate vm1").rc, 0);
  EXPECT_EQ(nic_of(ctl_json("show"), "vm1")["path"], "vmq");
  EXPECT_EQ(ctl("nic disconnect vm2").rc, 0);
  std::string followed = follow.text(10s);
  std::vector<json> got;
  for (const auto& l : lines_of(followed)) got.push_back(json::parse(l, nullptr, false));
  ASSERT_FALSE(got.empty()) << followed;
  for (size_t i = 0; i < got.size(); i++) EXPECT_EQ(got[i]["seq"], last + 1 + i) << followed;
  EXPECT_EQ(got.back()["object"], "nic vm2") << followed;
  EXPECT_EQ(got.back()["to"], "disconnected") << followed;

  // The rest of the lifecycle.
  for (const char* step : {"nic disconnect vm1", "nic delete vm1", "port teardown vm1", "port delete vm1",
                           "nic delete vm2", "port teardown vm2", "port delete vm2", "uplink detach"})
    EXPECT_EQ(ctl(step).rc, 0) << step;
  show = ctl_json("show");
  EXPECT_TRUE(show["ports"].empty());
  EXPECT_TRUE(show["uplink"].is_null());
  auto prog = xvmq::Classifier::query("up0");
  ASSERT_TRUE(prog);
  EXPECT_FALSE(prog->has_value());
}

// A NIC's delivery and its vmq's processor, as switchctl sets them on the
// built switchd. (Kernel delivery and moving a connected NIC's vmq are the
// datapath's, tested there: here a NIC asks for xsk, or is not connected.)
TEST_F(SwitchctlTest, DeliveryAndVmqCpuFlags) {
  attach();
  EXPECT_EQ(ctl("port create vm1").rc, 0);
  json n1 = ctl_json("nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host --delivery xsk");
  EXPECT_EQ(n1["delivery_requested"], "xsk");
  n1 = ctl_json("nic connect vm1");
  EXPECT_EQ(n1["delivery"], "xsk");
  EXPECT_EQ(n1["delivery_why"], "");
  EXPECT_EQ(n1["vmq_cpu"], nullptr);
  Run xsk = ctl("vmq set vm1 --cpu 0");
  EXPECT_EQ(xsk.rc, 4) << xsk.err;
  EXPECT_NE(xsk.err.find("nic vm1 has delivery xsk"), std::string::npos) << xsk.err;
  EXPECT_NE(xsk.err.find("--queue-cpus"), std::string::npos) << xsk.err;

  EXPECT_EQ(ctl("port create vm2").rc, 0);
  json n2 = ctl_json("nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --vmq-cpu 0");
  EXPECT_EQ(n2["vmq_cpu"], 0);
  EXPECT_EQ(n2["vmq_cpu_source"], "configured");
  EXPECT_NE(ctl("config show").out.find("vmq_cpu = 0\n"), std::string::npos);
  Run spread = ctl("vmq set vm2 --spread");
  EXPECT_EQ(spread.rc, 0) << spread.err;
  EXPECT_NE(spread.out.find("nic vm2: vmq spread over the CPUs"), std::string::npos) << spread.out;
  EXPECT_EQ(nic_of(ctl_json("show"), "vm2")["vmq_cpu"], nullptr);
  Run set = ctl("vmq set vm2 --cpu 0");
  EXPECT_EQ(set.rc, 0) << set.err;
  EXPECT_NE(set.out.find("nic vm2: vmq on CPU 0"), std::string::npos) << set.out;
  const json evs = ctl_json("events")["events"];
  ASSERT_FALSE(evs.empty());
  EXPECT_EQ(evs.back()["to"], "vmq cpu 0");
  EXPECT_EQ(evs.back()["step"], "vmq.set");
  Run far = ctl("vmq set vm2 --cpu 1023");  // switchctl takes it; switchd may not run there
  EXPECT_EQ(far.rc, 2) << far.err;
  EXPECT_NE(far.err.find("is not a CPU switchd may run on"), std::string::npos) << far.err;
  EXPECT_EQ(ctl("nic create vm2 --mac 02:00:00:00:00:03 --backend vm3-host --delivery dpdk").rc, 2);

  Run human = ctl("show");
  EXPECT_EQ(human.rc, 0) << human.err;
  for (const char* w : {"DELIVERY", "VMQ-CPU", "xsk"})
    EXPECT_NE(human.out.find(w), std::string::npos) << w << " in:\n" << human.out;
}

// A crowd of idle connections does not lock the operator out: 300 of one
// uid (64 held, the rest refused as full) and 150 of root's own, then
// `switchctl show` answers at once; the refusals are one log line.
TEST_F(SwitchctlTest, IdleCrowdLeavesSwitchctlServed) {
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);  // the crowd's uid must reach the socket
  std::vector<int> crowd = connect_as(sock_, 65534, 300);
  ASSERT_EQ(crowd.size(), 300u);
  Crowd c = read_crowd(crowd, 1000);
  EXPECT_EQ(c.open, 64u);
  ASSERT_EQ(c.refusals.size(), 236u);
  expect_refused_as_full(c, "switchd is full for uid 65534");
  std::vector<int> mine = connect_as(sock_, 0, 150);
  ASSERT_EQ(mine.size(), 150u);
  EXPECT_EQ(read_crowd(mine, 200).open, 150u);
  auto t0 = std::chrono::steady_clock::now();
  Run r = ctl("show");
  double took = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_LT(took, 1000.0);
  std::printf("switchctl show with 450 idle connections opened (214 held, 236 refused): %.1f ms\n", took);
  size_t logged = 0;
  for (const auto& l : lines_of(slurp(log_))) logged += l.find("switchd is full") != std::string::npos;
  EXPECT_EQ(logged, 1u) << slurp(log_);
  close_all(crowd);
  close_all(mine);
  EXPECT_TRUE(switchd_alive());
}

// Requests nested deeper than the limit, or configuration files beyond
// theirs, are usage errors naming the limit; switchd lives on and serves.
TEST_F(SwitchctlTest, DeepRequestsAndHostileConfigsAreUsageAndSwitchdLives) {
  auto nested = [](const std::string& open, const std::string& close, size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += open;
    s += "1";
    for (size_t i = 0; i < n; ++i) s += close;
    return s;
  };
  auto raw = xvmq::control::ControlClient::connect(sock_, 10s);
  ASSERT_TRUE(raw) << raw.error().message;
  std::string arrays = "[";
  for (int i = 0; i < 2000; ++i) arrays += (i ? "," : "") + nested("[", "]", 40);
  arrays += "]";
  for (const std::string& args : {nested("{\"a\": ", "}", 100000), arrays}) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = raw->exchange(R"({"v": 1, "id": 1, "op": "port.create", "args": {"name": "vm9", "x": )" + args + "}}");
    ASSERT_TRUE(r) << r.error().message << (switchd_alive() ? "" : "; switchd died");
    EXPECT_EQ((*r)["ok"], false);
    EXPECT_EQ((*r)["error"]["kind"], "usage");
    EXPECT_NE((*r)["error"]["message"].get<std::string>().find("nesting depth limit is 32"), std::string::npos) << *r;
    std::printf("%zu-byte nested request refused in %.1f ms\n", args.size(),
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    ASSERT_TRUE(switchd_alive());
    EXPECT_EQ(ctl("show").rc, 0);
  }

  std::string dotted = "a";
  for (int i = 0; i < 100000; ++i) dotted += ".a";
  std::string ports = "[uplink]\nname = \"up0\"\n";
  for (int i = 0; i <= 4096; ++i) ports += "\n[[port]]\nname = \"p" + std::to_string(i) + "\"\n";
  const std::pair<std::string, std::string> files[] = {
      {"[uplink]\nname = \"up0\"\n" + dotted + " = 1\n", "big.toml:3: a dotted key of more than 16 parts"},
      {"[" + dotted + "]\n", "big.toml:1: a dotted key of more than 16 parts"},
      {"x = " + nested("{a = ", "}", 50000) + "\n", "big.toml:1: arrays and inline tables nest more than 16 deep"},
      {ports,
       "big.toml:" + std::to_string(2 + 4096 * 3 + 2) + ": more than 4096 ports ([[port]] tables); the limit is 4096"},
  };
  for (const auto& [text, words] : files) {
    SCOPED_TRACE(words);
    auto r = raw->call("config.apply", {{"config", text}, {"source", "big.toml"}});
    ASSERT_TRUE(r) << r.error().message << (switchd_alive() ? "" : "; switchd died");
    EXPECT_FALSE(r->ok);
    EXPECT_EQ(r->kind, "usage");
    EXPECT_NE(r->message.find(words), std::string::npos) << r->message.substr(0, 300);
    ASSERT_TRUE(switchd_alive());
  }
  // switchctl refuses an oversize file before sending it.
  std::string big = dir_ + "/big.toml";
  {
    std::ofstream f(big);
    f << "[uplink]\nname = \"up0\"\n" << std::string(600 << 10, '#') << "\n";
  }
  Run r = ctl("apply " + big);
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("switchd takes a configuration of at most 524288 (512 KiB)"), std::string::npos) << r.err;
  EXPECT_EQ(ctl("show").rc, 0);
  EXPECT_TRUE(ctl_json("show")["ports"].empty());
}

// events with wait_ms is a long poll: parked until an event, answered within
// 100 ms of the port.create that logs it; empty once wait_ms passes; others
// served at once meanwhile.
TEST_F(SwitchctlTest, EventsLongPollAnswersOnTheNextEvent) {
  json evs = call("events")["events"];
  uint64_t last = evs.empty() ? 0 : evs.back()["seq"].get<uint64_t>();
  auto waiter = xvmq::control::ControlClient::connect(sock_, 10s);
  ASSERT_TRUE(waiter) << waiter.error().message;
  std::optional<xvmq::Result<xvmq::control::Response>> got;
  std::chrono::steady_clock::time_point answered;
  std::thread t([&] {
    got = waiter->call("events", {{"since", last}, {"wait_ms", 5000}});
    answered = std::chrono::steady_clock::now();
  });
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(got.has_value()) << "answered before any event";
  auto t0 = std::chrono::steady_clock::now();
  Run shown = ctl("show");
  double show_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(shown.rc, 0) << shown.err;
  EXPECT_LT(show_ms, 1000.0);
  call("port.create", {{"name", "vm9"}});
  auto created = std::chrono::steady_clock::now();
  t.join();
  ASSERT_TRUE(got && *got) << (got ? got->error().message : "no answer");
  ASSERT_TRUE((*got)->ok) << (*got)->message;
  const json& e = (*got)->result["events"];
  ASSERT_EQ(e.size(), 1u) << e;
  EXPECT_EQ(e[0]["object"], "port vm9");
  EXPECT_EQ(e[0]["seq"], last + 1);
  double lag = std::chrono::duration<double, std::milli>(answered - created).count();
  EXPECT_LT(lag, 100.0);
  std::printf("switchctl show while events is parked: %.1f ms; parked events answered %.1f ms after port.create\n",
              show_ms, lag);

  // Nothing happens: empty after wait_ms.
  t0 = std::chrono::steady_clock::now();
  auto none = waiter->call("events", {{"since", last + 1}, {"wait_ms", 500}});
  double waited = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_TRUE(none->ok);
  EXPECT_EQ(none->result["events"], json::array());
  EXPECT_GE(waited, 490.0);
  EXPECT_LT(waited, 1500.0);
  expect_refused("events", {{"wait_ms", 60001}}, "usage", {"wait_ms", "0..60000"});
}

// switchd's deadline options, end to end: half a line and an idle client
// are closed by their deadlines while switchctl is answered at once.
class DeadlineTest : public SwitchctlTest {
 protected:
  DeadlineTest() {
    prefix_tag_ = "dl";
    switchd_extra_ = {"--idle-timeout", "1", "--read-timeout", "0.5", "--write-timeout", "0.5"};
  }
};

TEST_F(DeadlineTest, HalfLineAndIdleClientsAreClosedByTheirDeadlines) {
  auto connect = [&] {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_.c_str());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
    return fd;
  };
  // What the peer sends until it closes, and when it closed.
  auto until_closed = [](int fd, std::chrono::steady_clock::time_point t0) {
    std::string got;
    char buf[4096];
    pollfd p{fd, POLLIN, 0};
    while (poll(&p, 1, 5000) == 1) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    return std::make_pair(got,
                          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  };
  auto t0 = std::chrono::steady_clock::now();
  int half = connect(), idle = connect();
  ASSERT_EQ(send(half, "{\"v\": 1, \"id\": 1, \"op\":", 22, MSG_NOSIGNAL), 22);
  Run r = ctl("show");
  EXPECT_EQ(r.rc, 0) << r.err;
  double show_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(show_ms, 400.0);
  auto [said, half_ms] = until_closed(half, t0);
  EXPECT_NE(said.find("request line not ended within 500 ms"), std::string::npos) << said;
  EXPECT_GE(half_ms, 450.0);
  EXPECT_LT(half_ms, 1500.0);
  auto [nothing, idle_ms] = until_closed(idle, t0);
  EXPECT_EQ(nothing, "");
  EXPECT_GE(idle_ms, 950.0);
  EXPECT_LT(idle_ms, 2500.0);
  std::printf("half a line closed after %.0f ms, an idle client after %.0f ms\n", half_ms, idle_ms);
  close(half);
  close(idle);
  EXPECT_EQ(ctl("show").rc, 0);
}

TEST_F(SwitchctlTest, InvalidInputRefusedWithItsExitCode) {
  attach();
  add_vm(1);
  call("port.create", {{"name", "vm2"}});
  struct Case {
    std::string args;
    int rc;
    std::string words;
  };
  const std::vector<Case> cases{
      {"nic create vm2 --mac 02:00:00:00:00 --backend vm2-host", 2, "not a MAC address"},
      {"nic create vm2 --mac 02:00:00:00:00:zz --backend vm2-host", 2, "not a MAC address"},
      {"nic create vm2 --mac 01:00:5e:00:00:01 --backend vm2-host", 2, "multicast MAC"},
      {"nic create vm2 --mac 00:00:00:00:00:00 --backend vm2-host", 2, "all-zero MAC"},
      {"nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --trunk 0,10", 2, "--trunk"},
      {"nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --vlan 4095", 2, "--vlan"},
      {"nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --trunk 10 --native-vlan 4095", 2, "--native-vlan"},
      {"port create a-name-far-too-long", 2, "not a valid name"},
      {"port create 'vm/1'", 2, "not a valid name"},
      {"port create .hidden", 2, "not a valid name"},
      {"nic create vm2 --mac 02:00:00:00:00:02 --backend 'b@d'", 2, "is not a backend"},
      {"port create vm3 --colour blue", 2, "--colour"},
      {"stats --interval 1", 2, "--watch"},
      {"nic connect nosuch", 3, "nosuch"},
      {"port delete vm1", 4, "port.delete"},
      {"port create vm1", 5, "vm1"},
      {"nic create vm2 --mac 02:00:00:00:00:01 --backend vm2-host", 5, "02:00:00:00:00:01"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    json before = ctl_json("show");
    Run r = ctl(c.args);
    EXPECT_EQ(r.rc, c.rc) << r.err;
    EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("switchctl: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.words), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(ctl_json("show"), before);
  }
  // Exit codes by class are documented in --help.
  Run help = ctl("--help");
  EXPECT_EQ(help.rc, 0);
  for (const char* w : {"1 switchd unreachable", "2 usage", "3 not found", "4 wrong state", "7 the kernel refused"})
    EXPECT_NE(help.out.find(w), std::string::npos) << w;
  for (const char* verb : {"uplink attach", "port create", "nic create", "nic connect", "vmq free", "fdb show", "show",
                           "stats", "events", "nic", "fdb"}) {
    Run h = ctl(std::string(verb) + " --help");
    EXPECT_EQ(h.rc, 0) << verb;
    EXPECT_NE(h.out.find("Example: switchctl"), std::string::npos) << verb << ":\n" << h.out;
  }
  // switchd unreachable.
  Run gone = ctl("show", dir_ + "/nothing.sock");
  EXPECT_EQ(gone.rc, 1);
  EXPECT_EQ(lines_of(gone.err).size(), 1u) << gone.err;
  EXPECT_NE(gone.err.find("cannot reach switchd"), std::string::npos) << gone.err;
  // switchd's own input: an unknown CPU, a bad metrics address.
  for (const char* bad : {"--queue-cpus 0:4096", "--queue-cpus 0:x", "--metrics-listen 70000", "--log-level loud"}) {
    std::string out;
    int rc = sh(
        std::string(SWITCHD_PATH) + " --socket " + dir_ + "/other.sock --state-dir " + dir_ + "/other " + bad + " 2>&1",
        &out);
    EXPECT_EQ(rc, 2) << bad << ": " << out;
    EXPECT_EQ(lines_of(out).size(), 1u) << out;
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/other.sock")) << bad;
    EXPECT_NE(out.find(std::string(bad).substr(0, std::string(bad).find(' '))), std::string::npos)
        << bad << ": " << out;
  }
  // A metrics address already taken: exit 1 naming it, nothing left behind.
  // (Another port than the scraped one, whose closed connections may wait
  // in TIME_WAIT; SO_REUSEADDR for the same reason.)
  const int port = kMetricsPort + 1;
  int busy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(busy, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(busy, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  ASSERT_EQ(listen(busy, 1), 0);
  std::string out;
  int rc = sh(std::string(SWITCHD_PATH) + " --socket " + dir_ + "/other.sock --state-dir " + dir_ +
                  "/other --metrics-listen " + std::to_string(port),
              &out);
  close(busy);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("error: metrics on 127.0.0.1:" + std::to_string(port)), std::string::npos) << out;
  EXPECT_EQ(lines_of(out).size(), 1u) << out;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/other.sock"));
}

}  // namespace
