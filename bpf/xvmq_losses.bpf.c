// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The loss tracer: frames of kernel delivery that the kernel dropped after
 * a program had redirected them, which no XDP program sees. It counts
 *
 *   - per vmq, the frames a full CPUMAP queue refused (xdp_cpumap_enqueue):
 *     the receiving CPU's xvmq_pending says which vmqs the flushed frames
 *     were for; a refused frame also counts as passed for the vmq's move
 *     (xvmq_vmq_done), so a move never waits for it;
 *   - per target ifindex and reason, the frames a DEVMAP target did not
 *     take (xdp_devmap_xmit): a full receive ring, no queue (ENXIO), no
 *     support (EOPNOTSUPP), another error;
 *   - per DEVMAP key (a vmq, or 0: the uplink), the redirects the kernel
 *     refused before any transmit (xdp_redirect_err): the device down, the
 *     frame longer than its MTU.
 *
 * Raw tracepoints, read with CO-RE against the running kernel's BTF.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "xvmq_abi.h"
#include "lib/kernel_maps.h"

#define XVMQ_ENXIO 6
#define XVMQ_EOPNOTSUPP 95

/* The id of the classifier's CPUMAP (xvmq_cpus), set by the loader: other
 * CPUMAPs on the host are not ours to count. */
const volatile __u32 xvmq_cpus_id = 0;
/* ... and of its DEVMAP (xvmq_devs). */
const volatile __u32 xvmq_devs_id = 0;

struct net_device {
  int ifindex;
} __attribute__((preserve_access_index));

/* The last `drops` of the `processed` frames flushed from this CPU to `to_cpu`. */
static __always_inline void xvmq_cpumap_flushed(__u32 to_cpu, __u32 processed, __u32 drops) {
  __u32 here = bpf_get_smp_processor_id() & (XVMQ_MAX_CPUS - 1);
  struct xvmq_pending* p = bpf_map_lookup_elem(&xvmq_pending, &to_cpu);
  __u32 i, vmq, slot;
  __u64* done;

  if (!p) return;
  if (processed > XVMQ_PENDING) processed = XVMQ_PENDING;
  if (drops > processed) drops = processed;
  for (i = 0; i < XVMQ_PENDING; i++) {
    if (i >= processed || p->head == p->tail) break;
    vmq = p->vmq[p->head & (XVMQ_PENDING - 1)] & (XVMQ_MAX_VMQS - 1);
    p->head++;
    if (i < processed - drops) continue;
    xvmq_count_loss(vmq, XVMQ_LOSS_CPU_QUEUE_FULL);
    slot = XVMQ_DONE_SLOT(vmq, here);
    done = bpf_map_lookup_elem(&xvmq_vmq_done, &slot);
    if (done) __sync_fetch_and_add(done, 1);
  }
  /* At most the frame that made the flush may still wait: resynchronise. */
  if (p->tail - p->head > 1) p->head = p->tail - 1;
}

/* xdp_cpumap_enqueue(int map_id, unsigned int processed, unsigned int drops, int to_cpu) */
SEC("raw_tp/xdp_cpumap_enqueue")
int xvmq_trace_cpumap(struct bpf_raw_tracepoint_args* ctx) {
  __u32 processed = (__u32)ctx->args[1], drops = (__u32)ctx->args[2], to_cpu = (__u32)ctx->args[3];

  if ((__u32)ctx->args[0] != xvmq_cpus_id) return 0;
  if (to_cpu < XVMQ_MAX_CPUS) xvmq_cpumap_flushed(to_cpu, processed, drops);
  return 0;
}

/* xdp_devmap_xmit(const struct net_device *from_dev, const struct net_device *to_dev, int sent, int drops, int err) */
SEC("raw_tp/xdp_devmap_xmit")
int xvmq_trace_devmap(struct bpf_raw_tracepoint_args* ctx) {
  const struct net_device* to = (const void*)ctx->args[1];
  int drops = (int)ctx->args[3], err = (int)ctx->args[4];
  struct xvmq_xmit_key key = {};
  __u64 *n, init;

  if (drops <= 0) return 0;
  key.ifindex = BPF_CORE_READ(to, ifindex);
  key.loss = err == 0                  ? XVMQ_XMIT_RING_FULL
             : err == -XVMQ_ENXIO      ? XVMQ_XMIT_NO_QUEUE
             : err == -XVMQ_EOPNOTSUPP ? XVMQ_XMIT_NOT_SUPPORTED
                                       : XVMQ_XMIT_ERROR;
  n = bpf_map_lookup_elem(&xvmq_xmit_losses, &key);
  if (n) {
    *n += drops;
    return 0;
  }
  init = drops;
  bpf_map_update_elem(&xvmq_xmit_losses, &key, &init, BPF_NOEXIST);
  return 0;
}

/* xdp_redirect_err(dev, xdp, tgt, int err, enum bpf_map_type map_type, u32 map_id, u32 index) */
SEC("raw_tp/xdp_redirect_err")
int xvmq_trace_redirect_err(struct bpf_raw_tracepoint_args* ctx) {
  __u32 map_id = (__u32)ctx->args[5], index = (__u32)ctx->args[6];

  if (map_id != xvmq_devs_id || index >= XVMQ_MAX_VMQS) return 0;
  xvmq_count_loss(index, XVMQ_LOSS_REDIRECT);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
