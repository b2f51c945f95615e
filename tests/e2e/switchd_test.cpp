// switchd on the real kernel: the built daemon, driven through its control
// socket, moving frames between network namespaces that play the outside
// world (ext) and three VMs. This process's own namespace is the switch host.
//
//   ext: ext0 <-> up0 (uplink, 2 queues)      vmN: eth0 (02:00:00:00:00:0N) <-> vmN-host
//
// Frames come from xvmq-frames (AF_PACKET sendmmsg, sequence-numbered, with a
// payload checksum) and are checked by xvmq-frames recv in each VM. The
// fixture (namespaces, veths, switchd as a child) is tests/lib/switchd_fixture.h.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <filesystem>
#include <iterator>
#include <regex>
#include <sstream>
#include <thread>

#include "loader/classifier.h"
#include "tests/lib/switchd_fixture.h"

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;
using xvmq::control::Response;
namespace fs = std::filesystem;

constexpr const char* kPinRoot = "/sys/fs/bpf/xvmq";

// Sum over classifier reasons and vmqs 1.. : every frame the classifier saw.
uint64_t classifier_total(const json& st) {
  uint64_t n = 0;
  for (const auto& [_, r] : st["classifier"]["reasons"].items()) n += r["frames"].get<uint64_t>();
  for (const auto& [id, v] : st["classifier"]["vmqs"].items())
    if (id != "0") n += v["frames"].get<uint64_t>();
  return n;
}

uint64_t classifier_redirected(const json& st) {
  uint64_t n = 0;
  for (const auto& [_, v] : st["classifier"]["vmqs"].items()) n += v["frames"].get<uint64_t>();
  return n;
}

uint64_t queue_sum(const json& st, const char* key) {
  uint64_t n = 0;
  for (const auto& q : st["queues"]) n += q[key].get<uint64_t>();
  return n;
}

uint64_t queue_drops(const json& st) {
  uint64_t n = 0;
  for (const auto& q : st["queues"])
    for (const auto& [_, d] : q["drops"].items()) n += d.get<uint64_t>();
  return n;
}

class SwitchdTest : public SwitchdFixture {
 protected:
  Bg send(int vm, uint64_t count, const std::string& rate, int cpu, int stream) {
    return background(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + mac_of(vm) + " --count " +
                                    std::to_string(count) + " --rate " + rate + " --cpu " + std::to_string(cpu) +
                                    " --stream " + std::to_string(stream) + " --timeout 30"));
  }

  // Counters along the path ext0 -> classifier -> worker -> backend -> VM.
  struct Ledger {
    json st;
    uint64_t ext_drop = 0, up_drop = 0, host_drop = 0;
  };
  Ledger ledger() {
    Ledger l{call("stats")};
    l.ext_drop = netdev_stat("ext", "ext0", "tx_dropped");
    l.up_drop = netdev_stat("", "up0", "rx_dropped");
    for (int i = 1; i <= 3; i++) l.host_drop += netdev_stat("", "vm" + std::to_string(i) + "-host", "tx_dropped");
    return l;
  }

  // Where the frames sent between two ledgers went, checked step by step:
  // sent = received in the VMs + dropped by the switch (by reason) + dropped
  // by the kernel: the ext0 ring (before the classifier), a failed redirect
  // into a socket (up0 rx_dropped), the backends' transmit, the receivers'
  // sockets. Returns the switch's drops by reason, with "total".
  json account(const Ledger& a, const Ledger& b, uint64_t sent, uint64_t received, uint64_t sock_drops) {
    const uint64_t cls = classifier_total(b.st) - classifier_total(a.st);
    const uint64_t redirected = classifier_redirected(b.st) - classifier_redirected(a.st);
    const uint64_t wrx = queue_sum(b.st, "rx_default") + queue_sum(b.st, "rx_vmq") - queue_sum(a.st, "rx_default") -
                         queue_sum(a.st, "rx_vmq");
    const uint64_t wtx = queue_sum(b.st, "tx") - queue_sum(a.st, "tx");
    json drops{{"total", 0}};
    uint64_t xsk = 0;  // the kernel's, at the workers' sockets: before a worker, not the switch's
    for (size_t q = 0; q < b.st["queues"].size(); q++)
      for (const auto& [why, n] : b.st["queues"][q]["drops"].items()) {
        uint64_t d = n.get<uint64_t>() - a.st["queues"][q]["drops"][why].get<uint64_t>();
        if (why.rfind("xsk_", 0) == 0) xsk += d;
        if (!d || why.rfind("xsk_", 0) == 0) continue;
        drops[why] = u64(drops, {why.c_str()}) + d;
        drops["total"] = drops["total"].get<uint64_t>() + d;
      }
    const uint64_t wdrop = drops["total"].get<uint64_t>();
    const uint64_t ext = b.ext_drop - a.ext_drop, up = b.up_drop - a.up_drop, host = b.host_drop - a.host_drop;
    std::printf("[ account  ] sent %" PRIu64 " = received %" PRIu64 " + switch drops %s + ext0 tx_dropped %" PRIu64
                " + up0 rx_dropped %" PRIu64 " + backend tx_dropped %" PRIu64 " + receiver socket drops %" PRIu64
                " (classifier saw %" PRIu64 ", redirected %" PRIu64 ", workers received %" PRIu64 ", sent %" PRIu64
                "; switchd's sockets counted %" PRIu64 " kernel drops)\n",
                sent, received, drops.dump().c_str(), ext, up, host, sock_drops, cls, redirected, wrx, wtx, xsk);
    EXPECT_EQ(xsk, up) << "switchd's stats name every frame the kernel dropped at its sockets";
    EXPECT_LE(received, sent);
    EXPECT_EQ(cls + ext, sent) << "the classifier saw every frame that left ext0";
    EXPECT_EQ(redirected, cls) << "with default sockets on every queue nothing is passed to the host stack";
    EXPECT_EQ(wrx + up, redirected) << "every redirected frame reached a worker";
    EXPECT_EQ(wtx + wdrop, wrx) << "a worker sends or counts a drop for each frame";
    EXPECT_EQ(received + host + sock_drops, wtx) << "every frame sent to a backend reached the VM";
    EXPECT_EQ(received + wdrop + ext + up + host + sock_drops, sent);
    return drops;
  }
};

