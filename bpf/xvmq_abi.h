/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The contract between the BPF programs and C++: every map key and value,
 * the drop/fallback reasons and the map geometry. Included by every bpf/ program
 * and by loader/. Fixed-width types and explicit padding only; the C++ side
 * static_asserts sizes and offsets, and tests/unit/abi_test.cpp checks them
 * against the BTF of the built object.
 */
#ifndef XVMQ_ABI_H
#define XVMQ_ABI_H

#include <linux/types.h>

/* Receive queues per uplink that the classifier can serve. */
#define XVMQ_MAX_QUEUES 64
/* vmq ids are 0..XVMQ_MAX_VMQS-1; vmq 0 is the default queue. */
#define XVMQ_MAX_VMQS 128
#define XVMQ_DEFAULT_VMQ 0
/* In a filter: the frame is the host's, for its own stack (no host port). */
#define XVMQ_HOST_VMQ 0xffffffffu
/* The filter (ff:ff:ff:ff:ff:ff, this VLAN) -> XVMQ_HOST_VMQ says that
 * broadcast and multicast go to the host's stack too (host=stack); no real
 * filter has this VLAN, and its word is not the tombstone. */
#define XVMQ_HOST_GROUPS_VLAN 0xfffe
/* Filters, (MAC, VLAN) and MAC-only together: a quarter of the table's
 * slots, so that probes stay short in a full table. */
#define XVMQ_MAX_FILTERS 65536

/* XSKMAP layout: one slot per (vmq, receive queue). */
#define XVMQ_XSK_SLOTS (XVMQ_MAX_VMQS * XVMQ_MAX_QUEUES)
#define XVMQ_XSK_SLOT(vmq, queue) ((vmq)*XVMQ_MAX_QUEUES + (queue))

/* VLAN id of untagged and priority-tagged (VID 0) frames. */
#define XVMQ_VLAN_NONE 0
/* In a filter key: match the MAC on any VLAN (VMQ's MAC-only filter). */
#define XVMQ_VLAN_ANY 0xffff
#define XVMQ_VLAN_MAX 4094

/*
 * The filter table: (destination MAC, VLAN) -> vmq, by open addressing with
 * linear probing in an mmapable array. A hash map lookup costs about five
 * times more than these inlined array probes. One process writes the table
 * through mmap (loader/filter_table.cpp); the classifier only reads it.
 *
 * A slot is {key word, value word}, each written and read as one aligned
 * 8-byte word. The writer stores the value before the key when it fills a
 * slot, and never gives a freed slot to another key before a quarantine
 * (longer than any program run) has passed, so a reader that matched a key
 * never reads another key's value.
 */
#define XVMQ_FILTER_SLOTS_SHIFT 18
#define XVMQ_FILTER_SLOTS (1u << XVMQ_FILTER_SLOTS_SHIFT)
/* A key lives within this many slots of its hash. */
#define XVMQ_FILTER_PROBES 32
#define XVMQ_FILTER_EMPTY 0ull        /* never used: ends a probe */
#define XVMQ_FILTER_TOMBSTONE (~0ull) /* freed: a probe goes on */

struct xvmq_filter_slot {
  __u64 key;   /* xvmq_filter_word(), XVMQ_FILTER_EMPTY or XVMQ_FILTER_TOMBSTONE */
  __u64 value; /* xvmq_filter_value_word(vmq, flags) */
};

/* Remove the VLAN tags before delivery (access port). */
#define XVMQ_FILTER_F_STRIP_TAG (1u << 0)
#define XVMQ_FILTER_F_ALL XVMQ_FILTER_F_STRIP_TAG

/* MAC in bits 0..47 (mac[0] lowest), VLAN or XVMQ_VLAN_ANY in bits 48..63.
 * Not 0 for a unicast MAC other than 00:00:00:00:00:00, never all ones. */
static inline __u64 xvmq_filter_word(const __u8* mac, __u16 vlan) {
  return (__u64)mac[0] | (__u64)mac[1] << 8 | (__u64)mac[2] << 16 | (__u64)mac[3] << 24 | (__u64)mac[4] << 32 |
         (__u64)mac[5] << 40 | (__u64)vlan << 48;
}

