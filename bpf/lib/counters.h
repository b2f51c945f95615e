/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU counters: per vmq and per reason. */
#ifndef XVMQ_LIB_COUNTERS_H
#define XVMQ_LIB_COUNTERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../xvmq_abi.h"

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, XVMQ_MAX_VMQS);
  __type(key, __u32);
  __type(value, struct xvmq_counter);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_vmq_stats SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, XVMQ_REASON_COUNT);
  __type(key, __u32);
  __type(value, struct xvmq_counter);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_reasons SEC(".maps");

static __always_inline void xvmq_count(void* map, __u32 idx, __u64 bytes) {
  struct xvmq_counter* c = bpf_map_lookup_elem(map, &idx);

  if (c) {
    c->frames++;
    c->bytes += bytes;
  }
}

static __always_inline void xvmq_count_vmq(__u32 vmq, __u64 bytes) { xvmq_count(&xvmq_vmq_stats, vmq, bytes); }

static __always_inline void xvmq_count_reason(__u32 reason, __u64 bytes) { xvmq_count(&xvmq_reasons, reason, bytes); }

#endif /* XVMQ_LIB_COUNTERS_H */
