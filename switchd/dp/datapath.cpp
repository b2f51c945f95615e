#include "switchd/dp/datapath.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <sched.h>

#include <chrono>
#include <cstring>
#include <iterator>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include "loader/log.h"
#include "loader/netdev.h"
#include "switchd/host/netlink.h"
#include "switchd/host/service.h"
#include "switchd/dp/steering.h"
#include "xvmq_vmport.skel.h"

namespace xvmq::switchd {
namespace {

// In-flight XDP runs that found a slot just cleared finish well within this.
constexpr auto kGrace = std::chrono::milliseconds(5);

// The CPU of a receive queue's interrupt, from /proc/interrupts names such
// as "eth0-rx-1" or "eth0-TxRx-1"; -1 when there is none (veth).
int irq_cpu(const std::string& dev, uint32_t queue) {
  std::ifstream in("/proc/interrupts");
  std::string line;
  const std::string q = std::to_string(queue);
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::istringstream words(line.substr(colon + 1));
    std::string w, last;
    while (words >> w) last = w;
    if (last.rfind(dev + "-", 0) != 0) continue;
    if (last.size() < q.size() + 1 || last.compare(last.size() - q.size() - 1, std::string::npos, "-" + q) != 0) continue;
    if (last.find("tx-") != std::string::npos) continue;
    std::ifstream aff("/proc/irq/" + line.substr(0, colon).substr(line.find_first_not_of(' ')) + "/smp_affinity_list");
    int cpu = -1;
    if (aff >> cpu) return cpu;
  }
  return -1;
}

// Out of file descriptors: name the limit (each NIC takes a socket per
// queue and its VM port program's fds).
Error with_fd_limit(Error e) {
  if (e.code != EMFILE && e.code != ENFILE) return e;
  if (e.message.find("RLIMIT_NOFILE") != std::string::npos || e.message.find("file-max") != std::string::npos) return e;
  // libbpf's log of the load is noise here: the kernel had no fd to give.
  if (auto at = e.message.find(" (libbpf:"); at != std::string::npos) e.message.resize(at);
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  e.message += e.code == ENFILE ? " (the system's open files, fs.file-max, are exhausted)"
                                : " (switchd's RLIMIT_NOFILE " + std::to_string(rl.rlim_cur) +
                                      " reached; raise LimitNOFILE in its unit, or ulimit -n)";
  return e;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; c++)
      if (CPU_ISSET(c, &set)) out.push_back(c);
  if (out.empty()) out.push_back(0);
  return out;
}

}  // namespace

