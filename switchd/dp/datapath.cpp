#include "switchd/dp/datapath.h"

#include <sys/resource.h>

#include <future>

#include "loader/grace.h"
#include "loader/netdev.h"
#include "switchd/dp/cpu_affinity.h"
#include "switchd/dp/steering.h"
#include "switchd/host/netlink.h"
#include "switchd/host/service.h"

namespace xvmq::switchd {
namespace {

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

// After slots, filters or a VM port program were taken away, and before
// the sockets they led to are closed: once this returns, no XDP run that
// could still redirect into those sockets is running, and what such runs
// redirected is in the sockets' RX rings, where closing (remove_nic,
// set_vmq) takes the buffers back (loader/grace.h). Without it a frame
// could land after the drain and its buffer be lost to the queue's pool.
void wait_for_xdp_runs() {
  if (auto st = wait_for_xdp_programs(); !st)
    service::log(service::Level::Warn, "%s; closing the sockets anyway", st.error().message.c_str());
}

}  // namespace

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
                             " + headroom " + std::to_string(w.headroom) + " + burst budget " +
                             std::to_string(w.burst_budget) + " + --max-nics " + std::to_string(opts.max_nics) + " x " +
                             std::to_string(per_nic) + " socket(s) x --nic-floor " + std::to_string(w.nic_floor) +
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
    return Error{EINVAL, "uplink " + uplink + " has " + std::to_string(dev->rx_queues) +
                             " receive queues; xvmq serves at most " + std::to_string(XVMQ_MAX_QUEUES)};
  std::unique_ptr<Datapath> dp(new Datapath());
  dp->uplink_ = uplink;
  dp->fdb_ = std::make_unique<Fdb>(opts.fdb_size);
  dp->driver_ = dev->driver;
  dp->opts_ = opts;
  if (auto st = dp->open_classifier(); !st) return st.error();
  if (auto st = dp->start_queues(dev->rx_queues); !st) return st.error();
  if (opts.host_stack) {
    // host=stack: the group frames the classifier passed to the host's
    // stack, flooded to the VMs by one worker, so that their order is kept.
    QueueWorker* first = dp->workers_.front().get();
    auto reader = StackReader::start(
        uplink, dev->ifindex, [first](std::vector<uint8_t> frame) { first->inject_from_uplink(std::move(frame)); });
    if (!reader) return reader.error();
    dp->stack_reader_ = std::move(reader.value());
    if (auto st = dp->cls_->set_host_groups(true); !st) return st.error();
  } else {
    (void)dp->cls_->set_host_groups(false);
  }
  dp->aging_ = std::make_unique<FdbAging>(*dp->fdb_, opts.fdb_age_s);
  return dp;
}

Status Datapath::open_classifier() {
  const std::string& uplink = uplink_;
  auto cls = Classifier::open({opts_.pin_root + "/" + uplink, max_frame(opts_.worker.frame_size)});
  if (!cls) return cls.error();
  cls_ = std::make_unique<Classifier>(std::move(cls.value()));
  auto present = Classifier::query(uplink);
  if (!present) return present.error();
  if (*present && (*present)->name == kClassifierName && cls_->adopted_maps().size() == 4) {
    adopted_ = true;  // a previous switchd's classifier, with its maps
    mode_ = (*present)->mode;
  } else if (*present && (*present)->name == kClassifierName) {
    // A previous switchd's classifier whose pins are gone (pin directory
    // removed, bpffs remounted): its maps cannot be reached, so a fresh
    // classifier replaces it in one step and the caller installs the filters
    // and sockets again from the saved state.
    auto t = cls_->take_over(uplink);
    if (!t) return t.error();
    mode_ = t->mode;
    service::log(service::Level::Warn,
                 "took over the classifier on %s (id %u -> id %u, mode %s): its pins in %s were gone%s", uplink.c_str(),
                 t->old_id, t->new_id, std::string(to_string(t->mode)).c_str(), cls_->pin_dir().c_str(),
                 t->same_build ? "" : "; the old one was another build of xvmq's classifier");
  } else {
    auto mode = cls_->attach(uplink, opts_.mode);
    if (!mode) return mode.error();
    mode_ = *mode;
  }
  // switchd is the filters' only writer while it runs.
  if (auto st = cls_->lock_filters(std::chrono::milliseconds(0)); !st) return st;
  if (opts_.host_stack) {
    auto mac = netlink::link_mac(uplink);
    if (!mac)
      return Error{mac.error().code, "uplink " + uplink + ": the MAC to keep for the host: " + mac.error().message};
    if (auto st = cls_->set_host_mac(*mac); !st) return st;
  }
  return {};
}

