// Two hosts, each a network namespace with its own uplink and its own
// switchd, joined by a fabric that trunks VLANs 10 and 20 (tests/lib/fabric.h;
// docs/cni.md, "Two hosts and a VLAN fabric"). Pods are added and removed as
// a runtime does, with the CNI plugin xvmq-cni when it is built, else by hand
// with switchctl (the same steps the plugin takes).
//
//   host A: a10 (VLAN 10, 10.88.0.10)   a20 (VLAN 20, 10.88.0.11)   mover (VLAN 10, 10.88.0.50)
//   host B: b10 (VLAN 10, 10.88.0.20)   b20 (VLAN 20, 10.88.0.21)
//
// Every address is in 10.88.0.0/24, on both VLANs: only the VLAN keeps a10
// from b20.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <sstream>
#include <thread>

#include "control/control.h"
#include "tests/lib/fabric.h"
#include "tests/lib/switchd_fixture.h"

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;

// The pods that stay get their address from a host-local range on their
// host (not .1: host-local keeps it for the gateway); the mover keeps its
// own (static) wherever it goes.
const Pod kA10{"a10", "a10", "02:00:00:00:0a:01", "10.88.0.10/24", 10, "host-local"};
const Pod kB10{"b10", "b10", "02:00:00:00:0a:02", "10.88.0.20/24", 10, "host-local"};
const Pod kA20{"a20", "a20", "02:00:00:00:14:01", "10.88.0.11/24", 20, "host-local"};
const Pod kB20{"b20", "b20", "02:00:00:00:14:02", "10.88.0.21/24", 20, "host-local"};
const Pod kMover{"mover", "mover", "02:00:00:00:0a:50", "10.88.0.50/24", 10, "static"};

double wall_s() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

// The times of the replies in the output of `ping -D` (the wall clock).
std::vector<double> reply_times(const std::string& out) {
  std::vector<double> t;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    double s;
    if (line.find(" bytes from ") != std::string::npos && std::sscanf(line.c_str(), "[%lf]", &s) == 1) t.push_back(s);
  }
  return t;
}

struct Spread {
  double min, median, max;
};
Spread spread(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v.back()};
}

class CniFabricTest : public ::testing::Test {
 protected:
  void SetUp() override {
    XVMQ_REQUIRE_PRIVILEGES();
    fabric_.emplace("cf" + std::to_string(getpid()) + "-", std::vector<int>{10, 20});
    ASSERT_TRUE(fabric_->build({"A", "B"}, SWITCHD_PATH));
    switchctl_ = std::make_unique<SwitchctlPlumber>(*fabric_, SWITCHCTL_PATH);
#ifdef XVMQ_CNI_PATH
    // CNI_PATH: the plugin and the IPAM plugins it delegates to.
    const std::string cni_dir = fabric_->dir() + "/cni";
    for (const char* ipam : {"/usr/lib/cni/static", "/usr/lib/cni/host-local"})
      ASSERT_EQ(access(ipam, X_OK), 0) << ipam << " missing: apt-get install containernetworking-plugins";
    ASSERT_TRUE(sh_ok("mkdir -p " + cni_dir + " && ln -s " + XVMQ_CNI_PATH + " " + cni_dir +
                      "/xvmq-cni && ln -s /usr/lib/cni/static /usr/lib/cni/host-local " + cni_dir));
    cni_ = std::make_unique<CniPlumber>(*fabric_, cni_dir);
    plumber_ = cni_.get();
#else
    plumber_ = switchctl_.get();
#endif
    std::printf("[ fabric   ] pods added and removed with %s\n", plumber_->what().c_str());
  }

  void TearDown() override {
    if (!fabric_) return;
    fabric_->stop_switchds();
    for (const char* h : {"A", "B"})
      for (const auto& line : fabric_->log_problems(h)) ADD_FAILURE() << "switchd of host " << h << ": " << line;
    if (HasFailure())
      for (const char* h : {"A", "B"})
        std::fprintf(stderr, "---- switchd of host %s\n%s----\n", h, fabric_->log_text(h).c_str());
    fabric_->teardown();
  }

