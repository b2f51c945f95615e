// switchd as tools/systemd/xvmq-switchd.service runs it.
//
// Least privilege: the fixture starts switchd with exactly the unit's
// capabilities and no_new_privs (read from the unit file); here the running
// switchd's sets are checked against the unit, and the unit's exposure score
// against systemd-analyze.
//
// A restart onto an uplink whose classifier it cannot adopt: its own
// classifier still attached but the pins gone (the pin directory removed, or
// bpffs remounted), or a program that is not switchd's.
//
// Its own classifier (name xvmq_uplink, the maps of xvmq) is taken over: a
// fresh classifier replaces it in one step (XDP_FLAGS_REPLACE) and the state
// file brings the NICs and their filters back, with no manual step. Anything
// else is refused, named, and left attached.
#include <bpf/bpf.h>
#include <cinttypes>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <sstream>
#include <thread>

#include "loader/classifier.h"
#include "tests/lib/switchd_fixture.h"

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;
namespace fs = std::filesystem;

constexpr const char* kPins = "/sys/fs/bpf/xvmq/up0";

// An XDP program that passes every frame, named `name`, that refers to the
// maps `map_fds` (as a build of the classifier does), loaded but not attached.
int load_pass_program(const char* name, const std::vector<int>& map_fds = {}) {
  std::vector<bpf_insn> insns;
  for (int fd : map_fds) {
    bpf_insn ld{};
    ld.code = BPF_LD | BPF_DW | BPF_IMM;
    ld.dst_reg = BPF_REG_1;
    ld.src_reg = BPF_PSEUDO_MAP_FD;
    ld.imm = fd;
    insns.push_back(ld);
    insns.push_back(bpf_insn{});
  }
  bpf_insn mov{};
  mov.code = BPF_ALU64 | BPF_MOV | BPF_K;
  mov.dst_reg = BPF_REG_0;
  mov.imm = XDP_PASS;
  insns.push_back(mov);
  bpf_insn exit{};
  exit.code = BPF_JMP | BPF_EXIT;
  insns.push_back(exit);
  return bpf_prog_load(BPF_PROG_TYPE_XDP, name, "GPL", insns.data(), insns.size(), nullptr);
}

std::optional<xvmq::AttachedProgram> on_up0() {
  auto p = xvmq::Classifier::query("up0");
  if (!p) {
    ADD_FAILURE() << p.error().message;
    return std::nullopt;
  }
  return *p;
}

