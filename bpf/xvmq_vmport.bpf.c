// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The VM port program, on the host side of a VM NIC's backend netdev: every
 * frame the VM sends goes into switchd's socket for that receive queue,
 * where the software switch decides. With no socket there (switchd down),
 * frames go to the host stack of the backend, which forwards nothing.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xvmq_abi.h"

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, XVMQ_MAX_QUEUES);
  __type(key, __u32);
  __type(value, __u32);
} xvmq_port_xsks SEC(".maps");

/* Frames the VM sent that no socket buffer can hold: counted, dropped. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct xvmq_counter);
} xvmq_port_too_big SEC(".maps");

const volatile __u32 xvmq_max_frame = 0; /* set by switchd; 0: no limit */

SEC("xdp.frags")
int xvmq_vmport(struct xdp_md* ctx) {
  __u64 len = bpf_xdp_get_buff_len(ctx);

  if (xvmq_max_frame && len > xvmq_max_frame) {
    __u32 zero = 0;
    struct xvmq_counter* c = bpf_map_lookup_elem(&xvmq_port_too_big, &zero);

    if (c) {
      c->frames++;
      c->bytes += len;
    }
    return XDP_DROP;
  }
  return bpf_redirect_map(&xvmq_port_xsks, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
