// Kernel delivery on the real kernel (docs/architecture.md, "Deliveries"):
// the built switchd between network namespaces (tests/lib/switchd_fixture.h)
// with GRO on at ext0 and every eth0, so a NIC's vmq can be delivered by the
// classifier through its processor's CPUMAP entry into the backend's DEVMAP
// entry.
//
//   ext: ext0 <-> up0 (uplink, 2 queues)      vmN: eth0 (02:00:00:00:00:0N) <-> vmN-host
//
// What is held here: auto falls back to xsk when the VM's end cannot take
// redirected frames and says why; kernel is refused then, changing nothing;
// a vmq's processor moves under traffic losing and reordering nothing; the
// lifecycle steps and a switchd killed and restarted under traffic send no
// frame to a wrong VM and account for every frame (kernel delivery runs on
// while switchd is down); at the sender's full rate every loss has a
// counter; a backend that stops taking redirected frames after connect has
// its losses counted by reason.
// Frames come from xvmq-frames (sequence-numbered, per stream) and are
// checked by xvmq-frames recv in the VMs.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <map>
#include <thread>

#include "tests/lib/switchd_fixture.h"

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;
using xvmq::control::Response;

constexpr const char* kPinRoot = "/sys/fs/bpf/xvmq";

uint64_t sum_queues(const json& st, const char* key) {
  uint64_t n = 0;
  for (const auto& q : st["queues"]) n += u64(q, {key});
  return n;
}

// The switch's drops (its queues), every reason summed.
uint64_t switch_drops(const json& st) {
  uint64_t n = 0;
  for (const auto& q : st["queues"])
    for (const auto& [_, d] : q["drops"].items()) n += d.get<uint64_t>();
  return n;
}

// A NIC's drops by reason, the non-zero ones ("" when none).
std::string nonzero_drops(const json& st, const std::string& port) {
  std::string out;
  const json drops = st["nics"].value(port, json::object()).value("drops", json::object());
  for (const auto& [why, n] : drops.items())
    if (n.get<uint64_t>()) out += " " + why + "=" + std::to_string(n.get<uint64_t>());
  return out;
}

// A vmq's moves as the classifier keeps them (xvmq_vmq_flows, per CPU):
// forced moves, frames sent through the CPUMAP, and frames the CPUMAP
// program passed on (xvmq_vmq_done).
struct VmqFlows {
  uint64_t forced = 0, sent = 0, passed = 0;
};

VmqFlows vmq_flows(uint32_t vmq) {
  VmqFlows out;
  const std::string dir = std::string(kPinRoot) + "/up0/";
  const int flows = bpf_obj_get((dir + XVMQ_MAP_FLOWS).c_str());
  const int done = bpf_obj_get((dir + XVMQ_MAP_DONE).c_str());
  EXPECT_GE(flows, 0) << dir << XVMQ_MAP_FLOWS << ": " << strerror(errno);
  EXPECT_GE(done, 0) << dir << XVMQ_MAP_DONE << ": " << strerror(errno);
  const int n = std::max(libbpf_num_possible_cpus(), 1);
  std::vector<xvmq_vmq_flow> per(static_cast<size_t>(n));
  if (flows >= 0 && bpf_map_lookup_elem(flows, &vmq, per.data()) == 0)
    for (const auto& f : per) {
      out.forced += f.forced;
      out.sent += f.enq;
    }
  for (int cpu = 0; done >= 0 && cpu < n; cpu++) {
    uint32_t slot = XVMQ_DONE_SLOT(vmq, static_cast<uint32_t>(cpu));
    uint64_t d = 0;
    if (bpf_map_lookup_elem(done, &slot, &d) == 0) out.passed += d;
  }
  if (flows >= 0) close(flows);
  if (done >= 0) close(done);
  return out;
}

class DeliveryTest : public SwitchdFixture {
 protected:
  DeliveryTest() {
    prefix_tag_ = "dl";
    offloads_off_ = true;
    vm_gro_ = true;
    delivery_ = "kernel";
  }

