/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* VLAN tags removed and pushed in XDP: the shapes a frame leaves in. */
#ifndef XVMQ_LIB_VLAN_H
#define XVMQ_LIB_VLAN_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "parse.h"

/* Remove the first n VLAN tags: move the MAC addresses over them. */
static __always_inline int xvmq_strip_tags(struct xdp_md* ctx, __u32 n) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  __u8 macs[2 * ETH_ALEN];

  if (n == 0) return 0;
  if (n > XVMQ_MAX_TAGS || data + sizeof(macs) > data_end) return -1;
  __builtin_memcpy(macs, data, sizeof(macs));
  if (bpf_xdp_adjust_head(ctx, (int)(n * sizeof(struct xvmq_vlan_tag)))) return -1;
  data = (void*)(long)ctx->data;
  data_end = (void*)(long)ctx->data_end;
  if (data + sizeof(macs) > data_end) return -1;
  __builtin_memcpy(data, macs, sizeof(macs));
  return 0;
}

/*
 * Leave exactly one 802.1Q tag of `vlan` where the frame had `tags` (0, 1
 * or 2) in front of its payload, keeping the priority bits of the first:
 * the software switch's tagged shape (switchd/dp/vlan_tag.h).
 */
static __always_inline int xvmq_retag(struct xdp_md* ctx, __u32 tags, __u16 vlan) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  __be16* hdr = data + 2 * ETH_ALEN; /* TPID, then TCI, of the first tag */
  __u8 macs[2 * ETH_ALEN];
  __u16 pcp = 0;

  if (tags > XVMQ_MAX_TAGS) return -1;
  if (tags) {
    if ((void*)(hdr + 2) > data_end) return -1;
    pcp = bpf_ntohs(hdr[1]) & 0xe000;
    if (tags > 1 && xvmq_strip_tags(ctx, tags - 1)) return -1;
  } else {
    if (data + sizeof(macs) > data_end) return -1;
    __builtin_memcpy(macs, data, sizeof(macs));
    if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct xvmq_vlan_tag))) return -1;
    data = (void*)(long)ctx->data;
    data_end = (void*)(long)ctx->data_end;
    if (data + sizeof(macs) > data_end) return -1;
    __builtin_memcpy(data, macs, sizeof(macs));
  }
  data = (void*)(long)ctx->data;
  data_end = (void*)(long)ctx->data_end;
  hdr = data + 2 * ETH_ALEN;
  if ((void*)(hdr + 2) > data_end) return -1;
  hdr[0] = bpf_htons(ETH_P_8021Q);
  hdr[1] = bpf_htons(pcp | vlan);
  return 0;
}

#endif /* XVMQ_LIB_VLAN_H */