std::vector<std::string> threads_pinned_to(pid_t pid, int cpu);

TEST_F(SwitchdTest, ThreeVmsTwoVmqs) {
  constexpr uint64_t N = 2000;
  attach();
  for (int i = 1; i <= 3; i++) add_vm(i);
  json show = call("show");
  EXPECT_EQ(nic_of(show, "vm1")["path"], "vmq");
  EXPECT_EQ(nic_of(show, "vm2")["path"], "vmq");
  EXPECT_EQ(nic_of(show, "vm3")["path"], "default");
  EXPECT_EQ(nic_of(show, "vm1")["vmq"], 1);
  EXPECT_EQ(nic_of(show, "vm2")["vmq"], 2);
  EXPECT_TRUE(nic_of(show, "vm3")["vmq"].is_null());

  std::vector<Bg> rx, tx;
  for (int i = 1; i <= 3; i++) rx.push_back(receive(i, 10, "--until-frames " + std::to_string(N)));
  // Stream 10*vm + cpu: each half stays on one receive queue, so its order is kept.
  for (int i = 1; i <= 3; i++)
    for (int cpu = 0; cpu < 2; cpu++) tx.push_back(send(i, N / 2, "5000", cpu, 10 * i + cpu));
  for (auto& t : tx) EXPECT_EQ(u64(t.wait(), {"sent"}), N / 2);
  for (int i = 1; i <= 3; i++) {
    SCOPED_TRACE("vm" + std::to_string(i));
    json r = rx[i - 1].wait();
    EXPECT_EQ(r["foreign"], 0);
    ASSERT_EQ(r["streams"].size(), 2u) << r.dump();
    for (int cpu = 0; cpu < 2; cpu++) {
      json s = r["streams"][std::to_string(10 * i + cpu)];
      EXPECT_EQ(u64(s, {"frames"}), N / 2) << r.dump();
      EXPECT_EQ(u64(s, {"reordered"}), 0u);
      EXPECT_EQ(u64(s, {"corrupt"}), 0u);
      EXPECT_EQ(u64(s, {"lost"}), 0u);
      EXPECT_EQ(u64(s, {"first"}), 0u);
      EXPECT_EQ(u64(s, {"last"}), N / 2 - 1);
    }
  }
  std::this_thread::sleep_for(100ms);  // anything stray would have arrived by now
  for (int i = 1; i <= 3; i++) EXPECT_EQ(netdev_stat("vm" + std::to_string(i), "eth0", "rx_packets"), N) << "vm" << i;

  json st = call("stats");
  for (const char* vm : {"vm1", "vm2"}) {
    EXPECT_EQ(u64(st, {"nics", vm, "fast_frames"}), N) << vm;
    EXPECT_EQ(u64(st, {"nics", vm, "default_frames"}), 0u) << vm;
  }
  EXPECT_EQ(u64(st, {"nics", "vm3", "default_frames"}), N);
  EXPECT_EQ(u64(st, {"nics", "vm3", "fast_frames"}), 0u);
  ASSERT_EQ(st["queues"].size(), 2u);
  for (int q = 0; q < 2; q++) {
    SCOPED_TRACE("queue " + std::to_string(q));
    // CPU q's senders land on queue q: half of vm1's and vm2's (fast), half of vm3's (default).
    EXPECT_EQ(u64(st["queues"][q], {"rx_vmq"}), N);
    EXPECT_EQ(u64(st["queues"][q], {"rx_default"}), N / 2);
    // ... and are served by a worker pinned to CPU q.
    EXPECT_EQ(u64(st["queues"][q], {"cpu"}), static_cast<uint64_t>(q));
    EXPECT_FALSE(threads_pinned_to(pid_, q).empty()) << "no switchd thread is pinned to CPU " << q;
  }
  EXPECT_EQ(u64(st, {"classifier", "vmqs", "1", "frames"}), N);
  EXPECT_EQ(u64(st, {"classifier", "vmqs", "2", "frames"}), N);
  EXPECT_EQ(u64(st, {"classifier", "reasons", "miss", "frames"}), N);
  EXPECT_EQ(queue_drops(st), 0u) << st["queues"].dump();
  expect_pools_idle();
}

