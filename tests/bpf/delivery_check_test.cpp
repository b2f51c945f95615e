// The kernel delivery checks (switchd/dp/delivery_check.h) and the netlink
// reads under them (xdp_features, link_state, link_stats) on the real
// kernel, each answer held against what the kernel then does: frames sent
// through a DEVMAP redirect (BPF_PROG_RUN with live frames) arrive where the
// check says ok, and nowhere where it says no.
//
// Everything lives in this process's own network namespace (tests/lib/main.cpp)
// and, for a VM's end, in a second one that a child process holds: both die
// with the process, on failure too. Frames go only between their devices.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include "common/fd.h"
#include "loader/netdev.h"
#include "switchd/dp/delivery_check.h"
#include "switchd/host/netlink.h"
#include "tests/lib/harness.h"
#include "tests/lib/prog_run.h"

namespace xvmq::test {
namespace {

namespace nl = switchd::netlink;
using switchd::check_kernel_delivery;
using switchd::check_uplink_xmit;
using switchd::KernelDeliveryCheck;

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

KernelDeliveryCheck check(const std::string& dev) {
  auto info = netdev_info(dev);
  if (!info) return {false, "netdev_info: " + info.error().message};
  return check_kernel_delivery(*info);
}

uint64_t features(const std::string& dev) {
  auto f = nl::xdp_features(dev);
  EXPECT_TRUE(f) << f.error().message;
  return f ? *f : 0;
}

// A veth pair made with `queues` receive and transmit queues at each end
// (`peer_queues` at the peer), both up; deleted at the end of the test.
struct Veth {
  Veth(const std::string& name, int queues = 1, int peer_queues = 1) : dev(name), peer(name + "p") {
    std::string q = std::to_string(queues), pq = std::to_string(peer_queues);
    ok = sh_ok("ip link add " + dev + " numrxqueues " + q + " numtxqueues " + q + " type veth peer name " + peer +
               " numrxqueues " + pq + " numtxqueues " + pq) &&
         sh_ok("ip link set " + dev + " up") && sh_ok("ip link set " + peer + " up");
  }
  ~Veth() { sh("ip link del " + dev); }
  std::string dev, peer;
  bool ok = false;
};

// A network namespace held by a child process (a VM's, in effect): gone
// when the child is killed, at the end of the test or when this process dies.
struct OtherNamespace {
  OtherNamespace() {
    int p[2];
    if (pipe(p) != 0) return;
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      char c = unshare(CLONE_NEWNET) == 0 ? 1 : 0;
      (void)!write(p[1], &c, 1);
      for (;;) pause();
    }
    close(p[1]);
    char c = 0;
    ok = pid > 0 && read(p[0], &c, 1) == 1 && c == 1;
    close(p[0]);
  }
  ~OtherNamespace() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  std::string in(const std::string& cmd) const {
    return "nsenter --net=/proc/" + std::to_string(pid) + "/ns/net " + cmd;
  }
  pid_t pid = -1;
  bool ok = false;
};

// A tap's queue, as QEMU holds it: /dev/net/tun attached to `name`; -1 on
// failure.
int attach_tap(const std::string& name, bool multi_queue = false) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    ADD_FAILURE() << "open /dev/net/tun: " << strerror(errno);
    return -1;
  }
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0);
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    ADD_FAILURE() << "TUNSETIFF " << name << ": " << strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

// A persistent tap, deleted at the end of the test.
struct Tap {
  explicit Tap(const std::string& name, bool multi_queue = false) : dev(name) {
    ok = sh_ok("ip tuntap add mode tap name " + dev + (multi_queue ? " multi_queue" : "")) &&
         sh_ok("ip link set " + dev + " up");
  }
  ~Tap() { sh("ip link del " + dev); }
  std::string dev;
  bool ok = false;
};

int load_xdp(const std::vector<bpf_insn>& insns, const char* name) {
  LIBBPF_OPTS(bpf_prog_load_opts, opts);
  int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, name, "GPL", insns.data(), insns.size(), &opts);
  if (fd < 0) ADD_FAILURE() << "load " << name << ": " << strerror(errno);
  return fd;
}

