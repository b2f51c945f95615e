// The software switch's decisions, table-driven: VLANs on access and trunk
// ports, port security, flooding, unknown unicast. No privileges needed.
#include <gtest/gtest.h>

#include <random>

#include "switchd/core/forwarding.h"

namespace xvmq::switchd {
namespace {

using Bytes = std::vector<uint8_t>;

Mac mac(uint8_t n) { return Mac{0x02, 0, 0, 0, 0, n}; }
const Mac kBcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
const Mac kOutside{0x02, 0x99, 0, 0, 0, 0x01};

Bytes frame(const Mac& dst, const Mac& src, std::vector<std::pair<uint16_t, uint16_t>> tags = {}) {
  Bytes f(dst.begin(), dst.end());
  f.insert(f.end(), src.begin(), src.end());
  for (auto [tpid, tci] : tags) f.insert(f.end(), {uint8_t(tpid >> 8), uint8_t(tpid), uint8_t(tci >> 8), uint8_t(tci)});
  f.insert(f.end(), {0x08, 0x00});
  f.resize(f.size() + 46);
  return f;
}

// Ports: 0 access VLAN 10, 1 access VLAN 10, 2 access VLAN 20, 3 trunk {10, 20, 30} native 30,
// 4 trunk {20} without native, 5 access untagged (VLAN 0), 6 access VLAN 10 with spoofing allowed.
std::vector<NicDesc> ports() {
  auto port = [](uint8_t last, PortVlans vlans, bool spoof = false) {
    return NicDesc{.mac = mac(last), .vlans = std::move(vlans), .allow_mac_spoofing = spoof};
  };
  return {
      port(1, PortVlans::access_vlan(10)),           port(2, PortVlans::access_vlan(10)),
      port(3, PortVlans::access_vlan(20)),           port(4, PortVlans::trunk({10, 20, 30}, 30)),
      port(5, PortVlans::trunk({20}, std::nullopt)), port(6, PortVlans::access_vlan(0)),
      port(7, PortVlans::access_vlan(10), true),
  };
}

struct Row {
  const char* name;
  Bytes frame;
  int ingress;
  std::optional<SwitchDrop> drop;
  uint16_t vlan;
  std::vector<Egress> out;  // in port order, uplink last
  bool learn = false;
  uint32_t tags = 0;
};

std::string str(const std::vector<Egress>& out) {
  std::string s;
  for (const auto& e : out)
    s += (e.port == kUplink ? std::string("uplink") : std::to_string(e.port)) + (e.tagged ? "t " : "u ");
  return s;
}

TEST(Forwarding, Table) {
  const uint16_t Q = 0x8100;
  const std::vector<Row> rows = {
      // From the uplink.
      {"uplink to access VM on its VLAN", frame(mac(1), kOutside, {{Q, 10}}), kUplink, {}, 10, {{0, false}}, true, 1},
      {"uplink to access VM on another VLAN",
       frame(mac(1), kOutside, {{Q, 20}}),
       kUplink,
       SwitchDrop::UnknownUnicast,
       20,
       {},
       true,
       1},
      {"uplink untagged to the untagged VM", frame(mac(6), kOutside), kUplink, {}, 0, {{5, false}}, true, 0},
      {"uplink to trunk VM, tagged VLAN", frame(mac(4), kOutside, {{Q, 20}}), kUplink, {}, 20, {{3, true}}, true, 1},
      {"uplink to trunk VM, native VLAN leaves untagged",
       frame(mac(4), kOutside, {{Q, 30}}),
       kUplink,
       {},
       30,
       {{3, false}},
       true,
       1},
      {"uplink unknown unicast", frame(kOutside, mac(0x77)), kUplink, SwitchDrop::UnknownUnicast, 0, {}, true, 0},
      {"uplink broadcast on VLAN 10",
       frame(kBcast, kOutside, {{Q, 10}}),
       kUplink,
       {},
       10,
       {{0, false}, {1, false}, {3, true}, {6, false}},
       true,
       1},
      {"uplink broadcast on VLAN 20",
       frame(kBcast, kOutside, {{Q, 20}}),
       kUplink,
       {},
       20,
       {{2, false}, {3, true}, {4, true}},
       true,
       1},
      {"uplink broadcast on a VLAN with no port",
       frame(kBcast, kOutside, {{Q, 99}}),
       kUplink,
       SwitchDrop::NoPort,
       99,
       {},
       true,
       1},
      {"uplink priority-tagged is VLAN 0",
       frame(mac(6), kOutside, {{Q, 0x6000}}),
       kUplink,
       {},
       0,
       {{5, false}},
       true,
       1},
      {"uplink QinQ: outer VLAN decides, inner stays",
       frame(mac(1), kOutside, {{0x88a8, 10}, {Q, 5}}),
       kUplink,
       {},
       10,
       {{0, false}},
       true,
       1},
      {"multicast source is not learned",
       frame(mac(1), Mac{0x01, 0, 0x5e, 0, 0, 1}, {{Q, 10}}),
       kUplink,
       {},
       10,
       {{0, false}},
       false,
       1},
      {"truncated tag",
       Bytes{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0},
       kUplink,
       SwitchDrop::Malformed,
       0,
       {}},
      {"runt", Bytes{1, 2, 3}, kUplink, SwitchDrop::Malformed, 0, {}},
      // From access VMs.
      {"VM to VM on the same VLAN stays inside", frame(mac(2), mac(1)), 0, {}, 10, {{1, false}}},
      {"VM to VM on another VLAN goes out the uplink", frame(mac(3), mac(1)), 0, {}, 10, {{kUplink, true}}},
      {"VM to the outside, tagged with its VLAN", frame(kOutside, mac(1)), 0, {}, 10, {{kUplink, true}}},
      {"untagged VM to the outside, untagged", frame(kOutside, mac(6)), 5, {}, 0, {{kUplink, false}}},
      {"VM broadcast: its VLAN's ports and the uplink",
       frame(kBcast, mac(1)),
       0,
       {},
       10,
       {{1, false}, {3, true}, {6, false}, {kUplink, true}}},
      {"VM to itself", frame(mac(1), mac(1)), 0, SwitchDrop::NoPort, 10, {}},
      {"spoofed source", frame(mac(2), mac(9)), 0, SwitchDrop::SpoofedSource, 0, {}},
      {"spoofed source allowed", frame(mac(1), mac(9)), 6, {}, 10, {{0, false}}},
      {"tagged frame from an access VM", frame(mac(2), mac(1), {{Q, 10}}), 0, SwitchDrop::TaggedOnAccess, 0, {}},
      {"priority-tagged frame from an access VM is untagged",
       frame(mac(2), mac(1), {{Q, 0x2000}}),
       0,
       {},
       10,
       {{1, false}},
       false,
       1},
      // From trunk VMs.
      {"trunk VM tagged on an allowed VLAN", frame(mac(1), mac(4), {{Q, 10}}), 3, {}, 10, {{0, false}}, false, 1},
      {"trunk VM tagged on a VLAN it does not carry",
       frame(mac(1), mac(4), {{Q, 11}}),
       3,
       SwitchDrop::VlanNotAllowed,
       0,
       {}},
      {"trunk VM untagged is its native VLAN", frame(kOutside, mac(4)), 3, {}, 30, {{kUplink, true}}},
      {"trunk VM untagged without a native VLAN", frame(kOutside, mac(5)), 4, SwitchDrop::VlanNotAllowed, 0, {}},
      {"trunk VM broadcast on VLAN 20",
       frame(kBcast, mac(4), {{Q, 20}}),
       3,
       {},
       20,
       {{2, false}, {4, true}, {kUplink, true}},
       false,
       1},
      {"trunk to trunk on VLAN 20", frame(mac(5), mac(4), {{Q, 20}}), 3, {}, 20, {{4, true}}, false, 1},
  };
  auto p = ports();
  for (const auto& r : rows) {
    SCOPED_TRACE(r.name);
    Decision d = decide(r.frame.data(), static_cast<uint32_t>(r.frame.size()), r.ingress, p);
    ASSERT_EQ(d.drop.has_value(), r.drop.has_value()) << (d.drop ? to_string(*d.drop) : "delivered");
    if (r.drop) {
      EXPECT_EQ(*d.drop, *r.drop) << to_string(*d.drop);
      if (*r.drop == SwitchDrop::Malformed || *r.drop == SwitchDrop::SpoofedSource ||
          *r.drop == SwitchDrop::TaggedOnAccess || *r.drop == SwitchDrop::VlanNotAllowed)
        continue;
    }
    EXPECT_EQ(d.vlan, r.vlan);
    EXPECT_EQ(str(d.out), str(r.out));
    EXPECT_EQ(d.learn, r.learn);
    EXPECT_EQ(d.tags, r.tags);
  }
}

// A frame never crosses from one VLAN to another: every egress port carries
// the frame's VLAN, whatever the frame and the port it came in on.
TEST(Forwarding, NoFrameCrossesVlans) {
  auto p = ports();
  std::mt19937 rng(7);
  const uint16_t vlans[] = {0, 10, 20, 30, 11, 99};
  const Mac dsts[] = {mac(1), mac(2), mac(3), mac(4), mac(5), mac(6), mac(7), kBcast, kOutside};
  for (int i = 0; i < 20000; i++) {
    int ingress = static_cast<int>(rng() % (p.size() + 1)) - 1;
    Mac src = ingress == kUplink ? kOutside : p[static_cast<size_t>(ingress)].mac;
    std::vector<std::pair<uint16_t, uint16_t>> tags;
    if (rng() % 2) tags.push_back({0x8100, vlans[rng() % 6]});
    Bytes f = frame(dsts[rng() % 9], src, tags);
    Decision d = decide(f.data(), static_cast<uint32_t>(f.size()), ingress, p);
    if (d.drop && d.out.empty()) continue;
    for (const auto& e : d.out) {
      if (e.port == kUplink) {
        EXPECT_EQ(e.tagged, d.vlan != 0);
        continue;
      }
      ASSERT_TRUE(p[static_cast<size_t>(e.port)].vlans.carries(d.vlan)) << "port " << e.port << " vlan " << d.vlan;
      EXPECT_NE(e.port, ingress);
    }
    if (ingress != kUplink && !tags.empty() && tags[0].second != 0) {
      const auto& pv = p[static_cast<size_t>(ingress)].vlans;
      EXPECT_TRUE(pv.mode == VlanMode::Trunk && pv.carries(tags[0].second)) << "a tagged frame entered an access port";
    }
  }
}

}  // namespace
}  // namespace xvmq::switchd

