#include "loader/vmport.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>

#include <cerrno>
#include <string>
#include <vector>

#include "loader/abi.h"
#include "loader/log.h"
#include "xvmq_vmport.skel.h"

namespace xvmq {

VmPort::~VmPort() {
  if (ifindex_) bpf_xdp_detach(ifindex_, flags_, nullptr);
  if (skel_) xvmq_vmport__destroy(skel_);
}

Result<std::unique_ptr<VmPort>> VmPort::attach(const NetdevInfo& dev, uint32_t max_frame) {
  auto p = std::make_unique<VmPort>();
  log::clear_captured();
  p->skel_ = xvmq_vmport__open();
  if (!p->skel_) return make_error(errno, "open the VM port program for " + dev.name);
  p->skel_->rodata->xvmq_max_frame = max_frame;
  if (int err = xvmq_vmport__load(p->skel_); err) return make_error(err, "load the VM port program for " + dev.name);
  int fd = bpf_program__fd(p->skel_->progs.xvmq_vmport);
  std::string tried;
  for (uint32_t mode : {XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE}) {
    log::clear_captured();
    // Replaces what a previous switchd left there.
    if (bpf_xdp_attach(dev.ifindex, fd, mode, nullptr) == 0) {
      p->ifindex_ = dev.ifindex;
      p->flags_ = mode;
      return p;
    }
    tried += (tried.empty() ? "" : "; ") + make_error(errno, mode == XDP_FLAGS_DRV_MODE ? "native" : "skb").message;
  }
  return Error{EOPNOTSUPP, "attach the VM port program to " + dev.name + " (driver " + dev.driver + "): " + tried};
}

Status VmPort::set_slot(uint32_t queue, int fd) {
  if (bpf_map__update_elem(skel_->maps.xvmq_port_xsks, &queue, sizeof(queue), &fd, sizeof(fd), BPF_ANY) != 0)
    return make_error(errno, "VM port slot " + std::to_string(queue));
  return {};
}

void VmPort::clear_slots(uint32_t queues) {
  for (uint32_t q = 0; q < queues; q++) (void)bpf_map__delete_elem(skel_->maps.xvmq_port_xsks, &q, sizeof(q), BPF_ANY);
}

uint64_t VmPort::too_big() const {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return 0;
  std::vector<xvmq_counter> v(static_cast<size_t>(ncpu));
  uint32_t zero = 0;
  if (bpf_map__lookup_elem(skel_->maps.xvmq_port_too_big, &zero, sizeof(zero), v.data(),
                           v.size() * sizeof(xvmq_counter), 0) != 0)
    return 0;
  uint64_t n = 0;
  for (const auto& c : v) n += c.frames;
  return n;
}

}  // namespace xvmq