// XDP_PASS, for a VM's end that runs an XDP program.
int pass_program() {
  return load_xdp({{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = XDP_PASS}, {.code = BPF_JMP | BPF_EXIT}},
                  "xvmq_test_pass");
}

int devmap_of(const std::string& target) {
  int fd = bpf_map_create(BPF_MAP_TYPE_DEVMAP, "xvmq_test_dev", 4, 4, 1, nullptr);
  uint32_t key = 0, ifindex = if_nametoindex(target.c_str());
  if (fd < 0)
    ADD_FAILURE() << "DEVMAP: " << strerror(errno);
  else if (bpf_map_update_elem(fd, &key, &ifindex, 0) != 0)
    ADD_FAILURE() << "DEVMAP slot 0 = " << target << ": " << strerror(errno);
  return fd;
}

int redirect_program(int devmap) {
  return load_xdp({{.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = 1, .src_reg = BPF_PSEUDO_MAP_FD, .imm = devmap},
                   {},
                   {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 2, .imm = 0},
                   {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 3, .imm = 0},
                   {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_redirect_map},
                   {.code = BPF_JMP | BPF_EXIT}},
                  "xvmq_test_redir");
}

// Every frame into DEVMAP slot 0, which holds `target`: what kernel delivery
// does, without the CPUMAP hop.
struct Redirector {
  explicit Redirector(const std::string& target) : map(devmap_of(target)), prog(redirect_program(map.get())) {}
  // `n` frames through the redirect, for real (BPF_F_TEST_XDP_LIVE_FRAMES).
  bool send(uint32_t n) {
    FrameSpec spec;
    spec.src = "02:00:00:00:00:fe";
    auto r = prog_run(prog.get(), build_frame(spec), {.live = true, .repeat = n});
    EXPECT_EQ(r.err, 0) << strerror(-r.err);
    return r.err == 0;
  }
  Fd map, prog;
};

uint64_t rx_packets(const std::string& dev) {
  auto s = nl::link_stats(dev);
  EXPECT_TRUE(s) << s.error().message;
  return s ? s->rx_packets : 0;
}

// Polls `cond` for up to two seconds (NAPI delivers after the send returns).
bool eventually(const std::function<bool()>& cond) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// Frames redirected into `v.dev` reach its peer, or (ok false) do not.
void expect_redirect(const Veth& v, bool ok) {
  Redirector r(v.dev);
  uint64_t before = rx_packets(v.peer);
  ASSERT_TRUE(r.send(8));
  if (ok) {
    EXPECT_TRUE(eventually([&] { return rx_packets(v.peer) >= before + 8; }))
        << v.peer << " received " << rx_packets(v.peer) - before << " of 8";
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(rx_packets(v.peer), before) << "frames arrived through a redirect the check refused";
  }
}

TEST(XdpFeatures, ByNameAndByIndex) {
  XVMQ_REQUIRE_PRIVILEGES();
  Veth v("dlf0");
  ASSERT_TRUE(v.ok);
  auto by_name = nl::xdp_features(v.dev);
  auto by_index = nl::xdp_features(static_cast<int>(if_nametoindex(v.dev.c_str())));
  ASSERT_TRUE(by_name) << by_name.error().message;
  ASSERT_TRUE(by_index) << by_index.error().message;
  EXPECT_EQ(*by_name, *by_index);
  EXPECT_TRUE(*by_name & nl::xdp_act::kBasic);
  auto none = nl::xdp_features("dlf-none");
  ASSERT_FALSE(none);
  EXPECT_TRUE(has(none.error().message, "dlf-none")) << none.error().message;
  EXPECT_FALSE(nl::xdp_features(1 << 30));
}