class SwitchdServiceTest : public SwitchdFixture {
 protected:
  // N frames from ext to vm1 arrive, each through vm1's vmq.
  void expect_fast(uint64_t n, int stream) {
    json a = call("stats");
    Bg rx = receive(1, 10, "--until-frames " + std::to_string(n));
    Bg tx = background(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + mac_of(1) + " --count " +
                                     std::to_string(n) + " --rate 5000 --cpu 0 --stream " + std::to_string(stream) +
                                     " --timeout 30"));
    EXPECT_EQ(u64(tx.wait(), {"sent"}), n);
    EXPECT_EQ(u64(rx.wait()["streams"][std::to_string(stream)], {"frames"}), n);
    json b = call("stats");
    EXPECT_EQ(u64(b, {"nics", "vm1", "fast_frames"}) - u64(a, {"nics", "vm1", "fast_frames"}), n);
    EXPECT_EQ(u64(b, {"classifier", "vmqs", "1", "frames"}) - u64(a, {"classifier", "vmqs", "1", "frames"}), n);
  }

  // switchd with vm1 connected on a vmq, then stopped as systemd stops it;
  // the classifier it leaves attached, by id.
  uint32_t run_and_stop() {
    attach();
    add_vm(1);
    EXPECT_EQ(nic_of(call("show"), "vm1")["path"], "vmq");
    expect_fast(500, 1);
    auto before = on_up0();
    EXPECT_TRUE(before && before->name == xvmq::kClassifierName);
    stop_switchd(SIGTERM);
    auto left = on_up0();
    EXPECT_TRUE(left && left->name == xvmq::kClassifierName) << "switchd leaves its classifier passing frames";
    return before ? before->id : 0;
  }

  // The restarted switchd took the classifier `old_id` over and serves vm1.
  void expect_taken_over(uint32_t old_id) {
    auto now = on_up0();
    ASSERT_TRUE(now.has_value()) << "no program on up0 after the restart";
    EXPECT_EQ(now->name, xvmq::kClassifierName);
    EXPECT_NE(now->id, old_id) << "a fresh classifier replaced the old one";
    const std::string log = slurp(log_);
    const std::string want = "took over the classifier on up0 (id " + std::to_string(old_id) + " -> id " +
                             std::to_string(now->id) + ", mode native)";
    EXPECT_NE(log.find("switchd: warning: "), std::string::npos) << log;
    EXPECT_NE(log.find(want), std::string::npos) << "'" << want << "' not in the log:\n" << log;
    json show = call("show");
    EXPECT_EQ(show["uplink"]["name"], "up0");
    EXPECT_EQ(nic_of(show, "vm1")["path"], "vmq");
    EXPECT_EQ(nic_of(show, "vm1")["state"], "connected");
    for (const char* m : {"xvmq_filters", "xvmq_xsks", "xvmq_vmq_stats", "xvmq_reasons"})
      EXPECT_TRUE(fs::exists(std::string(kPins) + "/" + m)) << m << " pinned again";
    expect_fast(500, 2);
  }

  // switchd started on the saved state exits 1 (before its socket is up).
  void expect_start_refused() {
    ASSERT_NO_FATAL_FAILURE(spawn_switchd({}));
    int status = 0;
    bool exited = false;
    for (int i = 0; i < 1000 && !exited; i++) {
      exited = waitpid(pid_, &status, WNOHANG) == pid_;
      if (!exited) std::this_thread::sleep_for(10ms);
    }
    ASSERT_TRUE(exited) << "switchd still runs 10 s after its start";
    pid_ = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << "status " << status;
  }

  // A program not the classifier's on up0 (native mode), which switchd must
  // refuse and leave there.
  void expect_refused_and_left(int prog_fd, const std::string& name) {
    ASSERT_GE(prog_fd, 0) << "load " << name << ": " << strerror(errno);
    const int ifindex = static_cast<int>(if_nametoindex("up0"));
    ASSERT_EQ(bpf_xdp_attach(ifindex, prog_fd, XDP_FLAGS_DRV_MODE, nullptr), 0) << strerror(errno);
    auto there = on_up0();
    ASSERT_TRUE(there.has_value());
    expected_log_.push_back("restore uplink up0");
    ASSERT_NO_FATAL_FAILURE(expect_start_refused());
    const std::string log = slurp(log_);
    const std::vector<std::string> want{"XDP program '" + name + "' (id " + std::to_string(there->id) + ")",
                                        "mode native", "xdp-loader unload up0", "ip link set dev up0 xdpdrv off"};
    for (const auto& w : want) EXPECT_NE(log.find(w), std::string::npos) << "'" << w << "' not in the log:\n" << log;
    auto after = on_up0();
    ASSERT_TRUE(after.has_value()) << "switchd removed the program";
    EXPECT_EQ(after->id, there->id) << "switchd replaced the program";
    EXPECT_EQ(after->name, name);
    bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, nullptr);
    close(prog_fd);
  }
};

// A field of /proc/PID/status, as a number (base 16 for the Cap* sets).
uint64_t status_field(pid_t pid, const std::string& field, int base) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0) return std::strtoull(line.c_str() + field.size() + 1, nullptr, base);
  ADD_FAILURE() << "no " << field << " in /proc/" << pid << "/status";
  return ~uint64_t{0};
}

TEST_F(SwitchdServiceTest, RunsWithExactlyTheUnitsCapabilities) {
  const UnitPrivileges unit = unit_privileges();
  ASSERT_FALSE(unit.bounding.empty()) << "the unit bounds no capability";
  const uint64_t bounding = capability_mask(unit.bounding), ambient = capability_mask(unit.ambient);
  EXPECT_EQ(bounding, ambient) << "CapabilityBoundingSet= and AmbientCapabilities= name the same capabilities";
  EXPECT_TRUE(unit.no_new_privileges);
  // A switchd that has attached its uplink and serves a VM: the sets it runs with.
  attach();
  add_vm(1);
  expect_fast(200, 1);
  std::printf(
      "[ caps     ] switchd runs with %s (CapEff %016" PRIx64 ")\n",
      [&] {
        std::string s;
        for (const auto& c : unit.bounding) s += (s.empty() ? "" : " ") + c;
        return s;
      }()
          .c_str(),
      status_field(pid_, "CapEff", 16));
  EXPECT_EQ(status_field(pid_, "CapEff", 16), bounding);
  EXPECT_EQ(status_field(pid_, "CapPrm", 16), bounding);
  EXPECT_EQ(status_field(pid_, "CapBnd", 16), bounding);
  EXPECT_EQ(status_field(pid_, "CapAmb", 16), ambient);
  EXPECT_EQ(status_field(pid_, "CapInh", 16), ambient);
  EXPECT_EQ(status_field(pid_, "NoNewPrivs", 10), 1u);
  // And its threads (the queue workers) the same.
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid_) + "/task")) {
    const pid_t tid = static_cast<pid_t>(std::stol(t.path().filename().string()));
    EXPECT_EQ(status_field(tid, "CapEff", 16), bounding) << "thread " << tid;
  }
}

