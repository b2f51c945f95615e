// The declarative configuration on the real kernel: the built switchd started
// with --config, and switchctl apply moving it between configurations while a
// VM that stays in both receives a numbered stream (fixture:
// tests/lib/switchd_fixture.h; four VMs here).
//
//   A: vm1 (vmq auto), vm2 (vmq auto), vm3 (vmq off)
//   B: vm1 as in A, vm2 with vmq off (vmq step only), vm3 on VLAN 10 (recreated), vm4 added
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/lib/switchd_fixture.h"

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;

std::string nic_toml(int vm, const std::string& extra = "") {
  return "\n[[port]]\nname = \"vm" + std::to_string(vm) + "\"\n[port.nic]\nmac = \"" + vm_mac(vm) +
         "\"\nbackend = \"vm" + std::to_string(vm) + "-host\"\n" + extra;
}

const std::string kA = "[uplink]\nname = \"up0\"\n" + nic_toml(1) + nic_toml(2) + nic_toml(3, "vmq = \"off\"\n");
const std::string kB = "[uplink]\nname = \"up0\"\n" + nic_toml(1) + nic_toml(2, "vmq = \"off\"\n") +
                       nic_toml(3, "vmq = \"off\"\nvlan = 10\n") + nic_toml(4);

using Cmds = std::vector<std::string>;

class ConfigApplyTest : public SwitchdFixture {
 protected:
  ConfigApplyTest() {
    vm_count_ = 4;
    prefix_tag_ = "ca";
  }

