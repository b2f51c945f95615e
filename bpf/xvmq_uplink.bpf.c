// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The uplink classifier: the VMQ filter test in XDP.
 *
 * Each frame's (destination MAC, VLAN) is looked up in the filter table,
 * first exactly, then as a MAC-only filter. A hit goes by its vmq's
 * delivery: kernel, through the CPUMAP entry of the vmq's processor (whose
 * program, xvmq_cpumap below, redirects into the backend's DEVMAP entry),
 * or xsk, into the XSKMAP slot of that vmq for the frame's receive queue.
 * Everything else goes to the default queue's slot of that receive queue,
 * or to the host stack when no default socket is there. A frame is never
 * lost without a count.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xvmq_abi.h"
#include "lib/parse.h"
#include "lib/counters.h"
#include "lib/kernel_maps.h"
#include "lib/vlan.h"

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, XVMQ_FILTER_SLOTS);
  __uint(map_flags, BPF_F_MMAPABLE);
  __type(key, __u32);
  __type(value, struct xvmq_filter_slot);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_filters SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, XVMQ_XSK_SLOTS);
  __type(key, __u32);
  __type(value, __u32);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_xsks SEC(".maps");

/* The longest frame a socket's buffer holds, set by the loader before the
 * load (0: no limit). Longer frames would fail in the socket: counted and
 * dropped here instead. */
const volatile __u32 xvmq_max_frame = 0;

/*
 * Dynamic VMQ by load (xvmq_abi.h, "Spreading by load"), set by the loader
 * before the load. A receiving CPU that delivered at least xvmq_spread_on
 * kernel-delivered frames in its last window is hot, until a window with
 * fewer than xvmq_spread_off. A cold CPU delivers straight into the
 * backends (no hop: the fewest CPU cycles and wake-ups); a hot one sends
 * each vmq's frames to the vmq's processor, or, for the vmqs it is the
 * processor of, to xvmq_spill[itself]. xvmq_spread_on 0: always the vmq's
 * processor.
 */
const volatile __u32 xvmq_spread_on = 0;
const volatile __u32 xvmq_spread_off = 0;
const volatile __u32 xvmq_spill[XVMQ_MAX_CPUS] = {};

/* Per receiving CPU, its own entry (a cache line each). */
struct xvmq_cpu_load xvmq_load[XVMQ_MAX_CPUS] = {};

/* The smallest linear part a multi-buffer frame has (see xvmq_uplink()). */
#define XVMQ_LINEAR_FRAGS_MIN 1024

/* xvmq_filter_word(ff:ff:ff:ff:ff:ff, XVMQ_HOST_GROUPS_VLAN) */
#define XVMQ_HOST_GROUPS_KEY (0xffffffffffffull | (__u64)XVMQ_HOST_GROUPS_VLAN << 48)

#define XVMQ_READ_ONCE(x) (*(volatile __typeof__(x)*)&(x))

/* Probe the filter table for a key word; on a hit, *value is its value word. */
static __always_inline int xvmq_filter_lookup(__u64 key, __u64* value) {
  __u32 first = xvmq_filter_hash(key);
  int i;

#pragma clang loop unroll(disable)
  for (i = 0; i < XVMQ_FILTER_PROBES; i++) {
    __u32 pos = (first + i) & (XVMQ_FILTER_SLOTS - 1);
    struct xvmq_filter_slot* s = bpf_map_lookup_elem(&xvmq_filters, &pos);
    __u64 k;

    if (!s) return 0;
    k = XVMQ_READ_ONCE(s->key);
    /* Before the match: 00:00:00:00:00:00 on VLAN 0 is key word 0. */
    if (k == XVMQ_FILTER_EMPTY) return 0;
    if (k == key) {
      *value = XVMQ_READ_ONCE(s->value);
      return 1;
    }
  }
  return 0;
}

