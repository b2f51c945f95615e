// A real guest on a tap backend (docs/guests.md): Debian 12's cloud kernel
// under QEMU with TCG (tests/lib/qemu_guest.h), its virtio-net NIC on the
// tap vmt0 in this test's namespace, switched by the built switchd to an
// outside host behind the uplink.
//
//   ext: ext0 10.77.0.1/24 <-> up0 (uplink, 2 queues) -- switchd -- vmt0 (tap, 1 queue) <-> QEMU: eth0 10.77.0.2/24
//
// ARP and ping both ways through the guest's vmq (the classifier's counter
// for it moves), a TCP transfer each way checked by SHA-256, on kernel
// delivery (a tap's default once QEMU holds its queue) and on xsk delivery;
// then the NIC disconnected, deleted, made and connected again with the
// guest running.
#include <cinttypes>
#include <thread>

#include "tests/lib/qemu_guest.h"
#include "tests/lib/switchd_fixture.h"

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;

constexpr const char* kGuestIp = "10.77.0.2";
constexpr const char* kExtIp = "10.77.0.1";
constexpr int kTransferKiB = 2048;

class QemuTapTest : public SwitchdFixture {
 protected:
  QemuTapTest() {
    prefix_tag_ = "qt";
    vm_count_ = 0;
    offloads_off_ = true;  // full checksums from ext0: nothing to finish in a frame redirected to the guest
    vm_gro_ = true;        // ext0 takes redirected frames: the guest's leave by the uplink in XDP
  }

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(SwitchdFixture::SetUp());
    if (IsSkipped()) return;
    if (auto why = qemu_guest_missing()) {
      if (in_ci()) FAIL() << "the QEMU guest cannot run under CI: " << *why;
      GTEST_SKIP() << *why;
    }
    ASSERT_TRUE(sh_ok(in("ext", std::string("ip addr add ") + kExtIp + "/24 dev ext0")));
    ASSERT_TRUE(sh_ok("ip tuntap add dev vmt0 mode tap && ip link set vmt0 up"));
    tap_made_ = true;
    const auto err = guest_.start({.tap = "vmt0", .mac = mac_of(1), .addr = std::string(kGuestIp) + "/24"});
    ASSERT_FALSE(err) << *err;
    std::printf("[ guest    ] up in %.1f s (QEMU pid %d, TCG)\n", guest_.boot_seconds(), guest_.pid());
  }

  void TearDown() override {
    if (HasFailure() && guest_.pid() > 0)
      std::fprintf(stderr, "---- guest console\n%s----\n", guest_.console().c_str());
    guest_.stop();
    if (tap_made_) sh("ip link del vmt0");
    SwitchdFixture::TearDown();
  }

  // A command in the guest that must succeed; its output.
  std::string guest(const std::string& cmd, std::chrono::seconds limit = 30s) {
    const QemuGuest::Result r = guest_.run(cmd, limit);
    EXPECT_EQ(r.status, 0) << "in the guest: " << cmd << "\n" << r.out;
    return r.out;
  }

  void connect(const std::string& delivery) {
    json nic{{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", "vmt0"}, {"vmq", "auto"}};
    if (!delivery.empty()) nic["delivery"] = delivery;
    call("nic.create", nic);
    EXPECT_EQ(call("nic.connect", {{"port", "vm1"}}).value("state", ""), "connected");
  }

  uint64_t vmq_frames(const json& st) {
    const json n = nic_of(call("show"), "vm1");
    const std::string v = std::to_string(n.value("vmq", 0));
    return u64(st, {"classifier", "vmqs", v.c_str(), "frames"});
  }

  // ARP and ping both ways; the vmq's classifier counter moved.
  void ping_both_ways(const std::string& what) {
    SCOPED_TRACE(what);
    const json before = call("stats");
    guest("ping -c 3 -i 0.2 -W 3 " + std::string(kExtIp));
    EXPECT_TRUE(sh_ok(in("ext", "ping -c 3 -i 0.2 -W 3 " + std::string(kGuestIp))));
    const json after = call("stats");
    const uint64_t moved = vmq_frames(after) - vmq_frames(before);
    std::printf("[ ping     ] %s: the vmq's classifier counter +%" PRIu64 "; nic %s\n", what.c_str(), moved,
                after["nics"]["vm1"].dump().c_str());
    EXPECT_GE(moved, 3u) << "the echo replies to the guest came by its vmq";
  }

  // A TCP transfer each way, its SHA-256 the same at both ends.
  void transfer_both_ways(const std::string& what) {
    transfer_with_guest([this](const std::string& c) { return guest(c); }, kGuestIp, kExtIp, kTransferKiB, what);
  }

  QemuGuest guest_;
  bool tap_made_ = false;
};

TEST_F(QemuTapTest, GuestOnTapThroughBothDeliveries) {
  attach();
  call("port.create", {{"name", "vm1"}});
  connect("");  // the default: kernel for a tap whose queue QEMU holds
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  // A tap's vmq is delivered on the receiving CPU (its reader, QEMU, does
  // the receive work): no hop through a processor, until one is configured.
  auto no_hop = [&] {
    const json n = nic_of(call("show"), "vm1");
    const auto conf = vmq_conf(n.value("vmq", 0u));
    return std::pair{n.value("vmq_cpu_source", ""), conf && (conf->flags & XVMQ_VMQ_F_NO_HOP)};
  };
  EXPECT_EQ(no_hop(), std::pair(std::string("receiving"), true));
  call("vmq.set", {{"port", "vm1"}, {"cpu", 0}});
  EXPECT_EQ(no_hop(), std::pair(std::string("configured"), false));
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("kernel delivery through a configured processor"));
  call("vmq.set", {{"port", "vm1"}, {"cpu", nullptr}});
  EXPECT_EQ(no_hop(), std::pair(std::string("receiving"), true));
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("kernel delivery"));
  ASSERT_NO_FATAL_FAILURE(transfer_both_ways("kernel delivery"));

  // The same guest, running on, on xsk delivery.
  call("nic.disconnect", {{"port", "vm1"}});
  call("nic.delete", {{"port", "vm1"}});
  connect("xsk");
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "xsk"));
  const json before = call("stats");
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("xsk delivery"));
  ASSERT_NO_FATAL_FAILURE(transfer_both_ways("xsk delivery"));
  const json after = call("stats");
  EXPECT_GT(u64(after, {"nics", "vm1", "fast_frames"}), u64(before, {"nics", "vm1", "fast_frames"}));

  // Disconnected, the guest is cut off; made and connected again (Hyper-V's
  // order: a disconnected NIC is deleted), it is back, on kernel delivery.
  call("nic.disconnect", {{"port", "vm1"}});
  EXPECT_NE(guest_.run("ping -c 1 -W 1 " + std::string(kExtIp), 10s).status, 0) << "no way out while disconnected";
  call("nic.delete", {{"port", "vm1"}});
  connect("");
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", "kernel"));
  ASSERT_NO_FATAL_FAILURE(ping_both_ways("connected again"));
  expect_pools_idle();
}

}  // namespace