  std::string file(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  // switchctl as a user runs it: exit status, stdout and stderr apart.
  struct Run {
    int status;
    std::string out, err;
  };
  Run switchctl(const std::string& args) {
    std::string err_path = dir_ + "/switchctl.err";
    Run r;
    r.status =
        sh("(" + std::string(SWITCHCTL_PATH) + " --socket " + sock_ + " " + args + " 2>" + err_path + ")", &r.out);
    r.err = slurp(err_path);
    return r;
  }

  // The numbered steps switchctl apply printed.
  static Cmds steps(const std::string& out) {
    Cmds cmds;
    std::istringstream in(out);
    std::string line;
    for (int n = 1; std::getline(in, line);) {
      std::string num = std::to_string(n) + ". ";
      if (line.starts_with(num)) {
        cmds.push_back(line.substr(num.size()));
        n++;
      }
    }
    return cmds;
  }

  Cmds apply(const std::string& path, const std::string& extra = "") {
    Run r = switchctl("apply " + path + " " + extra);
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    return steps(r.out);
  }

  void there_and_back();
  json events_since(uint64_t seq) { return call("events", {{"since", seq}})["events"]; }
  uint64_t last_event() {
    json e = call("events")["events"];
    return e.empty() ? 0 : e.back()["seq"].get<uint64_t>();
  }
};

const Cmds kEmptyToA{"switchctl uplink attach up0",
                     "switchctl port create vm1",
                     "switchctl port create vm2",
                     "switchctl port create vm3",
                     "switchctl nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host",
                     "switchctl nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host",
                     "switchctl nic create vm3 --mac 02:00:00:00:00:03 --backend vm3-host --vmq off",
                     "switchctl nic connect vm1",
                     "switchctl nic connect vm2",
                     "switchctl nic connect vm3"};
const Cmds kAToB{"switchctl nic disconnect vm3",
                 "switchctl nic delete vm3",
                 "switchctl vmq free vm2 --policy off",
                 "switchctl port create vm4",
                 "switchctl nic create vm3 --mac 02:00:00:00:00:03 --backend vm3-host --vlan 10 --vmq off",
                 "switchctl nic create vm4 --mac 02:00:00:00:00:04 --backend vm4-host",
                 "switchctl nic connect vm3",
                 "switchctl nic connect vm4"};
const Cmds kBToA{"switchctl nic disconnect vm3",
                 "switchctl nic disconnect vm4",
                 "switchctl nic delete vm3",
                 "switchctl nic delete vm4",
                 "switchctl port teardown vm4",
                 "switchctl port delete vm4",
                 "switchctl vmq allocate vm2 --policy auto",
                 "switchctl nic create vm3 --mac 02:00:00:00:00:03 --backend vm3-host --vmq off",
                 "switchctl nic connect vm3"};

TEST_F(ConfigApplyTest, SwitchdConfigBringsTheSwitchUp) {
  std::string a = file("a.toml", kA);
  stop_switchd(SIGTERM);
  switchd_extra_ = {"--config", a};
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  json show = call("show");
  EXPECT_EQ(show["uplink"]["name"], "up0");
  ASSERT_EQ(show["ports"].size(), 3u) << show.dump();
  EXPECT_EQ(nic_of(show, "vm1")["path"], "vmq");
  EXPECT_EQ(nic_of(show, "vm1")["vmq"], 1);
  EXPECT_EQ(nic_of(show, "vm2")["vmq"], 2);
  EXPECT_EQ(nic_of(show, "vm3")["path"], "default");
  EXPECT_EQ(nic_of(show, "vm3")["vmq_policy"], "off");
  EXPECT_NE(slurp(log_).find("config " + a + ": 10 step(s)"), std::string::npos) << slurp(log_);

  // The running configuration, exported and applied: nothing to do.
  Run shown = switchctl("config show");
  ASSERT_EQ(shown.status, 0) << shown.err;
  EXPECT_NE(shown.out.find("[[port]]"), std::string::npos) << shown.out;
  Run again = switchctl("apply " + file("shown.toml", shown.out));
  EXPECT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(again.out, "nothing to do\n");
  EXPECT_EQ(call("show"), show);

  // A restart with the same file: the state is restored and the file asks for nothing.
  const uint64_t log_size = slurp(log_).size();
  stop_switchd(SIGTERM);
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  json after = call("show");
  EXPECT_EQ(after["uplink"]["adopted"], true);
  after["uplink"].erase("adopted");
  show["uplink"].erase("adopted");
  EXPECT_EQ(after, show);
  EXPECT_EQ(slurp(log_).find("step(s)", log_size), std::string::npos) << slurp(log_).substr(log_size);

  // A bad file: switchd refuses to start, names the line, exits 2 and touches nothing.
  std::string bad = file(
      "bad.toml", kA + "\n[[port]]\nname = \"vm9\"\n[port.nic]\nmac = \"01:00:5e:00:00:01\"\nbackend = \"vm9-host\"\n");
  std::string out;
  int rc = sh(std::string(SWITCHD_PATH) + " --socket " + dir_ + "/bad.sock --state-dir " + dir_ +
                  "/bad-state --pin-root /sys/fs/bpf/xvmq-bad --config " + bad,
              &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find(bad + ":26: port 'vm9'"), std::string::npos) << out;
  EXPECT_NE(out.find("01:00:5e:00:00:01"), std::string::npos) << out;
  EXPECT_EQ(call("show")["ports"], show["ports"]);
  sh("rm -rf /sys/fs/bpf/xvmq-bad");
}

// From nothing to A, to B and back to A while vm1, in both, receives two
// numbered streams; a restart keeps A. With GRO on at the VMs (vm_gro_) the
// NICs with a vmq are kernel-delivered (auto), and stay so.
void ConfigApplyTest::there_and_back() {
  const std::string a = file("a.toml", kA), b = file("b.toml", kB);
  EXPECT_EQ(apply(a), kEmptyToA);
  json show_a = call("show");
  EXPECT_EQ(nic_of(show_a, "vm1")["vmq"], 1);
  const std::string delivery = vm_gro_ ? "kernel" : "xsk";
  for (const char* p : {"vm1", "vm2"}) ASSERT_NO_FATAL_FAILURE(require_delivery(p, delivery));

  // --dry-run: the steps, and nothing changes.
  const uint64_t seq = last_event();
  Run dry = switchctl("apply " + b + " --dry-run");
  EXPECT_EQ(dry.status, 0) << dry.err;
  EXPECT_EQ(steps(dry.out), kAToB);
  EXPECT_NE(dry.out.find("dry run: 8 step(s), nothing changed"), std::string::npos) << dry.out;
  EXPECT_EQ(call("show"), show_a);
  EXPECT_TRUE(events_since(seq).empty());

  // vm1 is in both configurations, unchanged: its stream, over both
  // receive queues, must lose nothing while the others change.
  constexpr uint64_t kPerStream = 8000;  // 4 s at 2000 pps
  Bg rx = receive(1, 20, "--until-frames " + std::to_string(2 * kPerStream) + " --stall-ms 50");
  std::vector<Bg> tx;
  for (int cpu = 0; cpu < 2; cpu++)
    tx.push_back(background(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + mac_of(1) + " --count " +
                                          std::to_string(kPerStream) + " --rate 2000 --cpu " + std::to_string(cpu) +
                                          " --stream " + std::to_string(cpu + 1) + " --timeout 30")));
  std::this_thread::sleep_for(700ms);
  EXPECT_EQ(apply(b), kAToB);
  json show_b = call("show");
  EXPECT_EQ(nic_of(show_b, "vm1"), nic_of(show_a, "vm1"));
  EXPECT_EQ(nic_of(show_b, "vm2")["vmq_policy"], "off");
  EXPECT_EQ(nic_of(show_b, "vm2")["path"], "default");
  EXPECT_TRUE(nic_of(show_b, "vm2")["vmq"].is_null());
  EXPECT_EQ(nic_of(show_b, "vm3")["vlan"], 10);
  EXPECT_EQ(nic_of(show_b, "vm4")["vmq"], 2);
  EXPECT_EQ(nic_of(show_b, "vm4")["path"], "vmq");
  for (const char* p : {"vm1", "vm4"}) EXPECT_NO_FATAL_FAILURE(require_delivery(p, delivery));
  std::this_thread::sleep_for(700ms);
  EXPECT_EQ(apply(a), kBToA);
  for (auto& t : tx)
    EXPECT_EQ(t.out.wait_for(0s), std::future_status::timeout) << "both applies must happen under traffic";
  for (auto& t : tx) EXPECT_EQ(u64(t.wait(), {"sent"}), kPerStream);
  json r = rx.wait();
  EXPECT_EQ(r["foreign"], 0) << r.dump();
  for (int s = 1; s <= 2; s++) {
    SCOPED_TRACE("stream " + std::to_string(s));
    json st = r["streams"][std::to_string(s)];
    EXPECT_EQ(u64(st, {"frames"}), kPerStream) << r.dump();
    EXPECT_EQ(u64(st, {"lost"}), 0u) << r.dump();
    EXPECT_EQ(u64(st, {"first"}), 0u);
    EXPECT_EQ(u64(st, {"last"}), kPerStream - 1);
    EXPECT_EQ(u64(st, {"reordered"}), 0u);
    EXPECT_EQ(u64(st, {"corrupt"}), 0u);
  }
  json back = call("show");
  EXPECT_EQ(back, show_a);
  EXPECT_EQ(apply(a), Cmds{});

