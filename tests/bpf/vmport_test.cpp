// The VM port program (VM egress in XDP) against the software switch's
// decision (switchd/core/forwarding.h) and its VLAN shapes
// (switchd/dp/vlan_tag.h), frame for frame, with BPF_PROG_RUN: seeded random
// switches (access and trunk NICs, native VLANs, static entries, MAC
// spoofing, kernel- and xsk-delivered NICs) and random frames from one NIC.
//
// Each frame must get the program's verdict for what the switch decides:
// dropped by port security (counted under the switch's reason), redirected
// by DEVMAP in the shape the switch would send it in, or handed to the
// switch (here XDP_PASS: the socket slots are empty). Frames the switch
// would send to a kernel-delivered NIC or to the uplink are the ones the
// program may keep; everything else it must hand over.
//
// XVMQ_SEED=<n> replays a run; XVMQ_FRAMES=<n> changes its length.
#include <linux/bpf.h>
#include <net/if.h>

#include <cstdlib>
#include <random>

#include "loader/kernel_delivery.h"
#include "loader/vmport.h"
#include "switchd/core/forwarding.h"
#include "switchd/dp/vlan_tag.h"
#include "tests/lib/harness.h"
#include "tests/lib/prog_run.h"

namespace xvmq::test {
namespace {

using switchd::Egress;
using switchd::kUplink;
using switchd::NicDesc;
using switchd::PortVlans;
using switchd::SwitchDrop;
using switchd::Verdict;

constexpr const char* kDev = "vp0";
constexpr const char* kPeer = "vp0p";

// A switch: ports[0] sends; kernel[i]: NIC i is kernel-delivered (vmq i + 1).
struct World {
  std::vector<NicDesc> ports;
  std::vector<bool> kernel;
  bool uplink = true;  // the uplink takes redirected frames
};

Mac pool_mac(uint32_t i) { return Mac{0x02, 0, 0, 0, 0, static_cast<uint8_t>(1 + i)}; }

PortVlans random_vlans(std::mt19937& rng) {
  auto pick = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
  if (pick(2)) return PortVlans::access_vlan(static_cast<uint16_t>(pick(2) ? 0 : 1 + pick(4)));
  std::vector<uint16_t> trunk;
  for (uint16_t v = 1; v <= 5; v++)
    if (pick(2)) trunk.push_back(v);
  std::optional<uint16_t> native;
  if (pick(2)) native = static_cast<uint16_t>(pick(3) ? 1 + pick(5) : 0);
  return PortVlans::trunk(trunk, native);
}

World random_world(std::mt19937& rng) {
  auto pick = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
  World w;
  const uint32_t n = 2 + pick(4);
  for (uint32_t i = 0; i < n; i++) {
    NicDesc d;
    d.name = "vm" + std::to_string(i);
    d.mac = pool_mac(pick(3) ? i : pick(8));  // now and then a MAC two NICs share
    d.vlans = random_vlans(rng);
    d.allow_mac_spoofing = pick(6) == 0;
    for (uint32_t s = pick(3); s-- > 0;) d.statics.push_back({pool_mac(8 + pick(4)), static_cast<uint16_t>(pick(6))});
    w.ports.push_back(d);
    w.kernel.push_back(i == 0 || pick(3) != 0);
  }
  w.uplink = pick(4) != 0;
  return w;
}

Bytes random_frame(std::mt19937& rng, const World& w) {
  auto pick = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
  FrameSpec s;
  const uint32_t d = pick(10);
  Mac dst = d < 6   ? pool_mac(pick(12))
            : d < 8 ? Mac{0x02, 0x55, 0, 0, 0, static_cast<uint8_t>(pick(4))}
            : d < 9 ? Mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
                    : Mac{0x01, 0x00, 0x5e, 0, 0, 1};
  Mac src = pick(4) ? w.ports[0].mac : pool_mac(pick(12));
  s.dst = format_mac(dst);
  s.src = format_mac(src);
  for (uint32_t t = pick(3); t-- > 0;) {
    const uint16_t tpids[] = {0x8100, 0x88a8, 0x8100};
    s.tags.push_back({tpids[pick(3)], static_cast<uint16_t>((rng() & 0xe000) | (pick(3) ? pick(7) : 0))});
  }
  s.payload = 46 + pick(100);
  s.fill = static_cast<uint8_t>(rng());
  Bytes f = build_frame(s);
  // Hostile ones too: cut anywhere after the MAC addresses (tags cut short).
  if (pick(8) == 0) f.resize(14 + pick(12));
  return f;
}

// What the program must do with frame f from ports[0].
struct Want {
  uint32_t action;
  Bytes out;      // for XDP_REDIRECT: the shape it leaves in
  int drop = -1;  // XVMQ_PORT_* it is counted under when dropped
};

Want expected(const World& w, const Bytes& f) {
  Want want{XDP_PASS, f};
  const Verdict v = switchd::judge(f.data(), static_cast<uint32_t>(f.size()), 0, w.ports, nullptr);
  if (v.drop) {
    switch (*v.drop) {
      case SwitchDrop::SpoofedSource:
        return {XDP_DROP, {}, XVMQ_PORT_SPOOFED_SOURCE};
      case SwitchDrop::TaggedOnAccess:
        return {XDP_DROP, {}, XVMQ_PORT_TAGGED_ON_ACCESS};
      case SwitchDrop::VlanNotAllowed:
        return {XDP_DROP, {}, XVMQ_PORT_VLAN_NOT_ALLOWED};
      default:
        return want;  // the switch's own drops (no port, malformed): handed over
    }
  }
  if (v.flood) return want;
  const Egress e = v.to;
  if (e.port == kUplink ? !w.uplink : !w.kernel[static_cast<size_t>(e.port)]) return want;
  // A MAC two NICs have on that VLAN: the switch keeps the choice.
  if (e.port != kUplink) {
    Mac dst;
    std::copy(f.begin(), f.begin() + 6, dst.begin());
    size_t owners = 0;
    for (const NicDesc& p : w.ports) owners += p.vlans.carries(v.vlan) && (p.mac == dst || p.has_static(dst, v.vlan));
    if (owners > 1) return want;
  }
  std::vector<uint8_t> buf(f.size() + 64);
  std::copy(f.begin(), f.end(), buf.begin() + 32);
  uint64_t addr = 32;
  uint32_t len = static_cast<uint32_t>(f.size());
  if (e.tagged)
    switchd::push_vlan_tag(buf.data(), addr, len, v.tags, v.vlan);
  else
    switchd::pop_vlan_tags(buf.data(), addr, len, v.tags);
  return {XDP_REDIRECT, Bytes(buf.begin() + static_cast<long>(addr), buf.begin() + static_cast<long>(addr + len))};
}

class VmPortEgress : public ::testing::Test {
 protected:
  void SetUp() override {
    XVMQ_REQUIRE_PRIVILEGES();
    ASSERT_TRUE(make_veth(kDev, kPeer, 1));
    ifindex_ = static_cast<int>(if_nametoindex(kDev));
    auto c = Classifier::open();
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_TRUE(c->load());
    cls_.emplace(std::move(c.value()));
    auto kd = KernelDelivery::open(*cls_);
    ASSERT_TRUE(kd) << kd.error().message;
    kd_ = std::move(kd.value());
    auto dev = netdev_info(kDev);
    ASSERT_TRUE(dev) << dev.error().message;
    auto port = VmPort::attach(*dev, 0, kd_->devs_fd(), kd_->dests_fd());
    ASSERT_TRUE(port) << port.error().message;
    port_ = std::move(port.value());
    for (uint32_t key = 0; key < 8; key++) ASSERT_TRUE(kd_->set_dev(key, ifindex_));
  }
  void TearDown() override {
    port_.reset();
    kd_.reset();
    cls_.reset();
    sh(std::string("ip link del ") + kDev);
  }