  // A pod's namespace (made as a runtime makes a sandbox), then the plumber.
  void add(const std::string& host, const Pod& p, PodPlumber* how = nullptr) {
    SCOPED_TRACE("add " + p.name + " on host " + host);
    ASSERT_TRUE(fabric_->add_netns(p.name));
    add_began_ = wall_s();
    PodPlumber* plumber = how ? how : plumber_;
    ASSERT_TRUE(plumber->add(fabric_->host(host), p));
    add_returned_ = wall_s();
    ASSERT_TRUE(plumber->check(fabric_->host(host), p));
    const json nic = nic_with_mac(host, p.mac);
    ASSERT_TRUE(nic.is_object()) << "no NIC with " << p.mac << " on host " << host;
    EXPECT_EQ(nic.value("state", ""), "connected") << nic.dump();
    EXPECT_EQ(nic.value("vlan", -1), p.vlan) << nic.dump();
  }
  void del(const std::string& host, const Pod& p, PodPlumber* how = nullptr) {
    SCOPED_TRACE("del " + p.name + " on host " + host);
    ASSERT_TRUE((how ? how : plumber_)->del(fabric_->host(host), p));
    EXPECT_TRUE(nic_with_mac(host, p.mac).is_null()) << p.mac << " still has a NIC on host " << host;
    fabric_->del_netns(p.name);
  }

  // What host's switchd answers to `op`, or null.
  json call(const std::string& host, const std::string& op) {
    auto c = xvmq::control::ControlClient::connect(fabric_->host(host).sock, 10s);
    if (!c) {
      ADD_FAILURE() << "host " << host << ": " << c.error().message;
      return nullptr;
    }
    auto r = c.value().call(op);
    if (!r || !r.value().ok) {
      ADD_FAILURE() << "host " << host << ": " << op << " failed";
      return nullptr;
    }
    return r.value().result;
  }

  // The port whose NIC has `mac` in host's `show` (the plugin names ports
  // after the container), and that NIC; null when none.
  std::pair<std::string, json> port_with_mac(const std::string& host, const std::string& mac) {
    const json show = call(host, "show");
    if (show.is_object())
      for (const auto& p : show["ports"])
        if (p["nic"].is_object() && p["nic"].value("mac", "") == mac) return {p.value("name", ""), p["nic"]};
    return {"", nullptr};
  }
  json nic_with_mac(const std::string& host, const std::string& mac) { return port_with_mac(host, mac).second; }

  // The frames switchd delivered to a pod's NIC by its vmq (the VMQ path).
  uint64_t fast_frames(const std::string& host, const Pod& p) {
    const auto [port, nic] = port_with_mac(host, p.mac);
    EXPECT_EQ(nic.value("path", ""), "vmq") << p.name << " on host " << host << ": " << nic.dump();
    return u64(call(host, "stats"), {"nics", port.c_str(), "fast_frames"});
  }

  bool ping(const Pod& from, const Pod& to, int count = 2) {
    return sh(fabric_->in(from.name, "ping -n -q -c " + std::to_string(count) + " -i 0.2 -W 1 " + to.ip())) == 0;
  }
  // Whether `in` has learned the MAC of `of`'s address (from an ARP request
  // or reply it received); a request of its own that got no answer leaves an
  // entry with no MAC.
  bool learned(const Pod& in, const Pod& of) {
    std::string out;
    sh("ip -n " + fabric_->netns(in.name) + " neigh show " + of.ip(), &out);
    return out.find("lladdr") != std::string::npos;
  }

  // tcpdump -e on a port of the fabric, of the frames that enter the
  // fabric there ("in") or leave it ("out"); listening when this returns.
  Bg sniff(const std::string& port, const std::string& direction, const std::string& filter, int count) {
    const std::string err = fabric_->dir() + "/tcpdump-" + std::to_string(sniffs_++) + ".err";
    Bg b = background("(" +
                      fabric_->in("fab", "timeout 10 tcpdump -tt -l -nei " + port + " -Q " + direction + " -c " +
                                             std::to_string(count) + " '" + filter + "'") +
                      " 2>" + err + ")");
    for (int i = 0; i < 300 && slurp(err).find("listening on") == std::string::npos; i++)
      std::this_thread::sleep_for(10ms);
    EXPECT_NE(slurp(err).find("listening on"), std::string::npos) << "tcpdump on " << port << ": " << slurp(err);
    return b;
  }

