// The VM port program (bpf/xvmq_vmport.bpf.c) on one VM NIC's backend
// netdev: what the VM sends is redirected into the AF_XDP socket in the
// slot of the queue it was sent on. One object per backend; it owns the
// loaded program and its maps.
//
// Destroying it detaches the program. XDP runs that started before may
// still redirect into a slot's socket until an RCU grace period has passed
// (wait_for_xdp_programs(), loader/grace.h).
#pragma once

#include <cstdint>
#include <memory>

#include "common/result.h"
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
  static Result<std::unique_ptr<VmPort>> attach(const NetdevInfo& dev, uint32_t max_frame);
  // The socket that receives what the VM sends on `queue`.
  Status set_slot(uint32_t queue, int fd);
  // Empties the slots of queues 0 .. queues-1.
  void clear_slots(uint32_t queues);
  // Frames the VM sent that were too long, summed over CPUs.
  uint64_t too_big() const;

 private:
  xvmq_vmport* skel_ = nullptr;
  int ifindex_ = 0;
  uint32_t flags_ = 0;
};

}  // namespace xvmq
