// The VM port program (bpf/xvmq_vmport.bpf.c) on one VM NIC's backend
// netdev: what the VM sends passes port security and known unicast goes on
// by DEVMAP (its conf), the rest into the AF_XDP socket in the slot of the
// queue it was sent on. One object per backend; it owns the loaded program
// and its own maps, and shares the classifier's DEVMAP and destinations.
//
// Destroying it detaches the program. XDP runs that started before may
// still redirect into a slot's socket until an RCU grace period has passed
// (wait_for_xdp_programs(), loader/grace.h).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/result.h"
#include "loader/abi.h"
#include "loader/netdev.h"

struct xvmq_vmport;

namespace xvmq {

class VmPort {
 public:
  VmPort() = default;
  ~VmPort();
  VmPort(const VmPort&) = delete;
  VmPort& operator=(const VmPort&) = delete;

  // Loads the program for frames of at most `max_frame` bytes and attaches
  // it in native mode, else in skb mode, replacing what a previous switchd
  // left there.
  // devs_fd, dests_fd: the classifier's DEVMAP and destinations (-1: none;
  // the port then hands every frame to the switch).
  static Result<std::unique_ptr<VmPort>> attach(const NetdevInfo& dev, uint32_t max_frame, int devs_fd = -1,
                                                int dests_fd = -1);
  // How it decides (XVMQ_PORT_F_EGRESS off: every frame to the switch).
  Status set_conf(const xvmq_port_conf& conf);
  // Its static entries' MACs (more source MACs the VM may send from).
  Status set_statics(const std::vector<Mac>& macs);
  // The socket that receives what the VM sends on `queue`.
  Status set_slot(uint32_t queue, int fd);
  int prog_fd() const;
  // Empties the slots of queues 0 .. queues-1.
  void clear_slots(uint32_t queues);
  // Its counters by enum xvmq_port_count, summed over CPUs.
  std::array<Counter, XVMQ_PORT_COUNT> counts() const;
  uint64_t too_big() const { return counts()[XVMQ_PORT_TOO_BIG].frames; }

 private:
  xvmq_vmport* skel_ = nullptr;
  int ifindex_ = 0;
  uint32_t flags_ = 0;
  std::vector<uint64_t> statics_;  // keys in xvmq_port_statics
};

}  // namespace xvmq