TEST_F(SwitchdTest, LifecycleMisuse) {
  attach();
  const json empty = call("show");
  call("port.create", {{"name", "lm1"}});
  expect_refused("nic.connect", {{"port", "lm1"}}, "not_found", {"lm1", "no NIC", "created", "nic.create"});
  expect_refused("nic.create", {{"port", "nope"}, {"mac", mac_of(1)}, {"backend", "vm1-host"}}, "not_found",
                 {"nope", "does not exist"});
  call("nic.create", {{"port", "lm1"}, {"mac", mac_of(1)}, {"backend", "vm1-host"}});
  expect_refused("nic.create", {{"port", "lm1"}, {"mac", "02:00:00:00:00:11"}, {"backend", "vm2-host"}}, "wrong_state",
                 {"lm1", "already has a NIC", "created"});
  EXPECT_EQ(call("nic.connect", {{"port", "lm1"}})["path"], "vmq");
  expect_refused("nic.delete", {{"port", "lm1"}}, "wrong_state", {"nic lm1", "connected", "nic.disconnect"});
  expect_refused("port.teardown", {{"name", "lm1"}}, "wrong_state", {"lm1", "has a NIC", "connected"});
  expect_refused("port.delete", {{"name", "lm1"}}, "wrong_state", {"lm1", "created"});
  expect_refused("port.create", {{"name", "lm1"}}, "exists", {"lm1", "already exists"});
  call("port.create", {{"name", "lm2"}});
  expect_refused("nic.create", {{"port", "lm2"}, {"mac", mac_of(1)}, {"backend", "vm2-host"}}, "exists",
                 {mac_of(1), "VLAN 0", "lm1"});
  expect_refused("nic.create", {{"port", "lm2"}, {"mac", "01:00:5e:00:00:01"}, {"backend", "vm2-host"}}, "usage",
                 {"01:00:5e:00:00:01", "unicast"});
  expect_refused("port.frobnicate", {{"name", "lm2"}}, "usage", {"port.frobnicate"});
  call("nic.create", {{"port", "lm2"}, {"mac", mac_of(2)}, {"backend", "vm2-host"}});
  EXPECT_EQ(call("vmq.allocate", {{"port", "lm2"}})["vmq"], 2);
  call("port.create", {{"name", "lm3"}});
  call("nic.create", {{"port", "lm3"}, {"mac", mac_of(3)}, {"backend", "vm3-host"}});
  expect_refused("vmq.allocate", {{"port", "lm3"}}, "exhausted", {"lm3", "all 2 vmqs"});

  call("nic.disconnect", {{"port", "lm1"}});
  for (const char* p : {"lm1", "lm2", "lm3"}) {
    call("nic.delete", {{"port", p}});
    call("port.teardown", {{"name", p}});
    call("port.delete", {{"name", p}});
  }
  EXPECT_EQ(call("show"), empty);

  // The whole lifecycle, in order, and its events.
  json evs = call("events")["events"];
  const uint64_t since = evs.empty() ? 0 : evs.back()["seq"].get<uint64_t>();
  call("port.create", {{"name", "ok1"}});
  call("nic.create", {{"port", "ok1"}, {"mac", mac_of(1)}, {"backend", "vm1-host"}});
  EXPECT_EQ(call("nic.connect", {{"port", "ok1"}})["path"], "vmq");
  EXPECT_EQ(call("nic.disconnect", {{"port", "ok1"}})["state"], "disconnected");
  call("nic.delete", {{"port", "ok1"}});
  EXPECT_EQ(call("port.teardown", {{"name", "ok1"}})["state"], "torn_down");
  call("port.delete", {{"name", "ok1"}});
  EXPECT_EQ(call("show"), empty);

  evs = call("events", {{"since", since}})["events"];
  std::vector<std::string> got;
  uint64_t last = since;
  const std::regex iso(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
  for (const auto& e : evs) {
    EXPECT_GT(e["seq"].get<uint64_t>(), last) << e.dump();
    last = e["seq"].get<uint64_t>();
    EXPECT_TRUE(std::regex_match(e["time"].get<std::string>(), iso)) << e.dump();
    got.push_back(e["object"].get<std::string>() + ": " + e["from"].get<std::string>() + " -> " +
                  e["to"].get<std::string>() + " (" + e["step"].get<std::string>() + ")");
  }
  const std::vector<std::string> want{
      "port ok1: none -> created (port.create)",
      "nic ok1: none -> created (nic.create)",
      "vmq 1: free -> allocated to nic ok1 (vmq.allocate)",
      "nic ok1: created -> connected (nic.connect)",
      "nic ok1: connected -> disconnected (nic.disconnect)",
      "vmq 1: allocated -> free (nic.delete)",
      "nic ok1: disconnected -> none (nic.delete)",
      "port ok1: created -> torn_down (port.teardown)",
      "port ok1: torn_down -> none (port.delete)",
  };
  EXPECT_EQ(got, want) << evs.dump(1);
}

TEST_F(SwitchdTest, DisconnectAndDeleteUnderTraffic) {
  constexpr uint64_t kPerStream = 5000;  // 2 s at 2500 pps
  attach();
  add_vm(1);
  EXPECT_EQ(add_vm(3, "off")["path"], "default");
  const Ledger before = ledger();

  Bg rx1 = receive(1, 4), rx3 = receive(3, 4);
  std::vector<Bg> tx;
  for (int vm : {1, 3})
    for (int cpu = 0; cpu < 2; cpu++) tx.push_back(send(vm, kPerStream, "2500", cpu, 10 * vm + cpu));
  std::this_thread::sleep_for(1s);
  for (const char* p : {"vm1", "vm3"}) {
    auto t = mono_ns();
    EXPECT_EQ(call("nic.disconnect", {{"port", p}})["state"], "disconnected");
    std::printf("[ rate     ] nic.disconnect %s under traffic took %.1f ms\n", p, (mono_ns() - t) / 1e6);
  }
  std::this_thread::sleep_for(300ms);
  for (const char* p : {"vm1", "vm3"}) call("nic.delete", {{"port", p}});
  uint64_t sent = 0;
  for (auto& t : tx) sent += u64(t.wait(), {"sent"});
  EXPECT_EQ(sent, 4 * kPerStream);

  uint64_t received = 0, sock_drops = 0;
  for (Bg* b : {&rx1, &rx3}) {
    json r = b->wait();
    sock_drops += u64(r, {"socket_drops"});
    EXPECT_EQ(r["foreign"], 0) << r.dump();
    for (const auto& [id, s] : r["streams"].items()) {
      received += s["frames"].get<uint64_t>();
      EXPECT_EQ(s["reordered"], 0) << id;
      EXPECT_EQ(s["corrupt"], 0) << id;
      EXPECT_EQ(s["first"], 0) << id;  // nothing lost before the disconnect
    }
  }
  EXPECT_TRUE(switchd_alive());
  EXPECT_TRUE(call("show").is_object());
  expect_pools_idle();

  // Frames after the disconnect meet no NIC: unknown unicast drops.
  json drops = account(before, ledger(), sent, received, sock_drops);
  EXPECT_GT(u64(drops, {"unknown_unicast"}), 0u);
  EXPECT_EQ(u64(drops, {"unknown_unicast"}), u64(drops, {"total"})) << drops.dump();
  EXPECT_GT(received, 0u);
}

TEST_F(SwitchdTest, RestartUnderTraffic) {
  attach();
  add_vm(1);
  EXPECT_EQ(add_vm(3, "off")["path"], "default");
  constexpr uint64_t N = 12000;  // 6 s at 2000 pps per VM; the kill comes at 1.5 s, the restart at 3.1 s
  Bg rx1 = receive(1, 12, "--stall-ms 20 --idle-ms 2500"), rx3 = receive(3, 12, "--stall-ms 20 --idle-ms 2500");
  Bg tx1 = send(1, N, "2000", 0, 1), tx3 = send(3, N, "2000", 1, 3);
  std::this_thread::sleep_for(1500ms);
  const json show_before = call("show");
  stop_switchd(SIGKILL);
  EXPECT_TRUE(fs::exists(dir_ + "/state/state.json"));

  // While switchd is dead the classifier passes the frames to the host stack
  // (XDP_PASS): vm1's as no_socket (its filter stays), vm3's as miss.
  auto counters = [&]() {
    xvmq::Counters out;
    auto c = xvmq::Classifier::open({std::string(kPinRoot) + "/up0"});
    if (!c) ADD_FAILURE() << c.error().message;
    auto n = c ? c->counters() : xvmq::Result<xvmq::Counters>(xvmq::Error{EBADF, "no classifier"});
    if (n)
      out = *n;
    else
      ADD_FAILURE() << n.error().message;
    return out;
  };
  std::this_thread::sleep_for(100ms);
  // up0's receive count brackets the counters' interval.
  const uint64_t up_rx0 = netdev_stat("", "up0", "rx_packets");
  const xvmq::Counters dead0 = counters();
  std::this_thread::sleep_for(1400ms);
  const xvmq::Counters dead1 = counters();
  const uint64_t passed = netdev_stat("", "up0", "rx_packets") - up_rx0;
  const uint64_t no_socket = dead1.reason[XVMQ_REASON_NO_SOCKET].frames - dead0.reason[XVMQ_REASON_NO_SOCKET].frames;
  const uint64_t miss = dead1.reason[XVMQ_REASON_MISS].frames - dead0.reason[XVMQ_REASON_MISS].frames;
  EXPECT_GT(no_socket, 1000u) << "vm1's frames while switchd was dead";
  EXPECT_GT(miss, 1000u) << "vm3's frames while switchd was dead";
  EXPECT_EQ(dead1.vmq[0].frames, dead0.vmq[0].frames) << "nothing redirected to a dead default socket";
  EXPECT_EQ(dead1.vmq[1].frames, dead0.vmq[1].frames) << "nothing redirected to a dead vmq socket";
  EXPECT_GE(passed, no_socket + miss) << "passed frames reach up0's stack";

  const uint64_t t_restart = mono_ns();
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  const uint64_t t_ready = mono_ns();
  json show_after = call("show");
  EXPECT_EQ(show_after["uplink"]["adopted"], true);
  json a = show_after, b = show_before;
  a["uplink"].erase("adopted");
  b["uplink"].erase("adopted");
  EXPECT_EQ(a, b);

  EXPECT_EQ(u64(tx1.wait(), {"sent"}), N);
  EXPECT_EQ(u64(tx3.wait(), {"sent"}), N);
  for (auto [vm, bg] : {std::pair{1, &rx1}, std::pair{3, &rx3}}) {
    SCOPED_TRACE("vm" + std::to_string(vm));
    json r = bg->wait();
    json s = r["streams"][std::to_string(vm)];
    EXPECT_EQ(s["reordered"], 0);
    EXPECT_EQ(s["corrupt"], 0);
    EXPECT_EQ(u64(s, {"last"}), N - 1) << "frames flow again after the restart";
    // The stall that spans the restart ends with the first frame after it.
    uint64_t back = 0;
    for (const auto& g : s["stalls"])
      if (g[0].get<uint64_t>() < t_restart && g[1].get<uint64_t>() > t_restart) back = g[1].get<uint64_t>();
    ASSERT_GT(back, 0u) << r.dump();
    double ms = (back - t_restart) / 1e6;
    std::printf(
        "[ rate     ] restart: vm%d receives again %.1f ms after switchd was started (control socket up after %.1f "
        "ms)\n",
        vm, ms, (t_ready - t_restart) / 1e6);
    EXPECT_LT(ms, 1000.0);
  }
  json st = call("stats");
  EXPECT_GE(u64(st, {"classifier", "reasons", "no_socket", "frames"}), dead1.reason[XVMQ_REASON_NO_SOCKET].frames);
  EXPECT_GE(u64(st, {"classifier", "reasons", "miss", "frames"}), dead1.reason[XVMQ_REASON_MISS].frames);
  expect_pools_idle();
}

TEST_F(SwitchdTest, FastPathOrderAndIntegrity) {
  constexpr uint64_t N = 20000;
  attach();
  EXPECT_EQ(add_vm(1)["path"], "vmq");
  EXPECT_EQ(add_vm(3, "off")["path"], "default");
  for (int vm : {1, 3}) {
    SCOPED_TRACE("vm" + std::to_string(vm));
    const Ledger before = ledger();
    Bg rx = receive(vm, 15, "--until-frames " + std::to_string(N) + " --idle-ms 500");
    json t = send(vm, N, "max", 0, vm).wait();
    json r = rx.wait();
    account(before, ledger(), u64(t, {"sent"}), u64(r, {"streams", std::to_string(vm).c_str(), "frames"}),
            u64(r, {"socket_drops"}));
    json s = r["streams"][std::to_string(vm)];
    EXPECT_EQ(u64(t, {"sent"}), N);
    EXPECT_EQ(s["reordered"], 0);
    EXPECT_EQ(s["corrupt"], 0);
    EXPECT_GT(u64(s, {"frames"}), N / 10) << r.dump();
    std::printf(
        "[ rate     ] %s path, vm%d: 64-byte frames, xvmq-frames (AF_PACKET sendmmsg) at max rate from CPU 0: "
        "sent %.0f pps, received in the VM %.0f pps, %" PRIu64 " of %" PRIu64 " received (%" PRIu64
        " lost in the switch or kernel, %" PRIu64 " in the receiver's socket)\n",
        vm == 1 ? "fast (vmq)" : "default (software switch)", vm, t["pps"].get<double>(), s["pps"].get<double>(),
        u64(s, {"frames"}), N, u64(s, {"lost"}), u64(r, {"socket_drops"}));
  }
  expect_pools_idle();
}

// ---------------------------------------------------------------------------
// Hardware-steered dedicated queues. switchd reserves the highest receive
// queue of up0 (queue 1, CPU 1) for a hardware-steered vmq: that vmq's socket
// exists only on queue 1, on a UMEM of its own, served by a worker pinned to
// CPU 1; general workers serve queue 0. With --flow-rules external switchd
// programs no NIC rule and trusts that the vmq's frames arrive on queue 1:
// on a veth the test plays the NIC's flow rule by sending from CPU 1 (a frame
// lands on the peer's receive queue = the sender's transmit queue = its CPU,
// PACKET_QDISC_BYPASS). Frames for it sent from CPU 0 arrive on queue 0,
// where it has no vmq socket: the classifier falls back to the default
// socket (reason no_socket) and the software switch still delivers them.

// The entry of `st[list]` whose "queue" is q, or null.
json entry_of_queue(const json& st, const char* list, uint64_t q) {
  if (!st.contains(list) || !st[list].is_array()) return nullptr;
  for (const auto& e : st[list])
    if (e.contains("queue") && e["queue"] == q) return e;
  return nullptr;
}

// The names of a process's threads allowed on exactly one CPU, `cpu`.
std::vector<std::string> threads_pinned_to(pid_t pid, int cpu) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::istringstream in(slurp(t.path() / "status"));
    std::string line, name, cpus;
    while (std::getline(in, line)) {
      if (line.rfind("Name:", 0) == 0) name = line.substr(line.find_first_not_of(" \t", 5));
      if (line.rfind("Cpus_allowed_list:", 0) == 0) cpus = line.substr(line.find_first_not_of(" \t", 18));
    }
    if (cpus == std::to_string(cpu)) out.push_back(name);
  }
  return out;
}

