// Which CPU serves each receive queue of the uplink: configured, else the
// CPU the queue's interrupt is affine to (/proc/interrupts and
// /proc/irq/N/smp_affinity_list), else spread over the CPUs switchd may run on.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace xvmq::switchd {

// The IRQ of receive queue `queue` of `dev` in /proc/interrupts text: the
// line whose last word is the device's queue name, "DEV-...-QUEUE" (as
// "eth0-rx-1" or "eth0-TxRx-1"), not a transmit-only one ("eth0-tx-1").
// nullopt when there is none (veth has no interrupts).
std::optional<std::string> queue_irq(std::istream& interrupts, const std::string& dev, uint32_t queue);

// The first CPU of an IRQ's smp_affinity_list text ("2", "0-3", "1,5").
std::optional<int> first_cpu(std::istream& affinity_list);

// The CPU of a receive queue's interrupt, read from /proc; -1 when none.
int irq_cpu(const std::string& dev, uint32_t queue);

// The CPUs this process may run on (sched_getaffinity); {0} when unknown.
std::vector<int> allowed_cpus();

struct QueueCpu {
  int cpu = 0;
  std::string source;  // "configured", "interrupt affinity", "spread"
};

// The CPU for receive queue `queue`: `configured` (queue -> CPU) first, then
// `irq_cpu(queue)` (the interrupt's CPU, or -1; asked only when not
// configured), then `allowed` round robin.
QueueCpu choose_queue_cpu(uint32_t queue, const std::map<uint32_t, int>& configured,
                          const std::function<int(uint32_t)>& irq_cpu, const std::vector<int>& allowed);

}  // namespace xvmq::switchd
