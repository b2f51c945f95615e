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

/*
 * Kernel delivery (docs/architecture.md, "Deliveries"). A vmq whose conf
 * has XVMQ_VMQ_F_KERNEL is not served by sockets: the classifier redirects
 * its frames into the CPUMAP entry of the vmq's processor, with an
 * xvmq_meta in front, and the CPUMAP program (xvmq_cpumap) redirects them
 * into the DEVMAP entry of that vmq: the NIC's backend netdev. DEVMAP key 0
 * (the default queue's id, never a NIC's) is the uplink, for what VMs send.
 */
#define XVMQ_MAX_CPUS 256
#define XVMQ_DEV_UPLINK 0

struct xvmq_vmq_conf {
  __u32 cpu;   /* the vmq's processor: its CPUMAP entry */
  __u32 flags; /* XVMQ_VMQ_F_* */
};
#define XVMQ_VMQ_F_KERNEL (1u << 0) /* kernel delivery; else the vmq's sockets */
#define XVMQ_VMQ_F_DIRECT (1u << 1) /* on the vmq's own processor, straight into the DEVMAP: no hop */
#define XVMQ_VMQ_F_NO_HOP (1u << 2) /* never the CPUMAP hop: deliver on the receiving CPU */

/* In front of a frame on its way through the CPUMAP (XDP metadata). */
struct xvmq_meta {
  __u32 vmq;
  __u32 src_cpu; /* the receiving CPU that sent it */
};

/*
 * Moving a vmq's processor loses and reorders nothing (as RFS moves a flow):
 * each receiving CPU keeps sending the vmq's frames to the processor it used
 * until every frame it sent there has passed the CPUMAP program, and only
 * then follows the conf to the new one. Per receiving CPU (a per-CPU array
 * indexed by vmq): where it sends and how many it sent there; the CPUMAP
 * program counts, per (vmq, receiving CPU), the frames it passed on, and
 * the loss tracer counts there too the frames the CPUMAP queue refused.
 */
struct xvmq_vmq_flow {
  __u32 cpu;      /* the processor this CPU sends the vmq's frames to */
  __u32 pad;
  __u64 enq;      /* frames this CPU sent into the CPUMAP for the vmq, ever */
  __u64 wait_ns;  /* when this CPU began to wait for a move (0: not waiting) */
  __u64 forced;   /* moves made before the old processor caught up (timeout) */
  __u64 settle_until; /* after a move: through the CPUMAP, never straight, until then */
};
/* xvmq_vmq_done's index: the frames of `vmq` from `src` the CPUMAP program passed on. */
#define XVMQ_DONE_SLOT(vmq, src) ((vmq)*XVMQ_MAX_CPUS + (src))
/*
 * After a move, a frame goes through the new processor's CPUMAP entry even
 * where it could go straight into the backend, for this long: a frame the
 * old processor passed on may still be on its way into the VM (the
 * DEVMAP's flush, the VM end's receive ring, which a veth picks by the
 * sending CPU), and a straight one would overtake it.
 */
#define XVMQ_SETTLE_NS 500000ull
/* A move waits this long at most for the old processor (a lost frame never arrives). */
#define XVMQ_MOVE_TIMEOUT_NS 1000000000ull

/*
 * Spreading by load (Dynamic VMQ). A vmq's processor serves it while the
 * CPU that receives its frames is busy; while that CPU is not, it delivers
 * them itself, straight into the backend, as a VMQ coalesces its queues
 * onto fewer processors at low load. Busy ("hot") is counted per receiving
 * CPU over windows of 2^XVMQ_LOAD_WINDOW_SHIFT ns (about 1 ms), with the
 * loader's thresholds. A hot CPU that is itself the vmq's processor sends
 * the frames to its spill CPU. A change of target is a move
 * (xvmq_vmq_flow): nothing is lost or reordered.
 */
#define XVMQ_LOAD_WINDOW_SHIFT 20
struct xvmq_cpu_load {
  __u64 window; /* the window being counted (ns >> XVMQ_LOAD_WINDOW_SHIFT) */
  __u32 frames; /* kernel-delivered frames received in it */
  __u32 hot;
  __u8 pad[48];
};

/*
 * The frames a receiving CPU redirected into one CPUMAP entry and that
 * the kernel has not yet flushed to that CPU's queue, in order: the loss
 * tracer (xvmq_losses.bpf.c) attributes a flush's drops to their vmqs.
 * Per-CPU array indexed by the target CPU.
 */
#define XVMQ_PENDING 16
struct xvmq_pending {
  __u32 head, tail;
  __u16 vmq[XVMQ_PENDING];
};