  std::optional<Fabric> fabric_;
  double add_began_ = 0, add_returned_ = 0;  // the wall clock around the last plumber add
  int sniffs_ = 0;
  std::unique_ptr<SwitchctlPlumber> switchctl_;
  std::unique_ptr<CniPlumber> cni_;
  PodPlumber* plumber_ = nullptr;
};

TEST_F(CniFabricTest, PodsReachTheirVlanAcrossHostsAndNoOther) {
  ASSERT_NO_FATAL_FAILURE(add("A", kA10));
  ASSERT_NO_FATAL_FAILURE(add("A", kA20));
  ASSERT_NO_FATAL_FAILURE(add("B", kB10));
  ASSERT_NO_FATAL_FAILURE(add("B", kB20));

  // What crosses the fabric from host A toward B, as a sniffer on the
  // switch's port sees it (tcpdump -e: the 802.1Q tag of each frame).
  Bg cap = sniff("pB", "out", "ether src " + kA10.mac + " or ether src " + kA20.mac, 12);
  const uint64_t a10_before = fabric_->trunk_frames("pA", 10), a20_before = fabric_->trunk_frames("pA", 20);
  const uint64_t b10_before = fabric_->trunk_frames("pB", 10), b20_before = fabric_->trunk_frames("pB", 20);

  EXPECT_TRUE(ping(kA10, kB10, 3)) << "a10 -> b10 on VLAN 10";
  EXPECT_TRUE(ping(kA20, kB20, 3)) << "a20 -> b20 on VLAN 20";
  EXPECT_TRUE(ping(kB10, kA10)) << "b10 -> a10 on VLAN 10";
  EXPECT_TRUE(ping(kB20, kA20)) << "b20 -> a20 on VLAN 20";

  // Same subnet, other VLAN: the ARP request never reaches the other pod.
  EXPECT_FALSE(ping(kA10, kB20)) << "a10 reached b20 across VLANs";
  EXPECT_FALSE(ping(kA20, kB10)) << "a20 reached b10 across VLANs";
  EXPECT_FALSE(ping(kB10, kA20)) << "b10 reached a20 across VLANs";
  EXPECT_FALSE(learned(kB20, kA10)) << "b20 heard a10's ARP";
  EXPECT_FALSE(learned(kB10, kA20)) << "b10 heard a20's ARP";
  EXPECT_FALSE(learned(kA20, kB10)) << "a20 heard b10's ARP";
  EXPECT_TRUE(learned(kB10, kA10)) << "b10 did not learn a10 on their VLAN";

  // The fabric forwarded both VLANs both ways, and nothing untagged or of
  // another VLAN; it learned each pod behind its host's port.
  const uint64_t a10 = fabric_->trunk_frames("pA", 10) - a10_before, a20 = fabric_->trunk_frames("pA", 20) - a20_before;
  const uint64_t b10 = fabric_->trunk_frames("pB", 10) - b10_before, b20 = fabric_->trunk_frames("pB", 20) - b20_before;
  EXPECT_GE(a10, 5u);  // 3 + 2 echoes out of host A, at least
  EXPECT_GE(a20, 5u);
  EXPECT_GE(b10, 5u);
  EXPECT_GE(b20, 5u);
  EXPECT_EQ(fabric_->dropped_frames(), 0u) << "the fabric saw untagged frames or another VLAN";
  EXPECT_EQ(fabric_->fdb_port(kA10.mac), "pA");
  EXPECT_EQ(fabric_->fdb_port(kA20.mac), "pA");
  EXPECT_EQ(fabric_->fdb_port(kB10.mac), "pB");
  EXPECT_EQ(fabric_->fdb_port(kB20.mac), "pB");
  std::printf(
      "[ fabric   ] frames forwarded from port pA: VLAN 10 %lu, VLAN 20 %lu; from pB: VLAN 10 %lu, VLAN 20 %lu\n", a10,
      a20, b10, b20);

  // What came over the fabric reached each pod by its vmq.
  const std::vector<std::pair<std::string, Pod>> pods{{"A", kA10}, {"A", kA20}, {"B", kB10}, {"B", kB20}};
  for (const auto& [h, p] : pods) EXPECT_GT(fast_frames(h, p), 0u) << p.name << ": nothing by the VMQ path";

  // Every frame of a10 on the wire has tag 10, every frame of a20 tag 20.
  const std::string seen = cap.text(20s);
  int tagged10 = 0, tagged20 = 0;
  std::istringstream lines(seen);
  for (std::string l; std::getline(lines, l);) {
    if (l.find(" > ") == std::string::npos) continue;
    if (l.find(kA10.mac + " > ") != std::string::npos) {
      EXPECT_NE(l.find("802.1Q (0x8100), length"), std::string::npos) << l;
      EXPECT_NE(l.find(": vlan 10,"), std::string::npos) << l;
      tagged10++;
    } else if (l.find(kA20.mac + " > ") != std::string::npos) {
      EXPECT_NE(l.find(": vlan 20,"), std::string::npos) << l;
      tagged20++;
    }
  }
  EXPECT_GT(tagged10, 0) << seen;
  EXPECT_GT(tagged20, 0) << seen;
  std::printf("[ fabric   ] tcpdump -e on pB: %d frames of a10, all tagged 10; %d of a20, all tagged 20\n", tagged10,
              tagged20);

  for (const auto& [h, p] : pods) ASSERT_NO_FATAL_FAILURE(del(h, p));
  EXPECT_TRUE(fabric_->switchd_alive("A"));
  EXPECT_TRUE(fabric_->switchd_alive("B"));
}