// systemd's own rating of the unit's sandbox: 4.0 or less ("OK").
TEST(ServiceUnit, ExposureScoreIsAtMostFour) {
  std::string out;
  int rc = sh("systemd-analyze security --offline=true " + std::string(XVMQ_UNIT_FILE), &out);
  ASSERT_NE(rc, 127) << "systemd-analyze is missing: install systemd (tools/setup.sh does)";
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex(R"(Overall exposure level for \S+: ([0-9.]+))"))) << out;
  const double score = std::stod(m[1].str());
  std::printf("[ score    ] systemd-analyze security: %.1f for %s\n", score, XVMQ_UNIT_FILE);
  EXPECT_LE(score, 4.0) << out;
}

TEST_F(SwitchdServiceTest, TakesOverItsClassifierWhenThePinDirectoryIsGone) {
  const uint32_t old_id = run_and_stop();
  ASSERT_TRUE(sh_ok("rm -rf /sys/fs/bpf/xvmq"));
  // Every change of up0 the kernel announces while switchd starts: each must
  // show a program (a detach, then an attach, would show one without).
  Bg monitor = background("timeout 3 ip -d monitor link");
  std::this_thread::sleep_for(300ms);
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  expect_taken_over(old_id);
  const std::string events = monitor.text(10s);
  std::vector<std::string> up0;  // one announcement each
  std::istringstream in(events);
  for (std::string line; std::getline(in, line);) {
    if (std::regex_search(line, std::regex("^[0-9]+: "))) {
      if (line.find(": up0") == std::string::npos) {
        up0.emplace_back();  // another link's: a separator
        continue;
      }
      up0.push_back(line);
    } else if (!up0.empty() && !up0.back().empty()) {
      up0.back() += "\n" + line;
    }
  }
  bool replaced = false;
  for (const auto& m : up0) {
    if (m.empty()) continue;
    EXPECT_NE(m.find("prog/xdp id"), std::string::npos) << "up0 without a program during the takeover:\n" << m;
    replaced |= m.find("prog/xdp id " + std::to_string(on_up0()->id)) != std::string::npos;
  }
  EXPECT_TRUE(replaced) << "no announcement of the new classifier on up0:\n" << events;
}

TEST_F(SwitchdServiceTest, TakesOverItsClassifierAfterBpffsIsRemounted) {
  const uint32_t old_id = run_and_stop();
  // This test's own mount namespace (main.cpp): a new, empty bpffs.
  ASSERT_TRUE(sh_ok("umount /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf"));
  ASSERT_FALSE(fs::exists(kPins));
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  expect_taken_over(old_id);
}

// A classifier of another xvmq build: same name, other instructions (another
// tag), its maps named as xvmq's. Taken over as well.
TEST_F(SwitchdServiceTest, TakesOverAnotherBuildsClassifier) {
  run_and_stop();
  (void)xvmq::Classifier::detach_from("up0");
  ASSERT_TRUE(sh_ok("rm -rf /sys/fs/bpf/xvmq"));
  int filters = bpf_map_create(BPF_MAP_TYPE_HASH, "xvmq_filters", 8, 4, 16, nullptr);
  int xsks = bpf_map_create(BPF_MAP_TYPE_XSKMAP, "xvmq_xsks", 4, 4, 16, nullptr);
  ASSERT_GE(filters, 0);
  ASSERT_GE(xsks, 0);
  int fd = load_pass_program("xvmq_uplink", {filters, xsks});
  ASSERT_GE(fd, 0) << strerror(errno);
  close(filters);
  close(xsks);
  const int ifindex = static_cast<int>(if_nametoindex("up0"));
  ASSERT_EQ(bpf_xdp_attach(ifindex, fd, XDP_FLAGS_DRV_MODE, nullptr), 0) << strerror(errno);
  close(fd);
  auto old = on_up0();
  ASSERT_TRUE(old.has_value());
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  expect_taken_over(old->id);
  EXPECT_NE(slurp(log_).find("another build"), std::string::npos) << slurp(log_);
}

TEST_F(SwitchdServiceTest, RefusesAForeignProgramAndLeavesIt) {
  run_and_stop();
  ASSERT_TRUE(xvmq::Classifier::detach_from("up0"));
  expect_refused_and_left(load_pass_program("foreign_pass"), "foreign_pass");
}

// The classifier's name alone is not enough: no xvmq maps, not xvmq's.
TEST_F(SwitchdServiceTest, RefusesAProgramOnlyNamedLikeTheClassifier) {
  run_and_stop();
  ASSERT_TRUE(xvmq::Classifier::detach_from("up0"));
  ASSERT_TRUE(sh_ok("rm -rf /sys/fs/bpf/xvmq"));
  expect_refused_and_left(load_pass_program("xvmq_uplink"), "xvmq_uplink");
  EXPECT_NE(slurp(log_).find("not xvmq's"), std::string::npos) << slurp(log_);
}

}  // namespace