TEST(LinkState, VethAndItsPeer) {
  XVMQ_REQUIRE_PRIVILEGES();
  Veth v("dls0");
  ASSERT_TRUE(v.ok);
  auto st = nl::link_state(v.dev);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(st->kind, "veth");
  EXPECT_TRUE(st->up);
  EXPECT_EQ(st->link_ifindex, static_cast<int>(if_nametoindex(v.peer.c_str())));
  EXPECT_FALSE(st->link_elsewhere);
  EXPECT_TRUE(eventually([&] { return nl::link_state(v.dev)->carrier; }));
  ASSERT_TRUE(sh_ok("ip link set " + v.peer + " down"));
  EXPECT_FALSE(nl::link_state(v.dev)->carrier);
  EXPECT_TRUE(nl::link_state(v.dev)->up);
}

// The peer's GRO is what lets a veth take redirected frames, and the check
// follows it both ways.
TEST(KernelDelivery, VethFollowsItsPeersGro) {
  XVMQ_REQUIRE_PRIVILEGES();
  Veth v("dlg0", 2, 2);
  ASSERT_TRUE(v.ok);
  ASSERT_TRUE(sh_ok("ethtool -K " + v.peer + " gro off"));
  auto no = check(v.dev);
  EXPECT_FALSE(no.ok);
  EXPECT_TRUE(has(no.why, "peer " + v.peer + " has neither GRO on")) << no.why;
  EXPECT_FALSE(features(v.dev) & nl::xdp_act::kNdoXmit);
  expect_redirect(v, false);

  ASSERT_TRUE(sh_ok("ethtool -K " + v.peer + " gro on"));
  auto yes = check(v.dev);
  EXPECT_TRUE(yes.ok) << yes.why;
  EXPECT_TRUE(features(v.dev) & nl::xdp_act::kNdoXmit);
  expect_redirect(v, true);

  ASSERT_TRUE(sh_ok("ethtool -K " + v.peer + " gro off"));
  EXPECT_FALSE(check(v.dev).ok);
}

// An XDP program on the peer counts in native mode only: generic XDP starts
// no NAPI on the peer, and the kernel leaves NDO_XMIT clear.
TEST(KernelDelivery, VethWithAnXdpProgramOnItsPeer) {
  XVMQ_REQUIRE_PRIVILEGES();
  Veth v("dlx0");
  ASSERT_TRUE(v.ok);
  Fd pass(pass_program());
  ASSERT_GE(pass.get(), 0);
  int peer = static_cast<int>(if_nametoindex(v.peer.c_str()));

  ASSERT_EQ(bpf_xdp_attach(peer, pass.get(), XDP_FLAGS_SKB_MODE, nullptr), 0) << strerror(errno);
  auto generic = check(v.dev);
  EXPECT_FALSE(generic.ok) << generic.why;
  EXPECT_TRUE(has(generic.why, "generic mode does not count")) << generic.why;
  expect_redirect(v, false);
  ASSERT_EQ(bpf_xdp_detach(peer, XDP_FLAGS_SKB_MODE, nullptr), 0) << strerror(errno);

  ASSERT_EQ(bpf_xdp_attach(peer, pass.get(), XDP_FLAGS_DRV_MODE, nullptr), 0) << strerror(errno);
  auto native = check(v.dev);
  EXPECT_TRUE(native.ok) << native.why;
  expect_redirect(v, true);
  ASSERT_EQ(bpf_xdp_detach(peer, XDP_FLAGS_DRV_MODE, nullptr), 0) << strerror(errno);
  EXPECT_FALSE(check(v.dev).ok);
}

// The object the build has, attached by `ip` in native mode, as a user would.
TEST(KernelDelivery, VethWithIpsXdpObjectOnItsPeer) {
  XVMQ_REQUIRE_PRIVILEGES();
  Veth v("dlo0");
  ASSERT_TRUE(v.ok);
  ASSERT_TRUE(sh_ok("ip link set dev " + v.peer + " xdpdrv obj " XVMQ_DROP_OBJECT " sec xdp"));
  EXPECT_TRUE(check(v.dev).ok) << check(v.dev).why;
  ASSERT_TRUE(sh_ok("ip link set dev " + v.peer + " xdpdrv off"));
  ASSERT_TRUE(sh_ok("ip link set dev " + v.peer + " xdpgeneric obj " XVMQ_DROP_OBJECT " sec xdp"));
  EXPECT_FALSE(check(v.dev).ok);
}

