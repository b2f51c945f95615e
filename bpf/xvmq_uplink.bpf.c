// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The uplink classifier: the VMQ filter test in XDP.
 *
 * Each frame's (destination MAC, VLAN) is looked up in xvmq_filters, first
 * exactly, then as a MAC-only filter. A hit is redirected into the XSKMAP
 * slot of that vmq for the frame's receive queue; everything else goes to
 * the default queue's slot of that receive queue, or to the host stack when
 * no default socket is there. A frame is never lost without a count.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xvmq_abi.h"
#include "lib/parse.h"
#include "lib/counters.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XVMQ_MAX_FILTERS);
	__type(key, struct xvmq_filter_key);
	__type(value, struct xvmq_filter_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_filters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XVMQ_XSK_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_xsks SEC(".maps");

/* A socket is usable for this queue only if it is bound to it. */
static __always_inline __u32 xvmq_check_slot(__u32 slot, __u32 queue)
{
	struct bpf_xdp_sock *xsk = bpf_map_lookup_elem(&xvmq_xsks, &slot);

	if (!xsk)
		return XVMQ_REASON_NO_SOCKET;
	if (xsk->queue_id != queue)
		return XVMQ_REASON_WRONG_QUEUE;
	return XVMQ_REASON_MAX;
}

/* Remove the first n VLAN tags: move the MAC addresses over them. */
static __always_inline int xvmq_strip_tags(struct xdp_md *ctx, __u32 n)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 macs[2 * ETH_ALEN];

	if (n == 0)
		return 0;
	if (n > XVMQ_MAX_TAGS || data + sizeof(macs) > data_end)
		return -1;
	__builtin_memcpy(macs, data, sizeof(macs));
	if (bpf_xdp_adjust_head(ctx, (int)(n * sizeof(struct xvmq_vlan_tag))))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(macs) > data_end)
		return -1;
	__builtin_memcpy(data, macs, sizeof(macs));
	return 0;
}

/* Deliver to the vmq of a filter hit; returns XVMQ_REASON_MAX on success. */
static __always_inline __u32 xvmq_to_vmq(struct xdp_md *ctx,
					 const struct xvmq_filter_value *v,
					 const struct xvmq_frame *f, __u32 queue,
					 __u64 bytes)
{
	__u32 vmq = v->vmq;
	__u32 slot, reason;

	if (vmq == XVMQ_DEFAULT_VMQ || vmq >= XVMQ_MAX_VMQS)
		return XVMQ_REASON_BAD_VMQ;
	slot = XVMQ_XSK_SLOT(vmq, queue);
	reason = xvmq_check_slot(slot, queue);
	if (reason != XVMQ_REASON_MAX)
		return reason;
	/* Redirect first: the frame stays intact if it must fall back. */
	if (bpf_redirect_map(&xvmq_xsks, slot, 0) != XDP_REDIRECT)
		return XVMQ_REASON_REDIRECT_ERROR;
	if (v->flags & XVMQ_FILTER_F_STRIP_TAG) {
		if (xvmq_strip_tags(ctx, f->strip_tags))
			return XVMQ_REASON_STRIP_ERROR;
		bytes -= f->strip_tags * sizeof(struct xvmq_vlan_tag);
	}
	xvmq_count_vmq(vmq, bytes);
	return XVMQ_REASON_MAX;
}

static __always_inline int xvmq_to_default(__u32 queue, __u64 bytes)
{
	__u32 slot = XVMQ_XSK_SLOT(XVMQ_DEFAULT_VMQ, queue);

	if (xvmq_check_slot(slot, queue) != XVMQ_REASON_MAX)
		return XDP_PASS;
	if (bpf_redirect_map(&xvmq_xsks, slot, XDP_PASS) != XDP_REDIRECT)
		return XDP_PASS;
	xvmq_count_vmq(XVMQ_DEFAULT_VMQ, bytes);
	return XDP_REDIRECT;
}

SEC("xdp.frags")
int xvmq_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = bpf_xdp_get_buff_len(ctx);
	__u32 queue = ctx->rx_queue_index;
	struct xvmq_filter_key key = {};
	struct xvmq_filter_value *v;
	struct xvmq_frame f;
	__u32 reason;

	reason = xvmq_parse(data, data_end, &f);
	if (reason != XVMQ_REASON_MAX) {
		xvmq_count_reason(reason, bytes);
		return XDP_DROP;
	}
	if (queue >= XVMQ_MAX_QUEUES) {
		xvmq_count_reason(XVMQ_REASON_BAD_QUEUE, bytes);
		return XDP_PASS;
	}

	if (xvmq_mac_is_broadcast(f.dst)) {
		reason = XVMQ_REASON_BROADCAST;
	} else if (xvmq_mac_is_multicast(f.dst)) {
		reason = XVMQ_REASON_MULTICAST;
	} else {
		__builtin_memcpy(key.mac, f.dst, ETH_ALEN);
		key.vlan = f.vlan;
		v = bpf_map_lookup_elem(&xvmq_filters, &key);
		if (!v) {
			key.vlan = XVMQ_VLAN_ANY;
			v = bpf_map_lookup_elem(&xvmq_filters, &key);
		}
		if (!v)
			reason = XVMQ_REASON_MISS;
		else
			reason = xvmq_to_vmq(ctx, v, &f, queue, bytes);
		if (reason == XVMQ_REASON_MAX)
			return XDP_REDIRECT;
	}

	xvmq_count_reason(reason, bytes);
	if (xvmq_reason_is_drop(reason))
		return XDP_DROP;
	return xvmq_to_default(queue, bytes);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