class SwitchdDedicatedTest : public SwitchdTest {
 protected:
  static constexpr uint64_t kDedicatedQueue = 1, kGeneralQueue = 0;
  static constexpr uint64_t kDefaultVmqUmemFrames = 2048;  // --vmq-umem-frames default

  void SetUp() override {
    XVMQ_REQUIRE_PRIVILEGES();
    // Same rule as privileges: a skip here, a failure under CI.
    if (const int n = cpu_count(); n < 2) {
      const std::string why =
          "dedicated queue tests need 2 CPUs (frames reach up0's receive queue 1 only when sent from "
          "CPU 1, and its worker is pinned to CPU 1); this process may use " +
          std::to_string(n);
      if (xvmq::test::in_ci()) FAIL() << "cannot run under CI: " << why;
      GTEST_SKIP() << why;
    }
    switchd_extra_ = {"--dedicated-queues", "1"};
    if (!flow_rules_.empty()) switchd_extra_.insert(switchd_extra_.end(), {"--flow-rules", flow_rules_});
    SwitchdTest::SetUp();
  }

  // --flow-rules for switchd; empty: its default (ethtool).
  std::string flow_rules_ = "external";

  // The NIC holds dedicated queue 1 (CPU 1) by hardware steering.
  void expect_dedicated(json nic, const std::string& flow_rules) {
    SCOPED_TRACE("nic " + nic.dump());
    ASSERT_TRUE(nic.is_object());
    EXPECT_EQ(nic["path"], json("vmq"));
    json s = nic["steering"];
    ASSERT_TRUE(s.is_object()) << "steering is not an object";
    EXPECT_EQ(s["requested"], json("hardware"));
    EXPECT_EQ(s["mode"], json("hardware"));
    EXPECT_EQ(s["reason"], json(""));
    EXPECT_EQ(s["queue"], kDedicatedQueue);
    EXPECT_EQ(s["cpu"], 1);
    EXPECT_EQ(s["flow_rules"], flow_rules);
    EXPECT_EQ(s["umem_frames"], kDefaultVmqUmemFrames);
    EXPECT_EQ(nic["affinity"], (json{{"cpus", json::array({1})}, {"by", "dedicated queue 1 (hardware steering)"}}));
  }

