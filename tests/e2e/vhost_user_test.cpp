// A real guest on a vhost-user backend (docs/guests.md): Debian 12's cloud
// kernel under QEMU with TCG (tests/lib/qemu_guest.h), its virtio-net NIC on
// switchd's vhost-user socket, switched to an outside host behind the uplink.
// No tap, no netdev for the guest: the queue worker copies from its UMEM into
// the guest's receive ring and from its transmit ring into a UMEM buffer.
//
//   ext: ext0 10.78.0.1/24 <-> up0 (uplink, 2 queues) -- switchd -- vhost-user socket <-> QEMU: eth0 10.78.0.2/24
//
// The NIC is connected before QEMU starts (frames counted as
// vhost_not_ready); then ARP and ping both ways, the classifier's vmq
// counter against the frames placed in the guest's ring, a TCP transfer each
// way checked by SHA-256; a guest that does not read; the guest resetting
// its device; QEMU killed mid-traffic (every buffer back, the NIC
// still connected) and a new QEMU on the same socket; switchd restarted, the
// same QEMU reconnecting on its own. And a vhost-user guest and a tap guest
// on one switch pinging each other.
#include <signal.h>
#include <sys/wait.h>

#include <cinttypes>
#include <map>
#include <thread>

#include "tests/lib/qemu_guest.h"
#include "tests/lib/switchd_fixture.h"

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;

constexpr const char* kGuestIp = "10.78.0.2";
constexpr const char* kExtIp = "10.78.0.1";
constexpr int kTransferKiB = 1024;
constexpr int kMetricsPort = 9472;  // in this test's own network namespace

