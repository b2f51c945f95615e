#include "loader/kernel_delivery.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

#include "loader/log.h"
#include "xvmq_losses.skel.h"

namespace xvmq {

std::string_view loss_name(uint32_t loss) {
  switch (loss) {
    case XVMQ_LOSS_CPU_QUEUE_FULL:
      return "cpu_queue_full";
    case XVMQ_LOSS_NO_DEVICE:
      return "no_device";
    case XVMQ_LOSS_REDIRECT:
      return "redirect_failed";
    case XVMQ_LOSS_NO_META:
      return "no_metadata";
    default:
      return "?";
  }
}

std::string_view xmit_loss_name(uint32_t loss) {
  switch (loss) {
    case XVMQ_XMIT_RING_FULL:
      return "ring_full";
    case XVMQ_XMIT_NO_QUEUE:
      return "no_queue";
    case XVMQ_XMIT_NOT_SUPPORTED:
      return "not_supported";
    case XVMQ_XMIT_ERROR:
      return "xmit_error";
    default:
      return "?";
  }
}

namespace {

Status update(int fd, const void* key, const void* value, const std::string& what) {
  if (bpf_map_update_elem(fd, key, value, BPF_ANY) != 0) return make_error(errno, what);
  return {};
}

Status erase(int fd, const void* key, const std::string& what) {
  if (bpf_map_delete_elem(fd, key) != 0 && errno != ENOENT) return make_error(errno, what);
  return {};
}

uint64_t filter_word(const FilterKey& k) { return xvmq_filter_word(k.mac.data(), k.vlan); }

int ncpus() { return libbpf_num_possible_cpus(); }

}  // namespace

Result<std::unique_ptr<KernelDelivery>> KernelDelivery::open(const Classifier& cls) {
  std::unique_ptr<KernelDelivery> kd(new KernelDelivery());
  struct Want {
    int* fd;
    const char* name;
  } wants[] = {
      {&kd->vmqs_fd_, XVMQ_MAP_VMQS},     {&kd->cpus_fd_, XVMQ_MAP_CPUS},        {&kd->devs_fd_, XVMQ_MAP_DEVS},
      {&kd->dests_fd_, XVMQ_MAP_DESTS},   {&kd->flows_fd_, XVMQ_MAP_FLOWS},      {&kd->done_fd_, XVMQ_MAP_DONE},
      {&kd->losses_fd_, XVMQ_MAP_LOSSES}, {&kd->xmit_fd_, XVMQ_MAP_XMIT_LOSSES}, {&kd->pending_fd_, XVMQ_MAP_PENDING}};
  for (const Want& w : wants) {
    *w.fd = cls.map_fd(w.name);
    if (*w.fd < 0) return Error{ENOENT, std::string("classifier map ") + w.name + " is not loaded"};
  }
  kd->cpumap_prog_fd_ = cls.cpumap_prog_fd();
  if (kd->cpumap_prog_fd_ < 0) return Error{ENOENT, "the classifier's CPUMAP program is not loaded"};
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(kd->cpus_fd_, &info, &len) != 0) return make_error(errno, "read the CPUMAP's id");
  kd->cpus_map_id_ = info.id;
  info = {};
  len = sizeof(info);
  if (bpf_obj_get_info_by_fd(kd->devs_fd_, &info, &len) != 0) return make_error(errno, "read the DEVMAP's id");
  kd->devs_map_id_ = info.id;
  return kd;
}

KernelDelivery::~KernelDelivery() {
  if (tracer_) xvmq_losses__destroy(tracer_);
}

Status KernelDelivery::trace_losses() {
  if (tracer_) return {};
  log::clear_captured();
  xvmq_losses* t = xvmq_losses__open();
  if (!t) return make_error(errno, "open the loss tracer");
  t->rodata->xvmq_cpus_id = cpus_map_id_;
  t->rodata->xvmq_devs_id = devs_map_id_;
  struct Shared {
    bpf_map* map;
    int fd;
  } shared[] = {
      {t->maps.xvmq_pending, pending_fd_},  {t->maps.xvmq_vmq_done, done_fd_},   {t->maps.xvmq_losses, losses_fd_},
      {t->maps.xvmq_xmit_losses, xmit_fd_}, {t->maps.xvmq_vmqs, vmqs_fd_},       {t->maps.xvmq_cpus, cpus_fd_},
      {t->maps.xvmq_devs, devs_fd_},        {t->maps.xvmq_vmq_flows, flows_fd_}, {t->maps.xvmq_dests, dests_fd_}};
  for (const Shared& s : shared) {
    bpf_map__set_pin_path(s.map, nullptr);
    if (int err = bpf_map__reuse_fd(s.map, s.fd); err) {
      xvmq_losses__destroy(t);
      return make_error(err, std::string("share map ") + bpf_map__name(s.map) + " with the loss tracer");
    }
  }
  if (int err = xvmq_losses__load(t); err) {
    xvmq_losses__destroy(t);
    return make_error(err, "load the loss tracer");
  }
  if (int err = xvmq_losses__attach(t); err) {
    xvmq_losses__destroy(t);
    return make_error(err, "attach the loss tracer to the xdp tracepoints");
  }
  tracer_ = t;
  return {};
}

