#include "tests/lib/prog_run.h"

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <cerrno>

namespace xvmq::test {

ProgRun prog_run(int prog_fd, const std::vector<uint8_t>& frame, const ProgRunOptions& o) {
  constexpr uint32_t kMeta = 32;
  const bool runt = frame.size() < 14;
  std::vector<uint8_t> in;
  if (runt) in.assign(kMeta, 0);
  in.insert(in.end(), frame.begin(), frame.end());

  xdp_md ctx{};
  ctx.data = runt ? kMeta : 0;
  ctx.data_end = static_cast<uint32_t>(in.size());
  ctx.ingress_ifindex = static_cast<uint32_t>(o.ifindex);
  ctx.rx_queue_index = o.queue;

  std::vector<uint8_t> out(in.size() + 256);
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in.data(), .data_size_in = static_cast<uint32_t>(in.size()),
              .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = static_cast<int>(o.repeat));
  if (o.live) {
    opts.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
  } else {
    opts.data_out = out.data();
    opts.data_size_out = static_cast<uint32_t>(out.size());
  }
  ProgRun r;
  if (bpf_prog_test_run_opts(prog_fd, &opts) != 0) {
    r.err = -errno;
    return r;
  }
  r.action = opts.retval;
  r.duration_ns = opts.duration;
  if (!o.live) {
    out.resize(opts.data_size_out);
    size_t skip = runt ? kMeta : 0;
    if (out.size() >= skip) r.out.assign(out.begin() + static_cast<long>(skip), out.end());
  }
  return r;
}

}  // namespace xvmq::test