class VhostUserTest : public SwitchdFixture {
 protected:
  VhostUserTest() {
    prefix_tag_ = "vu";
    vm_count_ = 0;
    offloads_off_ = true;  // full checksums from ext0: the guest is offered no checksum offload
    switchd_extra_ = {"--metrics-listen", std::to_string(kMetricsPort)};
  }

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(SwitchdFixture::SetUp());
    if (IsSkipped()) return;
    if (auto why = qemu_guest_missing()) {
      if (in_ci()) FAIL() << "the QEMU guest cannot run under CI: " << *why;
      GTEST_SKIP() << *why;
    }
    ASSERT_TRUE(sh_ok(in("ext", std::string("ip addr add ") + kExtIp + "/24 dev ext0")));
    path_ = dir_ + "/vm1.vhost";
  }

  void TearDown() override {
    if (HasFailure() && guest_ && guest_->pid() > 0)
      std::fprintf(stderr, "---- guest console\n%s----\n", guest_->console().c_str());
    guest_.reset();
    tap_guest_.reset();
    if (tap_made_) sh("ip link del vmt0");
    SwitchdFixture::TearDown();
    if (!path_.empty()) ::unlink(path_.c_str());
  }

  void start_guest(int queues = 1) {
    guest_ = std::make_unique<QemuGuest>();
    const auto err = guest_->start({.vhost_user = path_,
                                    .queues = queues,
                                    .cpus = queues,
                                    .mac = mac_of(1),
                                    .addr = std::string(kGuestIp) + "/24",
                                    .boot_limit = 90s});
    ASSERT_FALSE(err) << *err;
    std::printf("[ guest    ] up in %.1f s (QEMU pid %d, TCG, vhost-user)\n", guest_->boot_seconds(), guest_->pid());
  }

  std::string guest(const std::string& cmd, std::chrono::seconds limit = 30s) {
    const QemuGuest::Result r = guest_->run(cmd, limit);
    EXPECT_EQ(r.status, 0) << "in the guest: " << cmd << "\n" << r.out;
    return r.out;
  }

  uint64_t vmq_frames(const json& st) {
    const json n = nic_of(call("show"), "vm1");
    const std::string v = std::to_string(n.value("vmq", 0));
    return u64(st, {"classifier", "vmqs", v.c_str(), "frames"});
  }
  uint64_t nic_u64(const json& st, const char* key) { return u64(st, {"nics", "vm1", key}); }
  uint64_t nic_drop(const json& st, const char* why) { return u64(st, {"nics", "vm1", "drops", why}); }

  // ARP and ping both ways; what the classifier steered to the vmq and what
  // the software switch delivered are exactly what went into the guest's ring.
  void ping_both_ways(const std::string& what) {
    SCOPED_TRACE(what);
    guest("ping -c 3 -i 0.2 -W 3 " + std::string(kExtIp));
    const json before = call("stats");
    EXPECT_TRUE(sh_ok(in("ext", "ping -c 5 -i 0.2 -W 3 " + std::string(kGuestIp))));
    const json after = call("stats");
    const uint64_t vmq = vmq_frames(after) - vmq_frames(before);
    const uint64_t fast = nic_u64(after, "fast_frames") - nic_u64(before, "fast_frames");
    const uint64_t dflt = nic_u64(after, "default_frames") - nic_u64(before, "default_frames");
    const uint64_t ring = nic_u64(after, "vhost_rx_frames") - nic_u64(before, "vhost_rx_frames");
    std::printf("[ ping     ] %s: classifier vmq +%" PRIu64 ", fast +%" PRIu64 ", default +%" PRIu64
                ", into the guest's ring +%" PRIu64 "\n",
                what.c_str(), vmq, fast, dflt, ring);
    EXPECT_GE(vmq, 5u) << "the echo requests to the guest came by its vmq";
    EXPECT_EQ(vmq, fast) << "every frame the classifier steered to the vmq reached the worker";
    EXPECT_EQ(ring, fast + dflt) << "every frame for the NIC went into the guest's ring";
  }

  // vhost_rx_frames as an operator sees it: the Prometheus family and
  // switchctl stats' column, equal to the stats the guest's traffic left.
  void check_vhost_rx_shown() {
    const json st = call("stats");
    const uint64_t frames = nic_u64(st, "vhost_rx_frames");
    std::string scraped, table;
    ASSERT_EQ(sh("busybox wget -q -O - http://127.0.0.1:" + std::to_string(kMetricsPort) +
                     "/metrics | grep '^xvmq_nic_vhost_rx_frames_total'",
                 &scraped),
              0)
        << scraped;
    ASSERT_EQ(sh(std::string(SWITCHCTL_PATH) + " --socket " + sock_ + " stats | sed -n '/^PORTS/,/^$/p'", &table), 0)
        << table;
    std::printf("[ metrics  ] %s[ stats    ]\n%s", scraped.c_str(), table.c_str());
    EXPECT_NE(scraped.find("port=\"vm1\"} " + std::to_string(frames) + "\n"), std::string::npos)
        << "the scrape has stats' " << frames;
    EXPECT_NE(table.find("VHOST-RX-FRAMES"), std::string::npos);
    EXPECT_NE(table.find(" " + std::to_string(frames) + " "), std::string::npos) << "the table has stats' " << frames;
  }

  void transfer_both_ways(const std::string& what) {
    transfer_with_guest([this](const std::string& c) { return guest(c); }, kGuestIp, kExtIp, kTransferKiB, what);
  }

  // What the guest's driver negotiated (virtio 1.x feature bits, bit i at
  // column i) and the queues it has.
  void check_guest_view() {
    std::string f = guest("cat /sys/class/net/eth0/device/features");
    const std::string queues = guest("ls /sys/class/net/eth0/queues | tr '\\n' ' '");
    std::printf("[ features ] %s[ queues   ] %s\n", f.c_str(), queues.c_str());
    ASSERT_GE(f.size(), 33u);
    EXPECT_EQ(f[15], '1') << "VIRTIO_NET_F_MRG_RXBUF";
    EXPECT_EQ(f[32], '1') << "VIRTIO_F_VERSION_1";
    EXPECT_EQ(f[5], '1') << "VIRTIO_NET_F_MAC (QEMU's)";
    EXPECT_EQ(f[29], '1') << "VIRTIO_RING_F_EVENT_IDX";
    for (int bit : {0, 1, 7, 8, 11, 12, 22, 28})  // checksums, TSO/UFO, MQ, indirect: not offered
      EXPECT_EQ(f[bit], '0') << "feature bit " << bit;
    EXPECT_EQ(queues, "rx-0 tx-0 ") << "one queue pair";
  }

  // A guest that does not read fills only its own ring: its frames are
  // dropped as vhost_rx_ring_full, the worker goes on, and once the guest
  // reads again it is reachable.
  void guest_that_does_not_read() {
    guest("ip link set eth0 down");
    ASSERT_TRUE(sh_ok(
        in("ext", "ip neigh replace " + std::string(kGuestIp) + " lladdr " + mac_of(1) + " dev ext0 nud permanent")));
    const json before = call("stats");
    std::string sent_text;
    (void)sh(in("ext", "ping -q -i 0.002 -c 1000 -W 1 " + std::string(kGuestIp) +
                           " | sed -n 's/^\\([0-9]*\\) packets transmitted.*/\\1/p'"),
             &sent_text);
    const uint64_t sent = std::strtoull(sent_text.c_str(), nullptr, 10);
    const json after = call("stats");
    const uint64_t full = nic_drop(after, "vhost_rx_ring_full") - nic_drop(before, "vhost_rx_ring_full");
    const uint64_t ring = nic_u64(after, "vhost_rx_frames") - nic_u64(before, "vhost_rx_frames");
    std::printf("[ no read  ] %" PRIu64 " echo requests to a guest with eth0 down: %" PRIu64 " into its ring, %" PRIu64
                " vhost_rx_ring_full\n",
                sent, ring, full);
    EXPECT_GT(full, 0u);
    EXPECT_LE(ring, 256u) << "at most its ring's buffers";
    // Every one into the ring or counted (and what else ext0 sent: IPv6's multicast).
    EXPECT_EQ(sent, 1000u) << sent_text;
    EXPECT_GE(ring + full, sent);
    EXPECT_LE(ring + full, sent + 20);
    guest("ip link set eth0 up");
    EXPECT_TRUE(sh_ok(in("ext", "ip neigh del " + std::string(kGuestIp) + " dev ext0")));
    EXPECT_TRUE(guest_reaches_ext(30s)) << "the guest reading again";
  }

  // The guest resets its device (the driver unbound and bound again): QEMU
  // stops the rings (GET_VRING_BASE) and starts them anew; the guest is back.
  void guest_resets_its_device() {
    guest(
        "d=$(basename $(readlink /sys/class/net/eth0/device)); "
        "echo $d > /sys/bus/virtio/drivers/virtio_net/unbind && echo $d > /sys/bus/virtio/drivers/virtio_net/bind");
    guest(
        "for i in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done; "
        "ip link set eth0 up && ip addr add " +
        std::string(kGuestIp) + "/24 dev eth0");
    EXPECT_TRUE(guest_reaches_ext(30s)) << "the guest after resetting its device";
  }

  // A second guest, on the tap vmt0 (made here, multi_queue with queues > 1).
  void start_tap_guest(const std::string& addr, int queues = 1) {
    ASSERT_TRUE(sh_ok(std::string("ip tuntap add dev vmt0 mode tap") + (queues > 1 ? " multi_queue" : "") +
                      " && ip link set vmt0 up"));
    tap_made_ = true;
    tap_guest_ = std::make_unique<QemuGuest>();
    const auto err = tap_guest_->start(
        {.tap = "vmt0", .queues = queues, .cpus = queues, .mac = mac_of(2), .addr = addr, .boot_limit = 90s});
    ASSERT_FALSE(err) << *err;
    std::printf("[ guest    ] up in %.1f s (QEMU pid %d, TCG, tap)\n", tap_guest_->boot_seconds(), tap_guest_->pid());
  }
  std::string tap_guest(const std::string& cmd, std::chrono::seconds limit = 30s) {
    const QemuGuest::Result r = tap_guest_->run(cmd, limit);
    EXPECT_EQ(r.status, 0) << "in the tap guest: " << cmd << "\n" << r.out;
    return r.out;
  }

  // The guest pings ext from each of its CPUs at once, 20 each, all
  // answered; what switchd took from the guest per queue worker shows the
  // pairs it sent on: pair 1 only with two pairs (its CPU 1 leaves by pair 1: XPS).
  void pings_from_both_cpus(QemuGuest& g, const std::string& port, const std::string& what, int pairs) {
    auto rx_vm = [&](const json& st) {
      std::vector<uint64_t> v;
      for (const auto& q : st["queues"]) v.push_back(q.value("rx_vm", uint64_t{0}));
      return v;
    };
    const json before = call("stats");
    const QemuGuest::Result r = g.run("taskset -c 0 ping -c 20 -i 0.05 -W 2 " + std::string(kExtIp) +
                                          " > /tmp/p0 & taskset -c 1 ping -c 20 -i 0.05 -W 2 " + std::string(kExtIp) +
                                          " > /tmp/p1; wait; grep -h 'packets transmitted' /tmp/p0 /tmp/p1",
                                      60s);
    EXPECT_EQ(r.status, 0) << "in the guest: pings from both CPUs\n" << r.out;
    const std::string& out = r.out;
    const json after = call("stats");
    const auto b = rx_vm(before), a = rx_vm(after);
    ASSERT_EQ(a.size(), 2u);
    ASSERT_EQ(b.size(), 2u);
    std::printf("[ %-8s ] %s, %d pair(s): taken from the guest per queue +%" PRIu64 " +%" PRIu64 "; %s", port.c_str(),
                what.c_str(), pairs, a[0] - b[0], a[1] - b[1], out.c_str());
    EXPECT_EQ(out.find("100% packet loss"), std::string::npos) << out;
    EXPECT_EQ(out,
              "20 packets transmitted, 20 packets received, 0% packet loss\n"
              "20 packets transmitted, 20 packets received, 0% packet loss\n");
    if (pairs == 1) {
      EXPECT_EQ(a[1] - b[1], 0u) << "one pair: the guest sends on pair 0 only";
    } else {
      EXPECT_GT(a[1] - b[1], 0u) << "two pairs: the guest's CPU 1 sends on pair 1";
    }
  }

  // The guest's eth0 goes from 2 queue pairs to 1 and back (ethtool -L
  // eth0 combined N, by the initramfs's `channels`) while ext pings it at
  // 100 a second: nothing is lost beyond the moment of each change. With
  // one pair the guest sends on pair 0 only; with two again on both (its
  // ping from CPU 1 leaves by pair 1: XPS); no frame for it is dropped as
  // not ready or held up by a missing queue.
  void change_queues(QemuGuest& g, const std::string& ip, const std::string& port) {
    auto run = [&](const std::string& cmd) {
      const QemuGuest::Result r = g.run(cmd, 60s);
      EXPECT_EQ(r.status, 0) << "in the guest: " << cmd << "\n" << r.out;
      return r.out;
    };
    auto drops = [&](const json& st) {
      const json& d = st["nics"][port]["drops"];
      uint64_t n = 0;
      for (const auto& [why, c] : d.items()) n += c.get<uint64_t>();
      return n;
    };
    EXPECT_EQ(run("channels eth0"), "combined 2 max 2\n");
    pings_from_both_cpus(g, port, "before", 2);
    // ext's pings over the changes, from 4 sockets (their hashes spread them over ext0's queues).
    std::vector<Bg> pings;
    for (int i = 0; i < 4; i++)
      pings.push_back(background(in("ext", "ping -c 400 -i 0.02 -W 1 " + ip + " | grep 'packets transmitted'")));
    const json s0 = call("stats");
    std::this_thread::sleep_for(1500ms);
    EXPECT_EQ(run("channels eth0 1"), "combined 1 max 2\n");
    std::printf("[ %-8s ] the guest's queues now: %s\n", port.c_str(),
                run("ls /sys/class/net/eth0/queues | tr '\\n' ' '").c_str());
    pings_from_both_cpus(g, port, "after ethtool -L eth0 combined 1", 1);
    EXPECT_EQ(run("channels eth0 2"), "combined 2 max 2\n");
    pings_from_both_cpus(g, port, "after ethtool -L eth0 combined 2", 2);
    uint64_t sent = 0, got = 0;
    for (auto& p : pings) {
      const std::string t = p.text(60s);
      unsigned long long tx = 0, rx = 0;
      std::sscanf(t.c_str(), "%llu packets transmitted, %llu", &tx, &rx);
      sent += tx;
      got += rx;
    }
    const json s1 = call("stats");
    std::printf("[ %-8s ] ext's pings over both changes: %" PRIu64 " sent, %" PRIu64
                " answered; the NIC's drops +%" PRIu64 " %s\n",
                port.c_str(), sent, got, drops(s1) - drops(s0), s1["nics"][port]["drops"].dump().c_str());
    EXPECT_EQ(sent, 1600u);
    EXPECT_GE(got + 10, sent) << "at most a few lost, at the moments of change";
  }

  // Until the guest reaches ext again (a reconnected backend, ARP again).
  bool guest_reaches_ext(std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end)
      if (guest_->run("ping -c 1 -W 1 " + std::string(kExtIp), 10s).status == 0) return true;
    return false;
  }

  std::string path_;
  std::unique_ptr<QemuGuest> guest_;
  std::unique_ptr<QemuGuest> tap_guest_;  // a second guest, on a tap
  bool tap_made_ = false;
};

