// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The VM port program, on the host side of a VM NIC's backend netdev: what
 * the VM sends. With XVMQ_PORT_F_EGRESS in its conf it decides in XDP what
 * the software switch would (switchd/core/forwarding.cpp), for the frames it
 * can carry itself:
 *
 *   1. port security: the source MAC (its own, a static entry's, any with
 *      MAC spoofing), no tags on an access NIC, a trunk's VLANs only;
 *      dropped and counted under the switch's reasons otherwise;
 *   2. unicast to a NIC in xvmq_dests that takes kernel delivery: into its
 *      backend by DEVMAP, in the NIC's shape of the VLAN;
 *   3. unicast to no NIC, when the uplink takes redirected frames: into the
 *      uplink by DEVMAP, tagged unless on VLAN 0.
 *
 * Everything else (broadcast, multicast, a NIC whose sockets serve it, a
 * malformed frame, a failed redirect) goes into switchd's socket for the
 * receive queue, where the software switch decides. With no socket there
 * (switchd down), frames go to the host stack of the backend, which
 * forwards nothing.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xvmq_abi.h"
#include "lib/parse.h"
#include "lib/kernel_maps.h"
#include "lib/vlan.h"

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, XVMQ_MAX_QUEUES);
  __type(key, __u32);
  __type(value, __u32);
} xvmq_port_xsks SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct xvmq_port_conf);
} xvmq_port_conf SEC(".maps");

/* More source MACs of the NIC: xvmq_filter_word(mac, 0) -> 1. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u64);
  __type(value, __u8);
} xvmq_port_statics SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, XVMQ_PORT_COUNT);
  __type(key, __u32);
  __type(value, struct xvmq_counter);
} xvmq_port_counts SEC(".maps");

const volatile __u32 xvmq_max_frame = 0; /* set by switchd; 0: no limit */

static __always_inline void xvmq_port_count(__u32 what, __u64 bytes) {
  struct xvmq_counter* c = bpf_map_lookup_elem(&xvmq_port_counts, &what);

  if (c) {
    c->frames++;
    c->bytes += bytes;
  }
}

static __always_inline int xvmq_to_switch(struct xdp_md* ctx, __u64 bytes) {
  xvmq_port_count(XVMQ_PORT_TO_SWITCH, bytes);
  return bpf_redirect_map(&xvmq_port_xsks, ctx->rx_queue_index, XDP_PASS);
}

static __always_inline int xvmq_same_mac(const __u8* a, const __u8* b) {
  return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

static __always_inline int xvmq_trunk_carries(const struct xvmq_port_conf* c, __u16 vlan) {
  if ((c->flags & XVMQ_PORT_F_NATIVE) && c->native_vlan == vlan) return 1;
  return vlan <= XVMQ_VLAN_MAX && ((c->trunk[(vlan >> 6) & 63] >> (vlan & 63)) & 1);
}

/* Port security: the frame's VLAN inside the switch, or the count it is dropped under. */
static __always_inline __u32 xvmq_port_vlan(const struct xvmq_port_conf* c, const __u8* src, __u16 tag_vlan,
                                            __u16* vlan) {
  if (!(c->flags & XVMQ_PORT_F_SPOOFING) && !xvmq_same_mac(src, c->mac)) {
    __u64 key = xvmq_filter_word(src, 0);

    if (!(c->flags & XVMQ_PORT_F_STATICS) || !bpf_map_lookup_elem(&xvmq_port_statics, &key))
      return XVMQ_PORT_SPOOFED_SOURCE;
  }
  if (!(c->flags & XVMQ_PORT_F_TRUNK)) {
    if (tag_vlan) return XVMQ_PORT_TAGGED_ON_ACCESS;
    *vlan = c->access_vlan;
  } else if (tag_vlan) {
    if (!xvmq_trunk_carries(c, tag_vlan)) return XVMQ_PORT_VLAN_NOT_ALLOWED;
    *vlan = tag_vlan;
  } else {
    if (!(c->flags & XVMQ_PORT_F_NATIVE)) return XVMQ_PORT_VLAN_NOT_ALLOWED;
    *vlan = c->native_vlan;
  }
  return XVMQ_PORT_FORWARDED;
}

/* Known unicast: its DEVMAP key and shape, or 0 when the switch must decide. */
static __always_inline int xvmq_unicast_dest(const struct xvmq_port_conf* c, const __u8* dst, __u16 vlan, __u32* dev,
                                             int* untagged) {
  __u64 key = xvmq_filter_word(dst, vlan);
  struct xvmq_dest* d = bpf_map_lookup_elem(&xvmq_dests, &key);

  if (!d) {
    if (!(c->flags & XVMQ_PORT_F_UPLINK)) return 0;
    *dev = XVMQ_DEV_UPLINK;
    *untagged = vlan == XVMQ_VLAN_NONE;
    return 1;
  }
  if (d->dev == XVMQ_DEST_SWITCH || d->ifindex == c->ifindex) return 0;
  *dev = d->dev;
  *untagged = !!(d->flags & XVMQ_DEST_F_UNTAGGED);
  return 1;
}

SEC("xdp.frags")
int xvmq_vmport(struct xdp_md* ctx) {
  __u64 len = bpf_xdp_get_buff_len(ctx);
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  struct xvmq_port_conf* c;
  struct xvmq_frame f;
  __u32 zero = 0, dev, what, tags;
  __u16 vlan = 0;
  int untagged;

  if (xvmq_max_frame && len > xvmq_max_frame) {
    xvmq_port_count(XVMQ_PORT_TOO_BIG, len);
    return XDP_DROP;
  }
  c = bpf_map_lookup_elem(&xvmq_port_conf, &zero);
  if (!c || !(c->flags & XVMQ_PORT_F_EGRESS)) return xvmq_to_switch(ctx, len);
  if (xvmq_parse(data, data_end, &f) != XVMQ_DELIVERED || data + 2 * ETH_ALEN > data_end)
    return xvmq_to_switch(ctx, len); /* malformed: the switch counts it */
  what = xvmq_port_vlan(c, (const __u8*)data + ETH_ALEN, f.vlan, &vlan);
  if (what != XVMQ_PORT_FORWARDED) {
    xvmq_port_count(what, len);
    return XDP_DROP;
  }
  if (xvmq_mac_is_multicast(f.dst) || !xvmq_unicast_dest(c, f.dst, vlan, &dev, &untagged))
    return xvmq_to_switch(ctx, len);
  /* The tags that make the frame's VLAN, as the switch removes them before shaping. */
  tags = f.strip_tags;
  /* Redirect first: the frame stays intact if it must fall back. */
  if (bpf_redirect_map(&xvmq_devs, dev, 0) != XDP_REDIRECT) return xvmq_to_switch(ctx, len);
  if (untagged ? xvmq_strip_tags(ctx, tags) : xvmq_retag(ctx, tags, vlan)) {
    /* The frame cannot be reshaped here (no headroom): the switch can. */
    return xvmq_to_switch(ctx, len);
  }
  xvmq_port_count(XVMQ_PORT_FORWARDED, len);
  return XDP_REDIRECT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
