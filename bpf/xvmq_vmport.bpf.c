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

SEC("xdp.frags")
int xvmq_vmport(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xvmq_port_xsks, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
