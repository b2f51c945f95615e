// Which CPU serves each receive queue of the uplink: configured, else the CPU
// beside the one that receives the queue, the queue's interrupt's CPU
// (/proc/interrupts and /proc/irq/N/smp_affinity_list) or, with no interrupt
// (a veth's queue N is received where its sender runs, CPU N for a sender
// that picks the queue by CPU), queue N's place among the CPUs switchd may run
// on. The softirq's copy into the sockets and the worker's sends then run on
// two CPUs at once, AF_XDP's two-core mode (docs/architecture.md, "Queue
// workers").
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
  int cpu = 0;          // the worker's
  std::string source;   // "configured", "beside the interrupt's CPU N", "spread, beside CPU N"
  int rx_cpu = -1;      // the CPU taken to receive the queue; -1 when configured
};

// The worker's CPU for receive queue `queue`: `configured` (queue -> CPU)
// first; else the allowed CPU after the receiving one, which is
// `irq_cpu(queue)` (the interrupt's CPU, or -1; asked only when not
// configured), else allowed[queue % allowed.size()]. With one CPU allowed,
// that CPU.
QueueCpu choose_queue_cpu(uint32_t queue, const std::map<uint32_t, int>& configured,
                          const std::function<int(uint32_t)>& irq_cpu, const std::vector<int>& allowed);

}  // namespace xvmq::switchd