// A pod deleted on one host and added on the other, with its MAC and address,
// while a pod on the host it left pings it. The fabric still has the pod
// behind the old host's port: frames to it come back in on that port and are
// dropped, until a frame from the pod at its new place (the gratuitous ARP
// sent after ADD) teaches the fabric the new port.
TEST_F(CniFabricTest, MovedPodIsReachableOnceTheFabricRelearns) {
  ASSERT_NO_FATAL_FAILURE(add("A", kA10));
  ASSERT_NO_FATAL_FAILURE(add("B", kB10));
  const int rounds = 10;
  std::vector<double> add_ms, relearn, after_add, outage;
  std::string host = "A";
  Pod mover = kMover;
  mover.id = "mover-0";
  ASSERT_NO_FATAL_FAILURE(add(host, mover));
  for (int r = 1; r <= rounds; r++) {
    const std::string to = host == "A" ? "B" : "A";
    const Pod& pinger = host == "A" ? kA10 : kB10;
    SCOPED_TRACE("round " + std::to_string(r) + ": " + host + " -> " + to);
    // The fabric and both peers know the mover at its place.
    ASSERT_TRUE(ping(mover, kA10, 1) && ping(mover, kB10, 1));
    ASSERT_EQ(fabric_->fdb_port(mover.mac), "p" + host);

    // The first frame from the mover that enters the fabric at its new place.
    Bg first = sniff("p" + to, "in", "ether src " + mover.mac, 1);
    Bg pings = background(fabric_->in(pinger.name, "ping -D -n -i 0.005 -w 4 " + mover.ip()));
    std::this_thread::sleep_for(300ms);
    const double t_del = wall_s();
    ASSERT_NO_FATAL_FAILURE(del(host, mover));
    const double t_gone = wall_s();  // the pod answers until its NIC and eth0 are gone
    mover.id = "mover-" + std::to_string(r);
    ASSERT_NO_FATAL_FAILURE(add(to, mover));
    // Once the fabric has the new port, a few more replies, then ping's
    // summary (SIGINT); -w 4 bounds it when the fabric never learns.
    for (int i = 0; i < 300 && fabric_->fdb_port(mover.mac) != "p" + to; i++) std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(100ms);
    fabric_->signal_all(pinger.name, SIGINT);
    const std::vector<double> t = reply_times(pings.text(10s));
    const std::string frame = first.text(10s);
    double t_garp = 0;
    ASSERT_EQ(std::sscanf(frame.c_str(), "%lf ", &t_garp), 1) << "no frame from the mover at p" << to << ": " << frame;
    EXPECT_NE(frame.find("ARP"), std::string::npos) << "its first frame is not an ARP: " << frame;
    EXPECT_NE(frame.find(mover.ip()), std::string::npos) << frame;
    EXPECT_GT(t_garp, add_began_) << "a frame from the mover at p" << to << " before its ADD: " << frame;

    auto first_back = std::find_if(t.begin(), t.end(), [&](double s) { return s > t_gone; });
    ASSERT_TRUE(!t.empty() && t.front() < t_del) << "no reply before the move";
    ASSERT_NE(first_back, t.end()) << "not reachable again within 4 s (DEL took " << (t_gone - t_del) * 1e3
                                   << " ms, ADD " << (add_returned_ - add_began_) * 1e3 << " ms)";
    EXPECT_GT(*first_back, t_garp) << "a reply before the fabric could know the new port";
    EXPECT_EQ(fabric_->fdb_port(mover.mac), "p" + to);
    add_ms.push_back((add_returned_ - add_began_) * 1e3);
    relearn.push_back((*first_back - t_garp) * 1e3);
    after_add.push_back((*first_back - add_began_) * 1e3);
    outage.push_back((*first_back - *(first_back - 1)) * 1e3);
    std::printf(
        "[ move     ] round %d, host %s -> %s: DEL and the sandbox's removal %.1f ms, ADD %.1f ms; gratuitous ARP at "
        "the fabric %.1f ms after "
        "ADD began; first reply %.1f ms after it, %.1f ms after ADD began; %.1f ms without a reply\n",
        r, host.c_str(), to.c_str(), (t_gone - t_del) * 1e3, add_ms.back(), (t_garp - add_began_) * 1e3, relearn.back(),
        after_add.back(), outage.back());
    host = to;
  }
  const Spread d = spread(add_ms), l = spread(relearn), a = spread(after_add), o = spread(outage);
  std::printf(
      "[ relearn  ] %d moves with %s, min/median/max: gratuitous ARP to first reply %.1f/%.1f/%.1f ms; ADD "
      "%.1f/%.1f/%.1f ms; ADD began to first reply %.1f/%.1f/%.1f ms; without a reply %.1f/%.1f/%.1f ms "
      "(pings every 5 ms)\n",
      rounds, plumber_->what().c_str(), l.min, l.median, l.max, d.min, d.median, d.max, a.min, a.median, a.max, o.min,
      o.median, o.max);
  ASSERT_NO_FATAL_FAILURE(del(host, mover));
  ASSERT_NO_FATAL_FAILURE(del("A", kA10));
  ASSERT_NO_FATAL_FAILURE(del("B", kB10));
}