// The VM port program on one backend netdev, with its socket slots.
class Datapath::VmPort {
 public:
  ~VmPort() {
    if (ifindex_) bpf_xdp_detach(ifindex_, flags_, nullptr);
    if (skel_) xvmq_vmport__destroy(skel_);
  }
  static Result<std::unique_ptr<VmPort>> attach(const NetdevInfo& dev, uint32_t max_frame) {
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
  Status set_slot(uint32_t queue, int fd) {
    if (bpf_map__update_elem(skel_->maps.xvmq_port_xsks, &queue, sizeof(queue), &fd, sizeof(fd), BPF_ANY) != 0)
      return make_error(errno, "VM port slot " + std::to_string(queue));
    return {};
  }
  // Frames the VM sent that were too long, summed over CPUs.
  uint64_t too_big() const {
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
  void clear_slots(uint32_t queues) {
    for (uint32_t q = 0; q < queues; q++)
      (void)bpf_map__delete_elem(skel_->maps.xvmq_port_xsks, &q, sizeof(q), BPF_ANY);
  }

 private:
  xvmq_vmport* skel_ = nullptr;
  int ifindex_ = 0;
  uint32_t flags_ = 0;
};

struct Datapath::Connected {
  NicBinding spec;
  std::unique_ptr<VmPort> port;
  SteeringState steering;
  std::unique_ptr<QueueWorker> dedicated;  // the vmq's own queue and UMEM
};

Result<WorkerOptions> general_worker_options(const DatapathOptions& opts, uint32_t general, uint32_t reserved) {
  WorkerOptions w = opts.worker;
  derive_buffer_rule(w);
  const uint32_t per_nic = sockets_per_nic(general, reserved);
  w.max_sockets = opts.max_nics * per_nic;
  const uint64_t need = min_frames(w);
  if (need > (1u << 20))
    return Error{EINVAL, "--max-nics " + std::to_string(opts.max_nics) + " needs " + std::to_string(need) +
                             " UMEM frames per queue, more than 1048576: lower --max-nics or --nic-floor"};
  if (!w.frames) w.frames = static_cast<uint32_t>(need);
  if (w.frames < need)
    return Error{EINVAL, "--umem-frames " + std::to_string(w.frames) + " is below the buffer rule's minimum of " +
                             std::to_string(need) + " per queue: uplink reserve " + std::to_string(w.uplink_reserve) +
                             " + headroom " + std::to_string(w.headroom) + " + burst budget " + std::to_string(w.burst_budget) +
                             " + --max-nics " + std::to_string(opts.max_nics) + " x " + std::to_string(per_nic) +
                             " socket(s) x --nic-floor " + std::to_string(w.nic_floor) +
                             " (docs/architecture.md, Receive buffers); raise --umem-frames or lower --max-nics"};
  return w;
}

WorkerOptions dedicated_worker_options(const DatapathOptions& opts) {
  WorkerOptions w = opts.worker;
  derive_buffer_rule(w);
  w.frames = opts.vmq_umem_frames;
  w.max_sockets = 1;
  // Half the UMEM (at most a ring) for the uplink's queue, an eighth for
  // transmit, one floor; the rest is the NIC's burst.
  w.uplink_reserve = std::min(w.ring_size, w.frames / 2);
  w.headroom = w.frames / 8;
  w.burst_budget = w.frames - w.uplink_reserve - w.headroom - w.nic_floor;
  w.burst_cap = std::min(w.burst_cap, w.nic_floor + w.burst_budget);
  return w;
}

Result<std::unique_ptr<Datapath>> Datapath::open(const std::string& uplink, const DatapathOptions& opts) {
  auto dev = netdev_info(uplink);
  if (!dev) return dev.error();
  if (dev->rx_queues > XVMQ_MAX_QUEUES)
    return Error{EINVAL, "uplink " + uplink + " has " + std::to_string(dev->rx_queues) + " receive queues; xvmq serves at most " +
                             std::to_string(XVMQ_MAX_QUEUES)};
  std::unique_ptr<Datapath> dp(new Datapath());
  dp->uplink_ = uplink;
  dp->fdb_ = std::make_unique<Fdb>(opts.fdb_size);
  dp->driver_ = dev->driver;
  dp->opts_ = opts;

  auto cls = Classifier::open({opts.pin_root + "/" + uplink, max_frame(opts.worker.frame_size)});
  if (!cls) return cls.error();
  dp->cls_ = std::make_unique<Classifier>(std::move(cls.value()));
  auto present = Classifier::query(uplink);
  if (!present) return present.error();
  if (*present && (*present)->name == kClassifierName && dp->cls_->adopted_maps().size() == 4) {
    dp->adopted_ = true;  // a previous switchd's classifier, with its maps
    dp->mode_ = (*present)->mode;
  } else if (*present && (*present)->name == kClassifierName) {
    // A previous switchd's classifier whose pins are gone (pin directory
    // removed, bpffs remounted): its maps cannot be reached, so a fresh
    // classifier replaces it in one step and the caller installs the filters
    // and sockets again from the saved state.
    auto t = dp->cls_->take_over(uplink);
    if (!t) return t.error();
    dp->mode_ = t->mode;
    service::log(service::Level::Warn,
                 "took over the classifier on %s (id %u -> id %u, mode %s): its pins in %s were gone%s",
                 uplink.c_str(), t->old_id, t->new_id, std::string(to_string(t->mode)).c_str(),
                 dp->cls_->pin_dir().c_str(), t->same_build ? "" : "; the old one was another build of xvmq's classifier");
  } else {
    auto mode = dp->cls_->attach(uplink, opts.mode);
    if (!mode) return mode.error();
    dp->mode_ = *mode;
  }
  // switchd is the filters' only writer while it runs.
  if (auto st = dp->cls_->lock_filters(std::chrono::milliseconds(0)); !st) return st.error();
  if (opts.host_stack) {
    auto mac = netlink::link_mac(uplink);
    if (!mac) return Error{mac.error().code, "uplink " + uplink + ": the MAC to keep for the host: " + mac.error().message};
    if (auto st = dp->cls_->set_host_mac(*mac); !st) return st.error();
  }

  if (opts.dedicated_queues >= dev->rx_queues)
    return Error{EINVAL, "uplink " + uplink + " has " + std::to_string(dev->rx_queues) + " receive queue(s): " +
                             std::to_string(opts.dedicated_queues) + " dedicated would leave none for the default queue"};
  const uint32_t general = dev->rx_queues - opts.dedicated_queues;
  auto wo = general_worker_options(opts, general, opts.dedicated_queues);
  if (!wo) return Error{wo.error().code, "uplink " + uplink + ": " + wo.error().message};
  dp->worker_opts_ = *wo;
  auto cpus = allowed_cpus();
  for (uint32_t q = 0; q < dev->rx_queues; q++) {
    QueueInfo info{q, 0, ""};
    if (auto it = opts.queue_cpus.find(q); it != opts.queue_cpus.end()) {
      info.cpu = it->second;
      info.cpu_source = "configured";
    } else if (int c = irq_cpu(uplink, q); c >= 0) {
      info.cpu = c;
      info.cpu_source = "interrupt affinity";
    } else {
      info.cpu = cpus[q % cpus.size()];
      info.cpu_source = "spread";
    }
    if (q >= general) {  // served when a hardware-steered vmq takes it
      dp->reserved_.push_back(info);
      continue;
    }
    auto w = std::make_unique<QueueWorker>(uplink, q, info.cpu, dp->worker_opts_, dp->fdb_.get());
    auto fd = w->start();
    if (!fd) return fd.error();
    if (auto st = dp->cls_->set_socket(XVMQ_DEFAULT_VMQ, q, *fd); !st) return st.error();
    dp->workers_.push_back(std::move(w));
    dp->queues_.push_back(info);
  }
  {
    const WorkerOptions& w = dp->worker_opts_;
    const uint64_t bytes = uint64_t{w.frames} * w.frame_size;
    service::log(service::Level::Info,
                 "uplink %s: %zu queue(s), each a UMEM of %u frames x %u bytes = %.1f MiB pinned by the kernel (%.1f MiB in all); "
                 "room for %u NICs (floor %u per socket, burst budget %u, uplink reserve %u, headroom %u)",
                 uplink.c_str(), dp->workers_.size(), w.frames, w.frame_size, bytes / 1048576.0,
                 bytes * dp->workers_.size() / 1048576.0, opts.max_nics, w.nic_floor, w.burst_budget, w.uplink_reserve, w.headroom);
  }
  if (opts.host_stack) {
    if (auto st = dp->start_stack_reader(dev->ifindex); !st) return st.error();
    if (auto st = dp->cls_->set_host_groups(true); !st) return st.error();
  } else {
    (void)dp->cls_->set_host_groups(false);
  }
  Datapath* self = dp.get();
  dp->aging_ = std::thread([self] {
    std::unique_lock lock(self->aging_mu_);
    while (!self->aging_cv_.wait_for(lock, std::chrono::seconds(1), [self] { return self->stopping_; }))
      self->fdb_->expire(now_s(), self->opts_.fdb_age_s);
  });
  return dp;
}

Status Datapath::start_stack_reader(int ifindex) {
  // No protocol until the filter is on: nothing unfiltered gets queued.
  int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errno, "uplink " + uplink_ + ": AF_PACKET socket for the host's group frames");
  // Group destinations only (the I/G bit of the first byte).
  sock_filter code[] = {
      {BPF_LD | BPF_B | BPF_ABS, 0, 0, 0},
      {BPF_JMP | BPF_JSET | BPF_K, 0, 1, 1},
      {BPF_RET | BPF_K, 0, 0, 0xffffffff},
      {BPF_RET | BPF_K, 0, 0, 0},
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
  int one = 1;
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = ifindex;
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) != 0 ||
      setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) != 0 ||
      setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Error e = make_error(errno, "uplink " + uplink_ + ": AF_PACKET socket for the host's group frames");
    ::close(fd);
    return e;
  }
  stack_fd_ = fd;
  stack_stop_ = false;
  stack_reader_ = std::thread([this] {
    std::vector<uint8_t> buf(65536);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(tpacket_auxdata))];
    while (!stack_stop_.load()) {
      pollfd p{stack_fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      iovec iov{buf.data(), buf.size()};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = recvmsg(stack_fd_, &msg, MSG_DONTWAIT);
      if (n < 14) continue;
      std::vector<uint8_t> frame(buf.begin(), buf.begin() + n);
      // The stack took the VLAN tag off into the metadata: put it back.
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
        tpacket_auxdata aux;
        std::memcpy(&aux, CMSG_DATA(c), sizeof(aux));
        if (!(aux.tp_status & TP_STATUS_VLAN_VALID)) continue;
        uint16_t tpid = aux.tp_status & TP_STATUS_VLAN_TPID_VALID ? aux.tp_vlan_tpid : ETH_P_8021Q;
        uint8_t tag[4] = {static_cast<uint8_t>(tpid >> 8), static_cast<uint8_t>(tpid),
                          static_cast<uint8_t>(aux.tp_vlan_tci >> 8), static_cast<uint8_t>(aux.tp_vlan_tci)};
        frame.insert(frame.begin() + 12, tag, tag + 4);
      }
      // One worker for all: their order is kept.
      workers_.front()->inject_from_uplink(std::move(frame));
    }
  });
  return {};
}

