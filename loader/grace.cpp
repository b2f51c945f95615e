#include "loader/grace.h"

#include <bpf/bpf.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

namespace xvmq {
namespace {

// One array-of-maps with one slot and the inner map stored in it, made once
// and kept for the process's life (two small maps).
struct GraceMap {
  int outer = -1;
  int inner = -1;
  int err = 0;  // why they could not be made
};

const GraceMap& grace_map() {
  static GraceMap m;
  static std::once_flag once;
  std::call_once(once, [] {
    m.inner = bpf_map_create(BPF_MAP_TYPE_ARRAY, "xvmq_grace_in", sizeof(uint32_t), sizeof(uint32_t), 1, nullptr);
    if (m.inner < 0) {
      m.err = errno;
      return;
    }
    LIBBPF_OPTS(bpf_map_create_opts, opts, .inner_map_fd = static_cast<__u32>(m.inner));
    m.outer = bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "xvmq_grace", sizeof(uint32_t), sizeof(uint32_t), 1, &opts);
    if (m.outer < 0) m.err = errno;
  });
  return m;
}

}  // namespace

Status wait_for_xdp_programs() {
  const GraceMap& m = grace_map();
  if (m.outer >= 0) {
    uint32_t key = 0;
    // Storing the same inner map again is a real update: the kernel waits.
    if (bpf_map_update_elem(m.outer, &key, &m.inner, BPF_ANY) == 0) return {};
  }
  const int map_err = m.outer >= 0 ? errno : m.err;
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0) return {};
  return sys_error(errno, "wait for the XDP programs in flight: a BPF map-in-map update failed (" +
                              std::string(std::strerror(map_err)) + "), and membarrier");
}

}  // namespace xvmq