static inline __u64 xvmq_filter_value_word(__u32 vmq, __u32 flags) { return (__u64)vmq | (__u64)flags << 32; }

#define XVMQ_FILTER_VMQ(value) ((__u32)(value))
#define XVMQ_FILTER_FLAGS(value) ((__u32)((value) >> 32))

/* The first slot to probe for a key word: Fibonacci hashing, the top bits
 * of one multiplication (MACs differ mostly in their last bytes, which the
 * product carries up into those bits). */
static inline __u32 xvmq_filter_hash(__u64 k) {
  return (__u32)((k * 0x9e3779b97f4a7c15ull) >> (64 - XVMQ_FILTER_SLOTS_SHIFT));
}

/* A per-CPU counter pair; the vmq map and the reason map hold these. */
struct xvmq_counter {
  __u64 frames;
  __u64 bytes;
};

/*
 * Why a frame was not delivered to a (non-default) vmq. Each frame the
 * classifier sees is counted exactly once: in xvmq_vmq_stats[vmq] when a
 * vmq (id >= 1) got it, otherwise in xvmq_reasons[reason]. Frames that then
 * reach the default queue's socket are also counted in xvmq_vmq_stats[0];
 * the rest went to the host stack (XDP_PASS) or were dropped (see
 * xvmq_reason_is_drop).
 */
enum xvmq_reason {
  XVMQ_REASON_MISS = 0,           /* unicast, no filter matched */
  XVMQ_REASON_BROADCAST = 1,      /* ff:ff:ff:ff:ff:ff */
  XVMQ_REASON_MULTICAST = 2,      /* group bit set, not broadcast */
  XVMQ_REASON_NO_SOCKET = 3,      /* filter hit, vmq has no socket on this queue */
  XVMQ_REASON_WRONG_QUEUE = 4,    /* filter hit, socket bound to another queue */
  XVMQ_REASON_REDIRECT_ERROR = 5, /* filter hit, the kernel refused the redirect */
  XVMQ_REASON_BAD_VMQ = 6,        /* filter names a vmq outside 1..MAX-1 */
  XVMQ_REASON_BAD_QUEUE = 7,      /* receive queue >= XVMQ_MAX_QUEUES */
  XVMQ_REASON_RUNT = 8,           /* shorter than an Ethernet header: dropped */
  XVMQ_REASON_TRUNCATED_TAG = 9,  /* VLAN tag cut short: dropped */
  XVMQ_REASON_STRIP_ERROR = 10,   /* tag removal failed: dropped */
  XVMQ_REASON_TOO_BIG = 11,       /* longer than xvmq_max_frame: dropped */
  XVMQ_REASON_HOST = 12,          /* to the host's own MAC: its stack (XDP_PASS) */
  XVMQ_REASON_HOST_GROUP = 13,    /* broadcast or multicast, host=stack: its stack (XDP_PASS), switchd floods a copy */
  XVMQ_REASON_COUNT = 14,         /* number of reasons: xvmq_reasons' size */
};

/*
 * Not a reason: what the classifier's steps (xvmq_parse, the socket check,
 * the redirect to a vmq) return when the frame goes on, or went, to its vmq.
 * Outside 0..XVMQ_REASON_COUNT-1, so never counted in xvmq_reasons.
 */
#define XVMQ_DELIVERED XVMQ_REASON_COUNT

#define XVMQ_REASON_DROP_MASK                                                                       \
  ((1u << XVMQ_REASON_RUNT) | (1u << XVMQ_REASON_TRUNCATED_TAG) | (1u << XVMQ_REASON_STRIP_ERROR) | \
   (1u << XVMQ_REASON_TOO_BIG))

static inline int xvmq_reason_is_drop(__u32 reason) {
  return reason < XVMQ_REASON_COUNT && ((XVMQ_REASON_DROP_MASK >> reason) & 1u);
}

/* Map names, as pinned under the per-uplink bpffs directory. */
#define XVMQ_MAP_FILTERS "xvmq_filters"
#define XVMQ_MAP_XSKS "xvmq_xsks"
#define XVMQ_MAP_VMQ_STATS "xvmq_vmq_stats"
#define XVMQ_MAP_REASONS "xvmq_reasons"

#endif /* XVMQ_ABI_H */