/* A socket is usable for this queue only if it is bound to it. */
static __always_inline __u32 xvmq_check_slot(__u32 slot, __u32 queue) {
  struct bpf_xdp_sock* xsk = bpf_map_lookup_elem(&xvmq_xsks, &slot);

  if (!xsk) return XVMQ_REASON_NO_SOCKET;
  if (xsk->queue_id != queue) return XVMQ_REASON_WRONG_QUEUE;
  return XVMQ_DELIVERED;
}

/*
 * The processor this CPU sends a kernel-delivered vmq's frames to: `want`,
 * unless it changed and frames this CPU sent to the old one have not all
 * passed the CPUMAP program yet (xvmq_abi.h, xvmq_vmq_flow).
 */
static __always_inline __u32 xvmq_vmq_target(__u32 vmq, __u32 want, __u32 here, struct xvmq_vmq_flow* fl) {
  __u32 slot = XVMQ_DONE_SLOT(vmq, here);
  __u64* done;
  __u64 now;

  if (fl->cpu == want) return fl->cpu;
  done = bpf_map_lookup_elem(&xvmq_vmq_done, &slot);
  if (done && XVMQ_READ_ONCE(*done) != fl->enq) {
    now = bpf_ktime_get_ns();
    if (!fl->wait_ns) fl->wait_ns = now;
    if (now - fl->wait_ns < XVMQ_MOVE_TIMEOUT_NS) return fl->cpu;
    fl->forced++;
  }
  fl->cpu = want;
  fl->wait_ns = 0;
  fl->settle_until = bpf_ktime_get_ns() + XVMQ_SETTLE_NS;
  return fl->cpu;
}

/* Count a kernel-delivered frame on this CPU; whether the CPU is hot. */
static __always_inline int xvmq_cpu_hot(__u32 here) {
  struct xvmq_cpu_load* l = &xvmq_load[here & (XVMQ_MAX_CPUS - 1)];
  __u64 now = bpf_ktime_get_ns();
  __u64 win = now >> XVMQ_LOAD_WINDOW_SHIFT;

  if (win != l->window) {
    /* A window with no frame in between counts as empty. */
    __u32 n = win == l->window + 1 ? l->frames : 0;

    l->hot = l->hot ? n >= xvmq_spread_off : n >= xvmq_spread_on;
    l->window = win;
    l->frames = 0;
  }
  l->frames++;
  return l->hot;
}

/* Where this CPU wants a kernel-delivered vmq's frames to go now. */
static __always_inline __u32 xvmq_want(const struct xvmq_vmq_conf* conf, __u32 here) {
  if (!xvmq_spread_on) return conf->cpu;
  if (!xvmq_cpu_hot(here)) return here;
  if (conf->cpu != here) return conf->cpu;
  return xvmq_spill[here & (XVMQ_MAX_CPUS - 1)];
}

/* Note a frame sent into `cpu`'s CPUMAP entry, for the loss tracer. */
static __always_inline void xvmq_note_pending(__u32 cpu, __u32 vmq) {
  struct xvmq_pending* p = bpf_map_lookup_elem(&xvmq_pending, &cpu);

  if (!p) return;
  p->vmq[p->tail & (XVMQ_PENDING - 1)] = (__u16)vmq;
  p->tail++;
}

/* Through the CPUMAP entry of `cpu`, the frame carrying its vmq and sender. */
static __always_inline __u32 xvmq_to_cpumap(struct xdp_md* ctx, __u32 vmq, __u32 cpu, __u32 here) {
  struct xvmq_meta* meta;

  if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta))) return XVMQ_REASON_REDIRECT_ERROR;
  meta = (void*)(long)ctx->data_meta;
  if ((void*)(meta + 1) > (void*)(long)ctx->data) return XVMQ_REASON_REDIRECT_ERROR;
  meta->vmq = vmq;
  meta->src_cpu = here;
  if (bpf_redirect_map(&xvmq_cpus, cpu, 0) != XDP_REDIRECT) {
    bpf_xdp_adjust_meta(ctx, (int)sizeof(*meta));
    return XVMQ_REASON_REDIRECT_ERROR;
  }
  return XVMQ_DELIVERED;
}