Status Datapath::start_queues(uint32_t rx_queues) {
  const DatapathOptions& opts = opts_;
  if (opts.dedicated_queues >= rx_queues)
    return Error{EINVAL, "uplink " + uplink_ + " has " + std::to_string(rx_queues) +
                             " receive queue(s): " + std::to_string(opts.dedicated_queues) +
                             " dedicated would leave none for the default queue"};
  const uint32_t general = rx_queues - opts.dedicated_queues;
  auto wo = general_worker_options(opts, general, opts.dedicated_queues);
  if (!wo) return Error{wo.error().code, "uplink " + uplink_ + ": " + wo.error().message};
  worker_opts_ = *wo;
  const auto cpus = allowed_cpus();
  const auto irq = [this](uint32_t q) { return irq_cpu(uplink_, q); };
  for (uint32_t q = 0; q < rx_queues; q++) {
    QueueCpu qc = choose_queue_cpu(q, opts.queue_cpus, irq, cpus);
    QueueInfo info{q, qc.cpu, qc.source};
    if (q >= general) {  // served when a hardware-steered vmq takes it
      reserved_.push_back(info);
      continue;
    }
    auto w = std::make_unique<QueueWorker>(uplink_, q, info.cpu, worker_opts_, fdb_.get());
    auto fd = w->start();
    if (!fd) return fd.error();
    if (auto st = cls_->set_socket(XVMQ_DEFAULT_VMQ, q, *fd); !st) return st;
    workers_.push_back(std::move(w));
    queues_.push_back(info);
  }
  const WorkerOptions& w = worker_opts_;
  const uint64_t bytes = uint64_t{w.frames} * w.frame_size;
  service::log(
      service::Level::Info,
      "uplink %s: %zu queue(s), each a UMEM of %u frames x %u bytes = %.1f MiB pinned by the kernel (%.1f MiB in all); "
      "room for %u NICs (floor %u per socket, burst budget %u, uplink reserve %u, headroom %u)",
      uplink_.c_str(), workers_.size(), w.frames, w.frame_size, bytes / 1048576.0, bytes * workers_.size() / 1048576.0,
      opts.max_nics, w.nic_floor, w.burst_budget, w.uplink_reserve, w.headroom);
  return {};
}

uint32_t Datapath::now_s() { return fdb_now_s(); }

Datapath::~Datapath() {
  stack_reader_.reset();
  aging_.reset();
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
  const NicDesc& nic = b.nic;
  std::vector<std::pair<FilterKey, FilterValue>> out;
  for (uint16_t v = 0; v <= XVMQ_VLAN_MAX; v++)
    if (nic.vlans.carries(v)) out.push_back({{nic.mac, v}, {b.vmq_id, !nic.vlans.sends_tagged(v)}});
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
    return Error{EINVAL, "backend " + nic.backend + " has " + std::to_string(dev->rx_queues) +
                             " receive queue(s); the uplink has " + std::to_string(all) +
                             ": give it as many (ip link add ... numrxqueues " + std::to_string(all) + " numtxqueues " +
                             std::to_string(all) + ")"};
  auto c = std::make_unique<Connected>();
  c->spec = bound;
  c->steering = steer(bound);

  auto port = VmPort::attach(*dev, max_frame(opts_.worker.frame_size));
  if (!port) return with_fd_limit(port.error());
  c->port = std::move(port.value());

  auto& counters = counters_[nic.name];
  if (counters.size() != workers_.size() + 1) {
    counters.clear();
    for (size_t i = 0; i <= workers_.size(); i++) counters.push_back(std::make_shared<NicCounters>());
  }
  size_t done = 0;  // general workers that have the NIC
  Status st;
  if (c->steering.hardware) st = start_dedicated(*c, counters.back());
  if (st) st = add_to_workers(*c, counters, done);
  if (st && bound.vmq_id) st = install_filter(bound);
  if (!st) {
    undo_connect(*c, done);
    return with_fd_limit(st.error());
  }
  connected_[nic.name] = std::move(c);
  return {};
}

SteeringState Datapath::steer(const NicBinding& bound) const {
  const NicDesc& nic = bound.nic;
  SteeringState ss;
  ss.requested_hw = nic.hardware_steering();
  if (!nic.hardware_steering()) return ss;
  HardwareSteeringAsk ask{
      uplink_, nic.mac, nic.vlans.access, bound.vmq_id, {}, {}, opts_.flow_rules == FlowRules::Ethtool};
  for (const auto& r : reserved_) ask.reserved.push_back({r.queue, r.cpu});
  for (const auto& [_, o] : connected_)
    if (o->steering.hardware) ask.taken.push_back(static_cast<uint32_t>(o->steering.queue));
  SteeringDecision d = decide_hardware_steering(ask);
  ss.hardware = d.hardware;
  ss.reason = d.reason;
  ss.queue = d.queue;
  ss.cpu = d.cpu;
  ss.rule_location = d.rule_location;
  return ss;
}