#include <thread>

#include "switchd/core/fdb.h"

namespace xvmq::switchd {
namespace {

TEST(Fdb, LearnsAgesAndStaysBounded) {
  Fdb fdb(100);
  EXPECT_EQ(fdb.learn(mac(1), 10, 1), Fdb::Learned::Added);
  EXPECT_EQ(fdb.learn(mac(1), 10, 2), Fdb::Learned::Known);
  EXPECT_EQ(fdb.learn(mac(1), 20, 2), Fdb::Learned::Added);  // per VLAN
  EXPECT_EQ(fdb.size(), 2u);
  // A flood of source MACs: the table stops at its bound, and counts.
  for (uint32_t i = 0; i < 100000; i++)
    fdb.learn(Mac{0x02, 0x33, uint8_t(i >> 24), uint8_t(i >> 16), uint8_t(i >> 8), uint8_t(i)}, 10, 3);
  EXPECT_EQ(fdb.size(), 100u);
  EXPECT_GE(fdb.refused(), 100000u - 98);
  EXPECT_EQ(fdb.learn(mac(1), 10, 4), Fdb::Learned::Known) << "a known station stays known when the table is full";
  // Aging: mac(1)/10 was seen at 4, the flood at 3.
  EXPECT_EQ(fdb.expire(10, 6), 99u);
  EXPECT_EQ(fdb.size(), 1u);
  auto e = fdb.entries(10);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].mac, mac(1));
  EXPECT_EQ(e[0].vlan, 10);
  EXPECT_EQ(e[0].age_s, 6u);
  EXPECT_EQ(fdb.learn(mac(2), 10, 11), Fdb::Learned::Added) << "freed slots are learned into again";
  EXPECT_EQ(fdb.flush(), 2u);
  EXPECT_EQ(fdb.size(), 0u);
}

