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

Result<std::unique_ptr<VmPort>> VmPort::attach(const NetdevInfo& dev, uint32_t max_frame, int devs_fd, int dests_fd) {
  auto p = std::make_unique<VmPort>();
  log::clear_captured();
  p->skel_ = xvmq_vmport__open();
  if (!p->skel_) return make_error(errno, "open the VM port program for " + dev.name);
  p->skel_->rodata->xvmq_max_frame = max_frame;
  bpf_map* m;
  bpf_object__for_each_map(m, p->skel_->obj) bpf_map__set_pin_path(m, nullptr);
  for (auto [map, fd] : {std::pair{p->skel_->maps.xvmq_devs, devs_fd}, std::pair{p->skel_->maps.xvmq_dests, dests_fd}})
    if (fd >= 0)
      if (int err = bpf_map__reuse_fd(map, fd); err)
        return make_error(err, std::string("share ") + bpf_map__name(map) + " with the VM port program of " + dev.name);
  // Maps of kernel delivery it does not use: the smallest the kernel takes.
  for (bpf_map* unused : {p->skel_->maps.xvmq_vmqs, p->skel_->maps.xvmq_vmq_flows, p->skel_->maps.xvmq_vmq_done,
                          p->skel_->maps.xvmq_pending, p->skel_->maps.xvmq_losses, p->skel_->maps.xvmq_xmit_losses,
                          p->skel_->maps.xvmq_cpus})
    bpf_map__set_max_entries(unused, 1);
  if (devs_fd < 0) bpf_map__set_max_entries(p->skel_->maps.xvmq_devs, 1);
  if (dests_fd < 0) bpf_map__set_max_entries(p->skel_->maps.xvmq_dests, 1);
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

int VmPort::prog_fd() const { return bpf_program__fd(skel_->progs.xvmq_vmport); }

Status VmPort::set_conf(const xvmq_port_conf& conf) {
  uint32_t zero = 0;
  if (bpf_map__update_elem(skel_->maps.xvmq_port_conf, &zero, sizeof(zero), &conf, sizeof(conf), BPF_ANY) != 0)
    return make_error(errno, "VM port conf");
  return {};
}

Status VmPort::set_statics(const std::vector<Mac>& macs) {
  for (uint64_t k : statics_) (void)bpf_map__delete_elem(skel_->maps.xvmq_port_statics, &k, sizeof(k), 0);
  statics_.clear();
  const uint8_t one = 1;
  for (const Mac& m : macs) {
    uint64_t k = xvmq_filter_word(m.data(), 0);
    if (bpf_map__update_elem(skel_->maps.xvmq_port_statics, &k, sizeof(k), &one, sizeof(one), BPF_ANY) != 0)
      return make_error(errno, "VM port static MAC " + format_mac(m));
    statics_.push_back(k);
  }
  return {};
}

void VmPort::clear_slots(uint32_t queues) {
  for (uint32_t q = 0; q < queues; q++) (void)bpf_map__delete_elem(skel_->maps.xvmq_port_xsks, &q, sizeof(q), BPF_ANY);
}

std::array<Counter, XVMQ_PORT_COUNT> VmPort::counts() const {
  std::array<Counter, XVMQ_PORT_COUNT> out{};
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return out;
  std::vector<xvmq_counter> v(static_cast<size_t>(ncpu));
  for (uint32_t i = 0; i < XVMQ_PORT_COUNT; i++) {
    if (bpf_map__lookup_elem(skel_->maps.xvmq_port_counts, &i, sizeof(i), v.data(), v.size() * sizeof(xvmq_counter),
                             0) != 0)
      continue;
    for (const auto& c : v) {
      out[i].frames += c.frames;
      out[i].bytes += c.bytes;
    }
  }
  return out;
}

}  // namespace xvmq
