// Kernel delivery's maps and its loss tracer (bpf/xvmq_abi.h, "Kernel
// delivery"), over the classifier's maps: a vmq's conf (delivery,
// processor), the CPUMAP entries of the processors in use, the DEVMAP
// entries of the backends (key 0: the uplink), the switch's unicast
// destinations for VM ports, and the counters of what was lost.
//
// The maps belong to the classifier (pinned with it); this object only
// writes them and reads them, and owns the tracer's programs: destroying it
// detaches the tracer and leaves the maps as they are.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "loader/abi.h"
#include "loader/classifier.h"
#include "common/result.h"

struct xvmq_losses;

namespace xvmq {

// What kernel delivery lost and how moves went, summed over CPUs.
struct KernelCounters {
  // Per vmq, by enum xvmq_loss.
  std::array<std::array<uint64_t, XVMQ_LOSS_COUNT>, XVMQ_MAX_VMQS> loss{};
  // Per DEVMAP target ifindex, by enum xvmq_xmit_loss.
  std::map<int, std::array<uint64_t, XVMQ_XMIT_COUNT>> xmit;
  // Per vmq: moves made before the old processor had passed every frame on.
  std::array<uint64_t, XVMQ_MAX_VMQS> forced_moves{};
  // Per vmq: frames sent through the CPUMAP and frames its program passed on
  // (or the queue refused); equal when none is in flight.
  std::array<uint64_t, XVMQ_MAX_VMQS> sent{}, passed{};
};

std::string_view loss_name(uint32_t loss);       // "cpu_queue_full", ...
std::string_view xmit_loss_name(uint32_t loss);  // "ring_full", ...

class KernelDelivery {
 public:
  // Over the classifier's maps; the classifier must be loaded.
  static Result<std::unique_ptr<KernelDelivery>> open(const Classifier& cls);
  ~KernelDelivery();
  KernelDelivery(const KernelDelivery&) = delete;
  KernelDelivery& operator=(const KernelDelivery&) = delete;

  // Attach the loss tracer (raw tracepoints of the xdp subsystem).
  Status trace_losses();

  // A processor's CPUMAP entry with the delivery program, its queue `qsize`
  // frames long; the kernel starts its thread (cpumap/CPU/map:ID).
  Status set_cpu(uint32_t cpu, uint32_t qsize);
  Status clear_cpu(uint32_t cpu);
  // The kernel thread of a CPUMAP entry, 0 when none is found.
  int cpu_thread_pid(uint32_t cpu) const;

  Status set_vmq(uint32_t vmq, uint32_t cpu, uint32_t flags);
  Status clear_vmq(uint32_t vmq);
  // The DEVMAP entry `key` (a vmq id, or XVMQ_DEV_UPLINK).
  Status set_dev(uint32_t key, int ifindex);
  Status clear_dev(uint32_t key);
  // A unicast destination for VM ports (FilterKey: MAC and VLAN).
  Status set_dest(const FilterKey& key, const xvmq_dest& dest);
  Status clear_dest(const FilterKey& key);

  Result<KernelCounters> counters() const;
  // One vmq's frames sent through the CPUMAP and passed on, summed over the
  // receiving CPUs: what counters() reads for every vmq.
  struct Flow {
    uint64_t sent = 0, passed = 0, forced_moves = 0;
  };
  Result<Flow> flow(uint32_t vmq) const;
  int devs_fd() const { return devs_fd_; }
  int dests_fd() const { return dests_fd_; }

 private:
  KernelDelivery() = default;
  int vmqs_fd_ = -1, cpus_fd_ = -1, devs_fd_ = -1, dests_fd_ = -1;
  int flows_fd_ = -1, done_fd_ = -1, losses_fd_ = -1, xmit_fd_ = -1, pending_fd_ = -1;
  int cpumap_prog_fd_ = -1;
  uint32_t cpus_map_id_ = 0, devs_map_id_ = 0;
  xvmq_losses* tracer_ = nullptr;
};

}  // namespace xvmq
