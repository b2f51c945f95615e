// The kernel delivery rule (switchd/dp/delivery_check.h) on the facts the
// kernel gives, without a kernel: which backends and uplinks take frames
// redirected by DEVMAP, and what the user is told otherwise.
#include "switchd/dp/delivery_check.h"

#include <gtest/gtest.h>

#include "switchd/host/netlink.h"

namespace xvmq::switchd {
namespace {

namespace act = netlink::xdp_act;

// What this kernel reports for a veth whose peer has GRO on or a native XDP
// program, and for one whose peer has neither.
constexpr uint64_t kVethXmit = act::kBasic | act::kRedirect | act::kRxSg | act::kNdoXmit | act::kNdoXmitSg;
constexpr uint64_t kVethPlain = act::kBasic | act::kRedirect | act::kRxSg;
constexpr uint64_t kTap = act::kBasic | act::kRedirect | act::kNdoXmit;  // with or without a reader

DeliveryFacts veth(uint64_t features, bool carrier = true) {
  return {
      .device = "vm1-host", .driver = "veth", .xdp_features = features, .up = true, .carrier = carrier, .peer = "vm1"};
}

DeliveryFacts tap(bool carrier, std::optional<uint32_t> queues = std::nullopt) {
  return {.device = "tap1",
          .driver = "tun",
          .xdp_features = kTap,
          .up = true,
          .carrier = carrier,
          .tun_tap = true,
          .tun_queues = queues};
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(KernelDeliveryRule, VethWithNdoXmitAndItsPeerUp) {
  auto c = kernel_delivery_rule(veth(kVethXmit));
  EXPECT_TRUE(c.ok) << c.why;
  EXPECT_TRUE(has(c.why, "veth vm1-host")) << c.why;
}

TEST(KernelDeliveryRule, VethWithoutNdoXmitSaysWhatToDo) {
  auto c = kernel_delivery_rule(veth(kVethPlain));
  EXPECT_FALSE(c.ok);
  for (const char* part : {"vm1-host", "NDO_XMIT", "peer vm1", "GRO", "`ethtool -K vm1 gro on`", "native",
                           "generic mode does not count", "EOPNOTSUPP", "--delivery xsk"})
    EXPECT_TRUE(has(c.why, part)) << part << " not in: " << c.why;
}

TEST(KernelDeliveryRule, VethWhosePeerIsElsewhereNamesNoPeer) {
  auto f = veth(kVethPlain);
  f.peer.clear();
  auto c = kernel_delivery_rule(f);
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "its peer has neither")) << c.why;
  EXPECT_TRUE(has(c.why, "turn GRO on at the peer (`ethtool -K PEER gro on` in the peer's namespace)")) << c.why;
}

TEST(KernelDeliveryRule, VethWithFewerReceiveQueuesThanItsPeerTransmits) {
  auto c = kernel_delivery_rule(veth(0));
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "more transmit queues")) << c.why;
  EXPECT_TRUE(has(c.why, "receive queues")) << c.why;
}

// veth_set_features turns NDO_XMIT on for GRO even after the queue check
// cleared the rest; the DEVMAP asks NDO_XMIT only.
TEST(KernelDeliveryRule, VethWithNdoXmitAlone) {
  EXPECT_TRUE(kernel_delivery_rule(veth(act::kNdoXmit | act::kNdoXmitSg)).ok);
}

TEST(KernelDeliveryRule, VethWhosePeerIsDown) {
  auto c = kernel_delivery_rule(veth(kVethXmit, /*carrier=*/false));
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "vm1 is down")) << c.why;
  EXPECT_TRUE(has(c.why, "ENXIO")) << c.why;
}

TEST(KernelDeliveryRule, VethThatIsDown) {
  auto f = veth(kVethXmit, false);
  f.up = false;
  auto c = kernel_delivery_rule(f);
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "`ip link set vm1-host up`")) << c.why;
}