TEST_F(VhostUserTest, GuestOnVhostUser) {
  attach();
  call("port.create", {{"name", "vm1"}});
  const std::string backend = "vhost-user:" + path_;
  // Kernel delivery needs a netdev: refused at create, with the reason.
  expect_refused("nic.create",
                 {{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", backend}, {"vmq", "auto"}, {"delivery", "kernel"}},
                 "usage", {"kernel", "vhost-user"});
  call("nic.create", {{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", backend}, {"vmq", "auto"}});
  EXPECT_EQ(call("nic.connect", {{"port", "vm1"}}).value("state", ""), "connected");
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "xsk"));

  // Connected before QEMU: what comes for the guest is counted, not lost silently.
  (void)sh(in("ext", "ping -c 2 -i 0.2 -W 1 " + std::string(kGuestIp)));
  EXPECT_GT(nic_drop(call("stats"), "vhost_not_ready"), 0u);

  ASSERT_NO_FATAL_FAILURE(start_guest());
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("first QEMU"));
  ASSERT_NO_FATAL_FAILURE(transfer_both_ways("first QEMU"));
  ASSERT_NO_FATAL_FAILURE(check_vhost_rx_shown());
  ASSERT_NO_FATAL_FAILURE(check_guest_view());
  ASSERT_NO_FATAL_FAILURE(guest_that_does_not_read());
  ASSERT_NO_FATAL_FAILURE(guest_resets_its_device());
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("after the guest's reset"));

  // QEMU killed mid-traffic: the client goes, the rings with it, every
  // buffer comes back; the NIC stays connected and a new QEMU attaches.
  Bg flood = background(in("ext", "ping -f -c 3000 -W 1 " + std::string(kGuestIp)));
  std::this_thread::sleep_for(500ms);
  const pid_t qemu = guest_->pid();
  ASSERT_EQ(kill(qemu, SIGKILL), 0);
  (void)flood.text(60s);
  guest_.reset();
  expect_pools_idle();
  EXPECT_EQ(nic_of(call("show"), "vm1").value("state", ""), "connected");
  ASSERT_NO_FATAL_FAILURE(start_guest());
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("second QEMU, after the first was killed"));

  // switchd restarted: the state brings the NIC back, QEMU (reconnect=1)
  // attaches again by itself and the same guest is back on the network.
  stop_switchd(SIGTERM);
  start_switchd();
  EXPECT_EQ(nic_of(call("show"), "vm1").value("state", ""), "connected");
  EXPECT_TRUE(guest_reaches_ext(60s)) << "the guest after switchd's restart";
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("after switchd's restart"));
  expect_pools_idle();

  // switchd killed (SIGKILL) under the guest's traffic both ways: nothing
  // of it is cleaned up (its socket file stays, the guest's rings are
  // mid-use); a new switchd takes the path again, QEMU reconnects, the NIC
  // and its vmq come back and the guest is on the network.
  guest("ping -c 3000 -i 0.01 -W 1 " + std::string(kExtIp) + " > /dev/null 2>&1 &");  // the guest's way out
  Bg in_flood = background(in("ext", "ping -f -w 3 " + std::string(kGuestIp)));
  std::this_thread::sleep_for(500ms);
  stop_switchd(SIGKILL);
  (void)in_flood.text(120s);
  start_switchd();
  const json n = nic_of(call("show"), "vm1");
  EXPECT_EQ(n.value("state", ""), "connected");
  EXPECT_GT(n.value("vmq", 0u), 0u) << "its vmq back";
  EXPECT_TRUE(guest_reaches_ext(60s)) << "the guest after switchd was killed and started again";
  guest("killall ping; true");
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("after switchd was killed and started again"));
  ASSERT_NO_FATAL_FAILURE(transfer_both_ways("after switchd was killed and started again"));
  expect_pools_idle();
}