  // The NIC's vmq is steered in software: no dedicated queue, served by the
  // general queues (here queue 0, CPU 0).
  void expect_software(json nic, const std::string& requested, const std::string& flow_rules) {
    SCOPED_TRACE("nic " + nic.dump());
    ASSERT_TRUE(nic.is_object());
    EXPECT_EQ(nic["path"], json("vmq"));
    json s = nic["steering"];
    ASSERT_TRUE(s.is_object()) << "steering is not an object";
    EXPECT_EQ(s["requested"], requested);
    EXPECT_EQ(s["mode"], json("software"));
    if (requested == "software")
      EXPECT_EQ(s["reason"], json(""));
    else
      EXPECT_NE(s["reason"], json("")) << "software instead of hardware needs a reason";
    EXPECT_TRUE(s.contains("queue") && s["queue"].is_null());
    EXPECT_TRUE(s.contains("cpu") && s["cpu"].is_null());
    EXPECT_TRUE(s.contains("umem_frames") && s["umem_frames"].is_null());
    EXPECT_EQ(s["flow_rules"], flow_rules);
    json a = nic["affinity"];
    EXPECT_EQ(a["by"], json("every general receive queue (software steering)"));
    ASSERT_TRUE(a["cpus"].is_array());
    json cpus = a["cpus"];
    EXPECT_NE(std::find(cpus.begin(), cpus.end(), json(0)), cpus.end()) << "general queue 0's CPU serves the vmq";
  }