  // The switch into the maps, as the datapath's sync_ports() writes them.
  void install(const World& w);

  int ifindex_ = 0;
  std::optional<Classifier> cls_;
  std::unique_ptr<KernelDelivery> kd_;
  std::unique_ptr<VmPort> port_;
  std::vector<FilterKey> dests_;
};

void VmPortEgress::install(const World& w) {
  for (const auto& k : dests_) ASSERT_TRUE(kd_->clear_dest(k));
  dests_.clear();
  // (MAC, VLAN) -> where, and the NIC that has it first.
  std::map<std::pair<Mac, uint16_t>, std::pair<xvmq_dest, size_t>> want;
  for (size_t i = 0; i < w.ports.size(); i++) {
    const NicDesc& n = w.ports[i];
    auto put = [&](const Mac& m, uint16_t v) {
      xvmq_dest d{w.kernel[i] ? static_cast<uint32_t>(i + 1) : XVMQ_DEST_SWITCH,
                  n.vlans.sends_tagged(v) ? 0u : XVMQ_DEST_F_UNTAGGED, static_cast<uint32_t>(100 + i), 0};
      auto [it, first] = want.emplace(std::pair{m, v}, std::pair{d, i});
      if (!first && it->second.second != i) it->second.first = xvmq_dest{XVMQ_DEST_SWITCH, 0, 0, 0};
    };
    for (uint16_t v : n.vlans.carried()) put(n.mac, v);
    for (const auto& [m, v] : n.statics)
      if (n.vlans.carries(v)) put(m, v);
  }
  for (const auto& [k, d] : want) {
    ASSERT_TRUE(kd_->set_dest({k.first, k.second}, d.first));
    dests_.push_back({k.first, k.second});
  }
  const NicDesc& me = w.ports[0];
  xvmq_port_conf c{};
  std::copy(me.mac.begin(), me.mac.end(), c.mac);
  c.ifindex = 100;
  c.flags = XVMQ_PORT_F_EGRESS | (me.allow_mac_spoofing ? XVMQ_PORT_F_SPOOFING : 0) |
            (me.statics.empty() ? 0 : XVMQ_PORT_F_STATICS) | (w.uplink ? XVMQ_PORT_F_UPLINK : 0);
  if (me.vlans.mode == switchd::VlanMode::Trunk) {
    c.flags |= XVMQ_PORT_F_TRUNK;
    for (uint16_t v : me.vlans.trunk_vlans) c.trunk[v >> 6] |= 1ull << (v & 63);
    if (me.vlans.native) c.flags |= XVMQ_PORT_F_NATIVE, c.native_vlan = *me.vlans.native;
  } else {
    c.access_vlan = me.vlans.access;
  }
  ASSERT_TRUE(port_->set_conf(c));
  std::vector<Mac> statics;
  for (const auto& [m, v] : me.statics) statics.push_back(m);
  ASSERT_TRUE(port_->set_statics(statics));
}

TEST_F(VmPortEgress, AgreesWithTheSoftwareSwitchFrameForFrame) {
  const char* seed_env = std::getenv("XVMQ_SEED");
  const char* frames_env = std::getenv("XVMQ_FRAMES");
  const uint32_t seed = seed_env ? static_cast<uint32_t>(std::strtoul(seed_env, nullptr, 0)) : std::random_device{}();
  const size_t worlds = 200, per_world = frames_env ? std::strtoul(frames_env, nullptr, 0) / worlds : 100;
  std::mt19937 rng(seed);
  SCOPED_TRACE("XVMQ_SEED=" + std::to_string(seed));
  std::array<uint64_t, XVMQ_PORT_COUNT> counted{};
  uint64_t redirected = 0;
  for (size_t wi = 0; wi < worlds; wi++) {
    const World w = random_world(rng);
    ASSERT_NO_FATAL_FAILURE(install(w));
    for (size_t fi = 0; fi < per_world; fi++) {
      const Bytes f = random_frame(rng, w);
      const Want want = expected(w, f);
      auto r = prog_run(port_->prog_fd(), f, {.ifindex = ifindex_});
      ASSERT_EQ(r.err, 0);
      ASSERT_EQ(r.action, want.action) << "world " << wi << " frame " << fi << ": " << hex(f);
      if (want.action == XDP_REDIRECT) {
        ASSERT_EQ(hex(r.out, 2000), hex(want.out, 2000)) << "world " << wi << " frame " << fi << ": " << hex(f);
        redirected++;
      }
      if (want.drop >= 0) counted[static_cast<size_t>(want.drop)]++;
    }
  }
  const auto got = port_->counts();
  for (uint32_t d : {XVMQ_PORT_SPOOFED_SOURCE, XVMQ_PORT_TAGGED_ON_ACCESS, XVMQ_PORT_VLAN_NOT_ALLOWED})
    EXPECT_EQ(got[d].frames, counted[d]) << "count " << d;
  EXPECT_EQ(got[XVMQ_PORT_FORWARDED].frames, redirected);
  // The run must have exercised every outcome.
  EXPECT_GT(redirected, 100u);
  for (uint32_t d : {XVMQ_PORT_SPOOFED_SOURCE, XVMQ_PORT_TAGGED_ON_ACCESS, XVMQ_PORT_VLAN_NOT_ALLOWED})
    EXPECT_GT(counted[d], 10u) << "count " << d;
}

}  // namespace
}  // namespace xvmq::test