// A vhost-user guest and a tap guest on one switch: what the tap guest
// sends reaches the vhost-user guest through the software switch and the
// other way round, whatever the tap's delivery.
TEST_F(VhostUserTest, VhostUserAndTapGuestsTalk) {
  constexpr const char* kTapIp = "10.78.0.3";
  attach();
  call("port.create", {{"name", "vm1"}});
  call("nic.create", {{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", "vhost-user:" + path_}, {"vmq", "auto"}});
  EXPECT_EQ(call("nic.connect", {{"port", "vm1"}}).value("state", ""), "connected");
  ASSERT_NO_FATAL_FAILURE(start_guest());
  ASSERT_TRUE(sh_ok("ip tuntap add dev vmt0 mode tap && ip link set vmt0 up"));
  tap_made_ = true;
  tap_guest_ = std::make_unique<QemuGuest>();
  const auto err = tap_guest_->start({.tap = "vmt0", .mac = mac_of(2), .addr = std::string(kTapIp) + "/24"});
  ASSERT_FALSE(err) << *err;
  call("port.create", {{"name", "vm2"}});
  call("nic.create", {{"port", "vm2"}, {"mac", mac_of(2)}, {"backend", "vmt0"}, {"vmq", "auto"}});
  EXPECT_EQ(call("nic.connect", {{"port", "vm2"}}).value("state", ""), "connected");
  const json before = call("stats");
  guest("ping -c 3 -i 0.2 -W 3 " + std::string(kTapIp));
  const QemuGuest::Result r = tap_guest_->run("ping -c 3 -i 0.2 -W 3 " + std::string(kGuestIp));
  EXPECT_EQ(r.status, 0) << r.out;
  const json after = call("stats");
  const uint64_t ring = nic_u64(after, "vhost_rx_frames") - nic_u64(before, "vhost_rx_frames");
  std::printf("[ guests   ] vhost-user and tap guests pinged each other; into the vhost-user guest's ring +%" PRIu64
              "\n",
              ring);
  EXPECT_GE(ring, 6u) << "3 replies and 3 requests at least";
  call("nic.disconnect", {{"port", "vm2"}});
  expect_pools_idle();
}

// A guest with two queue pairs on the 2-queue uplink: pair q is served by
// the worker of uplink queue q, traffic works both ways on both.
TEST_F(VhostUserTest, MultiqueueGuest) {
  attach();
  call("port.create", {{"name", "vm1"}});
  call("nic.create", {{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", "vhost-user:" + path_}, {"vmq", "auto"}});
  EXPECT_EQ(call("nic.connect", {{"port", "vm1"}}).value("state", ""), "connected");
  ASSERT_NO_FATAL_FAILURE(start_guest(2));
  const std::string queues = guest("ls /sys/class/net/eth0/queues | tr '\\n' ' '");
  std::printf("[ queues   ] %s\n", queues.c_str());
  EXPECT_EQ(queues, "rx-0 rx-1 tx-0 tx-1 ");
  std::string log;
  sh("cat " + log_, &log);
  EXPECT_NE(log.find("vhost-user queue pair 1 started"), std::string::npos) << log;
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("two queue pairs"));
  ASSERT_NO_FATAL_FAILURE(transfer_both_ways("two queue pairs"));
  // Frames taken from the guest's transmit rings, by the worker that took them.
  const json st = call("stats");
  for (const auto& q : st["queues"])
    std::printf("[ queue %d  ] rx_vm %" PRIu64 " (the guest's frames taken from pair %d)\n", q.value("queue", -1),
                q.value("rx_vm", uint64_t{0}), q.value("queue", -1));
  guest_.reset();
  expect_pools_idle();
}

// VLANs inside the guests (the host has no 802.1Q module, the guests'
// kernel does): a vhost-user guest and a tap guest, both NICs trunks of
// VLANs 10 and 20, each guest with eth0.10 and eth0.20 on a subnet per
// VLAN. They ping each other on both; the outside host's tagged frames
// reach the guest on VLAN 10, and on VLAN 30, which neither NIC carries,
// never.
TEST_F(VhostUserTest, TrunkVlansInsideGuests) {
  const json trunk{{"vlan_mode", "trunk"}, {"trunk_vlans", {10, 20}}, {"vmq", "auto"}};
  attach();
  call("port.create", {{"name", "vm1"}});
  json nic1 = trunk;
  nic1.update({{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", "vhost-user:" + path_}});
  call("nic.create", nic1);
  EXPECT_EQ(call("nic.connect", {{"port", "vm1"}}).value("state", ""), "connected");
  ASSERT_NO_FATAL_FAILURE(start_guest());
  ASSERT_NO_FATAL_FAILURE(start_tap_guest("10.78.0.3/24"));
  call("port.create", {{"name", "vm2"}});
  json nic2 = trunk;
  nic2.update({{"port", "vm2"}, {"mac", mac_of(2)}, {"backend", "vmt0"}});
  call("nic.create", nic2);
  EXPECT_EQ(call("nic.connect", {{"port", "vm2"}}).value("state", ""), "connected");

  for (int vid : {10, 20}) {
    const std::string v = std::to_string(vid);
    const std::string add = "ip link add link eth0 name eth0." + v + " type vlan id " + v + " && ip link set eth0." +
                            v + " up && ip addr add 10.79." + v + ".";
    guest(add + "2/24 dev eth0." + v);
    tap_guest(add + "3/24 dev eth0." + v);
  }
  std::printf("[ vlans    ] %s", guest("cat /proc/net/vlan/config").c_str());

  const json before = call("stats");
  for (int vid : {10, 20}) {
    const std::string v = std::to_string(vid);
    guest("ping -c 3 -i 0.2 -W 3 10.79." + v + ".3");
    tap_guest("ping -c 3 -i 0.2 -W 3 10.79." + v + ".2");
  }
  const json after = call("stats");
  for (const char* vid : {"10", "20"}) {
    const uint64_t moved = u64(after, {"vlans", vid, "frames"}) - u64(before, {"vlans", vid, "frames"});
    std::printf("[ vlan %s  ] the switch forwarded +%" PRIu64 " frames on VLAN %s\n", vid, moved, vid);
    EXPECT_GE(moved, 6u) << "ARP and 6 echo requests and replies on VLAN " << vid << " crossed the switch";
  }
  // The guests' untagged eth0: neither trunk has a native VLAN.
  EXPECT_NE(guest_->run("ping -c 1 -W 1 10.78.0.3", 10s).status, 0) << "untagged frames between trunks";
  EXPECT_GT(u64(call("stats"), {"nics", "vm1", "drops", "vlan_not_allowed"}), 0u);

  // The outside host's tagged frames to the vhost-user guest: on VLAN 10
  // into eth0.10 (the guest counts them there), on VLAN 30 nowhere.
  auto guest_rx = [&](const char* dev) -> uint64_t {
    return std::strtoull(guest(std::string("cat /sys/class/net/") + dev + "/statistics/rx_packets").c_str(), nullptr,
                         10);
  };

  auto send_tagged = [&](int vid) {
    EXPECT_TRUE(sh_ok(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + mac_of(1) + " --vlan " +
                                    std::to_string(vid) + " --count 50 --rate 1000")));
  };
  const uint64_t rx10 = guest_rx("eth0.10"), rx20 = guest_rx("eth0.20"), rx0 = guest_rx("eth0");
  const json s0 = call("stats");
  send_tagged(10);
  std::this_thread::sleep_for(300ms);
  const json s1 = call("stats");
  const uint64_t got10 = guest_rx("eth0.10") - rx10;
  const uint64_t fast = nic_u64(s1, "fast_frames") - nic_u64(s0, "fast_frames");
  std::printf("[ vlan 10  ] 50 tagged frames from outside: %" PRIu64 " into the guest's eth0.10, fast +%" PRIu64
              ", vlans.10 +%" PRIu64 "\n",
              got10, fast, u64(s1, {"vlans", "10", "frames"}) - u64(s0, {"vlans", "10", "frames"}));
  EXPECT_EQ(got10, 50u);
  send_tagged(30);
  std::this_thread::sleep_for(300ms);
  const json s2 = call("stats");
  const uint64_t eth0_moved = guest_rx("eth0") - rx0;
  uint64_t dropped = 0;
  std::map<std::string, uint64_t> by_reason;  // over the queues
  for (const auto& q : s2["queues"]) {
    for (const auto& [reason, n] : q["drops"].items()) {
      uint64_t was = 0;
      for (const auto& p : s1["queues"])
        if (p.value("queue", -1) == q.value("queue", -2)) was = p["drops"].value(reason, uint64_t{0});
      if (n.get<uint64_t>() > was) by_reason[reason] += n.get<uint64_t>() - was;
      dropped += n.get<uint64_t>() - was;
    }
  }
  std::string why;
  for (const auto& [reason, n] : by_reason) why += " " + reason + " +" + std::to_string(n);
  std::printf("[ vlan 30  ] 50 tagged frames from outside: the guest's eth0 +%" PRIu64
              " frames beyond VLAN 10's 50, eth0.20 +%" PRIu64 "; the switch's queue drops:%s; vlans.30 +%" PRIu64 "\n",
              eth0_moved - got10, guest_rx("eth0.20") - rx20, why.c_str(),
              u64(s2, {"vlans", "30", "frames"}) - u64(s1, {"vlans", "30", "frames"}));
  EXPECT_LT(eth0_moved - got10, 50u) << "no VLAN 30 frame reached the guest";
  EXPECT_GE(dropped, 50u) << "each VLAN 30 frame dropped by a named reason";
  call("nic.disconnect", {{"port", "vm2"}});
  call("nic.disconnect", {{"port", "vm1"}});
  expect_pools_idle();
}

// Every lifecycle step with the guests running, for a vhost-user guest and
// a tap guest on one switch: disconnect under a flood (traffic stops, the
// frames for the guest are counted as unknown_unicast, every buffer is
// back), delete + create (still cut off) + connect (the same guest is back:
// QEMU reconnects to the vhost-user socket by itself), and the port torn
// down, deleted and made again. After each step a ping both ways from the guest's side; the
// other guest is not disturbed.
TEST_F(VhostUserTest, LifecycleWithGuestsRunning) {
  constexpr const char* kTapIp = "10.78.0.3";
  attach();
  const json vhost_nic{{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", "vhost-user:" + path_}, {"vmq", "auto"}};
  const json tap_nic{{"port", "vm2"}, {"mac", mac_of(2)}, {"backend", "vmt0"}, {"vmq", "auto"}};
  call("port.create", {{"name", "vm1"}});
  call("nic.create", vhost_nic);
  call("nic.connect", {{"port", "vm1"}});
  ASSERT_NO_FATAL_FAILURE(start_guest());
  ASSERT_NO_FATAL_FAILURE(start_tap_guest(std::string(kTapIp) + "/24"));
  call("port.create", {{"name", "vm2"}});
  call("nic.create", tap_nic);
  call("nic.connect", {{"port", "vm2"}});

  struct Vm {
    const char* port;
    QemuGuest* g;
    const char* ip;
    const json* nic;
  };
  const Vm vms[] = {{"vm1", guest_.get(), kGuestIp, &vhost_nic}, {"vm2", tap_guest_.get(), kTapIp, &tap_nic}};
  // Until the guest reaches ext (ARP, a vhost-user client reconnecting),
  // then 3 pings each way; the seconds it took.
  auto back = [&](const Vm& vm, const std::string& what) {
    SCOPED_TRACE(std::string(vm.port) + ": " + what);
    const auto t0 = std::chrono::steady_clock::now();
    bool ok = false;
    while (!ok && std::chrono::steady_clock::now() - t0 < 30s)
      ok = vm.g->run("ping -c 1 -W 1 " + std::string(kExtIp), 10s).status == 0;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_TRUE(ok) << "the guest reaches ext within 30 s";
    const QemuGuest::Result r = vm.g->run("ping -c 3 -i 0.2 -W 3 " + std::string(kExtIp));
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_TRUE(sh_ok(in("ext", "ping -c 3 -i 0.2 -W 3 " + std::string(vm.ip))));
    std::printf("[ %s      ] %s: pings both ways, the guest through after %.1f s\n", vm.port, what.c_str(), s);
  };
  auto queue_drops = [&](const json& st, const char* why) {
    uint64_t n = 0;
    for (const auto& q : st["queues"]) n += q["drops"].value(why, uint64_t{0});
    return n;
  };
  for (const Vm& vm : vms) back(vm, "connected");

  for (const Vm& vm : vms) {
    const Vm& other = &vm == &vms[0] ? vms[1] : vms[0];
    // Disconnected under a flood from ext: it stops, nothing is held.
    Bg flood = background(in("ext", "ping -f -c 2000 -W 1 " + std::string(vm.ip)));
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(call("nic.disconnect", {{"port", vm.port}}).value("state", ""), "disconnected");
    (void)flood.text(60s);
    expect_pools_idle();
    const json before = call("stats");
    EXPECT_NE(sh(in("ext", "ping -c 20 -i 0.05 -W 1 " + std::string(vm.ip))), 0) << "ext cannot reach it";
    EXPECT_NE(vm.g->run("ping -c 1 -W 1 " + std::string(kExtIp), 10s).status, 0) << "no way out while disconnected";
    const json after = call("stats");
    const uint64_t unknown = queue_drops(after, "unknown_unicast") - queue_drops(before, "unknown_unicast");
    std::printf("[ %s      ] disconnected: 20 pings from ext dropped as unknown_unicast +%" PRIu64 "\n", vm.port,
                unknown);
    EXPECT_GE(unknown, 20u);
    back(other, std::string("while ") + vm.port + " is disconnected");
    // Hyper-V's order: a disconnected NIC is deleted, not connected again.
    expect_refused("nic.connect", {{"port", vm.port}}, "wrong_state", {"disconnected", "nic.delete"});
    call("nic.delete", {{"port", vm.port}});
    call("nic.create", *vm.nic);
    EXPECT_NE(vm.g->run("ping -c 1 -W 1 " + std::string(kExtIp), 10s).status, 0) << "created, not connected";
    EXPECT_EQ(call("nic.connect", {{"port", vm.port}}).value("state", ""), "connected");
    back(vm, "deleted, made and connected again");

    call("nic.disconnect", {{"port", vm.port}});
    call("nic.delete", {{"port", vm.port}});
    call("port.teardown", {{"name", vm.port}});
    call("port.delete", {{"name", vm.port}});
    expect_pools_idle();
    call("port.create", {{"name", vm.port}});
    call("nic.create", *vm.nic);
    call("nic.connect", {{"port", vm.port}});
    back(vm, "port torn down, deleted and made again");
  }
  for (const Vm& vm : vms) EXPECT_EQ(waitpid(vm.g->pid(), nullptr, WNOHANG), 0) << vm.port << "'s QEMU ran throughout";
  expect_pools_idle();
}

// The guest changes its queue count (ethtool -L) under traffic. vhost-user:
// QEMU disables pair 1 (VHOST_USER_SET_VRING_ENABLE 0); switchd stops
// placing frames there and worker 1 hands them to pair 0's, until QEMU
// enables it again.
TEST_F(VhostUserTest, GuestChangesItsQueuePairs) {
  attach();
  call("port.create", {{"name", "vm1"}});
  call("nic.create", {{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", "vhost-user:" + path_}, {"vmq", "auto"}});
  EXPECT_EQ(call("nic.connect", {{"port", "vm1"}}).value("state", ""), "connected");
  ASSERT_NO_FATAL_FAILURE(start_guest(2));
  change_queues(*guest_, kGuestIp, "vm1");
  std::string log;
  sh("cat " + log_, &log);
  EXPECT_NE(log.find("vhost-user queue pair 1 disabled"), std::string::npos) << log;
  guest_.reset();
  expect_pools_idle();
}

// The same on a multi_queue tap (QEMU queues=2): QEMU detaches the tap's
// second queue (TUNSETQUEUE), the kernel says so on rtnetlink, and switchd's
// worker 1 hands what it delivers to the NIC to worker 0 instead of its
// socket on the queue that is gone; then back. On both deliveries.
TEST_F(VhostUserTest, TapGuestChangesItsQueues) {
  constexpr const char* kTapIp = "10.78.0.3";
  attach();
  ASSERT_NO_FATAL_FAILURE(start_tap_guest(std::string(kTapIp) + "/24", 2));
  call("port.create", {{"name", "vm2"}});
  for (const char* delivery : {"xsk", "kernel"}) {
    SCOPED_TRACE(delivery);
    call("nic.create",
         {{"port", "vm2"}, {"mac", mac_of(2)}, {"backend", "vmt0"}, {"vmq", "auto"}, {"delivery", delivery}});
    EXPECT_EQ(call("nic.connect", {{"port", "vm2"}}).value("state", ""), "connected");
    change_queues(*tap_guest_, kTapIp, "vm2");
    std::string log;
    sh("cat " + log_, &log);
    for (const char* line :
         {"backend vmt0 now has 1 queue(s) in use (was 2)", "backend vmt0 now has 2 queue(s) in use (was 1)"})
      EXPECT_NE(log.find(line), std::string::npos) << "switchd learned of the change from rtnetlink: " << line;
    call("nic.disconnect", {{"port", "vm2"}});
    call("nic.delete", {{"port", "vm2"}});
    expect_pools_idle();
  }
}

// The usual order with a multiqueue tap: the NIC is connected while the tap
// has one queue in use (QEMU keeps the others detached until the guest's
// driver turns them on), then the guest turns on its second pair. switchd
// binds the NIC's sockets again on both queues: what the guest's CPU 1 sends
// on pair 1 is switched like the rest, instead of going to the host's stack.
TEST_F(VhostUserTest, TapGuestTurnsOnMoreQueuesThanAtConnect) {
  constexpr const char* kTapIp = "10.78.0.3";
  attach();
  ASSERT_NO_FATAL_FAILURE(start_tap_guest(std::string(kTapIp) + "/24", 2));
  call("port.create", {{"name", "vm2"}});
  for (const char* delivery : {"xsk", "kernel"}) {
    SCOPED_TRACE(delivery);
    EXPECT_EQ(tap_guest("channels eth0 1"), "combined 1 max 2\n");
    call("nic.create",
         {{"port", "vm2"}, {"mac", mac_of(2)}, {"backend", "vmt0"}, {"vmq", "auto"}, {"delivery", delivery}});
    EXPECT_EQ(call("nic.connect", {{"port", "vm2"}}).value("state", ""), "connected");
    EXPECT_EQ(tap_guest("channels eth0 2"), "combined 2 max 2\n");
    std::string log;
    for (int i = 0; i < 50 && log.find("its sockets are bound again") == std::string::npos; i++) {
      std::this_thread::sleep_for(100ms);
      sh("cat " + log_, &log);
    }
    EXPECT_NE(log.find("backend vmt0 now has 2 queue(s) in use, 1 at connect: its sockets are bound again"),
              std::string::npos)
        << log;
    pings_from_both_cpus(*tap_guest_, "vm2", std::string(delivery) + ": connected at 1 queue, guest now at 2", 2);
    EXPECT_EQ(nic_of(call("show"), "vm2").value("state", ""), "connected");
    call("nic.disconnect", {{"port", "vm2"}});
    call("nic.delete", {{"port", "vm2"}});
    expect_pools_idle();
  }
}

}  // namespace
