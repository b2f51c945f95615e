// The CPU of each receive queue: the queue's IRQ found in /proc/interrupts
// text, the first CPU of its affinity list, and the order configured, then
// beside the interrupt's CPU, then beside the queue's place in the spread. Sample text only: no kernel needed.
#include "switchd/dp/cpu_affinity.h"

#include <gtest/gtest.h>

#include <sstream>

namespace xvmq::switchd {
namespace {

// As an x86 host with an Intel NIC and a multi-queue virtio one shows it.
constexpr const char* kInterrupts =
    "           CPU0       CPU1       CPU2       CPU3\n"
    "  0:         35          0          0          0   IO-APIC    2-edge      timer\n"
    " 24:          0          0          0          0  PCI-MSI 524288-edge      eth0\n"
    " 25:       1234          0          0          0  PCI-MSI 524289-edge      eth0-TxRx-0\n"
    " 26:          0       5678          0          0  PCI-MSI 524290-edge      eth0-TxRx-1\n"
    " 27:          0          0         12          0  PCI-MSI 524291-edge      eth0-tx-2\n"
    " 28:          0          0          0         34  PCI-MSI 524292-edge      eth0-rx-2\n"
    " 29:          0          0          0          0  PCI-MSI 524293-edge      eth0-rx-11\n"
    " 30:          0          0          0          0  PCI-MSI 524294-edge      eth10-rx-1\n"
    "123:          0          0          0          0  PCI-MSI 524295-edge      eth1-rx-1\n"
    "NMI:          0          0          0          0   Non-maskable interrupts\n"
    "ERR:          0\n";

std::optional<std::string> irq(const std::string& dev, uint32_t queue) {
  std::istringstream in(kInterrupts);
  return queue_irq(in, dev, queue);
}

TEST(QueueIrq, ByTheQueueNameAtTheEndOfTheLine) {
  EXPECT_EQ(irq("eth0", 0), "25");
  EXPECT_EQ(irq("eth0", 1), "26");
  EXPECT_EQ(irq("eth0", 11), "29");
  EXPECT_EQ(irq("eth10", 1), "30");
  EXPECT_EQ(irq("eth1", 1), "123");  // a three-digit IRQ, no leading spaces
}

TEST(QueueIrq, NotATransmitOnlyOne) { EXPECT_EQ(irq("eth0", 2), "28"); }

TEST(QueueIrq, NoneForOtherQueuesDevicesOrPrefixes) {
  EXPECT_EQ(irq("eth0", 3), std::nullopt);   // no such queue
  EXPECT_EQ(irq("eth0", 10), std::nullopt);  // "eth0-rx-11" is queue 11, not 10 (nor 1)
  EXPECT_EQ(irq("veth0", 0), std::nullopt);  // veth has no interrupts
  EXPECT_EQ(irq("eth", 1), std::nullopt);    // "eth0-..." is not device "eth"
  EXPECT_EQ(irq("timer", 0), std::nullopt);
}

TEST(QueueIrq, ReadingOnFindsTheNextMatch) {
  std::istringstream in(" 40:  1  eth0-rx-0\n 41:  1  eth0-rx-0\n");
  EXPECT_EQ(queue_irq(in, "eth0", 0), "40");
  EXPECT_EQ(queue_irq(in, "eth0", 0), "41");
  EXPECT_EQ(queue_irq(in, "eth0", 0), std::nullopt);
}

TEST(FirstCpu, OfAnAffinityList) {
  auto first = [](const std::string& text) {
    std::istringstream in(text);
    return first_cpu(in);
  };
  EXPECT_EQ(first("2\n"), 2);
  EXPECT_EQ(first("0-3\n"), 0);
  EXPECT_EQ(first("1,5-7\n"), 1);
  EXPECT_EQ(first(""), std::nullopt);
}

TEST(ChooseQueueCpu, ConfiguredElseBesideTheReceivingCpu) {
  const std::map<uint32_t, int> configured{{1, 7}};
  int asked = 0;
  auto irq_of = [&](uint32_t q) {
    asked++;
    return q == 2 ? 5 : -1;
  };
  const std::vector<int> allowed{0, 2};

  QueueCpu c = choose_queue_cpu(1, configured, irq_of, allowed);
  EXPECT_EQ(c.cpu, 7);
  EXPECT_EQ(c.source, "configured");
  EXPECT_EQ(asked, 0);  // /proc is not read for a configured queue

  // The worker runs beside the CPU that receives the queue: the softirq's
  // copy into the sockets and the worker's sends on two CPUs.
  c = choose_queue_cpu(2, configured, irq_of, allowed);
  EXPECT_EQ(c.rx_cpu, 5);
  EXPECT_EQ(c.cpu, 0);  // CPU 5 is not one switchd may use: allowed[2 % 2]
  EXPECT_EQ(c.source, "beside the interrupt's CPU 5");
  auto on_two = [](uint32_t) { return 2; };
  c = choose_queue_cpu(2, configured, on_two, allowed);
  EXPECT_EQ(c.rx_cpu, 2);
  EXPECT_EQ(c.cpu, 0);  // the allowed CPU after 2, round robin

  c = choose_queue_cpu(3, configured, irq_of, allowed);
  EXPECT_EQ(c.rx_cpu, 2);  // allowed[3 % 2]
  EXPECT_EQ(c.cpu, 0);
  EXPECT_EQ(c.source, "spread, beside CPU 2");
  c = choose_queue_cpu(4, configured, irq_of, allowed);
  EXPECT_EQ(c.rx_cpu, 0);
  EXPECT_EQ(c.cpu, 2);

  // One CPU allowed: the worker shares it.
  c = choose_queue_cpu(1, {}, irq_of, {3});
  EXPECT_EQ(c.cpu, 3);
  EXPECT_EQ(c.rx_cpu, 3);
}

TEST(AllowedCpus, NeverEmpty) { EXPECT_FALSE(allowed_cpus().empty()); }

}  // namespace
}  // namespace xvmq::switchd