  void expect_queue_split(json show) {
    EXPECT_EQ(show["uplink"]["dedicated_queues"], json::array({kDedicatedQueue})) << show["uplink"].dump();
    EXPECT_EQ(show["uplink"]["general_queues"], json::array({kGeneralQueue})) << show["uplink"].dump();
  }

  // n sequence-numbered frames to vm, sent from `cpu` (so they arrive on
  // up0's receive queue `cpu`): every one received, in order, intact, and
  // nothing else. Returns the sender's JSON.
  json expect_delivered(int vm, int cpu, uint32_t stream, uint64_t n) {
    SCOPED_TRACE("vm" + std::to_string(vm) + " from CPU " + std::to_string(cpu));
    Bg rx = receive(vm, 15, "--until-frames " + std::to_string(n) + " --idle-ms 1500");
    json t = send(vm, n, "5000", cpu, stream).wait();
    json r = rx.wait();
    EXPECT_EQ(u64(t, {"sent"}), n) << t.dump();
    EXPECT_EQ(r["foreign"], 0) << r.dump();
    EXPECT_EQ(r["streams"].size(), 1u) << r.dump();
    json s = r["streams"][std::to_string(stream)];
    EXPECT_EQ(u64(s, {"frames"}), n) << r.dump();
    EXPECT_EQ(u64(s, {"reordered"}), 0u);
    EXPECT_EQ(u64(s, {"corrupt"}), 0u);
    EXPECT_EQ(u64(s, {"lost"}), 0u);
    EXPECT_EQ(u64(s, {"first"}), 0u);
    EXPECT_EQ(u64(s, {"last"}), n - 1);
    return t;
  }

  // stats.dedicated's entry for queue 1.
  json dedicated_of(json st) {
    json d = entry_of_queue(st, "dedicated", kDedicatedQueue);
    EXPECT_TRUE(d.is_object()) << "no stats.dedicated entry for queue 1: " << st["dedicated"].dump();
    return d.is_object() ? d : json::object();
  }