TEST(KernelDeliveryRule, TapWithoutAQueue) {
  auto c = kernel_delivery_rule(tap(false));
  EXPECT_FALSE(c.ok);
  for (const char* part : {"tap tap1", "no queue attached", "QEMU", "ENXIO", "--delivery xsk"})
    EXPECT_TRUE(has(c.why, part)) << part << " not in: " << c.why;
}

TEST(KernelDeliveryRule, TapWithOneQueue) {
  auto c = kernel_delivery_rule(tap(true));
  EXPECT_TRUE(c.ok) << c.why;
  EXPECT_TRUE(has(c.why, "1 queue attached")) << c.why;
}

TEST(KernelDeliveryRule, MultiQueueTapWithTwoQueues) {
  auto c = kernel_delivery_rule(tap(true, 2));
  EXPECT_TRUE(c.ok) << c.why;
  EXPECT_TRUE(has(c.why, "2 queues attached")) << c.why;
}

TEST(KernelDeliveryRule, MultiQueueTapWithNone) {
  EXPECT_FALSE(kernel_delivery_rule(tap(false, 0)).ok);
  // Every queue detached (TUNSETQUEUE): the carrier stays on, the count is 0.
  auto c = kernel_delivery_rule(tap(true, 0));
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "detached")) << c.why;
}

TEST(KernelDeliveryRule, TapThatIsDown) {
  auto f = tap(true);
  f.up = false;
  auto c = kernel_delivery_rule(f);
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "ENETDOWN")) << c.why;
}

TEST(KernelDeliveryRule, TunIsNotATap) {
  auto f = tap(true);
  f.tun_tap = false;
  f.xdp_features = act::kBasic | act::kRedirect;
  auto c = kernel_delivery_rule(f);
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "layer 3")) << c.why;
}

TEST(KernelDeliveryRule, OtherDriverByItsFeatures) {
  DeliveryFacts nic{.device = "eth1", .driver = "mlx5_core", .xdp_features = act::kBasic | act::kRedirect, .up = true};
  auto c = kernel_delivery_rule(nic);
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(has(c.why, "eth1 (driver mlx5_core)")) << c.why;
  EXPECT_TRUE(has(c.why, "--delivery xsk")) << c.why;
  nic.xdp_features |= act::kNdoXmit;
  EXPECT_TRUE(kernel_delivery_rule(nic).ok);
  nic.driver.clear();  // ethtool said nothing
  EXPECT_TRUE(kernel_delivery_rule(nic).ok);
  EXPECT_TRUE(has(kernel_delivery_rule(nic).why, "driver unknown"));
}

TEST(UplinkXmitRule, SameTestOtherWords) {
  auto ok = uplink_xmit_rule(veth(kVethXmit));
  EXPECT_TRUE(ok.ok) << ok.why;
  EXPECT_TRUE(has(ok.why, "uplink veth vm1-host")) << ok.why;
  auto no = uplink_xmit_rule(veth(kVethPlain));
  EXPECT_FALSE(no.ok);
  EXPECT_TRUE(has(no.why, "goes through switchd")) << no.why;
  EXPECT_TRUE(has(no.why, "GRO")) << no.why;
  EXPECT_FALSE(has(no.why, "--delivery")) << no.why;
  DeliveryFacts nic{.device = "eth0", .driver = "e1000", .xdp_features = act::kBasic, .up = true};
  EXPECT_FALSE(uplink_xmit_rule(nic).ok);
}

TEST(TapAttachedQueues, CountWhenToldElseCarrier) {
  EXPECT_EQ(tap_attached_queues(tap(false)), 0u);
  EXPECT_EQ(tap_attached_queues(tap(true)), 1u);
  EXPECT_EQ(tap_attached_queues(tap(true, 2)), 2u);
  EXPECT_EQ(tap_attached_queues(tap(true, 0)), 0u);
}

}  // namespace
}  // namespace xvmq::switchd