// The vmq's own queue and UMEM; its vmq socket in the classifier's slot of
// that queue, its backend socket in the VM port's.
Status Datapath::start_dedicated(Connected& c, const std::shared_ptr<NicCounters>& counters) {
  const NicDesc& nic = c.spec.nic;
  const SteeringState& ss = c.steering;
  c.dedicated =
      std::make_unique<QueueWorker>(uplink_, static_cast<uint32_t>(ss.queue), ss.cpu, dedicated_worker_options(opts_));
  WorkerNic wn{.nic = nic, .vmq = static_cast<int>(c.spec.vmq_id), .counters = counters};
  auto socks = c.dedicated->start_dedicated(wn, workers_.front().get());
  if (!socks) return socks.error();
  if (auto st = cls_->set_socket(c.spec.vmq_id, static_cast<uint32_t>(ss.queue), socks->vmq_fd); !st) return st;
  return c.port->set_slot(socks->backend.front().first, socks->backend.front().second);
}

// The NIC on each general worker, from workers_[done] on; `done` counts the
// workers that have it (to undo), one that failed after add_nic included.
Status Datapath::add_to_workers(Connected& c, const std::vector<std::shared_ptr<NicCounters>>& counters, size_t& done) {
  const NicDesc& nic = c.spec.nic;
  const SteeringState& ss = c.steering;
  for (; done < workers_.size(); done++) {
    // Reserved queues without this NIC's dedicated worker: a general worker
    // receives what the VM sends on them.
    std::vector<uint32_t> extra;
    for (size_t r = 0; r < reserved_.size(); r++)
      if (!(ss.hardware && static_cast<int>(reserved_[r].queue) == ss.queue) && r % workers_.size() == done)
        extra.push_back(reserved_[r].queue);
    int vmq = ss.hardware ? 0 : static_cast<int>(c.spec.vmq_id);  // a dedicated vmq has its socket on its queue only
    WorkerNic wn{.nic = nic, .vmq = vmq, .counters = counters[done], .extra_queues = extra};
    auto socks = workers_[done]->add_nic(wn);
    if (!socks) return socks.error();
    Status st;
    for (auto [q, fd] : socks->backend)
      if (st = c.port->set_slot(q, fd); !st) break;
    if (st && vmq) st = cls_->set_socket(c.spec.vmq_id, workers_[done]->queue(), socks->vmq_fd);
    if (!st) {
      done++;
      return st;
    }
  }
  return {};
}

void Datapath::undo_connect(Connected& c, size_t done) {
  const NicDesc& nic = c.spec.nic;
  const size_t all = workers_.size() + reserved_.size();
  if (c.spec.vmq_id)
    for (size_t i = 0; i < all; i++) (void)cls_->clear_socket(c.spec.vmq_id, static_cast<uint32_t>(i));
  c.port.reset();
  wait_for_xdp_runs();  // no run still redirects into the sockets closed next
  c.dedicated.reset();
  for (size_t i = 0; i < done; i++) (void)workers_[i]->remove_nic(nic.name);
  if (c.steering.rule_location)
    if (auto hw = HardwareSteering::open(uplink_); hw) (void)hw->remove_rule(*c.steering.rule_location);
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
  wait_for_xdp_runs();  // no run still redirects into the sockets closed next
  Status st;
  it->second->dedicated.reset();  // its UMEM goes with it: nothing to take back
  if (auto loc = it->second->steering.rule_location)
    if (auto hw = HardwareSteering::open(uplink_); hw)
      if (auto s = hw->remove_rule(*loc); !s) st = s;
  // Each worker closes the NIC's sockets on its queue, a grace period each
  // in the kernel: all workers at once.
  std::vector<std::future<Status>> removed;
  for (auto& w : workers_)
    removed.push_back(std::async(std::launch::async, [&w, &name] { return w->remove_nic(name); }));
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
    wait_for_xdp_runs();  // no run still redirects into the vmq sockets set_vmq closes
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
  stack_reader_.reset();
  for (auto& [name, c] : connected_) {
    if (c->spec.vmq_id) clear_filter(c->spec);
    c->port.reset();
  }
  wait_for_xdp_runs();  // no run still redirects into the sockets closed next
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

std::optional<DeliveryState> Datapath::delivery(const std::string& nic) const {
  auto it = connected_.find(nic);
  if (it == connected_.end()) return std::nullopt;
  DeliveryState d;
  d.effective = Delivery::Xsk;
  if (it->second->spec.nic.delivery != Delivery::Xsk) d.why = "kernel delivery is not built yet";
  return d;
}

Status Datapath::set_vmq_cpu(const std::string& nic, std::optional<uint32_t> cpu) {
  (void)cpu;
  auto it = connected_.find(nic);
  if (it == connected_.end()) return {};  // applied at connect
  return Error{ENOTSUP, "nic " + nic + ": moving a vmq is not built yet"};
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