  // N frames of one stream from ext to vm `vm`, from `cpu` (its frames land on up0's queue cpu % 2).
  Bg send(int vm, uint64_t count, const std::string& rate, int cpu, int stream) {
    return background(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + mac_of(vm) + " --count " +
                                    std::to_string(count) + " --rate " + rate + " --cpu " + std::to_string(cpu) +
                                    " --stream " + std::to_string(stream) + " --timeout 30"));
  }

  void set_gro(int vm, bool on) {
    ASSERT_TRUE(sh_ok(in(this->vm(vm), std::string("ethtool -K eth0 gro ") + (on ? "on" : "off"))));
  }

  // The streams a receiver saw must be `want`, each whole (0..count-1), in
  // order and intact; returns the frames received.
  uint64_t expect_streams(const json& r, const std::map<int, uint64_t>& want, const std::string& who) {
    SCOPED_TRACE(who);
    EXPECT_EQ(u64(r, {"foreign"}), 0u) << r.dump();
    EXPECT_EQ(u64(r, {"socket_drops"}), 0u) << "the receiver's own socket lost frames";
    uint64_t got = 0;
    for (const auto& [id, s] : r["streams"].items()) {
      EXPECT_TRUE(want.count(std::stoi(id))) << "stream " << id << " is another VM's: " << r.dump();
      got += u64(s, {"frames"});
    }
    for (const auto& [id, n] : want) {
      const json s = r["streams"].value(std::to_string(id), json::object());
      EXPECT_EQ(u64(s, {"frames"}), n) << "stream " << id << ": " << s.dump();
      EXPECT_EQ(u64(s, {"lost"}), 0u) << "stream " << id;
      EXPECT_EQ(u64(s, {"reordered"}), 0u) << "stream " << id;
      EXPECT_EQ(u64(s, {"corrupt"}), 0u) << "stream " << id;
      EXPECT_EQ(u64(s, {"last"}), n - 1) << "stream " << id;
    }
    return got;
  }
};

// ---------------------------------------------------------------------------
// Fallback and refusal.

