// Hardware steering: the ethtool rule encoding field by field, decoding back,
// refusals, the location choice, the fallback policy, and on veth (which has
// no RX flow classification) the refusals and the fallback for real.
#include "switchd/dp/steering.h"

#include <arpa/inet.h>

#include <cstring>

#include "tests/lib/harness.h"

namespace xvmq::test {
namespace {

Mac mac(const std::string& text) {
  auto m = parse_mac(text);
  EXPECT_TRUE(m) << text;
  return m.value_or(Mac{});
}

bool has(const std::string& text, const std::string& words) { return text.find(words) != std::string::npos; }

bool all_zero(const void* p, size_t n) {
  auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; i++)
    if (b[i]) return false;
  return true;
}

struct EncodeCase {
  std::string mac;
  std::optional<uint16_t> vlan;
  uint32_t queue;
  std::optional<uint32_t> loc;
  uint32_t flow_type;
  uint16_t tci, tci_mask;  // host order; 0 when no VLAN
  uint32_t location;
};

TEST(SteeringEncode, FieldsOfTheRule) {
  const EncodeCase cases[] = {
      {"02:00:00:00:00:01", std::nullopt, 0, std::nullopt, ETHER_FLOW, 0, 0, RX_CLS_LOC_ANY},
      {"02:00:00:00:00:01", std::nullopt, 3, 7, ETHER_FLOW, 0, 0, 7},
      {"52:54:00:ab:cd:ef", 10, 1, std::nullopt, ETHER_FLOW | FLOW_EXT, 10, 0x0fff, RX_CLS_LOC_ANY},
      {"52:54:00:ab:cd:ef", 4094, 63, 1023, ETHER_FLOW | FLOW_EXT, 4094, 0x0fff, 1023},
      {"02:00:00:00:00:02", 0, 2, 0, ETHER_FLOW | FLOW_EXT, 0, 0x0fff, 0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.mac + " vlan " + (c.vlan ? std::to_string(*c.vlan) : "none") + " queue " + std::to_string(c.queue));
    auto nfc = encode_rule({mac(c.mac), c.vlan, c.queue, c.loc}, 64);
    ASSERT_TRUE(nfc) << nfc.error().message;
    EXPECT_EQ(nfc->cmd, uint32_t{ETHTOOL_SRXCLSRLINS});
    EXPECT_EQ(nfc->flow_type, 0u);  // the outer flow_type is for RSS hashing, not for rules
    EXPECT_EQ(nfc->data, 0u);
    const ethtool_rx_flow_spec& fs = nfc->fs;
    EXPECT_EQ(fs.flow_type, c.flow_type);
    EXPECT_EQ((fs.flow_type & FLOW_EXT) != 0, c.vlan.has_value());
    EXPECT_EQ(fs.flow_type & (FLOW_MAC_EXT | FLOW_RSS), 0u);

    EXPECT_EQ(std::memcmp(fs.h_u.ether_spec.h_dest, mac(c.mac).data(), ETH_ALEN), 0);
    const uint8_t ones[ETH_ALEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    EXPECT_EQ(std::memcmp(fs.m_u.ether_spec.h_dest, ones, ETH_ALEN), 0);
    EXPECT_TRUE(all_zero(fs.h_u.ether_spec.h_source, ETH_ALEN));
    EXPECT_TRUE(all_zero(fs.m_u.ether_spec.h_source, ETH_ALEN));
    EXPECT_EQ(fs.m_u.ether_spec.h_proto, 0);
    EXPECT_TRUE(all_zero(fs.m_u.hdata + sizeof(ethhdr), sizeof(fs.m_u) - sizeof(ethhdr)));

    EXPECT_EQ(ntohs(fs.h_ext.vlan_tci), c.tci);
    EXPECT_EQ(ntohs(fs.m_ext.vlan_tci), c.tci_mask);
    EXPECT_EQ(fs.m_ext.vlan_etype, 0);
    EXPECT_TRUE(all_zero(fs.m_ext.data, sizeof(fs.m_ext.data)));
    EXPECT_TRUE(all_zero(fs.m_ext.h_dest, ETH_ALEN));

    EXPECT_EQ(fs.ring_cookie, uint64_t{c.queue});
    EXPECT_EQ(fs.location, c.location);
  }
}

// ethtool the program takes "m" as bits to ignore and inverts it: the kernel
// gets ~htons(0xf000) for "vlan VID m 0xf000", the mask we send.
TEST(SteeringEncode, VlanMaskIsWhatEthtoolSendsForIgnoringPriority) {
  auto nfc = encode_rule({mac("02:00:00:00:00:01"), 100, 0, std::nullopt}, 1);
  ASSERT_TRUE(nfc) << nfc.error().message;
  EXPECT_EQ(nfc->fs.m_ext.vlan_tci, static_cast<__be16>(~htons(0xf000)));
  EXPECT_EQ(nfc->fs.h_ext.vlan_tci, htons(100));
}

TEST(SteeringEncode, RoundTrip) {
  const SteeringRule rules[] = {
      {mac("02:00:00:00:00:01"), std::nullopt, 0, 0},
      {mac("02:00:00:00:00:01"), 1, 5, 12},
      {mac("de:ad:be:ef:00:10"), 4094, 31, 2047},
      {mac("02:00:00:00:00:03"), 0, 1, 3},
  };
  for (const auto& rule : rules) {
    auto nfc = encode_rule(rule, 32);
    ASSERT_TRUE(nfc) << rule.to_string() << ": " << nfc.error().message;
    auto back = decode_rule(nfc->fs);
    ASSERT_TRUE(back) << rule.to_string() << ": " << back.error().message;
    EXPECT_EQ(*back, rule) << back->to_string();
  }
  auto any = encode_rule({mac("02:00:00:00:00:01"), 7, 2, std::nullopt}, 4);
  ASSERT_TRUE(any);
  auto back = decode_rule(any->fs);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->location, RX_CLS_LOC_ANY);
  EXPECT_EQ(back->to_string(), "02:00:00:00:00:01 vlan 7 -> queue 2 loc " + std::to_string(RX_CLS_LOC_ANY));
}

TEST(SteeringEncode, RefusesInvalidRules) {
  struct Case {
    SteeringRule rule;
    std::vector<std::string> words;
  };
  const Case cases[] = {
      {{mac("01:00:5e:00:00:01"), std::nullopt, 0}, {"MAC 01:00:5e:00:00:01 is multicast"}},
      {{mac("ff:ff:ff:ff:ff:ff"), std::nullopt, 0}, {"MAC ff:ff:ff:ff:ff:ff is multicast"}},
      {{mac("00:00:00:00:00:00"), std::nullopt, 0}, {"00:00:00:00:00:00 is not a station address"}},
      {{mac("02:00:00:00:00:01"), 4095, 0}, {"VLAN 4095 is out of range 0..4094"}},
      {{mac("02:00:00:00:00:01"), 65535, 0}, {"VLAN 65535"}},
      {{mac("02:00:00:00:00:01"), std::nullopt, 4}, {"queue 4 is out of range", "4 receive queues (0..3)"}},
      {{mac("02:00:00:00:00:01"), std::nullopt, 99}, {"queue 99", "4 receive queues"}},
      {{mac("02:00:00:00:00:01"), std::nullopt, 0, RX_CLS_LOC_FIRST}, {"location 0xfffffffe is a special value"}},
  };
  for (const auto& c : cases) {
    auto nfc = encode_rule(c.rule, 4);
    ASSERT_FALSE(nfc) << c.rule.to_string();
    EXPECT_EQ(nfc.error().code, EINVAL);
    for (const auto& w : c.words) EXPECT_TRUE(has(nfc.error().message, w)) << nfc.error().message;
  }
}

TEST(SteeringDecode, RefusesRulesOfAnotherShape) {
  auto base = encode_rule({mac("02:00:00:00:00:01"), 10, 1, 5}, 4);
  ASSERT_TRUE(base);
  struct Case {
    const char* what;
    void (*change)(ethtool_rx_flow_spec&);
    const char* words;
  };
  const Case cases[] = {
      {"tcp4", [](ethtool_rx_flow_spec& fs) { fs.flow_type = TCP_V4_FLOW; }, "flow type 0x1"},
      {"rss", [](ethtool_rx_flow_spec& fs) { fs.flow_type |= FLOW_RSS; }, "flow type"},
      {"partial dst", [](ethtool_rx_flow_spec& fs) { fs.m_u.ether_spec.h_dest[5] = 0xf0; },
       "part of the destination MAC"},
      {"src mac", [](ethtool_rx_flow_spec& fs) { fs.m_u.ether_spec.h_source[0] = 0xff; }, "source MAC"},
      {"ethertype", [](ethtool_rx_flow_spec& fs) { fs.m_u.ether_spec.h_proto = 0xffff; }, "EtherType"},
      {"priority", [](ethtool_rx_flow_spec& fs) { fs.m_ext.vlan_tci = 0xffff; }, "VLAN TCI mask 0xffff"},
      {"vlan etype", [](ethtool_rx_flow_spec& fs) { fs.m_ext.vlan_etype = 0xffff; }, "VLAN EtherType"},
      {"drop", [](ethtool_rx_flow_spec& fs) { fs.ring_cookie = RX_CLS_FLOW_DISC; }, "drops"},
      {"vf", [](ethtool_rx_flow_spec& fs) { fs.ring_cookie |= 1ULL << ETHTOOL_RX_FLOW_SPEC_RING_VF_OFF; },
       "virtual function"},
  };
  for (const auto& c : cases) {
    ethtool_rx_flow_spec fs = base->fs;
    c.change(fs);
    auto rule = decode_rule(fs);
    ASSERT_FALSE(rule) << c.what;
    EXPECT_TRUE(has(rule.error().message, "rule at location 5 is not a vmq's")) << rule.error().message;
    EXPECT_TRUE(has(rule.error().message, c.words)) << c.what << ": " << rule.error().message;
  }
  // FLOW_EXT without a VLAN mask: a MAC-only rule.
  ethtool_rx_flow_spec fs = base->fs;
  fs.m_ext.vlan_tci = 0;
  auto rule = decode_rule(fs);
  ASSERT_TRUE(rule) << rule.error().message;
  EXPECT_FALSE(rule->vlan);
}

TEST(SteeringLocation, HighestFreeLocation) {
  EXPECT_EQ(free_location(8, {}), 7u);
  EXPECT_EQ(free_location(8, {7, 6}), 5u);
  EXPECT_EQ(free_location(8, {0, 7}), 6u);
  EXPECT_EQ(free_location(3, {2, 1, 0}), std::nullopt);
  EXPECT_EQ(free_location(0, {}), std::nullopt);
  EXPECT_EQ(free_location(1, {}), 0u);
}

TEST(SteeringChoice, Policy) {
  const Error veth{EOPNOTSUPP,
                   "hardware steering on veth0: driver 'veth' has no RX flow classification "
                   "(ETHTOOL_GRXCLSRLCNT: Operation not supported); vmqs use software steering"};
  auto sw = choose_steering(SteeringMode::software, &veth);
  EXPECT_EQ(sw.mode, SteeringMode::software);
  EXPECT_EQ(sw.describe(), "software");

  auto hw = choose_steering(SteeringMode::hardware, nullptr);
  EXPECT_EQ(hw.mode, SteeringMode::hardware);
  EXPECT_EQ(hw.describe(), "hardware");

  auto fallback = choose_steering(SteeringMode::hardware, &veth);
  EXPECT_EQ(fallback.mode, SteeringMode::software);
  EXPECT_EQ(fallback.reason, "driver 'veth' has no RX flow classification");
  EXPECT_EQ(fallback.describe(), "software (hardware requested; driver 'veth' has no RX flow classification)");

  const Error other{ENODEV, "netdev eth9: No such device"};
  EXPECT_EQ(choose_steering(SteeringMode::hardware, &other).describe(),
            "software (hardware requested; netdev eth9: No such device)");

  Status ok;
  EXPECT_EQ(choose_steering(SteeringMode::hardware, ok).mode, SteeringMode::hardware);
  EXPECT_EQ(choose_steering(SteeringMode::hardware, Status(veth)).mode, SteeringMode::software);
}

TEST(SteeringChoice, ModeNames) {
  EXPECT_EQ(parse_steering_mode("software"), SteeringMode::software);
  EXPECT_EQ(parse_steering_mode("hardware"), SteeringMode::hardware);
  EXPECT_EQ(parse_steering_mode("auto"), std::nullopt);
  EXPECT_EQ(steering_mode_name(SteeringMode::hardware), "hardware");
}

// veth has no RX flow classification: every path fails naming the device,
// the driver and the kernel's words, and switchd falls back to software.
TEST(SteeringVeth, RefusedAndFallsBack) {
  XVMQ_REQUIRE_PRIVILEGES();
  ASSERT_TRUE(make_veth("stv0", "stv0p", 4));
  const Mac vm = mac("02:00:00:00:00:01");

  auto probe = HardwareSteering::probe("stv0");
  ASSERT_FALSE(probe);
  EXPECT_EQ(probe.error().code, EOPNOTSUPP);
  EXPECT_EQ(probe.error().message,
            "hardware steering on stv0: driver 'veth' has no RX flow classification "
            "(ETHTOOL_GRXCLSRLCNT: Operation not supported); vmqs use software steering");

  auto choice = choose_steering(SteeringMode::hardware, probe);
  EXPECT_EQ(choice.mode, SteeringMode::software);
  EXPECT_EQ(choice.describe(), "software (hardware requested; driver 'veth' has no RX flow classification)");

  auto hw = HardwareSteering::open("stv0");
  ASSERT_TRUE(hw) << hw.error().message;
  EXPECT_EQ(hw->netdev().driver, "veth");
  EXPECT_EQ(hw->netdev().rx_queues, 4u);
  EXPECT_EQ(hw->table_size(), 0u);

  auto any = hw->add_rule(vm, 10, 1);
  ASSERT_FALSE(any);
  EXPECT_EQ(any.error().code, EOPNOTSUPP);
  EXPECT_EQ(any.error().message,
            "hardware steering on stv0: driver 'veth' has no RX flow classification "
            "(ETHTOOL_GRXCLSRLCNT: Operation not supported)");
  EXPECT_EQ(choose_steering(SteeringMode::hardware, any).describe(), choice.describe());

  auto at = hw->add_rule(vm, std::nullopt, 1, 0);
  ASSERT_FALSE(at);
  EXPECT_EQ(at.error().message,
            "hardware steering on stv0: driver 'veth' refused rule 02:00:00:00:00:01 -> queue 1 loc 0 "
            "(ETHTOOL_SRXCLSRLINS: Operation not supported)");

  auto queue = hw->add_rule(vm, std::nullopt, 4);
  ASSERT_FALSE(queue);
  EXPECT_EQ(queue.error().code, EINVAL);
  EXPECT_EQ(queue.error().message,
            "hardware steering on stv0: queue 4 is out of range: the device has 4 receive queues (0..3)");

  auto removed = hw->remove_rule(0);
  ASSERT_FALSE(removed);
  EXPECT_TRUE(has(removed.error().message, "driver 'veth' has no RX flow classification (ETHTOOL_SRXCLSRLDEL"))
      << removed.error().message;

  auto rules = hw->rules();
  ASSERT_FALSE(rules);
  EXPECT_TRUE(has(rules.error().message, "ETHTOOL_GRXCLSRLCNT: Operation not supported")) << rules.error().message;

  sh("ip link del stv0");
}

TEST(SteeringVeth, MissingDevice) {
  XVMQ_REQUIRE_PRIVILEGES();
  auto probe = HardwareSteering::probe("stvnone");
  ASSERT_FALSE(probe);
  EXPECT_TRUE(has(probe.error().message, "stvnone")) << probe.error().message;
  EXPECT_EQ(choose_steering(SteeringMode::hardware, probe).mode, SteeringMode::software);
}

}  // namespace
}  // namespace xvmq::test
