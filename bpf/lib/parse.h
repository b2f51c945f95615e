/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ethernet and VLAN parsing for the classifier. */
#ifndef XVMQ_LIB_PARSE_H
#define XVMQ_LIB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../xvmq_abi.h"

#define XVMQ_MAX_TAGS 2

struct xvmq_vlan_tag {
  __be16 tci;
  __be16 next_proto;
};

struct xvmq_frame {
  __u8* dst;        /* destination MAC, inside the packet */
  __u16 vlan;       /* the frame's VLAN: VID of the first tag whose VID is not 0 */
  __u16 ntags;      /* tags parsed: 0..XVMQ_MAX_TAGS */
  __u16 strip_tags; /* tags to remove so that the VLAN's tag is gone */
  __u16 pad;
};

static __always_inline int xvmq_is_tpid(__be16 proto, int outer) {
  return proto == bpf_htons(ETH_P_8021Q) || (outer && proto == bpf_htons(ETH_P_8021AD));
}

/*
 * Parse Ethernet and up to two VLAN tags (outer 0x8100 or 0x88a8, inner
 * 0x8100). A third tag is payload. Untagged and priority-tagged (VID 0)
 * frames are VLAN 0. Returns XVMQ_DELIVERED when the frame can go on, or
 * the reason it cannot be classified.
 */
static __always_inline __u32 xvmq_parse(void* data, void* data_end, struct xvmq_frame* f) {
  struct ethhdr* eth = data;
  __be16 proto;
  void* pos;
  int i;

  if ((void*)(eth + 1) > data_end) return XVMQ_REASON_RUNT;

  f->dst = eth->h_dest;
  f->vlan = XVMQ_VLAN_NONE;
  f->ntags = 0;
  f->strip_tags = 0;
  proto = eth->h_proto;
  pos = eth + 1;

#pragma unroll
  for (i = 0; i < XVMQ_MAX_TAGS; i++) {
    struct xvmq_vlan_tag* tag = pos;
    __u16 vid;

    if (!xvmq_is_tpid(proto, i == 0)) break;
    if ((void*)(tag + 1) > data_end) return XVMQ_REASON_TRUNCATED_TAG;
    vid = bpf_ntohs(tag->tci) & 0x0fff;
    f->ntags = i + 1;
    if (vid && f->vlan == XVMQ_VLAN_NONE) {
      f->vlan = vid;
      f->strip_tags = i + 1;
    }
    proto = tag->next_proto;
    pos = tag + 1;
  }
  /* Only priority tags: removing them all leaves the frame untagged. */
  if (f->vlan == XVMQ_VLAN_NONE) f->strip_tags = f->ntags;
  return XVMQ_DELIVERED;
}

static __always_inline int xvmq_mac_is_multicast(const __u8* mac) { return mac[0] & 1; }

static __always_inline int xvmq_mac_is_broadcast(const __u8* mac) {
  return (mac[0] & mac[1] & mac[2] & mac[3] & mac[4] & mac[5]) == 0xff;
}

#endif /* XVMQ_LIB_PARSE_H */
