// The fixture of the tests that run the built switchd on the real kernel:
// this test process (in its own network and mount namespace, see main.cpp)
// plays the switch host; named namespaces play the outside world (ext) and
// the VMs; switchd runs as a child process, driven through its control
// socket.
//
//   ext: ext0 <-> up0 (uplink, 2 queues)      vmN: eth0 (02:00:00:00:00:0N) <-> vmN-host (vm_queues_)
//
// Every namespace, veth and process the fixture or a test makes in those
// namespaces is removed in TearDown, on failure too.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <future>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "control/control.h"
#include "loader/abi.h"
#include "tests/lib/harness.h"

namespace xvmq::test {

using json = nlohmann::json;

uint64_t mono_ns();
std::string slurp(const std::string& path);
std::string lower(std::string s);
int cpu_count();

// VM N's MAC: 02:00:00:00:HH:LL with N = 0xHHLL (VM 3 is 02:00:00:00:00:03).
// The outside host (02:00:00:00:00:fe) and the unknown MAC of the tests
// (02:00:00:00:00:99) stay clear of it while N < 0x99.
inline std::string vm_mac(int vm) {
  char b[18];
  std::snprintf(b, sizeof(b), "02:00:00:00:%02x:%02x", (vm >> 8) & 0xff, vm & 0xff);
  return b;
}

// The last JSON line a tool printed (its stderr is mixed in by sh()).
json last_json(const std::string& out);

// The unsigned number at `path` in j, or 0.
uint64_t u64(const json& j, std::initializer_list<const char*> path);

// A command running in the background; its output when done.
struct Bg {
  std::string cmd;
  std::future<std::string> out;
  // Its last JSON line (a failure when there is none, or it is still
  // running after `limit`).
  json wait(std::chrono::seconds limit = std::chrono::seconds(60));
  // Its whole output ("" and a failure when still running after `limit`).
  std::string text(std::chrono::seconds limit = std::chrono::seconds(60));
};

Bg background(const std::string& cmd);

// What tools/systemd/xvmq-switchd.service grants switchd, read from the unit
// file: the fixture starts switchd with exactly that, so the tests and the
// unit cannot drift apart.
struct UnitPrivileges {
  std::vector<std::string> bounding, ambient;  // CapabilityBoundingSet=, AmbientCapabilities= (CAP_ names)
  bool no_new_privileges = false;
  std::string memlock, rtprio;  // LimitMEMLOCK=, LimitRTPRIO= as written; "" when not set
};
// The unit, then its drop-ins in order (their capability lists add up).
UnitPrivileges unit_privileges(const std::vector<std::string>& files = {XVMQ_UNIT_FILE});
// A drop-in shipped next to the unit (tools/systemd/xvmq-switchd.service.d/NAME).
inline std::string unit_dropin(const std::string& name) { return std::string(XVMQ_UNIT_FILE) + ".d/" + name; }
// The bit mask of capability names (CAP_BPF...), as /proc/PID/status shows it.
// An unknown name fails the test.
uint64_t capability_mask(const std::vector<std::string>& names);
// prlimit and setpriv before a command: the unit's limits and capabilities.
std::vector<std::string> unit_launcher(const UnitPrivileges& unit);

class SwitchdFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  std::string ns(const std::string& n) const { return prefix_ + n; }
  std::string in(const std::string& n, const std::string& cmd) const { return "ip netns exec " + ns(n) + " " + cmd; }
  static std::string mac_of(int vm) { return vm_mac(vm); }
  std::string vm(int i) const { return "vm" + std::to_string(i); }
  // ethtool -K's arguments for ext0 and each eth0 (offloads_off_, vm_gro_); "" for none.
  std::string offloads() const;

