// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The ceiling of the switch benchmark (tools/bench/switch_bench.py): every
 * frame dropped as soon as XDP sees it, so the rate it counts is what the
 * generator and the veth can deliver, with no switch at all.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int bench_drop(struct xdp_md* ctx) { return XDP_DROP; }

char LICENSE[] SEC("license") = "Dual BSD/GPL";