// What triggers the relearn: the same move, by hand and with no gratuitous
// ARP, the pinger's neighbour entry fixed (so that its ARP cannot find the
// pod either): the fabric keeps the old port and the pod stays unreachable;
// one gratuitous ARP from the pod makes it reachable.
TEST_F(CniFabricTest, WithoutAGratuitousArpTheFabricKeepsTheOldPort) {
  ASSERT_NO_FATAL_FAILURE(add("A", kA10));
  ASSERT_NO_FATAL_FAILURE(add("B", kB10));
  ASSERT_NO_FATAL_FAILURE(add("A", kMover, switchctl_.get()));
  ASSERT_TRUE(ping(kMover, kB10, 1) && ping(kMover, kA10, 1));
  ASSERT_EQ(fabric_->fdb_port(kMover.mac), "pA");
  ASSERT_TRUE(sh_ok("ip -n " + fabric_->netns("a10") + " neigh replace " + kMover.ip() + " lladdr " + kMover.mac +
                    " dev eth0 nud permanent"));

  ASSERT_NO_FATAL_FAILURE(del("A", kMover, switchctl_.get()));
  switchctl_->garp = false;
  ASSERT_NO_FATAL_FAILURE(add("B", kMover, switchctl_.get()));
  EXPECT_FALSE(ping(kA10, kMover, 5)) << "reachable with no frame from the pod at its new place";
  EXPECT_EQ(fabric_->fdb_port(kMover.mac), "pA");

  ASSERT_EQ(send_garp(fabric_->netns(kMover.name), "eth0", kMover.mac, kMover.ip()), 0);
  for (int i = 0; i < 100 && fabric_->fdb_port(kMover.mac) != "pB"; i++) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(fabric_->fdb_port(kMover.mac), "pB");
  EXPECT_TRUE(ping(kA10, kMover, 2)) << "not reachable after the gratuitous ARP";
  ASSERT_NO_FATAL_FAILURE(del("B", kMover, switchctl_.get()));
}

}  // namespace