TEST_F(DeliveryTest, AutoFallsBackToXskWithoutGroAndSaysWhy) {
  delivery_ = "auto";
  ASSERT_NO_FATAL_FAILURE(set_gro(1, false));
  attach();
  add_vm(1);
  add_vm(2);
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "xsk"));
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm2", "kernel"));
  const json show = call("show");
  const json n1 = nic_of(show, "vm1"), n2 = nic_of(show, "vm2");
  std::printf("[ delivery ] vm1 (GRO off at its eth0): %s, why: %s\n", n1.value("delivery", "?").c_str(),
              n1.value("delivery_why", "?").c_str());
  std::printf("[ delivery ] vm2 (GRO on): %s, why: \"%s\"\n", n2.value("delivery", "?").c_str(),
              n2.value("delivery_why", "?").c_str());
  EXPECT_EQ(n1["delivery_requested"], "auto");
  EXPECT_EQ(n2["delivery_requested"], "auto");
  const std::string why = n1.value("delivery_why", "");
  for (const char* w : {"vm1-host", "GRO", "gro on", "EOPNOTSUPP"})
    EXPECT_NE(why.find(w), std::string::npos) << "'" << w << "' not in: " << why;
  EXPECT_EQ(n2.value("delivery_why", "?"), "") << "kernel delivery needs no excuse";
  EXPECT_EQ(call("stats")["nics"]["vm1"].value("delivery", ""), "xsk");

  // Both carry their frames, each its own way.
  constexpr uint64_t N = 1000;
  const json before = call("stats");
  Bg rx1 = receive(1, 10, "--until-frames " + std::to_string(N)), rx2 = receive(2, 10, "--until-frames 1000");
  Bg tx1 = send(1, N, "5000", 0, 1), tx2 = send(2, N, "5000", 1, 2);
  EXPECT_EQ(u64(tx1.wait(), {"sent"}), N);
  EXPECT_EQ(u64(tx2.wait(), {"sent"}), N);
  expect_streams(rx1.wait(), {{1, N}}, "vm1");
  expect_streams(rx2.wait(), {{2, N}}, "vm2");
  const json after = call("stats");
  EXPECT_EQ(sum_queues(after, "rx_vmq") - sum_queues(before, "rx_vmq"), N) << "vm1's, by its vmq socket";
  for (const char* p : {"vm1", "vm2"})
    EXPECT_EQ(u64(after, {"nics", p, "fast_frames"}) - u64(before, {"nics", p, "fast_frames"}), N) << p;

  // GRO back on: the NIC made again finds kernel delivery possible at its connect.
  ASSERT_NO_FATAL_FAILURE(set_gro(1, true));
  call("nic.disconnect", {{"port", "vm1"}});
  call("nic.delete", {{"port", "vm1"}});
  call("nic.create", {{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", "vm1-host"}, {"delivery", "auto"}});
  call("nic.connect", {{"port", "vm1"}});
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  EXPECT_EQ(nic_of(call("show"), "vm1").value("delivery_why", "?"), "");
  expect_pools_idle();
}

TEST_F(DeliveryTest, KernelWithoutGroIsRefusedAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(set_gro(1, false));
  attach();
  call("port.create", {{"name", "vm1"}});
  call("nic.create", {{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", "vm1-host"}, {"delivery", "kernel"}});
  EXPECT_EQ(nic_of(call("show"), "vm1").value("delivery_requested", ""), "kernel");
  expected_log_.push_back("asks for kernel delivery");
  // The device, what it lacks, what to do, and the other way.
  expect_refused("nic.connect", {{"port", "vm1"}}, "kernel",
                 {"nic vm1 asks for kernel delivery", "vm1-host", "GRO", "ethtool -K", "gro on", "--delivery xsk"});
  Response r = request("nic.connect", {{"port", "vm1"}});
  std::printf("[ refused  ] nic.connect vm1 (kernel, GRO off): %s: %s\n", r.kind.c_str(), r.message.c_str());
  const json nic = nic_of(call("show"), "vm1");
  EXPECT_EQ(nic.value("state", ""), "created") << nic.dump();
  std::string xdp;
  sh("ip -d link show vm1-host", &xdp);
  EXPECT_EQ(xdp.find("prog/xdp"), std::string::npos) << "no VM port program left on the backend:\n" << xdp;

  // Done as the message says, the same connect works.
  ASSERT_NO_FATAL_FAILURE(set_gro(1, true));
  EXPECT_EQ(call("nic.connect", {{"port", "vm1"}}).value("state", ""), "connected");
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  expect_pools_idle();
}

// The frames that came after a later one of their stream, each with the
// move asked for last before it.
void print_late(const json& r, const std::vector<std::pair<uint64_t, int>>& moved) {
  for (const auto& [id, st] : r["streams"].items())
    for (const auto& l : st.value("late", json::array())) {
      const uint64_t t = l[2].get<uint64_t>();
      auto m = std::upper_bound(moved.begin(), moved.end(), std::pair<uint64_t, int>{t, 2});
      const bool any = m != moved.begin();
      std::printf("[ late     ] stream %s (from CPU %d): seq %" PRIu64 " after seq %" PRIu64 ", %.3f ms after %s%d\n",
                  id.c_str(), std::stoi(id) - 1, l[0].get<uint64_t>(), l[1].get<uint64_t>(),
                  any ? (t - std::prev(m)->first) / 1e6 : 0.0,
                  any ? "vmq.set cpu " : "no move: ", any ? std::prev(m)->second : -1);
    }
}

// ---------------------------------------------------------------------------
// A vmq's processor moved under traffic (dynamic VMQ): each receiving CPU
// follows the move only once the old processor passed on every frame it sent
// there, so nothing is lost or reordered.

// A vmq's frames always through its processor (--spread-above 0): each
// move of the processor under traffic swaps which CPU's stream hops.
class DeliveryFixedTest : public DeliveryTest {
 protected:
  DeliveryFixedTest() { switchd_extra_ = {"--spread-above", "0"}; }
};

TEST_F(DeliveryFixedTest, VmqMovesBetweenProcessorsUnderTrafficLoseNothing) {
  if (cpu_count() < 2) GTEST_SKIP() << "moving a vmq between processors needs 2 CPUs";
  attach();
  add_vm(1);
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  const json nic = nic_of(call("show"), "vm1");
  const uint32_t vmq = nic["vmq"].get<uint32_t>();
  int cpu = nic["vmq_cpu"].get<int>();
  const VmqFlows flows0 = vmq_flows(vmq);
  // One stream from each CPU: up0's queue 0 on CPU 0, queue 1 on CPU 1. On
  // the vmq's processor the classifier redirects into the backend itself;
  // on the other CPU through the CPUMAP hop: each move swaps them.
  constexpr uint64_t N = 40000;  // 4 s at 10,000 frames/s each
  const json before = call("stats");
  Bg rx = receive(1, 30, "--until-frames " + std::to_string(2 * N) + " --idle-ms 3000");
  Bg tx0 = send(1, N, "10000", 0, 1), tx1 = send(1, N, "10000", 1, 2);
  int moves = 0;
  const uint64_t t0 = mono_ns();
  auto sending = [&] {
    return tx0.out.wait_for(0s) == std::future_status::timeout || tx1.out.wait_for(0s) == std::future_status::timeout;
  };
  std::vector<std::pair<uint64_t, int>> moved;  // when vmq.set was asked, and the CPU it moved to
  while (sending() && mono_ns() - t0 < 30000000000ull) {
    cpu = 1 - cpu;
    moved.push_back({mono_ns(), cpu});
    const json r = call("vmq.set", {{"port", "vm1"}, {"cpu", cpu}});
    EXPECT_EQ(r.value("vmq_cpu", -1), cpu) << r.dump();
    moves++;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(u64(tx0.wait(), {"sent"}), N);
  EXPECT_EQ(u64(tx1.wait(), {"sent"}), N);
  const json r = rx.wait(60s);
  const json after = call("stats");
  const VmqFlows flows1 = vmq_flows(vmq);
  std::printf("[ moves    ] %d moves of vmq %u between CPU 0 and 1 in %.1f s under 2 x 10,000 frames/s: %" PRIu64
              " frames through the CPUMAP hop, %" PRIu64 " passed on; forced moves %" PRIu64 "; drops:%s\n",
              moves, vmq, static_cast<double>(mono_ns() - t0) / 1e9, flows1.sent - flows0.sent,
              flows1.passed - flows0.passed, flows1.forced - flows0.forced,
              nonzero_drops(after, "vm1").empty() ? " none" : nonzero_drops(after, "vm1").c_str());
  expect_streams(r, {{1, N}, {2, N}}, "vm1");
  print_late(r, moved);
  EXPECT_GE(moves, 40);
  EXPECT_EQ(nonzero_drops(after, "vm1"), "") << "every drop of the NIC, kernel_* and backend_* among them";
  EXPECT_EQ(flows1.forced - flows0.forced, 0u) << "no move went ahead before the old processor caught up";
  EXPECT_EQ(u64(after, {"nics", "vm1", "forced_moves"}), 0u);
  EXPECT_EQ(flows1.sent, flows1.passed) << "nothing left in a CPUMAP queue";
  EXPECT_GT(flows1.sent - flows0.sent, N / 2) << "the hop was taken";
  EXPECT_EQ(u64(after, {"nics", "vm1", "fast_frames"}) - u64(before, {"nics", "vm1", "fast_frames"}), 2 * N);
  EXPECT_EQ(sum_queues(after, "rx_vmq"), sum_queues(before, "rx_vmq")) << "no vmq socket in the way";
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
}

// Dynamic VMQ by load: each receiving CPU turns hot and cold ten times a
// second (--spread-above 12000: hot from about 12.6 frames a window of
// 1.05 ms, cold below half). Cold, it delivers vm1's frames itself; hot,
// it sends them to vm1's processor, or, on the processor itself, to the
// other CPU. Every change is a move: no frame lost or out of order.
class DeliverySpreadTest : public DeliveryTest {
 protected:
  DeliverySpreadTest() { switchd_extra_ = {"--spread-above", "12000"}; }
};

TEST_F(DeliverySpreadTest, HotAndColdCpusMoveTheVmqLosingAndReorderingNothing) {
  if (cpu_count() < 2) GTEST_SKIP() << "spreading by load needs 2 CPUs";
  attach();
  add_vm(1);
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  const uint32_t vmq = nic_of(call("show"), "vm1")["vmq"].get<uint32_t>();
  // Per CPU: a steady stream of 4,000 frames/s (cold alone) and one of
  // 20,000 frames/s sent for 100 ms and paused for 100 ms (hot with it).
  constexpr uint64_t kSteady = 24000, kPulsed = 60000;  // 6 s each
  const VmqFlows flows0 = vmq_flows(vmq);
  const json before = call("stats");
  Bg rx = receive(1, 40, "--until-frames " + std::to_string(2 * (kSteady + kPulsed)) + " --idle-ms 3000");
  std::vector<Bg> tx;
  for (int cpu = 0; cpu < 2; cpu++) {
    tx.push_back(send(1, kSteady, "4000", cpu, 1 + 2 * cpu));
    tx.push_back(
        background(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + mac_of(1) + " --count " +
                                 std::to_string(kPulsed) + " --rate 20000 --pulse 100 --cpu " + std::to_string(cpu) +
                                 " --stream " + std::to_string(2 + 2 * cpu) + " --timeout 30")));
  }
  for (size_t i = 0; i < tx.size(); i++) EXPECT_EQ(u64(tx[i].wait(), {"sent"}), i % 2 ? kPulsed : kSteady) << i;
  const json r = rx.wait(60s);
  const json after = call("stats");
  const VmqFlows flows1 = vmq_flows(vmq);
  const uint64_t all = 2 * (kSteady + kPulsed), hopped = flows1.sent - flows0.sent;
  std::printf("[ spread   ] %" PRIu64 " frames to vm1 from 2 CPUs turning hot and cold: %" PRIu64
              " through a CPUMAP hop, %" PRIu64 " straight; forced moves %" PRIu64 "; drops:%s\n",
              all, hopped, all - hopped, flows1.forced - flows0.forced,
              nonzero_drops(after, "vm1").empty() ? " none" : nonzero_drops(after, "vm1").c_str());
  expect_streams(r, {{1, kSteady}, {2, kPulsed}, {3, kSteady}, {4, kPulsed}}, "vm1");
  print_late(r, {});
  EXPECT_EQ(nonzero_drops(after, "vm1"), "") << "every drop of the NIC, kernel_* and backend_* among them";
  EXPECT_EQ(flows1.forced - flows0.forced, 0u) << "no move went ahead before the old processor caught up";
  EXPECT_EQ(flows1.sent, flows1.passed) << "nothing left in a CPUMAP queue";
  // The pulsed streams' frames come while their CPU is hot, and about half
  // the steady ones while it is cold (2 x 12,000).
  EXPECT_GT(hopped, 2 * kPulsed) << "hot CPUs sent through the vmq's processor or the spill CPU";
  EXPECT_GT(all - hopped, kSteady / 2) << "cold CPUs delivered themselves";
  EXPECT_EQ(u64(after, {"nics", "vm1", "fast_frames"}) - u64(before, {"nics", "vm1", "fast_frames"}), all);
}

// ---------------------------------------------------------------------------
// The lifecycle and a restart under traffic.

// Every frame sent between two ledgers is received in a VM or counted where
// it was lost: by the switch (by reason), by kernel delivery (the NICs'
// kernel_* and backend_* drops), or by the kernel before or after them.
struct Ledger {
  json st;
  uint64_t ext_drop = 0, up_drop = 0, host_drop = 0;
};

class DeliveryLifecycleTest : public DeliveryTest {
 protected:
  Ledger ledger() {
    Ledger l{call("stats")};
    l.ext_drop = netdev_stat("ext", "ext0", "tx_dropped");
    l.up_drop = netdev_stat("", "up0", "rx_dropped");
    for (int i = 1; i <= vm_count_; i++) l.host_drop += netdev_stat("", vm(i) + "-host", "tx_dropped");
    return l;
  }
  static uint64_t kernel_losses(const json& st) {
    uint64_t n = 0;
    for (const auto& [_, nic] : st["nics"].items()) {
      const json drops = nic.value("drops", json::object());
      for (const auto& [why, d] : drops.items())
        if (why.starts_with("kernel_") || why.starts_with("backend_")) n += d.get<uint64_t>();
    }
    return n;
  }
  void account(const Ledger& a, const Ledger& b, uint64_t sent, uint64_t received, uint64_t sock_drops) {
    const uint64_t sw = switch_drops(b.st) - switch_drops(a.st), kd = kernel_losses(b.st) - kernel_losses(a.st);
    const uint64_t ext = b.ext_drop - a.ext_drop, up = b.up_drop - a.up_drop, host = b.host_drop - a.host_drop;
    std::printf("[ account  ] sent %" PRIu64 " = received %" PRIu64 " + switch drops %" PRIu64
                " + kernel delivery's %" PRIu64 " + ext0 tx_dropped %" PRIu64 " + up0 rx_dropped %" PRIu64
                " + backends' tx_dropped %" PRIu64 " + receivers' socket drops %" PRIu64 "\n",
                sent, received, sw, kd, ext, up, host, sock_drops);
    EXPECT_EQ(received + sw + kd + ext + up + host + sock_drops, sent) << "every frame accounted for";
    EXPECT_EQ(kd, 0u) << "kernel delivery lost nothing";
  }
};

TEST_F(DeliveryLifecycleTest, LifecycleStepsUnderTrafficSendNothingToAWrongVm) {
  attach();
  add_vm(1);
  add_vm(2);
  add_vm(3, "off");
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm2", "kernel"));
  // Two streams per VM (10 * vm + CPU), 5 s at 2,000 frames/s each.
  constexpr uint64_t kPerStream = 10000;
  const Ledger before = ledger();
  std::vector<Bg> rx, tx;
  for (int v = 1; v <= 3; v++) rx.push_back(receive(v, 20, "--idle-ms 2500"));
  for (int v = 1; v <= 3; v++)
    for (int cpu = 0; cpu < 2; cpu++) tx.push_back(send(v, kPerStream, "2000", cpu, 10 * v + cpu));
  // vm1 leaves and comes back (disconnect, delete, create, connect); vm2's
  // vmq goes (the switch serves it) and comes back; vm3 (no vmq) stays:
  // a step every 250 ms, while the frames flow.
  auto nic = [&](int v) {
    return json{{"port", vm(v)}, {"mac", mac_of(v)}, {"backend", vm(v) + "-host"}, {"delivery", "kernel"}};
  };
  const std::vector<std::pair<std::string, json>> steps{{"nic.disconnect", {{"port", "vm1"}}},
                                                        {"nic.delete", {{"port", "vm1"}}},
                                                        {"nic.create", nic(1)},
                                                        {"nic.connect", {{"port", "vm1"}}},
                                                        {"vmq.free", {{"port", "vm2"}}},
                                                        {"vmq.allocate", {{"port", "vm2"}}},
                                                        {"vmq.free", {{"port", "vm1"}}},
                                                        {"vmq.allocate", {{"port", "vm1"}}},
                                                        {"nic.disconnect", {{"port", "vm2"}}},
                                                        {"nic.delete", {{"port", "vm2"}}},
                                                        {"nic.create", nic(2)},
                                                        {"nic.connect", {{"port", "vm2"}}}};
  std::this_thread::sleep_for(500ms);
  for (const auto& [op, args] : steps) {
    const uint64_t t = mono_ns();
    call(op, args);
    std::printf("[ step     ] %s %s under traffic: %.1f ms\n", op.c_str(), args.value("port", "").c_str(),
                (mono_ns() - t) / 1e6);
    std::this_thread::sleep_for(250ms);
  }
  for (auto& t : tx)
    EXPECT_EQ(t.out.wait_for(0s), std::future_status::timeout) << "the steps must happen under traffic";
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm2", "kernel"));
  uint64_t sent = 0, received = 0, sock_drops = 0;
  for (auto& t : tx) sent += u64(t.wait(), {"sent"});
  EXPECT_EQ(sent, 6 * kPerStream);
  for (int v = 1; v <= 3; v++) {
    SCOPED_TRACE("vm" + std::to_string(v));
    const json r = rx[static_cast<size_t>(v - 1)].wait();
    EXPECT_EQ(u64(r, {"foreign"}), 0u) << r.dump();
    sock_drops += u64(r, {"socket_drops"});
    for (const auto& [id, s] : r["streams"].items()) {
      EXPECT_EQ(std::stoi(id) / 10, v) << "stream " << id << " is another VM's: " << r.dump();
      EXPECT_EQ(u64(s, {"corrupt"}), 0u) << id;
      EXPECT_EQ(u64(s, {"last"}), kPerStream - 1) << id << ": frames flow again after the steps";
      std::printf("[ streams  ] vm%d stream %s: %" PRIu64 " frames, %" PRIu64 " lost, %" PRIu64 " reordered\n", v,
                  id.c_str(), u64(s, {"frames"}), u64(s, {"lost"}), u64(s, {"reordered"}));
      received += u64(s, {"frames"});
      if (v == 3) {
        EXPECT_EQ(u64(s, {"frames"}), kPerStream) << "vm3 was not touched";
        EXPECT_EQ(u64(s, {"reordered"}), 0u);
      }
    }
  }
  const Ledger after = ledger();
  account(before, after, sent, received, sock_drops);
  // The switch dropped only frames to a NIC that was not there.
  uint64_t unknown = 0;
  for (size_t q = 0; q < after.st["queues"].size(); q++)
    unknown += u64(after.st["queues"][q], {"drops", "unknown_unicast"}) -
               u64(before.st["queues"][q], {"drops", "unknown_unicast"});
  EXPECT_EQ(unknown, switch_drops(after.st) - switch_drops(before.st)) << after.st["queues"].dump();
  EXPECT_TRUE(switchd_alive());
  expect_pools_idle();
}

TEST_F(DeliveryLifecycleTest, RestartUnderTrafficKeepsKernelDelivery) {
  attach();
  add_vm(1);
  add_vm(3, "off");
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  constexpr uint64_t N = 12000;  // 6 s at 2,000 frames/s per VM; the kill at 1.5 s, the restart at 3 s
  Bg rx1 = receive(1, 14, "--stall-ms 20 --idle-ms 2500"), rx3 = receive(3, 14, "--stall-ms 20 --idle-ms 2500");
  Bg tx1 = send(1, N, "2000", 0, 1), tx3 = send(3, N, "2000", 1, 3);
  std::this_thread::sleep_for(1500ms);
  const json show_before = call("show");
  stop_switchd(SIGKILL);
  // switchd is dead: vm1's vmq keeps its conf, CPUMAP and DEVMAP entries,
  // all the classifier's; vm3's frames meet no default socket.
  const uint64_t rx1_dead0 = netdev_stat(vm(1), "eth0", "rx_packets"),
                 rx3_dead0 = netdev_stat(vm(3), "eth0", "rx_packets");
  std::this_thread::sleep_for(1500ms);
  const uint64_t rx1_dead = netdev_stat(vm(1), "eth0", "rx_packets") - rx1_dead0;
  const uint64_t rx3_dead = netdev_stat(vm(3), "eth0", "rx_packets") - rx3_dead0;
  std::printf("[ dead     ] switchd killed: in 1.5 s vm1 (kernel delivery) received %" PRIu64
              " frames, vm3 (the switch's) %" PRIu64 "\n",
              rx1_dead, rx3_dead);
  EXPECT_GT(rx1_dead, 2000u) << "kernel delivery needs no switchd";
  EXPECT_EQ(rx3_dead, 0u);

  const uint64_t t_restart = mono_ns();
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  json a = call("show"), b = show_before;
  a["uplink"].erase("adopted");
  b["uplink"].erase("adopted");
  EXPECT_EQ(a, b);
  EXPECT_EQ(u64(tx1.wait(), {"sent"}), N);
  EXPECT_EQ(u64(tx3.wait(), {"sent"}), N);
  const json r1 = rx1.wait(), r3 = rx3.wait();
  const json s1 = r1["streams"].value("1", json::object()), s3 = r3["streams"].value("3", json::object());
  std::printf("[ restart  ] vm1 (kernel): %" PRIu64 " of %" PRIu64 " frames, %" PRIu64 " lost, %" PRIu64
              " reordered; vm3 (switch): %" PRIu64 " frames, %" PRIu64 " lost\n",
              u64(s1, {"frames"}), N, u64(s1, {"lost"}), u64(s1, {"reordered"}), u64(s3, {"frames"}),
              u64(s3, {"lost"}));
  EXPECT_EQ(u64(s1, {"frames"}), N) << "kernel delivery needs no switchd: nothing lost across the kill and the restart";
  for (const json* s : {&s1, &s3}) {
    EXPECT_EQ(u64(*s, {"reordered"}), 0u) << s->dump();
    EXPECT_EQ(u64(*s, {"corrupt"}), 0u);
    EXPECT_EQ(u64(*s, {"last"}), N - 1) << "frames flow again after the restart";
  }
  EXPECT_EQ(u64(r1, {"foreign"}) + u64(r3, {"foreign"}), 0u);
  // The stall of vm3's stream that spans the restart ends with its first frame after it.
  uint64_t back = 0;
  for (const auto& g : s3["stalls"])
    if (g[0].get<uint64_t>() < t_restart && g[1].get<uint64_t>() > t_restart) back = g[1].get<uint64_t>();
  EXPECT_GT(back, 0u) << r3.dump();
  EXPECT_EQ(nonzero_drops(call("stats"), "vm1"), "");
  expect_pools_idle();
}

// At the sender's full rate through the CPUMAP hop, whatever is lost is
// lost where a counter names it: the processor's CPUMAP queue
// (kernel_cpu_queue_full), the VM end's ring (backend_ring_full, which is
// also the backend's tx_dropped), the VM's stack or the receiver's socket.
TEST_F(DeliveryLifecycleTest, FullRateLosesNothingUncounted) {
  if (cpu_count() < 2) GTEST_SKIP() << "the CPUMAP hop needs a second CPU";
  attach();
  add_vm(1);
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  EXPECT_EQ(call("vmq.set", {{"port", "vm1"}, {"cpu", 1}}).value("vmq_cpu", -1), 1);
  constexpr uint64_t N = 200000;
  const Ledger before = ledger();
  const uint64_t vm_drop0 = netdev_stat(vm(1), "eth0", "rx_dropped");
  Bg rx = receive(1, 30, "--until-frames " + std::to_string(N) + " --idle-ms 1500");
  const json t = send(1, N, "max", 0, 1).wait();  // CPU 0: up0's queue 0, the vmq's processor is CPU 1
  const json r = rx.wait();
  std::this_thread::sleep_for(300ms);  // switchd reads the counters every 100 ms
  const Ledger after = ledger();
  const json s = r["streams"].value("1", json::object());
  auto drop = [&](const char* why) {
    return u64(after.st, {"nics", "vm1", "drops", why}) - u64(before.st, {"nics", "vm1", "drops", why});
  };
  uint64_t kernel = 0;
  for (const char* why : {"kernel_cpu_queue_full", "kernel_no_device", "kernel_redirect_failed", "kernel_no_metadata"})
    kernel += drop(why);
  const uint64_t ring = drop("backend_ring_full"), host = after.host_drop - before.host_drop;
  const uint64_t ext = after.ext_drop - before.ext_drop, up = after.up_drop - before.up_drop;
  const uint64_t vm_drop = netdev_stat(vm(1), "eth0", "rx_dropped") - vm_drop0, sock = u64(r, {"socket_drops"});
  const uint64_t received = u64(s, {"frames"}), sent = u64(t, {"sent"});
  std::printf("[ full rate] sent %" PRIu64 " at %.0f frames/s = received %" PRIu64 " (%.0f/s) + kernel_* %" PRIu64
              " + backend_ring_full %" PRIu64 " + eth0 rx_dropped %" PRIu64 " + receiver socket %" PRIu64
              " + ext0 tx_dropped %" PRIu64 " + up0 rx_dropped %" PRIu64 "; vm1's drops:%s\n",
              sent, t.value("pps", 0.0), received, s.value("pps", 0.0), kernel, ring, vm_drop, sock, ext, up,
              nonzero_drops(after.st, "vm1").c_str());
  EXPECT_EQ(sent, N);
  EXPECT_EQ(received + kernel + ring + vm_drop + sock + ext + up, sent) << "every frame lost is counted";
  EXPECT_EQ(ring, host) << "the VM end's full ring is the backend's tx_dropped";
  EXPECT_EQ(
      u64(after.st, {"nics", "vm1", "backend_tx_dropped"}) - u64(before.st, {"nics", "vm1", "backend_tx_dropped"}),
      host)
      << "the backend's own count, beside the drops";
  EXPECT_FALSE(after.st["nics"]["vm1"]["drops"].contains("backend_tx_dropped")) << "not a reason of its own";
  for (const char* why : {"backend_no_queue", "backend_not_supported", "backend_xmit_error"}) EXPECT_EQ(drop(why), 0u);
  EXPECT_EQ(u64(s, {"reordered"}), 0u);
  EXPECT_EQ(u64(s, {"corrupt"}), 0u);
  EXPECT_EQ(sum_queues(after.st, "rx_vmq"), sum_queues(before.st, "rx_vmq")) << "no vmq socket in the way";
}

// ---------------------------------------------------------------------------
// A backend that stops taking redirected frames after connect: the VM
// turned GRO off at its end, so the kernel refuses redirects into vmN-host
// (EOPNOTSUPP). Every frame lost must be counted under a reason.

TEST_F(DeliveryTest, LossesAfterTheVmTurnsGroOffAreCountedByReason) {
  attach();
  add_vm(1);
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  constexpr uint64_t N = 1000;
  // From each CPU: one stream on the vmq's processor (straight into the
  // DEVMAP), one through the CPUMAP hop.
  auto run = [&](int first_stream) {
    Bg rx = receive(1, 6, "--idle-ms 1500");
    Bg tx0 = send(1, N, "5000", 0, first_stream), tx1 = send(1, N, "5000", 1, first_stream + 1);
    EXPECT_EQ(u64(tx0.wait(), {"sent"}) + u64(tx1.wait(), {"sent"}), 2 * N);
    uint64_t got = 0;
    const json r = rx.wait();
    for (const auto& [_, s] : r["streams"].items()) got += u64(s, {"frames"});
    return got;
  };
  EXPECT_EQ(run(1), 2 * N) << "with GRO on every frame arrives";
  ASSERT_NO_FATAL_FAILURE(set_gro(1, false));
  const json before = call("stats");
  const uint64_t received = run(3);
  std::this_thread::sleep_for(300ms);  // the counters are read every 100 ms
  const json after = call("stats");
  std::map<std::string, uint64_t> by_reason;
  uint64_t counted = 0;
  for (const auto& [why, n] : after["nics"]["vm1"]["drops"].items()) {
    const uint64_t d = n.get<uint64_t>() - u64(before, {"nics", "vm1", "drops", why.c_str()});
    if (!d) continue;
    by_reason[why] = d;
    counted += d;
  }
  std::string reasons;
  for (const auto& [why, n] : by_reason) reasons += " " + why + "=" + std::to_string(n);
  std::printf("[ losses   ] GRO off at vm1's eth0 after connect: %" PRIu64 " sent, %" PRIu64
              " received; vm1's drops:%s\n",
              2 * N, received, reasons.empty() ? " none" : reasons.c_str());
  EXPECT_LT(received, 2 * N) << "the kernel refuses redirects into vm1-host now";
  EXPECT_EQ(counted, 2 * N - received) << "every frame lost counted, by reason:" << reasons;
  // The kernel refuses them at the redirect, before any transmit (xdp_redirect_err).
  EXPECT_EQ(by_reason["kernel_redirect_failed"], 2 * N - received) << reasons;
}

}  // namespace