Status KernelDelivery::set_cpu(uint32_t cpu, uint32_t qsize) {
  bpf_cpumap_val v{};
  v.qsize = qsize;
  v.bpf_prog.fd = cpumap_prog_fd_;
  return update(cpus_fd_, &cpu, &v, "CPUMAP entry of CPU " + std::to_string(cpu));
}

Status KernelDelivery::clear_cpu(uint32_t cpu) {
  return erase(cpus_fd_, &cpu, "clear the CPUMAP entry of CPU " + std::to_string(cpu));
}

int KernelDelivery::cpu_thread_pid(uint32_t cpu) const {
  const std::string want = "cpumap/" + std::to_string(cpu) + "/map:" + std::to_string(cpus_map_id_);
  DIR* d = opendir("/proc");
  if (!d) return 0;
  int found = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    std::ifstream comm(std::string("/proc/") + e->d_name + "/comm");
    std::string name;
    // comm holds 15 characters: compare what it has.
    if (std::getline(comm, name) && !name.empty() && want.compare(0, name.size(), name) == 0 &&
        name.size() >= std::min<size_t>(want.size(), 15)) {
      found = std::stoi(e->d_name);
      break;
    }
  }
  closedir(d);
  return found;
}

Status KernelDelivery::set_vmq(uint32_t vmq, uint32_t cpu, uint32_t flags) {
  xvmq_vmq_conf c{cpu, flags};
  return update(vmqs_fd_, &vmq, &c, "conf of vmq " + std::to_string(vmq));
}

Status KernelDelivery::clear_vmq(uint32_t vmq) {
  xvmq_vmq_conf c{};
  return update(vmqs_fd_, &vmq, &c, "clear the conf of vmq " + std::to_string(vmq));
}

Status KernelDelivery::set_dev(uint32_t key, int ifindex) {
  bpf_devmap_val v{};
  v.ifindex = static_cast<uint32_t>(ifindex);
  return update(devs_fd_, &key, &v,
                "DEVMAP entry " + std::to_string(key) + " (ifindex " + std::to_string(ifindex) + ")");
}

Status KernelDelivery::clear_dev(uint32_t key) {
  return erase(devs_fd_, &key, "clear DEVMAP entry " + std::to_string(key));
}

Status KernelDelivery::set_dest(const FilterKey& key, const xvmq_dest& dest) {
  const uint64_t w = filter_word(key);
  return update(dests_fd_, &w, &dest, "destination " + key.to_string());
}

Status KernelDelivery::clear_dest(const FilterKey& key) {
  const uint64_t w = filter_word(key);
  return erase(dests_fd_, &w, "clear destination " + key.to_string());
}

Result<KernelDelivery::Flow> KernelDelivery::flow(uint32_t vmq) const {
  const int n = ncpus();
  if (n <= 0) return make_error(n, "count possible CPUs");
  std::vector<xvmq_vmq_flow> flows(static_cast<size_t>(n));
  if (bpf_map_lookup_elem(flows_fd_, &vmq, flows.data()) != 0) return make_error(errno, "read xvmq_vmq_flows");
  Flow f;
  for (int cpu = 0; cpu < n && cpu < XVMQ_MAX_CPUS; cpu++) {
    f.sent += flows[static_cast<size_t>(cpu)].enq;
    f.forced_moves += flows[static_cast<size_t>(cpu)].forced;
    uint32_t slot = XVMQ_DONE_SLOT(vmq, static_cast<uint32_t>(cpu));
    uint64_t d = 0;
    if (bpf_map_lookup_elem(done_fd_, &slot, &d) == 0) f.passed += d;
  }
  return f;
}

Result<KernelCounters> KernelDelivery::counters() const {
  const int n = ncpus();
  if (n <= 0) return make_error(n, "count possible CPUs");
  KernelCounters c;
  std::vector<uint64_t> per(static_cast<size_t>(n));
  for (uint32_t vmq = 0; vmq < XVMQ_MAX_VMQS; vmq++)
    for (uint32_t l = 0; l < XVMQ_LOSS_COUNT; l++) {
      uint32_t slot = XVMQ_LOSS_SLOT(vmq, l);
      if (bpf_map_lookup_elem(losses_fd_, &slot, per.data()) != 0) return make_error(errno, "read xvmq_losses");
      for (uint64_t v : per) c.loss[vmq][l] += v;
    }
  xvmq_xmit_key key{}, next{};
  const xvmq_xmit_key* prev = nullptr;
  while (bpf_map_get_next_key(xmit_fd_, prev, &next) == 0) {
    if (bpf_map_lookup_elem(xmit_fd_, &next, per.data()) == 0 && next.loss < XVMQ_XMIT_COUNT)
      for (uint64_t v : per) c.xmit[static_cast<int>(next.ifindex)][next.loss] += v;
    key = next;
    prev = &key;
  }
  for (uint32_t vmq = 1; vmq < XVMQ_MAX_VMQS; vmq++) {
    auto f = flow(vmq);
    if (!f) return f.error();
    c.sent[vmq] = f->sent;
    c.passed[vmq] = f->passed;
    c.forced_moves[vmq] = f->forced_moves;
  }
  return c;
}

}  // namespace xvmq