// NDO_XMIT stays set when the peer goes down, but the redirect then fails:
// the carrier is what tells.
TEST(KernelDelivery, VethWhosePeerIsDown) {
  XVMQ_REQUIRE_PRIVILEGES();
  Veth v("dld0");
  ASSERT_TRUE(v.ok);
  ASSERT_TRUE(sh_ok("ethtool -K " + v.peer + " gro on"));
  ASSERT_TRUE(sh_ok("ip link set " + v.peer + " down"));
  EXPECT_TRUE(features(v.dev) & nl::xdp_act::kNdoXmit);
  auto c = check(v.dev);
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, v.peer + " is down")) << c.why;
  expect_redirect(v, false);
  ASSERT_TRUE(sh_ok("ip link set " + v.peer + " up"));
  EXPECT_TRUE(eventually([&] { return check(v.dev).ok; })) << check(v.dev).why;
  expect_redirect(v, true);
}

// A peer with more transmit queues than this end receives on: the kernel
// clears every XDP feature; GRO turned on afterwards sets NDO_XMIT alone,
// and the redirect then works.
TEST(KernelDelivery, VethWithFewerReceiveQueuesThanItsPeerTransmits) {
  XVMQ_REQUIRE_PRIVILEGES();
  Veth v("dlq0", 1, 4);
  ASSERT_TRUE(v.ok);
  EXPECT_EQ(features(v.dev), 0u);
  auto c = check(v.dev);
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "more transmit queues")) << c.why;
  expect_redirect(v, false);
  ASSERT_TRUE(sh_ok("ethtool -K " + v.peer + " gro on"));
  EXPECT_EQ(features(v.dev), nl::xdp_act::kNdoXmit | nl::xdp_act::kNdoXmitSg);
  EXPECT_TRUE(check(v.dev).ok) << check(v.dev).why;
  expect_redirect(v, true);
}

// The VM's end in another namespace, as it is in use: the check reads it
// from here.
TEST(KernelDelivery, VethWhosePeerIsInAVmsNamespace) {
  XVMQ_REQUIRE_PRIVILEGES();
  OtherNamespace vm;
  ASSERT_TRUE(vm.ok);
  Veth v("dln0");
  ASSERT_TRUE(v.ok);
  ASSERT_TRUE(sh_ok("ip link set " + v.peer + " netns " + std::to_string(vm.pid)));
  ASSERT_TRUE(sh_ok(vm.in("ip link set " + v.peer + " up")));
  auto st = nl::link_state(v.dev);
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_TRUE(st->link_elsewhere);
  auto no = check(v.dev);
  EXPECT_FALSE(no.ok);
  EXPECT_TRUE(has(no.why, "its peer has neither")) << no.why;
  ASSERT_TRUE(sh_ok(vm.in("ethtool -K " + v.peer + " gro on")));
  EXPECT_TRUE(eventually([&] { return check(v.dev).ok; })) << check(v.dev).why;
}

TEST(UplinkXmit, VethUplink) {
  XVMQ_REQUIRE_PRIVILEGES();
  Veth v("dlu0");
  ASSERT_TRUE(v.ok);
  auto info = netdev_info(v.dev);
  ASSERT_TRUE(info) << info.error().message;
  auto no = check_uplink_xmit(*info);
  EXPECT_FALSE(no.ok);
  EXPECT_TRUE(has(no.why, "uplink veth " + v.dev)) << no.why;
  ASSERT_TRUE(sh_ok("ethtool -K " + v.peer + " gro on"));
  EXPECT_TRUE(check_uplink_xmit(*info).ok) << check_uplink_xmit(*info).why;
}

TEST(KernelDelivery, MissingDevice) {
  XVMQ_REQUIRE_PRIVILEGES();
  NetdevInfo ghost{.name = "dl-ghost", .ifindex = 1 << 30, .driver = "veth"};
  auto c = check_kernel_delivery(ghost);
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "dl-ghost")) << c.why;
  EXPECT_TRUE(has(c.why, "--delivery xsk")) << c.why;
}