/* Kernel delivery: through the vmq's processor, or on this one straight into the backend. */
static __always_inline __u32 xvmq_to_kernel(struct xdp_md* ctx, __u32 vmq, const struct xvmq_vmq_conf* conf) {
  __u32 here = bpf_get_smp_processor_id() & (XVMQ_MAX_CPUS - 1);
  struct xvmq_vmq_flow* fl = bpf_map_lookup_elem(&xvmq_vmq_flows, &vmq);
  __u32 cpu, reason;

  if (!fl) return XVMQ_REASON_REDIRECT_ERROR;
  cpu = (conf->flags & XVMQ_VMQ_F_NO_HOP) ? here : xvmq_vmq_target(vmq, xvmq_want(conf, here), here, fl);
  if (fl->settle_until) {
    if (bpf_ktime_get_ns() < fl->settle_until) goto hop;
    fl->settle_until = 0;
  }
  if (cpu == here && (conf->flags & (XVMQ_VMQ_F_DIRECT | XVMQ_VMQ_F_NO_HOP)))
    return bpf_redirect_map(&xvmq_devs, vmq, 0) == XDP_REDIRECT ? XVMQ_DELIVERED : XVMQ_REASON_REDIRECT_ERROR;
hop:
  reason = xvmq_to_cpumap(ctx, vmq, cpu, here);
  if (reason != XVMQ_DELIVERED) return reason;
  fl->enq++;
  xvmq_note_pending(cpu, vmq);
  return XVMQ_DELIVERED;
}

/* Deliver to the vmq of a filter hit; returns XVMQ_DELIVERED once redirected. */
static __always_inline __u32 xvmq_to_vmq(struct xdp_md* ctx, __u64 value, const struct xvmq_frame* f, __u32 queue,
                                         __u64 bytes) {
  __u32 vmq = XVMQ_FILTER_VMQ(value);
  struct xvmq_vmq_conf* conf;
  __u32 slot, reason;

  if (vmq == XVMQ_HOST_VMQ) return XVMQ_REASON_HOST;
  if (vmq == XVMQ_DEFAULT_VMQ || vmq >= XVMQ_MAX_VMQS) return XVMQ_REASON_BAD_VMQ;
  conf = bpf_map_lookup_elem(&xvmq_vmqs, &vmq);
  if (conf && (conf->flags & XVMQ_VMQ_F_KERNEL)) {
    /* Redirect first: the frame stays intact if it must fall back. */
    reason = xvmq_to_kernel(ctx, vmq, conf);
    if (reason != XVMQ_DELIVERED) return reason;
    goto shape;
  }
  slot = XVMQ_XSK_SLOT(vmq, queue);
  reason = xvmq_check_slot(slot, queue);
  if (reason != XVMQ_DELIVERED) return reason;
  /* Redirect first: the frame stays intact if it must fall back. */
  if (bpf_redirect_map(&xvmq_xsks, slot, 0) != XDP_REDIRECT) return XVMQ_REASON_REDIRECT_ERROR;
shape:
  if (XVMQ_FILTER_FLAGS(value) & XVMQ_FILTER_F_STRIP_TAG) {
    if (xvmq_strip_tags(ctx, f->strip_tags)) return XVMQ_REASON_STRIP_ERROR;
    bytes -= f->strip_tags * sizeof(struct xvmq_vlan_tag);
  }
  xvmq_count_vmq(vmq, bytes);
  return XVMQ_DELIVERED;
}

static __always_inline int xvmq_to_default(__u32 queue, __u64 bytes) {
  __u32 slot = XVMQ_XSK_SLOT(XVMQ_DEFAULT_VMQ, queue);

  if (xvmq_check_slot(slot, queue) != XVMQ_DELIVERED) return XDP_PASS;
  if (bpf_redirect_map(&xvmq_xsks, slot, XDP_PASS) != XDP_REDIRECT) return XDP_PASS;
  xvmq_count_vmq(XVMQ_DEFAULT_VMQ, bytes);
  return XDP_REDIRECT;
}