void Datapath::stop_stack_reader() {
  stack_stop_ = true;
  if (stack_reader_.joinable()) stack_reader_.join();
  if (stack_fd_ >= 0) ::close(stack_fd_);
  stack_fd_ = -1;
}

uint32_t Datapath::now_s() {
  return static_cast<uint32_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

Datapath::~Datapath() {
  stop_stack_reader();
  {
    std::lock_guard lock(aging_mu_);
    stopping_ = true;
  }
  aging_cv_.notify_all();
  if (aging_.joinable()) aging_.join();
  // Sockets close with the workers; the kernel empties their slots.
  for (auto& [name, c] : connected_) {
    c->port.reset();
    c->dedicated.reset();
  }
  workers_.clear();
}

namespace {

// One filter per VLAN the NIC is on; the tag goes where the NIC takes the
// VLAN untagged (access, a trunk's native VLAN).
std::vector<std::pair<FilterKey, FilterValue>> filters_of(const NicBinding& b) {
  std::vector<std::pair<FilterKey, FilterValue>> out;
  for (uint16_t v = 0; v <= XVMQ_VLAN_MAX; v++)
    if (b.nic.vlans.carries(v)) out.push_back({{b.nic.mac, v}, {b.vmq_id, !b.nic.vlans.sends_tagged(v)}});
  return out;
}

}  // namespace

Status Datapath::install_filter(const NicBinding& nic) {
  for (const auto& [k, v] : filters_of(nic))
    if (auto st = cls_->set_filter(k, v); !st) return st;
  return {};
}

void Datapath::clear_filter(const NicBinding& nic) {
  for (const auto& [k, v] : filters_of(nic)) (void)cls_->clear_filter(k);
}

Status Datapath::connect(const NicBinding& bound) {
  const NicDesc& nic = bound.nic;
  if (connected_.count(nic.name)) return Error{EEXIST, "nic " + nic.name + " is already connected"};
  if (connected_.size() >= opts_.max_nics)
    return Error{ENOSPC, "the switch has receive buffers for " + std::to_string(opts_.max_nics) +
                             " connected NICs (--max-nics " + std::to_string(opts_.max_nics) +
                             "), all taken: disconnect one, or restart switchd with a larger --max-nics"};
  auto dev = netdev_info(nic.backend);
  if (!dev) return Error{dev.error().code, "backend of nic " + nic.name + ": " + dev.error().message};
  const size_t all = workers_.size() + reserved_.size();
  if (dev->rx_queues < all)
    return Error{EINVAL, "backend " + nic.backend + " has " + std::to_string(dev->rx_queues) + " receive queue(s); the uplink has " +
                             std::to_string(all) + ": give it as many (ip link add ... numrxqueues " + std::to_string(all) +
                             " numtxqueues " + std::to_string(all) + ")"};
  auto c = std::make_unique<Connected>();
  c->spec = bound;
  SteeringState& ss = c->steering;
  ss.requested_hw = nic.hardware_steering();

  // Hardware steering: a free reserved queue, and the NIC's rule for it.
  if (nic.hardware_steering()) {
    const QueueInfo* free = nullptr;
    for (const auto& r : reserved_) {
      bool taken = false;
      for (const auto& [_, o] : connected_) taken |= o->steering.hardware && o->steering.queue == static_cast<int>(r.queue);
      if (!taken) {
        free = &r;
        break;
      }
    }
    if (!bound.vmq_id)
      ss.reason = "the NIC has no vmq";
    else if (reserved_.empty())
      ss.reason = "no receive queue is reserved for dedication (--dedicated-queues)";
    else if (!free)
      ss.reason = "no dedicated queue is free (" + std::to_string(reserved_.size()) + " reserved, all taken)";
    else if (opts_.flow_rules == FlowRules::Ethtool) {
      auto hw = HardwareSteering::probe(uplink_);
      if (!hw) {
        ss.reason = choose_steering(SteeringMode::hardware, hw).reason;
      } else {
        std::optional<uint16_t> vlan;
        if (nic.vlans.access) vlan = nic.vlans.access;
        auto loc = hw->add_rule(nic.mac, vlan, free->queue);
        if (!loc)
          ss.reason = loc.error().message;
        else
          ss.rule_location = *loc;
      }
    }
    if (ss.reason.empty()) {
      ss.hardware = true;
      ss.queue = static_cast<int>(free->queue);
      ss.cpu = free->cpu;
    }
  }

  auto port = VmPort::attach(*dev, max_frame(opts_.worker.frame_size));
  if (!port) return with_fd_limit(port.error());
  c->port = std::move(port.value());

  auto& counters = counters_[nic.name];
  if (counters.size() != workers_.size() + 1) {
    counters.clear();
    for (size_t i = 0; i <= workers_.size(); i++) counters.push_back(std::make_shared<NicCounters>());
  }
  size_t done = 0;
  Status st;
  auto undo = [&] {
    if (bound.vmq_id)
      for (size_t i = 0; i < all; i++) (void)cls_->clear_socket(bound.vmq_id, static_cast<uint32_t>(i));
    c->port.reset();
    std::this_thread::sleep_for(kGrace);
    c->dedicated.reset();
    for (size_t i = 0; i < done; i++) (void)workers_[i]->remove_nic(nic.name);
    if (ss.rule_location)
      if (auto hw = HardwareSteering::open(uplink_); hw) (void)hw->remove_rule(*ss.rule_location);
  };
  if (ss.hardware) {
    c->dedicated = std::make_unique<QueueWorker>(uplink_, static_cast<uint32_t>(ss.queue), ss.cpu,
                                                 dedicated_worker_options(opts_));
    WorkerNic wn{.nic = nic, .vmq = static_cast<int>(bound.vmq_id), .counters = counters.back()};
    auto socks = c->dedicated->start_dedicated(wn, workers_.front().get());
    if (!socks) {
      st = socks.error();
    } else {
      st = cls_->set_socket(bound.vmq_id, static_cast<uint32_t>(ss.queue), socks->vmq_fd);
      if (st) st = c->port->set_slot(socks->backend.front().first, socks->backend.front().second);
    }
  }
  for (; st && done < workers_.size(); done++) {
    // Reserved queues without this NIC's dedicated worker: a general worker
    // receives what the VM sends on them.
    std::vector<uint32_t> extra;
    for (size_t r = 0; r < reserved_.size(); r++)
      if (!(ss.hardware && static_cast<int>(reserved_[r].queue) == ss.queue) && r % workers_.size() == done)
        extra.push_back(reserved_[r].queue);
    int vmq = ss.hardware ? 0 : static_cast<int>(bound.vmq_id);  // a dedicated vmq has its socket on its queue only
    WorkerNic wn{.nic = nic, .vmq = vmq, .counters = counters[done], .extra_queues = extra};
    auto socks = workers_[done]->add_nic(wn);
    if (!socks) {
      st = socks.error();
      break;
    }
    for (auto [q, fd] : socks->backend)
      if (st = c->port->set_slot(q, fd); !st) break;
    if (st && vmq) st = cls_->set_socket(bound.vmq_id, workers_[done]->queue(), socks->vmq_fd);
  }
  if (st && bound.vmq_id) st = install_filter(bound);
  if (!st) {
    undo();
    return with_fd_limit(st.error());
  }
  connected_[nic.name] = std::move(c);
  return {};
}

Status Datapath::disconnect(const std::string& name) {
  auto it = connected_.find(name);
  if (it == connected_.end()) return Error{ENOENT, "nic " + name + " is not connected"};
  const NicBinding& nic = it->second->spec;
  const uint32_t all = static_cast<uint32_t>(workers_.size() + reserved_.size());
  if (nic.vmq_id) {
    clear_filter(nic);
    for (uint32_t q = 0; q < all; q++) (void)cls_->clear_socket(nic.vmq_id, q);
  }
  it->second->port->clear_slots(all);
  it->second->port.reset();
  std::this_thread::sleep_for(kGrace);
  Status st;
  it->second->dedicated.reset();  // its UMEM goes with it: nothing to take back
  if (auto loc = it->second->steering.rule_location)
    if (auto hw = HardwareSteering::open(uplink_); hw)
      if (auto s = hw->remove_rule(*loc); !s) st = s;
  // Each worker closes the NIC's sockets on its queue, a grace period each
  // in the kernel: all workers at once.
  std::vector<std::future<Status>> removed;
  for (auto& w : workers_) removed.push_back(std::async(std::launch::async, [&w, &name] { return w->remove_nic(name); }));
  for (auto& r : removed)
    if (auto s = r.get(); !s && st) st = s;
  connected_.erase(it);
  return st;
}

Status Datapath::set_vmq(const NicBinding& bound, uint32_t vmq) {
  const NicDesc& nic = bound.nic;
  auto it = connected_.find(nic.name);
  if (it == connected_.end()) return {};  // applied at connect
  if (it->second->steering.hardware)
    return Error{EBUSY, "nic " + nic.name + " is hardware-steered on dedicated queue " +
                            std::to_string(it->second->steering.queue) + "; disconnect it to change its vmq"};
  NicBinding& cur = it->second->spec;
  if (cur.vmq_id) {
    clear_filter(cur);
    for (auto& w : workers_) (void)cls_->clear_socket(cur.vmq_id, w->queue());
    std::this_thread::sleep_for(kGrace);
    for (auto& w : workers_)
      if (auto fd = w->set_vmq(cur.nic.name, 0); !fd) return fd.error();
    cur.vmq_id = 0;
  }
  if (!vmq) return {};
  for (auto& w : workers_) {
    auto fd = w->set_vmq(cur.nic.name, static_cast<int>(vmq));
    if (!fd) return fd.error();
    if (auto st = cls_->set_socket(vmq, w->queue(), *fd); !st) return st;
  }
  cur.vmq_id = vmq;
  return install_filter(cur);
}

Status Datapath::set_statics(const std::string& name, const std::vector<std::pair<Mac, uint16_t>>& statics) {
  auto it = connected_.find(name);
  if (it == connected_.end()) return {};  // applied at connect
  it->second->spec.nic.statics = statics;
  // The software switch runs on the general workers only: a dedicated
  // worker hands what its VM sends to one of them.
  for (auto& w : workers_)
    if (auto st = w->set_statics(name, statics); !st) return st;
  return {};
}

Result<std::vector<std::pair<FilterKey, FilterValue>>> Datapath::filters() const { return cls_->filters(); }

void Datapath::forget(const std::string& name) { counters_.erase(name); }

Status Datapath::reconcile_filters(const std::vector<NicBinding>& keep) {
  auto filters = cls_->filters();
  if (!filters) return filters.error();
  for (const auto& [key, value] : *filters) {
    bool wanted = opts_.host_stack && value.vmq == XVMQ_HOST_VMQ;
    for (const auto& n : keep)
      for (const auto& [k, v] : filters_of(n)) wanted |= n.vmq_id && key == k && value == v;
    if (!wanted) (void)cls_->clear_filter(key);
  }
  return {};
}

Status Datapath::detach() {
  (void)cls_->set_host_groups(false);
  stop_stack_reader();
  for (auto& [name, c] : connected_) {
    if (c->spec.vmq_id) clear_filter(c->spec);
    c->port.reset();
  }
  std::this_thread::sleep_for(kGrace);
  for (auto& [name, c] : connected_) {
    c->dedicated.reset();
    for (auto& w : workers_) (void)w->remove_nic(name);
  }
  connected_.clear();
  workers_.clear();
  Status st = Classifier::detach_from(uplink_);
  if (!st && st.error().code != ENOENT) return st;
  return cls_->unpin();
}

Result<Counters> Datapath::classifier_counters() const { return cls_->counters(); }

std::map<std::string, NicTotals> Datapath::nic_totals() const {
  std::map<std::string, NicTotals> out;
  for (const auto& [name, per_queue] : counters_) {
    NicTotals& t = out[name];
    for (const auto& c : per_queue) {
      t.fast_frames += c->fast_frames;
      t.fast_bytes += c->fast_bytes;
      t.default_frames += c->default_frames;
      t.default_bytes += c->default_bytes;
      t.from_vm_frames += c->from_vm_frames;
      t.from_vm_bytes += c->from_vm_bytes;
      for (size_t d = 0; d < static_cast<size_t>(Drop::Count); d++)
        t.drops[std::string(to_string(static_cast<Drop>(d)))] += c->drops[d];
      for (size_t i = 0; i < kXskStats; i++) {
        t.xsk_backend[i] += c->xsk_backend[i];
        t.xsk_vmq[i] += c->xsk_vmq[i];
      }
    }
    // Frames the kernel lost at the NIC's sockets, by reason.
    t.drops["xsk_rx_dropped"] = t.xsk_backend[static_cast<size_t>(XskStat::RxDropped)];
    t.drops["xsk_rx_ring_full"] = t.xsk_backend[static_cast<size_t>(XskStat::RxRingFull)];
    t.drops["xsk_vmq_rx_dropped"] = t.xsk_vmq[static_cast<size_t>(XskStat::RxDropped)];
    t.drops["xsk_vmq_rx_ring_full"] = t.xsk_vmq[static_cast<size_t>(XskStat::RxRingFull)];
    auto it = connected_.find(name);
    t.drops["too_big"] = it != connected_.end() && it->second->port ? it->second->port->too_big() : 0;
  }
  return out;
}

std::optional<SteeringState> Datapath::steering(const std::string& nic) const {
  auto it = connected_.find(nic);
  if (it == connected_.end()) return std::nullopt;
  return it->second->steering;
}

std::vector<DedicatedInfo> Datapath::dedicated() const {
  std::vector<DedicatedInfo> out;
  for (const auto& [name, c] : connected_) {
    if (!c->dedicated) continue;
    const QueueCounters& qc = c->dedicated->counters();
    QueueInfo q{static_cast<uint32_t>(c->steering.queue), c->steering.cpu, "dedicated"};
    for (const auto& r : reserved_)
      if (static_cast<int>(r.queue) == c->steering.queue) q = r;
    out.push_back({q, name, c->dedicated->pool(), qc.rx_vmq.load(), qc.tx.load()});
  }
  return out;
}

std::vector<std::pair<QueueInfo, PoolState>> Datapath::pools() const {
  std::vector<std::pair<QueueInfo, PoolState>> out;
  for (size_t i = 0; i < workers_.size(); i++) out.emplace_back(queues_[i], workers_[i]->pool());
  return out;
}

}  // namespace xvmq::switchd