  // The dedicated queue's buffers back in its pool or fill ring, within 1 s.
  void expect_dedicated_idle(uint64_t total) {
    json d;
    for (int i = 0; i < 100; i++) {
      d = dedicated_of(call("stats"));
      json b = d["buffers"];
      if (u64(b, {"total"}) == total && u64(b, {"free"}) + u64(b, {"in_fill"}) == total && u64(b, {"in_flight"}) == 0)
        return;
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << "dedicated queue's pool (of " << total << " frames) not idle after 1 s: " << d.dump();
  }
};

class SwitchdEthtoolRulesTest : public SwitchdDedicatedTest {
 protected:
  SwitchdEthtoolRulesTest() { flow_rules_.clear(); }  // switchd's default: ethtool
};

TEST_F(SwitchdDedicatedTest, DedicatedQueueServesItsVm) {
  constexpr uint64_t N = 2000;
  attach();
  add_vm(1, "auto", "hardware");
  add_vm(2, "auto", "software");
  json show = call("show");
  expect_queue_split(show);
  json vm1 = nic_of(show, "vm1"), vm2 = nic_of(show, "vm2");
  expect_dedicated(vm1, "external");
  expect_software(vm2, "software", "external");
  ASSERT_TRUE(vm1["vmq"].is_number() && vm2["vmq"].is_number()) << show.dump();
  const std::string vmq1 = std::to_string(vm1["vmq"].get<uint64_t>()),
                    vmq2 = std::to_string(vm2["vmq"].get<uint64_t>());
  EXPECT_FALSE(threads_pinned_to(pid_, 1).empty()) << "no switchd thread is pinned to CPU 1 (dedicated queue 1's CPU)";

  // 1. From CPU 1: the hardware rule's queue. The dedicated worker alone sees them.
  json a = call("stats");
  expect_delivered(1, 1, 11, N);
  json b = call("stats");
  {
    SCOPED_TRACE("vm1 from CPU 1 (dedicated queue 1)");
    ASSERT_EQ(b["dedicated"].size(), 1u) << b["dedicated"].dump();
    json da = dedicated_of(a), db = dedicated_of(b);
    EXPECT_EQ(db["queue"], kDedicatedQueue);
    EXPECT_EQ(db["cpu"], 1);
    EXPECT_EQ(db["nic"], json("vm1"));
    EXPECT_EQ(u64(db, {"rx_vmq"}) - u64(da, {"rx_vmq"}), N) << db.dump();
    EXPECT_EQ(u64(db, {"tx"}) - u64(da, {"tx"}), N) << db.dump();
    EXPECT_EQ(u64(b, {"nics", "vm1", "fast_frames"}) - u64(a, {"nics", "vm1", "fast_frames"}), N);
    EXPECT_EQ(u64(b, {"nics", "vm1", "default_frames"}) - u64(a, {"nics", "vm1", "default_frames"}), 0u);
    EXPECT_EQ(
        u64(b, {"classifier", "vmqs", vmq1.c_str(), "frames"}) - u64(a, {"classifier", "vmqs", vmq1.c_str(), "frames"}),
        N);
    json qa = entry_of_queue(a, "queues", kGeneralQueue), qb = entry_of_queue(b, "queues", kGeneralQueue);
    ASSERT_TRUE(qb.is_object()) << "no stats.queues entry for general queue 0: " << b["queues"].dump();
    for (const char* k : {"rx_default", "rx_vmq", "tx"})
      EXPECT_EQ(u64(qb, {k}), u64(qa, {k})) << "general queue 0's " << k << " moved for frames on queue 1";
  }

  // 2. vm1 from CPU 0: queue 0 has no vmq socket of vm1's; the default path delivers.
  a = b;
  expect_delivered(1, 0, 10, N);
  b = call("stats");
  {
    SCOPED_TRACE("vm1 from CPU 0 (general queue 0)");
    EXPECT_EQ(u64(b, {"classifier", "reasons", "no_socket", "frames"}) -
                  u64(a, {"classifier", "reasons", "no_socket", "frames"}),
              N);
    EXPECT_EQ(u64(b, {"nics", "vm1", "default_frames"}) - u64(a, {"nics", "vm1", "default_frames"}), N);
    EXPECT_EQ(u64(b, {"nics", "vm1", "fast_frames"}) - u64(a, {"nics", "vm1", "fast_frames"}), 0u);
    EXPECT_EQ(u64(dedicated_of(b), {"rx_vmq"}) - u64(dedicated_of(a), {"rx_vmq"}), 0u);
    json qa = entry_of_queue(a, "queues", kGeneralQueue), qb = entry_of_queue(b, "queues", kGeneralQueue);
    EXPECT_EQ(u64(qb, {"rx_default"}) - u64(qa, {"rx_default"}), N);
    EXPECT_EQ(u64(qb, {"rx_vmq"}) - u64(qa, {"rx_vmq"}), 0u);
  }

  // 3. vm2 (software steering) from CPU 0: its vmq socket on general queue 0.
  a = b;
  expect_delivered(2, 0, 20, N);
  b = call("stats");
  {
    SCOPED_TRACE("vm2 from CPU 0 (general queue 0)");
    EXPECT_EQ(u64(b, {"nics", "vm2", "fast_frames"}) - u64(a, {"nics", "vm2", "fast_frames"}), N);
    EXPECT_EQ(u64(b, {"nics", "vm2", "default_frames"}) - u64(a, {"nics", "vm2", "default_frames"}), 0u);
    EXPECT_EQ(
        u64(b, {"classifier", "vmqs", vmq2.c_str(), "frames"}) - u64(a, {"classifier", "vmqs", vmq2.c_str(), "frames"}),
        N);
    json qa = entry_of_queue(a, "queues", kGeneralQueue), qb = entry_of_queue(b, "queues", kGeneralQueue);
    EXPECT_EQ(u64(qb, {"rx_vmq"}) - u64(qa, {"rx_vmq"}), N);
    EXPECT_EQ(u64(qb, {"rx_default"}) - u64(qa, {"rx_default"}), 0u);
    EXPECT_EQ(u64(dedicated_of(b), {"rx_vmq"}) - u64(dedicated_of(a), {"rx_vmq"}), 0u);
  }

  // Nothing foreign anywhere: each VM got its own frames and no others.
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(netdev_stat("vm1", "eth0", "rx_packets"), 2 * N);
  EXPECT_EQ(netdev_stat("vm2", "eth0", "rx_packets"), N);
  EXPECT_EQ(netdev_stat("vm3", "eth0", "rx_packets"), 0u);
  EXPECT_EQ(queue_drops(b), 0u) << b["queues"].dump();
  EXPECT_EQ(u64(b, {"classifier", "reasons", "no_socket", "frames"}), N) << "only vm1's frames on queue 0";
  expect_pools_idle();
  expect_dedicated_idle(kDefaultVmqUmemFrames);
}

TEST_F(SwitchdEthtoolRulesTest, FallsBackWithEthtoolRulesOnVeth) {
  constexpr uint64_t N = 2000;
  attach();
  add_vm(1, "auto", "hardware");
  json show = call("show");
  expect_queue_split(show);
  json vm1 = nic_of(show, "vm1");
  expect_software(vm1, "hardware", "ethtool");
  const std::string reason = vm1["steering"].value("reason", "");
  EXPECT_NE(reason.find("veth"), std::string::npos) << "the reason names the driver: " << reason;
  EXPECT_EQ(vm1["affinity"]["cpus"], json::array({0})) << "served by every general queue (queue 0, CPU 0)";
  json st0 = call("stats");
  for (const auto& d : st0.value("dedicated", json::array())) EXPECT_NE(d.value("nic", ""), "vm1") << d.dump();

  json a = call("stats");
  expect_delivered(1, 0, 10, N);
  json b = call("stats");
  EXPECT_EQ(u64(b, {"nics", "vm1", "fast_frames"}) - u64(a, {"nics", "vm1", "fast_frames"}), N);
  EXPECT_EQ(u64(b, {"nics", "vm1", "default_frames"}) - u64(a, {"nics", "vm1", "default_frames"}), 0u);
  json qa = entry_of_queue(a, "queues", kGeneralQueue), qb = entry_of_queue(b, "queues", kGeneralQueue);
  EXPECT_EQ(u64(qb, {"rx_vmq"}) - u64(qa, {"rx_vmq"}), N);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(netdev_stat("vm1", "eth0", "rx_packets"), N);
  expect_pools_idle();
}

TEST_F(SwitchdDedicatedTest, DisconnectReleasesTheDedicatedQueue) {
  constexpr uint64_t N = 2000;
  attach();
  add_vm(1, "auto", "hardware");
  expect_dedicated(nic_of(call("show"), "vm1"), "external");

  EXPECT_EQ(call("nic.disconnect", {{"port", "vm1"}})["state"], json("disconnected"));
  json show = call("show");
  {
    SCOPED_TRACE("vm1 disconnected");
    json s = nic_of(show, "vm1")["steering"];
    EXPECT_TRUE(s.contains("queue") && s["queue"].is_null()) << s.dump();
    for (const auto& d : call("stats").value("dedicated", json::array()))
      EXPECT_NE(d.value("nic", ""), "vm1") << d.dump();
  }

  // vm1 still holds vmq 1 (until nic.delete); vm3 gets vmq 2 and the freed queue.
  add_vm(3, "auto", "hardware");
  show = call("show");
  expect_queue_split(show);
  expect_dedicated(nic_of(show, "vm3"), "external");
  json a = call("stats");
  expect_delivered(3, 1, 31, N);
  json b = call("stats");
  {
    SCOPED_TRACE("vm3 from CPU 1 (dedicated queue 1)");
    EXPECT_EQ(dedicated_of(b)["nic"], json("vm3"));
    EXPECT_EQ(u64(dedicated_of(b), {"rx_vmq"}) - u64(dedicated_of(a), {"rx_vmq"}), N);
    EXPECT_EQ(u64(b, {"nics", "vm3", "fast_frames"}) - u64(a, {"nics", "vm3", "fast_frames"}), N);
  }

  // Free a vmq; a second hardware NIC finds every reserved queue taken.
  call("nic.delete", {{"port", "vm1"}});
  add_vm(2, "auto", "hardware");
  show = call("show");
  json vm2 = nic_of(show, "vm2");
  expect_software(vm2, "hardware", "external");
  const std::string reason = lower(vm2["steering"].value("reason", ""));
  EXPECT_NE(reason.find("dedicated queue"), std::string::npos) << reason;
  EXPECT_NE(reason.find("free"), std::string::npos) << reason;
  expect_dedicated(nic_of(show, "vm3"), "external");

  a = call("stats");
  expect_delivered(2, 0, 20, N);
  b = call("stats");
  EXPECT_EQ(u64(b, {"nics", "vm2", "fast_frames"}) - u64(a, {"nics", "vm2", "fast_frames"}), N);
  EXPECT_EQ(b["dedicated"].size(), 1u) << b["dedicated"].dump();
  EXPECT_EQ(dedicated_of(b)["nic"], json("vm3"));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(netdev_stat("vm1", "eth0", "rx_packets"), 0u);
  EXPECT_EQ(netdev_stat("vm2", "eth0", "rx_packets"), N);
  EXPECT_EQ(netdev_stat("vm3", "eth0", "rx_packets"), N);
  expect_pools_idle();
  expect_dedicated_idle(kDefaultVmqUmemFrames);
}

TEST_F(SwitchdDedicatedTest, RestartKeepsTheDedicatedQueue) {
  constexpr uint64_t N = 2000;
  attach();
  add_vm(1, "auto", "hardware");
  add_vm(2, "auto", "software");
  expect_delivered(1, 1, 11, N);
  json show_before = call("show");
  expect_dedicated(nic_of(show_before, "vm1"), "external");

  stop_switchd(SIGKILL);
  EXPECT_TRUE(fs::exists(dir_ + "/state/state.json"));
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  json show_after = call("show");
  EXPECT_EQ(show_after["uplink"]["adopted"], true);
  expect_queue_split(show_after);
  expect_dedicated(nic_of(show_after, "vm1"), "external");
  expect_software(nic_of(show_after, "vm2"), "software", "external");
  json x = show_after, y = show_before;
  x["uplink"].erase("adopted");
  y["uplink"].erase("adopted");
  EXPECT_EQ(x, y);
  EXPECT_FALSE(threads_pinned_to(pid_, 1).empty()) << "no switchd thread is pinned to CPU 1 after the restart";

  json a = call("stats");
  expect_delivered(1, 1, 12, N);
  json b = call("stats");
  {
    SCOPED_TRACE("vm1 from CPU 1 after the restart");
    ASSERT_EQ(b["dedicated"].size(), 1u) << b["dedicated"].dump();
    EXPECT_EQ(dedicated_of(b)["nic"], json("vm1"));
    EXPECT_EQ(dedicated_of(b)["cpu"], 1);
    EXPECT_EQ(u64(dedicated_of(b), {"rx_vmq"}) - u64(dedicated_of(a), {"rx_vmq"}), N);
    EXPECT_EQ(u64(b, {"nics", "vm1", "fast_frames"}) - u64(a, {"nics", "vm1", "fast_frames"}), N);
    EXPECT_EQ(u64(b, {"nics", "vm1", "default_frames"}) - u64(a, {"nics", "vm1", "default_frames"}), 0u);
  }
  a = b;
  expect_delivered(2, 0, 20, N);
  b = call("stats");
  EXPECT_EQ(u64(b, {"nics", "vm2", "fast_frames"}) - u64(a, {"nics", "vm2", "fast_frames"}), N);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(netdev_stat("vm1", "eth0", "rx_packets"), 2 * N);
  EXPECT_EQ(netdev_stat("vm2", "eth0", "rx_packets"), N);
  expect_pools_idle();
  expect_dedicated_idle(kDefaultVmqUmemFrames);
}

}  // namespace

