/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps of kernel delivery (xvmq_abi.h, "Kernel delivery"). The
 * classifier's object owns and pins them; the VM port and loss tracer
 * objects declare the same maps and reuse the classifier's before loading.
 */
#ifndef XVMQ_LIB_KERNEL_MAPS_H
#define XVMQ_LIB_KERNEL_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../xvmq_abi.h"

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, XVMQ_MAX_VMQS);
  __type(key, __u32);
  __type(value, struct xvmq_vmq_conf);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_vmqs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_CPUMAP);
  __uint(max_entries, XVMQ_MAX_CPUS);
  __type(key, __u32);
  __type(value, struct bpf_cpumap_val);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_cpus SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_DEVMAP);
  __uint(max_entries, XVMQ_MAX_VMQS);
  __type(key, __u32);
  __type(value, struct bpf_devmap_val);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_devs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, XVMQ_MAX_VMQS);
  __type(key, __u32);
  __type(value, struct xvmq_vmq_flow);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_vmq_flows SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, XVMQ_MAX_VMQS* XVMQ_MAX_CPUS);
  __type(key, __u32);
  __type(value, __u64);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_vmq_done SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, XVMQ_MAX_CPUS);
  __type(key, __u32);
  __type(value, struct xvmq_pending);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_pending SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, XVMQ_MAX_VMQS* XVMQ_LOSS_COUNT);
  __type(key, __u32);
  __type(value, __u64);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_losses SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, 4096);
  __type(key, struct xvmq_xmit_key);
  __type(value, __u64);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_xmit_losses SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, XVMQ_MAX_DESTS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u64);
  __type(value, struct xvmq_dest);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} xvmq_dests SEC(".maps");

static __always_inline void xvmq_count_loss(__u32 vmq, __u32 loss) {
  __u32 slot = XVMQ_LOSS_SLOT(vmq, loss);
  __u64* n = bpf_map_lookup_elem(&xvmq_losses, &slot);

  if (n) (*n)++;
}

#endif /* XVMQ_LIB_KERNEL_MAPS_H */