  // A restart keeps what apply made.
  stop_switchd(SIGTERM);
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  json after = call("show");
  after["uplink"].erase("adopted");
  back["uplink"].erase("adopted");
  EXPECT_EQ(after, back);
  for (const char* p : {"vm1", "vm2"}) EXPECT_NO_FATAL_FAILURE(require_delivery(p, delivery));
  expect_pools_idle();
}

TEST_F(ConfigApplyTest, ApplyThereAndBackUnderTraffic) { there_and_back(); }

// The same on kernel delivery: GRO on at the VMs' ends and the outside's.
class ConfigApplyKernelTest : public ConfigApplyTest {
 protected:
  ConfigApplyKernelTest() { vm_gro_ = true; }
};

TEST_F(ConfigApplyKernelTest, ApplyThereAndBackUnderTrafficOnKernelDelivery) { there_and_back(); }

TEST_F(ConfigApplyTest, RefusedFilesAndFailedStepsChangeNothing) {
  const std::string a = file("a.toml", kA);
  EXPECT_EQ(apply(a), kEmptyToA);
  const json show = call("show");
  const uint64_t seq = last_event();

  // A bad file: the line and the reason, exit code 2 (usage), nothing changed.
  std::string bad = file("bad.toml", kA + "\n[[port]]\nname = \"vm4\"\n[port.nic]\nmac = \"02:00:00:00:00:04\"\n"
                                          "backend = \"vm4-host\"\nvlan = 4095\n");
  Run r = switchctl("apply " + bad);
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find(bad + ":28: port 'vm4': vlan must be an integer 0..4094"), std::string::npos) << r.err;
  Run typo = switchctl("apply " + file("typo.toml", kA + "vlna = 3\n"));
  EXPECT_EQ(typo.status, 2);
  EXPECT_NE(typo.err.find("typo.toml:22: port 'vm3': nic: unknown key 'vlna'"), std::string::npos) << typo.err;
  // The vmq steps set only the policy that fits them.
  expect_refused("vmq.free", {{"port", "vm1"}, {"policy", "auto"}}, "usage", {"vmq.free", "policy must be \"off\""});
  expect_refused("vmq.allocate", {{"port", "vm3"}, {"policy", "off"}}, "usage", {"policy must be \"auto\""});
  EXPECT_EQ(call("show"), show);
  EXPECT_TRUE(events_since(seq).empty());

  // A step that fails midway (the backend netdev does not exist): the steps
  // before it are undone, and the message names the step.
  expected_log_.push_back("(switchctl nic connect vm5) failed");
  std::string ghost = file("ghost.toml", kB + "\n[[port]]\nname = \"vm5\"\n[port.nic]\nmac = \"02:00:00:00:00:05\"\n"
                                              "backend = \"ghost0\"\n");
  Run g = switchctl("apply " + ghost);
  EXPECT_NE(g.status, 0);
  EXPECT_NE(g.err.find("step 11 of 11 (switchctl nic connect vm5) failed"), std::string::npos) << g.err;
  EXPECT_NE(g.err.find("nothing changed"), std::string::npos) << g.err;
  json now = call("show");
  EXPECT_EQ(now, show) << "undo left: " << now.dump();
  EXPECT_FALSE(events_since(seq).empty()) << "the steps were taken, then undone";
  EXPECT_EQ(apply(a), Cmds{});
}

}  // namespace