// --rt-priority: each queue worker (a thread named xvmq-q<queue>) runs at
// that SCHED_FIFO priority, and frames still flow; the unit grants
// CAP_SYS_NICE for it.
class SwitchdRtTest : public SwitchdTest {
 protected:
  void SetUp() override {
    switchd_extra_ = {"--rt-priority", "7"};
    SwitchdTest::SetUp();
  }
};

TEST_F(SwitchdRtTest, WorkersRunAtTheirFifoPriority) {
  attach();
  add_vm(1);
  // /proc/<pid>/task/<tid>/stat: field 2 is (comm), then policy is field 41
  // and rt_priority field 40 (proc(5)).
  int workers = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/task")) {
    const std::string comm = slurp(e.path().string() + "/comm");
    if (!comm.starts_with("xvmq-q")) continue;
    workers++;
    const std::string stat = slurp(e.path().string() + "/stat");
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // from field 3 on
    std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
    ASSERT_GE(f.size(), 39u) << stat;
    EXPECT_EQ(f[40 - 3], "7") << comm << ": rt_priority";
    EXPECT_EQ(f[41 - 3], "1") << comm << ": policy (1 = SCHED_FIFO)";
  }
  EXPECT_EQ(workers, 2) << "one worker per receive queue of up0";

  Bg rx = receive(1, 10, "--until-frames 1000");
  EXPECT_EQ(u64(send(1, 1000, "5000", 0, 1).wait(), {"sent"}), 1000u);
  EXPECT_EQ(u64(rx.wait()["streams"]["1"], {"frames"}), 1000u);
}