SEC("xdp.frags")
int xvmq_uplink(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  __u64 bytes = data_end - data;
  __u32 queue = ctx->rx_queue_index;
  struct xvmq_frame f;
  __u64 value;
  __u32 reason;

  /* Drivers fill the first buffer before they chain fragments: only a
   * frame with a large linear part can have more (saves a helper call). */
  if (bytes >= XVMQ_LINEAR_FRAGS_MIN) bytes = bpf_xdp_get_buff_len(ctx);

  reason = xvmq_parse(data, data_end, &f);
  if (reason == XVMQ_DELIVERED && xvmq_max_frame && bytes > xvmq_max_frame) reason = XVMQ_REASON_TOO_BIG;
  if (reason != XVMQ_DELIVERED) {
    xvmq_count_reason(reason, bytes);
    return XDP_DROP;
  }
  if (queue >= XVMQ_MAX_QUEUES) {
    xvmq_count_reason(XVMQ_REASON_BAD_QUEUE, bytes);
    return XDP_PASS;
  }

  if (xvmq_mac_is_multicast(f.dst)) {
    /* host=stack: the host's neighbours must reach it (ARP, ND), so
     * group frames go to its stack; switchd floods them to the VMs
     * from there. One probe, on group frames only. */
    if (xvmq_filter_lookup(XVMQ_HOST_GROUPS_KEY, &value) && XVMQ_FILTER_VMQ(value) == XVMQ_HOST_VMQ) {
      xvmq_count_reason(XVMQ_REASON_HOST_GROUP, bytes);
      return XDP_PASS;
    }
    reason = xvmq_mac_is_broadcast(f.dst) ? XVMQ_REASON_BROADCAST : XVMQ_REASON_MULTICAST;
  } else {
    __u64 mac = xvmq_filter_word(f.dst, 0);

    if (xvmq_filter_lookup(mac | (__u64)f.vlan << 48, &value) ||
        xvmq_filter_lookup(mac | (__u64)XVMQ_VLAN_ANY << 48, &value))
      reason = xvmq_to_vmq(ctx, value, &f, queue, bytes);
    else
      reason = XVMQ_REASON_MISS;
    if (reason == XVMQ_DELIVERED) return XDP_REDIRECT;
  }

  xvmq_count_reason(reason, bytes);
  if (xvmq_reason_is_drop(reason)) return XDP_DROP;
  if (reason == XVMQ_REASON_HOST) return XDP_PASS;
  return xvmq_to_default(queue, bytes);
}

/*
 * The CPUMAP program: on the vmq's processor, each frame the classifier
 * sent through its CPUMAP entry goes on into the vmq's backend by DEVMAP.
 */
SEC("xdp.frags/cpumap")
int xvmq_cpumap(struct xdp_md* ctx) {
  struct xvmq_meta* meta = (void*)(long)ctx->data_meta;
  __u32 vmq, slot;
  __u64* done;

  if ((void*)(meta + 1) > (void*)(long)ctx->data) {
    xvmq_count_loss(XVMQ_DEFAULT_VMQ, XVMQ_LOSS_NO_META);
    return XDP_DROP;
  }
  vmq = meta->vmq;
  slot = meta->src_cpu;
  if (vmq >= XVMQ_MAX_VMQS || slot >= XVMQ_MAX_CPUS) {
    xvmq_count_loss(XVMQ_DEFAULT_VMQ, XVMQ_LOSS_NO_META);
    return XDP_DROP;
  }
  slot = XVMQ_DONE_SLOT(vmq, slot);
  done = bpf_map_lookup_elem(&xvmq_vmq_done, &slot);
  if (done) __sync_fetch_and_add(done, 1);
  bpf_xdp_adjust_meta(ctx, (int)sizeof(*meta));
  if (bpf_redirect_map(&xvmq_devs, vmq, 0) == XDP_REDIRECT) return XDP_REDIRECT;
  xvmq_count_loss(vmq, XVMQ_LOSS_NO_DEVICE);
  return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