TEST(Fdb, WorkersLearnConcurrently) {
  Fdb fdb(4096);
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; w++)
    workers.emplace_back([&, w] {
      for (uint32_t i = 0; i < 20000; i++) fdb.learn(Mac{0x02, 0x44, 0, uint8_t(w), uint8_t(i >> 8), uint8_t(i)}, 0, 1);
    });
  for (auto& t : workers) t.join();
  EXPECT_LE(fdb.size(), 4096u);
  EXPECT_EQ(fdb.entries(1).size(), fdb.size());
  EXPECT_EQ(fdb.size() + fdb.refused(), 4u * 20000u);
}

// The index of ports by MAC gives the decision of the scan over all ports,
// for random ports (shared MACs, statics, VLANs) and random frames.
TEST(Forwarding, IndexedLookupDecidesAsTheScan) {
  std::mt19937 rng(7);
  for (int round = 0; round < 50; round++) {
    std::vector<NicDesc> ps;
    const int n = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; i++) {
      NicDesc p{.mac = mac(static_cast<uint8_t>(rng() % 24)),
                .vlans = rng() % 2 ? PortVlans::access_vlan(static_cast<uint16_t>(rng() % 3))
                                   : PortVlans::trunk({1, 2}, std::nullopt)};
      if (rng() % 4 == 0)
        p.statics.push_back({mac(static_cast<uint8_t>(rng() % 24)), static_cast<uint16_t>(rng() % 3)});
      ps.push_back(p);
    }
    const PortIndex idx = index_ports(ps);
    for (int k = 0; k < 200; k++) {
      const Mac dst = rng() % 10 == 0 ? kBcast : mac(static_cast<uint8_t>(rng() % 26));
      const int ingress = static_cast<int>(rng() % (n + 1)) - 1;
      const Mac src = ingress == kUplink ? kOutside : ps[static_cast<size_t>(ingress)].mac;
      const uint16_t vid = static_cast<uint16_t>(rng() % 3);
      Bytes f = vid ? frame(dst, src, {{0x8100, vid}}) : frame(dst, src);
      Decision a = decide(f.data(), static_cast<uint32_t>(f.size()), ingress, ps);
      Decision b = decide(f.data(), static_cast<uint32_t>(f.size()), ingress, ps, idx);
      ASSERT_EQ(a.drop, b.drop) << "round " << round << " frame " << k;
      ASSERT_EQ(a.out.size(), b.out.size()) << "round " << round << " frame " << k;
      for (size_t o = 0; o < a.out.size(); o++) {
        ASSERT_EQ(a.out[o].port, b.out[o].port);
        ASSERT_EQ(a.out[o].tagged, b.out[o].tagged);
      }
    }
  }
}

}  // namespace
}  // namespace xvmq::switchd