/* Frames of a kernel-delivered vmq that did not reach its backend, per vmq and reason. */
enum xvmq_loss {
  XVMQ_LOSS_CPU_QUEUE_FULL = 0, /* the processor's CPUMAP queue was full */
  XVMQ_LOSS_NO_DEVICE = 1,      /* no DEVMAP entry for the vmq: its NIC went away */
  XVMQ_LOSS_REDIRECT = 2,       /* the kernel refused the redirect into the backend (down, MTU) */
  XVMQ_LOSS_NO_META = 3,        /* reached the CPUMAP program without its metadata */
  XVMQ_LOSS_COUNT = 4,
};
#define XVMQ_LOSS_SLOT(vmq, loss) ((vmq)*XVMQ_LOSS_COUNT + (loss))

/* Frames a backend (DEVMAP target) did not take, per ifindex and why. */
enum xvmq_xmit_loss {
  XVMQ_XMIT_RING_FULL = 0,     /* its receive ring was full (err 0, drops > 0) */
  XVMQ_XMIT_NO_QUEUE = 1,      /* ENXIO: a tap with no queue attached, a veth peer down */
  XVMQ_XMIT_NOT_SUPPORTED = 2, /* EOPNOTSUPP: a veth peer with neither XDP nor GRO */
  XVMQ_XMIT_ERROR = 3,         /* any other error */
  XVMQ_XMIT_COUNT = 4,
};
struct xvmq_xmit_key {
  __u32 ifindex;
  __u32 loss; /* enum xvmq_xmit_loss */
};

/*
 * What a VM sends, decided in XDP on its backend (xvmq_vmport.bpf.c): port
 * security first, then known unicast by DEVMAP; group frames, what another
 * NIC's sockets serve and anything in doubt go to the software switch.
 */
struct xvmq_port_conf {
  __u8 mac[6];
  __u16 flags; /* XVMQ_PORT_F_* */
  __u16 access_vlan;
  __u16 native_vlan; /* with XVMQ_PORT_F_NATIVE */
  __u32 ifindex;     /* the backend's own: a frame back to it goes to the switch */
  __u64 trunk[64];   /* a trunk's VLANs, a bit each */
};
#define XVMQ_PORT_F_EGRESS (1u << 0)   /* decide in XDP; else every frame to the switch */
#define XVMQ_PORT_F_TRUNK (1u << 1)    /* trunk; else access */
#define XVMQ_PORT_F_NATIVE (1u << 2)   /* a trunk with a native VLAN */
#define XVMQ_PORT_F_SPOOFING (1u << 3) /* MacAddressSpoofing: any source MAC */
#define XVMQ_PORT_F_STATICS (1u << 4)  /* more source MACs in xvmq_port_statics */
#define XVMQ_PORT_F_UPLINK (1u << 5)   /* the uplink takes redirected frames: unicast to no local NIC goes there */

/* The switch's ports, for unicast from a VM: xvmq_filter_word(mac, vlan) -> where. */
#define XVMQ_MAX_DESTS 65536
struct xvmq_dest {
  __u32 dev;     /* DEVMAP key, or XVMQ_DEST_SWITCH: the software switch serves it */
  __u32 flags;   /* XVMQ_DEST_F_* */
  __u32 ifindex; /* the NIC's backend */
  __u32 pad;
};
#define XVMQ_DEST_SWITCH 0xffffffffu
#define XVMQ_DEST_F_UNTAGGED (1u << 0) /* the NIC takes this VLAN untagged */

/* The VM port program's counters, per CPU. */
enum xvmq_port_count {
  XVMQ_PORT_TOO_BIG = 0,        /* longer than a socket buffer: dropped */
  XVMQ_PORT_SPOOFED_SOURCE = 1, /* dropped by port security, as the switch's reasons */
  XVMQ_PORT_TAGGED_ON_ACCESS = 2,
  XVMQ_PORT_VLAN_NOT_ALLOWED = 3,
  XVMQ_PORT_FORWARDED = 4, /* sent on by DEVMAP, in the kernel */
  XVMQ_PORT_TO_SWITCH = 5, /* handed to the software switch */
  XVMQ_PORT_COUNT = 6,
};

/* Map names, as pinned under the per-uplink bpffs directory. */
#define XVMQ_MAP_FILTERS "xvmq_filters"
#define XVMQ_MAP_XSKS "xvmq_xsks"
#define XVMQ_MAP_VMQ_STATS "xvmq_vmq_stats"
#define XVMQ_MAP_REASONS "xvmq_reasons"
#define XVMQ_MAP_VMQS "xvmq_vmqs"
#define XVMQ_MAP_CPUS "xvmq_cpus"
#define XVMQ_MAP_DEVS "xvmq_devs"
#define XVMQ_MAP_FLOWS "xvmq_vmq_flows"
#define XVMQ_MAP_DONE "xvmq_vmq_done"
#define XVMQ_MAP_PENDING "xvmq_pending"
#define XVMQ_MAP_LOSSES "xvmq_losses"
#define XVMQ_MAP_XMIT_LOSSES "xvmq_xmit_losses"
#define XVMQ_MAP_DESTS "xvmq_dests"

#endif /* XVMQ_ABI_H */
