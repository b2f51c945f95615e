// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Reference programs for xvmq-bench: what any XDP program costs under
 * BPF_PROG_RUN (bench_pass), and what the classifier's parser adds
 * (bench_parse). Same section as the classifier, so the same run path.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/parse.h"

/* Results nobody reads would let the compiler drop the work that made them. */
#define bench_keep(x) asm volatile("" : : "r"(x))

SEC("xdp.frags")
int bench_pass(struct xdp_md* ctx) { return XDP_PASS; }

SEC("xdp.frags")
int bench_parse(struct xdp_md* ctx) {
  void* data = (void*)(long)ctx->data;
  void* data_end = (void*)(long)ctx->data_end;
  struct xvmq_frame f;

  if (xvmq_parse(data, data_end, &f) != XVMQ_DELIVERED) return XDP_DROP;
  bench_keep(f.dst);
  bench_keep(f.vlan);
  bench_keep(f.ntags);
  bench_keep(f.strip_tags);
  return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
