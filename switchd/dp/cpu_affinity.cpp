#include "switchd/dp/cpu_affinity.h"

#include <sched.h>

#include <fstream>
#include <sstream>

namespace xvmq::switchd {

std::optional<std::string> queue_irq(std::istream& interrupts, const std::string& dev, uint32_t queue) {
  std::string line;
  const std::string suffix = "-" + std::to_string(queue);
  while (std::getline(interrupts, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::istringstream words(line.substr(colon + 1));
    std::string w, last;
    while (words >> w) last = w;
    if (last.rfind(dev + "-", 0) != 0) continue;
    if (last.size() < suffix.size() || last.compare(last.size() - suffix.size(), std::string::npos, suffix) != 0)
      continue;
    if (last.find("tx-") != std::string::npos) continue;
    auto first = line.find_first_not_of(' ');
    if (first >= colon) continue;
    return line.substr(first, colon - first);
  }
  return std::nullopt;
}

std::optional<int> first_cpu(std::istream& affinity_list) {
  int cpu = -1;
  if (affinity_list >> cpu && cpu >= 0) return cpu;
  return std::nullopt;
}

int irq_cpu(const std::string& dev, uint32_t queue) {
  std::ifstream interrupts("/proc/interrupts");
  // The first matching IRQ whose affinity can be read.
  while (auto irq = queue_irq(interrupts, dev, queue)) {
    std::ifstream aff("/proc/irq/" + *irq + "/smp_affinity_list");
    if (auto cpu = first_cpu(aff)) return *cpu;
  }
  return -1;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; c++)
      if (CPU_ISSET(c, &set)) out.push_back(c);
  if (out.empty()) out.push_back(0);
  return out;
}

namespace {

// The allowed CPU after `cpu` (round robin; `cpu` itself when it is the only
// one), or `fallback` when `cpu` is not allowed.
int beside(int cpu, const std::vector<int>& allowed, int fallback) {
  for (size_t i = 0; i < allowed.size(); i++)
    if (allowed[i] == cpu) return allowed[(i + 1) % allowed.size()];
  return fallback;
}

}  // namespace

QueueCpu choose_queue_cpu(uint32_t queue, const std::map<uint32_t, int>& configured,
                          const std::function<int(uint32_t)>& irq_cpu, const std::vector<int>& allowed) {
  if (auto it = configured.find(queue); it != configured.end()) return {it->second, "configured", -1};
  if (allowed.empty()) return {0, "spread", 0};
  const int spread = allowed[queue % allowed.size()];
  if (int cpu = irq_cpu(queue); cpu >= 0)
    return {beside(cpu, allowed, spread), "beside the interrupt's CPU " + std::to_string(cpu), cpu};
  return {beside(spread, allowed, spread), "spread, beside CPU " + std::to_string(spread), spread};
}

}  // namespace xvmq::switchd
