// Waiting for the XDP program runs in flight to end.
//
// An XDP program runs inside an RCU read-side critical section (a NAPI poll
// with bottom halves off, or generic XDP under rcu_read_lock), and a native
// redirect is flushed (xdp_do_flush) before that section ends. So once an
// RCU grace period has passed after a map update or a detach, no run that
// could have seen the old slot, filter or program is still running, and
// every frame such a run redirected is in its socket's RX ring.
//
// Closing a socket is safe for the kernel without it (xsk_release unbinds
// and waits synchronize_net() itself); the wait is for user space, which
// drains a socket's rings before closing it and would otherwise miss a
// frame a late run put there, and with it a UMEM buffer.
#pragma once

#include "common/result.h"

namespace xvmq {

// Returns after a full RCU grace period. The kernel's stated guarantee used
// here: updating a map-in-map (BPF_MAP_TYPE_ARRAY_OF_MAPS) waits, before the
// syscall returns, for every running non-sleepable BPF program to complete
// (kernel/bpf/syscall.c, maybe_wait_bpf_programs: synchronize_rcu()). When
// such a map cannot be made, membarrier(MEMBARRIER_CMD_GLOBAL), which on a
// machine with more than one CPU is synchronize_rcu() too. An error when
// neither is available: the caller cannot know that the runs ended.
// Takes one grace period (milliseconds); from any thread.
Status wait_for_xdp_programs();

}  // namespace xvmq