// What one read() of a tap's queue gives within a second: a frame, or nothing.
std::vector<uint8_t> read_frame(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 1000) != 1) return {};
  std::vector<uint8_t> buf(2048);
  ssize_t n = read(fd, buf.data(), buf.size());
  buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return buf;
}

// A tap takes redirected frames while a process holds it open, and the
// frame reaches that process without an skb on the way.
TEST(KernelDelivery, TapWithAndWithoutAQueue) {
  XVMQ_REQUIRE_PRIVILEGES();
  Tap t("dlt0");
  ASSERT_TRUE(t.ok);
  auto no = check(t.dev);
  EXPECT_FALSE(no.ok);
  EXPECT_TRUE(has(no.why, "no queue attached")) << no.why;
  {
    Fd q(attach_tap(t.dev));
    ASSERT_GE(q.get(), 0);
    auto yes = check(t.dev);
    EXPECT_TRUE(yes.ok) << yes.why;
    EXPECT_TRUE(has(yes.why, "1 queue attached")) << yes.why;
    Redirector r(t.dev);
    ASSERT_TRUE(r.send(1));
    auto got = read_frame(q.get());
    EXPECT_EQ(got.size(), build_frame({}).size()) << "the redirected frame did not reach the tap's reader";
  }
  EXPECT_FALSE(check(t.dev).ok);
}

TEST(KernelDelivery, MultiQueueTap) {
  XVMQ_REQUIRE_PRIVILEGES();
  Tap t("dlm0", true);
  ASSERT_TRUE(t.ok);
  EXPECT_FALSE(check(t.dev).ok);
  Fd q1(attach_tap(t.dev, true)), q2(attach_tap(t.dev, true));
  ASSERT_GE(q1.get(), 0);
  ASSERT_GE(q2.get(), 0);
  auto two = check(t.dev);
  EXPECT_TRUE(two.ok) << two.why;
  EXPECT_TRUE(has(two.why, "2 queues attached")) << two.why;
  // The reader detaches both (as QEMU does for queues its guest does not use):
  // the carrier stays on, the kernel's queue count says 0.
  for (int fd : {q1.get(), q2.get()}) {
    ifreq ifr{};
    ifr.ifr_flags = IFF_DETACH_QUEUE;
    ASSERT_EQ(ioctl(fd, TUNSETQUEUE, &ifr), 0) << strerror(errno);
  }
  EXPECT_TRUE(nl::link_state(t.dev)->carrier);
  auto none = check(t.dev);
  EXPECT_FALSE(none.ok);
  EXPECT_TRUE(has(none.why, "detached")) << none.why;
}

// Counters over netlink: frames sent on a veth are counted at both ends; a
// tap with no reader drops what it is given.
TEST(LinkStats, CountsFramesAndDrops) {
  XVMQ_REQUIRE_PRIVILEGES();
  Veth v("dlc0");
  ASSERT_TRUE(v.ok);
  auto tx0 = nl::link_stats(v.dev), rx0 = nl::link_stats(v.peer);
  ASSERT_TRUE(tx0 && rx0);
  for (int i = 0; i < 5; i++) ASSERT_EQ(send_raw(v.dev, build_frame({}), 0), 0);
  EXPECT_TRUE(eventually([&] { return nl::link_stats(v.peer)->rx_packets >= rx0->rx_packets + 5; }));
  EXPECT_GE(nl::link_stats(v.dev)->tx_packets, tx0->tx_packets + 5);

  Tap t("dlc1");
  ASSERT_TRUE(t.ok);
  auto d0 = nl::link_stats(t.dev);
  ASSERT_TRUE(d0) << d0.error().message;
  for (int i = 0; i < 3; i++) send_raw(t.dev, build_frame({}), 0);
  auto d1 = nl::link_stats(t.dev);
  ASSERT_TRUE(d1);
  EXPECT_GE(d1->tx_dropped, d0->tx_dropped + 3);
  EXPECT_FALSE(nl::link_stats("dl-ghost"));
}

}  // namespace
}  // namespace xvmq::test