  // spawn_switchd() with the options of the fixture (--queue-cpus on 2 CPUs,
  // switchd_extra_), then wait_ready().
  void start_switchd();
  // switchd with the fixture's socket, state, pins and vmq pool, then `extra`;
  // `env` over this process's environment (replacing variables of the same
  // name); its output appended to log_. TearDown stops it. It runs with the
  // capabilities, no_new_privs and limits of xvmq-switchd.service
  // (unit_privileges()), as systemd would start it.
  void spawn_switchd(const std::vector<std::string>& extra, const std::vector<std::string>& env = {});
  // Connects to the spawned switchd's socket; fails if it exits first or
  // does not answer within 10 s.
  void wait_ready();
  void stop_switchd(int sig);
  bool switchd_alive();
  // As Open vSwitch's check_logs: every line that says error or failed must be expected.
  void check_log();

  xvmq::control::Response request(const std::string& op, const json& args = json::object());
  json call(const std::string& op, const json& args = json::object());
  // A refusal of `kind` whose message has every one of `words`, and no change.
  void expect_refused(const std::string& op, const json& args, const std::string& kind,
                      std::initializer_list<std::string> words);

  void attach() { call("uplink.attach", {{"name", "up0"}}); }
  // A TCP transfer of `kib` KiB each way between ext (at ext_ip) and a QEMU
  // guest (at guest_ip), its SHA-256 the same at both ends; `guest` runs a
  // command in the guest that must succeed and returns its output.
  void transfer_with_guest(const std::function<std::string(const std::string&)>& guest, const std::string& guest_ip,
                           const std::string& ext_ip, int kib, const std::string& what);
  // steering: "software" or "hardware"; empty: switchd's default. nic.create
  // asks for delivery_ when the NIC asks for a vmq.
  json add_vm(int i, const std::string& vmq = "auto", const std::string& steering = "");
  json nic_of(const json& show, const std::string& port);

  // Kernel delivery, as the kernel has it (docs/architecture.md): the conf of
  // a vmq in the classifier's pinned xvmq_vmqs (flags XVMQ_VMQ_F_*), and the
  // VM port program's counters on a backend netdev (enum xvmq_port_count,
  // summed over the CPUs; all 0 when no program is attached).
  std::optional<xvmq_vmq_conf> vmq_conf(uint32_t vmq);
  std::array<uint64_t, XVMQ_PORT_COUNT> vmport_counts(const std::string& backend);
  // Fails the test (fatally) unless `port`'s NIC is connected with a vmq and
  // that delivery ("kernel" or "xsk"): in show (when it says), and in the
  // classifier's vmq conf.
  void require_delivery(const std::string& port, const std::string& want);

  // A receiver (xvmq-frames recv) in a VM, ready when this returns.
  Bg receive(int vm, int seconds, const std::string& extra = "");

  uint64_t netdev_stat(const std::string& where, const std::string& dev, const std::string& stat);
  // Every queue's buffers back in the pool or the fill rings, within 1 s.
  void expect_pools_idle();

  // Settings for SetUp, set in a derived fixture's constructor.
  int vm_count_ = 3;
  int max_vmqs_ = 2;
  int vm_queues_ = 2;          // queues of each VM's veth (both ends); the uplink has 2
  bool offloads_off_ = false;  // ethtool -K tx/gso/tso/gro off on ext0 and every eth0
  // GRO on at ext0 and every eth0 (tx/gso/tso stay off with offloads_off_): the
  // veths then take redirected frames, so kernel delivery can serve the VMs'
  // vmqs and VMs' frames can leave by the uplink in XDP. Off, as a veth
  // starts, every NIC gets xsk delivery.
  bool vm_gro_ = false;
  // The delivery nic.create asks for ("auto", "kernel", "xsk"); empty: none
  // given (switchd's default).
  std::string delivery_;
  std::string prefix_tag_ = "sd";
  std::vector<std::string> switchd_extra_;  // more switchd options
  std::vector<std::string> unit_dropins_;   // drop-ins over xvmq-switchd.service (unit_dropin())

  bool active_ = false;
  std::string prefix_, dir_, sock_, log_;
  std::vector<std::string> made_ns_;
  std::vector<std::string> expected_log_;
  pid_t pid_ = -1;
  std::optional<xvmq::control::ControlClient> ctl_;
  int next_ready_ = 0;
};

}  // namespace xvmq::test
