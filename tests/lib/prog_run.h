// BPF_PROG_RUN of an XDP program on a frame, with the receive queue and
// netdev set in the context.
#pragma once

#include <cstdint>
#include <vector>

namespace xvmq::test {

struct ProgRun {
  int err = 0;          // 0, or -errno from the kernel
  uint32_t action = 0;  // XDP_*
  std::vector<uint8_t> out;
  uint32_t duration_ns = 0;
};

struct ProgRunOptions {
  int ifindex = 0;     // ingress netdev (0: loopback)
  uint32_t queue = 0;  // receive queue; needs ifindex
  bool live = false;   // BPF_F_TEST_XDP_LIVE_FRAMES: really redirect
  uint32_t repeat = 1;
};

// Frames shorter than an Ethernet header are run behind 32 bytes of XDP
// metadata: the kernel requires 14 bytes in all, not in the frame.
ProgRun prog_run(int prog_fd, const std::vector<uint8_t>& frame, const ProgRunOptions& opts = {});

}  // namespace xvmq::test
