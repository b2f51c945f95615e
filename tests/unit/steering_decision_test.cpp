// The hardware-steering decision of connect: which reserved queue a vmq
// gets, and why it stays in software. Rules are not programmed here
// (program_rule false: the NIC steers by rules made elsewhere), so no NIC
// and no privileges are needed.
#include <gtest/gtest.h>

#include "switchd/dp/steering.h"

namespace xvmq {
namespace {

HardwareSteeringAsk ask(std::vector<DedicatedQueue> reserved, std::vector<uint32_t> taken, uint32_t vmq = 1) {
  HardwareSteeringAsk a;
  a.uplink = "eth0";
  a.mac = Mac{0x02, 0, 0, 0, 0, 1};
  a.vmq = vmq;
  a.reserved = std::move(reserved);
  a.taken = std::move(taken);
  a.program_rule = false;
  return a;
}

TEST(SteeringDecision, TheFirstFreeReservedQueue) {
  auto d = decide_hardware_steering(ask({{2, 4}, {3, 6}}, {2}));
  EXPECT_TRUE(d.hardware);
  EXPECT_EQ(d.reason, "");
  EXPECT_EQ(d.queue, 3);
  EXPECT_EQ(d.cpu, 6);
  EXPECT_EQ(d.rule_location, std::nullopt);  // none programmed, none to remove

  d = decide_hardware_steering(ask({{2, 4}, {3, 6}}, {}));
  EXPECT_EQ(d.queue, 2);
  EXPECT_EQ(d.cpu, 4);
}

TEST(SteeringDecision, SoftwareWithTheReason) {
  auto d = decide_hardware_steering(ask({{2, 4}}, {}, 0));
  EXPECT_FALSE(d.hardware);
  EXPECT_EQ(d.reason, "the NIC has no vmq");
  EXPECT_EQ(d.queue, -1);

  d = decide_hardware_steering(ask({}, {}));
  EXPECT_FALSE(d.hardware);
  EXPECT_EQ(d.reason, "no receive queue is reserved for dedication (--dedicated-queues)");

  d = decide_hardware_steering(ask({{2, 4}, {3, 6}}, {3, 2}));
  EXPECT_FALSE(d.hardware);
  EXPECT_EQ(d.reason, "no dedicated queue is free (2 reserved, all taken)");
  EXPECT_EQ(d.cpu, -1);
}

TEST(SteeringDecision, ARuleOnADeviceThatIsNotThereIsRefused) {
  auto a = ask({{2, 4}}, {});
  a.uplink = "xvmq-no-such-dev";
  a.program_rule = true;
  auto d = decide_hardware_steering(a);
  EXPECT_FALSE(d.hardware);
  EXPECT_FALSE(d.reason.empty());
  EXPECT_EQ(d.queue, -1);
}

}  // namespace
}  // namespace xvmq
