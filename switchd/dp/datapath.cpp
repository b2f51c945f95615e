#include "switchd/dp/datapath.h"

#include <sys/resource.h>

#include <bpf/bpf.h>
#include <sched.h>
#include <unistd.h>

#include <cstring>
#include <future>

#include "common/names.h"
#include "loader/grace.h"
#include "loader/netdev.h"
#include "switchd/dp/cpu_affinity.h"
#include "switchd/dp/delivery_check.h"
#include "switchd/dp/steering.h"
#include "switchd/dp/vhost_user.h"
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
  DeliveryState delivery;
  int ifindex = 0;               // the backend's
  uint32_t backend_queues = 0;   // queues of the backend that sockets bind (at connect)
  uint32_t delivery_id = 0;      // names it on the workers' delivery rings
  Counter kernel_base;           // the vmq's classifier counter when kernel delivery began
  uint64_t tx_dropped_base = 0;  // the backend's tx_dropped then
  bool kernel = false;           // kernel delivery is running (conf, DEVMAP, CPUMAP set)
  bool tap = false;              // the backend is a tap
  // What its VM port program was last given (sync_ports()).
  bool port_synced = false;
  xvmq_port_conf conf{};
  std::vector<Mac> static_macs;
  // A vhost-user backend's device, which the workers share (vhost_user.h).
  std::shared_ptr<VhostUserDevice> vhost;
  // A tap's queues in use as its guest changes them (BackendWatch); null
  // for a backend whose count is fixed.
  std::shared_ptr<std::atomic<uint32_t>> live_queues;
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
  auto kd = KernelDelivery::open(*dp->cls_);
  if (!kd) return kd.error();
  dp->kd_ = std::move(kd.value());
  if (auto st = dp->kd_->trace_losses(); !st)
    service::log(service::Level::Warn, "kernel delivery's losses are not traced: %s", st.error().message.c_str());
  if (auto st = dp->kd_->set_dev(XVMQ_DEV_UPLINK, dev->ifindex); !st) return st.error();
  const KernelDeliveryCheck up = check_uplink_xmit(*dev);
  dp->uplink_xmit_ = up.ok;
  dp->uplink_xmit_why_ = up.why;
  if (!up.ok)
    service::log(service::Level::Info, "VMs' frames to the uplink go through the software switch: %s", up.why.c_str());
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
  if (auto watch = BackendWatch::start(opts.backend_grew); watch)
    dp->backend_watch_ = std::move(watch.value());
  else
    service::log(service::Level::Warn, "%s: a tap's queues are read at connect only", watch.error().message.c_str());
  return dp;
}

Status Datapath::open_classifier() {
  const std::string& uplink = uplink_;
  ClassifierOptions co{opts_.pin_root + "/" + uplink, max_frame(opts_.worker.frame_size)};
  if (opts_.spread_above) {
    // Per window of 2^XVMQ_LOAD_WINDOW_SHIFT ns; cold again below half.
    const uint64_t on = (uint64_t{opts_.spread_above} << XVMQ_LOAD_WINDOW_SHIFT) / 1000000000ull;
    co.spread_on = static_cast<uint32_t>(std::max<uint64_t>(on, 2));
    co.spread_off = co.spread_on / 2;
    // A hot CPU spills the vmqs it is the processor of to the next CPU
    // switchd may run on, as a queue's worker runs beside its CPU.
    const std::vector<int> cpus = allowed_cpus();
    co.spill.resize(XVMQ_MAX_CPUS);
    for (uint32_t c = 0; c < XVMQ_MAX_CPUS; c++) co.spill[c] = c;
    for (size_t i = 0; i < cpus.size(); i++)
      if (cpus[i] < XVMQ_MAX_CPUS) co.spill[cpus[i]] = static_cast<uint32_t>(cpus[(i + 1) % cpus.size()]);
  }
  auto cls = Classifier::open(co);
  if (!cls) return cls.error();
  cls_ = std::make_unique<Classifier>(std::move(cls.value()));
  auto present = Classifier::query(uplink);
  if (!present) return present.error();
  if (*present && (*present)->name == kClassifierName && cls_->adopted_maps().size() == cls_->state_maps()) {
    adopted_ = true;  // a previous switchd's classifier, with its maps
    mode_ = (*present)->mode;
    // Not attached again; loaded over the adopted maps for its CPUMAP program.
    if (auto st = cls_->load(); !st) return st;
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
  if (is_vhost_user(nic.backend)) return connect_vhost(bound);
  auto dev = netdev_info(nic.backend);
  if (!dev) return Error{dev.error().code, "backend of nic " + nic.name + ": " + dev.error().message};
  auto c = std::make_unique<Connected>();
  c->spec = bound;
  // Any number of backend queues (docs/architecture.md, "Backends with
  // fewer queues"): a worker whose queue the backend lacks hands its
  // deliveries to the worker that owns a backend queue.
  c->backend_queues = std::min<uint32_t>(dev->xsk_queues(), XVMQ_MAX_QUEUES);
  c->delivery_id = ++last_delivery_id_;
  c->steering = steer(bound);
  if (c->steering.hardware && static_cast<uint32_t>(c->steering.queue) >= c->backend_queues)
    software_steering(*c, *dev);
  c->ifindex = dev->ifindex;
  c->tap = dev->is_tap();
  if (dev->is_tap() && backend_watch_) c->live_queues = std::make_shared<std::atomic<uint32_t>>(c->backend_queues);
  c->delivery = decide_delivery(bound, *dev, c->steering);
  if (nic.delivery == Delivery::Kernel && c->delivery.effective != Delivery::Kernel)
    return Error{EOPNOTSUPP, "nic " + nic.name + " asks for kernel delivery: " + c->delivery.why};

  auto port = VmPort::attach(*dev, max_frame(opts_.worker.frame_size), kd_->devs_fd(), kd_->dests_fd());
  if (!port) return with_fd_limit(port.error());
  c->port = std::move(port.value());

  const auto& counters = nic_counters(nic.name);
  size_t done = 0;  // general workers that have the NIC
  Status st;
  if (c->steering.hardware) st = start_dedicated(*c, counters.back());
  if (st) st = add_to_workers(*c, counters, done);
  if (st && c->delivery.effective == Delivery::Kernel) st = start_kernel(*c);
  if (st && bound.vmq_id) st = install_filter(bound);
  if (!st) {
    stop_kernel(*c);
    undo_connect(*c, done);
    return with_fd_limit(st.error());
  }
  if (c->backend_queues < workers_.size())
    service::log(service::Level::Info,
                 "nic %s: backend %s has %u queue(s) for %zu uplink queues: the workers of queues %u.. hand what "
                 "they deliver to it to those of its queues",
                 nic.name.c_str(), nic.backend.c_str(), c->backend_queues, workers_.size(), c->backend_queues);
  if (c->live_queues) backend_watch_->watch(c->ifindex, nic.name, nic.backend, c->backend_queues, c->live_queues);
  connected_[nic.name] = std::move(c);
  if (auto s2 = sync_ports(); !s2)
    service::log(service::Level::Warn, "nic %s: VM egress in XDP: %s", nic.name.c_str(), s2.error().message.c_str());
  return {};
}

const std::vector<std::shared_ptr<NicCounters>>& Datapath::nic_counters(const std::string& nic) {
  auto& counters = counters_[nic];
  if (counters.size() != workers_.size() + 1) {
    counters.clear();
    for (size_t i = 0; i <= workers_.size(); i++) counters.push_back(std::make_shared<NicCounters>());
  }
  return counters;
}

// The guest is offered a queue pair per general worker. The first worker's
// thread serves the socket (the memory table, the rings' set-up) and pair
// 0; worker q copies frames into and out of pair q once the guest enabled
// it, and until then hands what it delivers to the NIC (its vmq socket's
// frames, the software switch's) to the first worker over its delivery
// ring, as for a backend with one queue. Kernel delivery needs a netdev:
// xsk always.
Status Datapath::connect_vhost(const NicBinding& bound) {
  const NicDesc& nic = bound.nic;
  const std::string why = "its backend is vhost-user: switchd's worker copies each frame into the guest's ring";
  if (nic.delivery == Delivery::Kernel)
    return Error{EOPNOTSUPP, "nic " + nic.name + " asks for kernel delivery, which redirects into a netdev: " + why};
  auto c = std::make_unique<Connected>();
  c->spec = bound;
  c->backend_queues = 1;
  c->delivery_id = ++last_delivery_id_;
  c->delivery.why = why;
  c->steering.requested_hw = nic.hardware_steering();
  if (nic.hardware_steering()) c->steering.reason = "a vhost-user backend is served by the general workers";
  // A queue pair per general worker; the first worker serves the socket.
  std::vector<int> epolls;
  for (const auto& w : workers_) epolls.push_back(w->epoll_fd());
  auto dev = VhostUserDevice::listen(std::string(vhost_user_path(nic.backend)), epolls, nic.name);
  if (!dev) return dev.error();
  c->vhost = std::move(dev.value());
  size_t done = 0;
  Status st = add_to_workers(*c, nic_counters(nic.name), done);
  if (st && bound.vmq_id) st = install_filter(bound);
  if (!st) {
    undo_connect(*c, done);
    return with_fd_limit(st.error());
  }
  service::log(service::Level::Info, "nic %s: vhost-user backend on %s, served by queue %u's worker", nic.name.c_str(),
               std::string(vhost_user_path(nic.backend)).c_str(), workers_.front()->queue());
  connected_[nic.name] = std::move(c);
  if (auto s2 = sync_ports(); !s2)
    service::log(service::Level::Warn, "nic %s: VM egress in XDP: %s", nic.name.c_str(), s2.error().message.c_str());
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

// A dedicated queue's worker delivers on the backend's queue of that number:
// a backend without it is steered in software, and `show` says why.
void Datapath::software_steering(Connected& c, const NetdevInfo& backend) const {
  SteeringState& ss = c.steering;
  if (ss.rule_location)
    if (auto hw = HardwareSteering::open(uplink_); hw) (void)hw->remove_rule(*ss.rule_location);
  ss.rule_location.reset();
  ss.hardware = false;
  ss.reason = "backend " + backend.name + " has " + std::to_string(c.backend_queues) +
              " queue(s), none for dedicated queue " + std::to_string(ss.queue) + "; " +
              queue_hint(backend, static_cast<uint32_t>(ss.queue) + 1);
  ss.queue = -1;
  ss.cpu = -1;
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
  const auto general = static_cast<uint32_t>(workers_.size());
  for (; done < workers_.size(); done++) {
    // Backend queues above the general ones (the reserved queues without
    // this NIC's dedicated worker, and those beyond the uplink's): a
    // general worker receives what the VM sends on them.
    std::vector<uint32_t> extra;
    for (uint32_t b = general; b < c.backend_queues; b++)
      if (!(ss.hardware && static_cast<int>(b) == ss.queue) && (b - general) % general == done) extra.push_back(b);
    // A dedicated vmq has its socket on its queue only; a kernel-delivered one has none.
    int vmq = ss.hardware || c.delivery.effective == Delivery::Kernel ? 0 : static_cast<int>(c.spec.vmq_id);
    WorkerNic wn{.nic = nic, .vmq = vmq, .counters = counters[done], .extra_queues = extra};
    wn.delivery_id = c.delivery_id;
    wn.vhost = c.vhost;
    if (done >= c.backend_queues) {  // no backend queue of this number: worker done % queues delivers
      wn.owner = workers_[done % c.backend_queues].get();
      wn.deliver_ring = wn.owner->delivery_ring(workers_[done]->queue());
    } else if (c.live_queues) {  // ... once the guest turns this queue off
      wn.live_queues = c.live_queues;
      wn.index = static_cast<uint32_t>(done);
      for (size_t i = 0; i < done; i++)
        wn.fallbacks.emplace_back(workers_[i].get(), workers_[i]->delivery_ring(workers_[done]->queue()));
    }
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
  if (it->second->live_queues) backend_watch_->unwatch(it->second->ifindex);
  if (nic.vmq_id) {
    clear_filter(nic);
    for (uint32_t q = 0; q < all; q++) (void)cls_->clear_socket(nic.vmq_id, q);
  }
  stop_kernel(*it->second);
  if (it->second->port) it->second->port->clear_slots(std::max(all, it->second->backend_queues));
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
  if (auto s2 = sync_ports(); !s2 && st) st = s2;
  return st;
}

Status Datapath::set_vmq(const NicBinding& bound, uint32_t vmq) {
  const NicDesc& nic = bound.nic;
  auto it = connected_.find(nic.name);
  if (it == connected_.end()) return {};  // applied at connect
  Connected& c = *it->second;
  if (c.steering.hardware)
    return Error{EBUSY, "nic " + nic.name + " is hardware-steered on dedicated queue " +
                            std::to_string(c.steering.queue) + "; disconnect it to change its vmq"};
  NicBinding want = c.spec;
  want.vmq_id = vmq;
  DeliveryState next = c.delivery;  // a vhost-user NIC's is always xsk
  if (!is_vhost_user(nic.backend)) {
    auto dev = netdev_info(nic.backend);
    if (!dev) return Error{dev.error().code, "backend of nic " + nic.name + ": " + dev.error().message};
    next = decide_delivery(want, *dev, c.steering);
  }
  if (vmq && want.nic.delivery == Delivery::Kernel && next.effective != Delivery::Kernel)
    return Error{EOPNOTSUPP, "nic " + nic.name + " asks for kernel delivery: " + next.why};
  NicBinding& cur = c.spec;
  if (cur.vmq_id) {
    clear_filter(cur);
    if (c.kernel) {
      stop_kernel(c);
    } else {
      for (auto& w : workers_) (void)cls_->clear_socket(cur.vmq_id, w->queue());
      wait_for_xdp_runs();  // no run still redirects into the vmq sockets set_vmq closes
      for (auto& w : workers_)
        if (auto fd = w->set_vmq(cur.nic.name, 0); !fd) return fd.error();
    }
    cur.vmq_id = 0;
  }
  c.delivery = next;
  Status st;
  if (vmq) {
    cur.vmq_id = vmq;
    if (next.effective == Delivery::Kernel) {
      st = start_kernel(c);
    } else {
      for (auto& w : workers_) {
        auto fd = w->set_vmq(cur.nic.name, static_cast<int>(vmq));
        if (!fd) return fd.error();
        if (st = cls_->set_socket(vmq, w->queue(), *fd); !st) return st;
      }
    }
    if (st) st = install_filter(cur);
  }
  if (auto s2 = sync_ports(); !s2 && st) st = s2;
  return st;
}

Status Datapath::set_statics(const std::string& name, const std::vector<std::pair<Mac, uint16_t>>& statics) {
  auto it = connected_.find(name);
  if (it == connected_.end()) return {};  // applied at connect
  it->second->spec.nic.statics = statics;
  // The software switch runs on the general workers only: a dedicated
  // worker hands what its VM sends to one of them.
  for (auto& w : workers_)
    if (auto st = w->set_statics(name, statics); !st) return st;
  return sync_ports();
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
    stop_kernel(*c);
    c->port.reset();
  }
  for (uint32_t cpu : cpus_made_) (void)kd_->clear_cpu(cpu);
  cpus_made_.clear();
  cpu_vmqs_.clear();
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
  const auto kc = kd_ ? kd_->counters() : Result<KernelCounters>(Error{ENOENT, "no kernel delivery"});
  const auto cls = cls_->counters();  // once, not per NIC
  for (const auto& [name, per_queue] : counters_) {
    NicTotals& t = out[name];
    for (const auto& c : per_queue) {
      t.fast_frames += c->fast_frames;
      t.fast_bytes += c->fast_bytes;
      t.default_frames += c->default_frames;
      t.default_bytes += c->default_bytes;
      t.from_vm_frames += c->from_vm_frames;
      t.from_vm_bytes += c->from_vm_bytes;
      t.vhost_rx_frames += c->vhost_rx_frames;
      t.vhost_rx_bytes += c->vhost_rx_bytes;
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
    if (it != connected_.end())
      add_kernel_totals(*it->second, t, kc ? &kc.value() : nullptr, cls ? &cls.value() : nullptr);
  }
  return out;
}

// What the kernel did for a connected NIC: the VM port program's counts
// (its drops under the switch's reasons), and for kernel delivery the
// vmq's frames and every loss on the way, by reason.
void Datapath::add_kernel_totals(const Connected& c, NicTotals& t, const KernelCounters* kc,
                                 const Counters* cls) const {
  if (c.port) {
    const auto pc = c.port->counts();
    t.drops["too_big"] = pc[XVMQ_PORT_TOO_BIG].frames;
    t.drops["spoofed_source"] += pc[XVMQ_PORT_SPOOFED_SOURCE].frames;
    t.drops["tagged_on_access"] += pc[XVMQ_PORT_TAGGED_ON_ACCESS].frames;
    t.drops["vlan_not_allowed"] += pc[XVMQ_PORT_VLAN_NOT_ALLOWED].frames;
    // Frames the program sent on itself; the switch counted those it handed over.
    t.from_vm_frames += pc[XVMQ_PORT_FORWARDED].frames;
    t.from_vm_bytes += pc[XVMQ_PORT_FORWARDED].bytes;
    t.kernel_out_frames = pc[XVMQ_PORT_FORWARDED].frames;
  }
  if (!kc) return;
  for (uint32_t l = 0; l < XVMQ_XMIT_COUNT; l++) {
    auto x = kc->xmit.find(c.ifindex);
    t.drops["backend_" + std::string(xmit_loss_name(l))] = x == kc->xmit.end() ? 0 : x->second[l];
  }
  if (!c.kernel) return;
  const uint32_t vmq = c.spec.vmq_id;
  for (uint32_t l = 0; l < XVMQ_LOSS_COUNT; l++) t.drops["kernel_" + std::string(loss_name(l))] = kc->loss[vmq][l];
  if (cls) {
    t.fast_frames += cls->vmq[vmq].frames - c.kernel_base.frames;
    t.fast_bytes += cls->vmq[vmq].bytes - c.kernel_base.bytes;
  }
  if (auto ls = netlink::link_stats(c.spec.nic.backend); ls) t.backend_tx_dropped = ls->tx_dropped - c.tx_dropped_base;
  t.forced_moves = kc->forced_moves[vmq];
}

std::optional<SteeringState> Datapath::steering(const std::string& nic) const {
  auto it = connected_.find(nic);
  if (it == connected_.end()) return std::nullopt;
  return it->second->steering;
}

// ---- kernel delivery -------------------------------------------------------

DeliveryState Datapath::decide_delivery(const NicBinding& b, const NetdevInfo& backend, const SteeringState& ss) const {
  DeliveryState d;
  d.effective = Delivery::Xsk;
  if (b.nic.delivery == Delivery::Xsk) return d;
  if (!b.vmq_id) {
    d.why = "it has no vmq: the software switch serves it";
    return d;
  }
  if (ss.hardware) {
    d.why = "it is hardware-steered: its dedicated queue's socket serves it";
    return d;
  }
  const KernelDeliveryCheck k = check_kernel_delivery(backend);
  if (!k.ok) {
    d.why = k.why;
    return d;
  }
  d.effective = Delivery::Kernel;
  if (b.nic.vmq_cpu) {
    d.cpu = static_cast<int>(*b.nic.vmq_cpu);
    d.cpu_source = "configured";
  } else {
    d.cpu = spread_cpu();
    d.cpu_source = on_receiving_cpu(backend.is_tap(), false) ? "receiving" : "spread";
  }
  return d;
}

// A tap's receive work is its reader's (QEMU's thread reads the frames off
// the tap's queue): delivering into it is only a ring's produce, which the
// receiving CPU does best itself. A hop through the vmq's processor adds a
// CPU to the path and, on a host with few CPUs, takes it from the guest: at
// 200,000 frames/s to a TCG guest on 2 CPUs the tap's ring overflowed
// behind the hop (0.44x the bridge) and kept up without it (1.00x). So a
// tap's vmq with no configured processor is delivered on the receiving CPU
// while spreading by load is on; --spread-above 0 and a configured
// processor (vmq_cpu) keep the hop.
bool Datapath::on_receiving_cpu(bool tap, bool configured) const {
  return tap && !configured && opts_.spread_above > 0;
}

// The allowed CPU with the fewest kernel-delivered vmqs; of those, the
// highest: CPU 0 last, as Hyper-V keeps its base processor for the default
// queue and the host's own work. A vmq away from the CPU that receives its
// frames gets its delivery done beside the receiving, not after it.
int Datapath::spread_cpu() const {
  int best = -1, best_n = 0;
  for (int cpu : allowed_cpus()) {
    auto it = cpu_vmqs_.find(static_cast<uint32_t>(cpu));
    const int n = it == cpu_vmqs_.end() ? 0 : it->second;
    if (best < 0 || n <= best_n) {
      best = cpu;
      best_n = n;
    }
  }
  return best < 0 ? 0 : best;
}

uint32_t Datapath::vmq_flags(bool receiving_cpu) const {
  // In skb mode the classifier's metadata does not reach the CPUMAP
  // program: deliver on the receiving CPU.
  const bool no_hop = receiving_cpu || mode_ == AttachMode::Skb;
  return XVMQ_VMQ_F_KERNEL | XVMQ_VMQ_F_DIRECT | (no_hop ? XVMQ_VMQ_F_NO_HOP : 0u);
}

// A processor's CPUMAP entry, made on first use, its thread given the
// real-time priority the software path's workers have: like softirq, it
// runs ahead of the VMs' threads on that CPU (docs/architecture.md).
Status Datapath::use_cpu(uint32_t cpu) {
  if (auto st = make_cpu(cpu); !st) return st;
  cpu_vmqs_[cpu]++;
  // Spreading by load sends frames to any CPU's entry: to a hot CPU's
  // spill CPU, and through the receiving CPU's own entry while a move to it
  // settles (xvmq_abi.h).
  if (opts_.spread_above)
    for (int c : allowed_cpus())
      if (auto st = make_cpu(static_cast<uint32_t>(c)); !st) return st;
  return {};
}

Status Datapath::make_cpu(uint32_t cpu) {
  if (cpu >= XVMQ_MAX_CPUS)
    return Error{EINVAL, "CPU " + std::to_string(cpu) + " is beyond xvmq's " + std::to_string(XVMQ_MAX_CPUS)};
  // An entry is made once and kept: replacing it would start a second
  // thread beside the one still draining the old queue, and reorder.
  if (cpus_made_.count(cpu)) return {};
  if (auto st = kd_->set_cpu(cpu, opts_.cpu_queue); !st) return st;
  cpus_made_.insert(cpu);
  if (opts_.worker.rt_priority > 0) {
    const int pid = kd_->cpu_thread_pid(cpu);
    sched_param sp{};
    sp.sched_priority = opts_.worker.rt_priority;
    if (pid <= 0 || sched_setscheduler(pid, SCHED_FIFO, &sp) != 0)
      service::log(service::Level::Warn, "CPU %u's delivery thread (pid %d) keeps the normal scheduler: %s", cpu, pid,
                   pid <= 0 ? "not found" : std::strerror(errno));
  }
  return {};
}

// The vmq's conf, its backend in the DEVMAP, its processor's CPUMAP entry;
// the filter that sends frames there comes after (connect, set_vmq).
Status Datapath::start_kernel(Connected& c) {
  const uint32_t vmq = c.spec.vmq_id;
  const uint32_t cpu = static_cast<uint32_t>(c.delivery.cpu);
  if (auto st = use_cpu(cpu); !st) return st;
  c.kernel = true;
  if (auto st = kd_->set_dev(vmq, c.ifindex); !st) return st;
  if (auto st = kd_->set_vmq(vmq, cpu, vmq_flags(on_receiving_cpu(c.tap, c.spec.nic.vmq_cpu.has_value()))); !st)
    return st;
  if (auto k = cls_->counters(); k) c.kernel_base = k->vmq[vmq];
  if (auto ls = netlink::link_stats(c.spec.nic.backend); ls) c.tx_dropped_base = ls->tx_dropped;
  return {};
}

// After the filter went: no new frame is sent to the vmq once the XDP runs
// end; those in flight through the CPUMAP reach the backend before its
// DEVMAP entry goes.
void Datapath::stop_kernel(Connected& c) {
  if (!c.kernel) return;
  const uint32_t vmq = c.spec.vmq_id;
  (void)kd_->clear_vmq(vmq);
  wait_for_xdp_runs();
  for (int i = 0; i < 100; i++) {
    auto f = kd_->flow(vmq);
    if (!f || f->sent <= f->passed) break;
    usleep(1000);
  }
  (void)kd_->clear_dev(vmq);
  cpu_vmqs_[static_cast<uint32_t>(c.delivery.cpu)]--;
  c.kernel = false;
  // The vmq's frames while it was kernel-delivered stay the NIC's.
  auto counters = counters_.find(c.spec.nic.name);
  if (auto k = cls_->counters(); k && counters != counters_.end() && !counters->second.empty()) {
    counters->second.front()->fast_frames += k->vmq[vmq].frames - c.kernel_base.frames;
    counters->second.front()->fast_bytes += k->vmq[vmq].bytes - c.kernel_base.bytes;
  }
}

xvmq_port_conf Datapath::port_conf(const Connected& c) const {
  const NicDesc& n = c.spec.nic;
  xvmq_port_conf p{};
  std::copy(n.mac.begin(), n.mac.end(), p.mac);
  p.ifindex = static_cast<uint32_t>(c.ifindex);
  if (!c.kernel) return p;  // xsk delivery: the software switch takes all it sends
  p.flags = XVMQ_PORT_F_EGRESS;
  if (n.allow_mac_spoofing) p.flags |= XVMQ_PORT_F_SPOOFING;
  if (!n.statics.empty()) p.flags |= XVMQ_PORT_F_STATICS;
  if (uplink_xmit_ && dests_complete_) p.flags |= XVMQ_PORT_F_UPLINK;
  if (n.vlans.mode == VlanMode::Trunk) {
    p.flags |= XVMQ_PORT_F_TRUNK;
    for (uint16_t v : n.vlans.trunk_vlans) p.trunk[v >> 6] |= 1ull << (v & 63);
    if (n.vlans.native) {
      p.flags |= XVMQ_PORT_F_NATIVE;
      p.native_vlan = *n.vlans.native;
    }
  } else {
    p.access_vlan = n.vlans.access;
  }
  return p;
}

// The unicast destinations of every connected NIC (a MAC shared by two NICs
// is the switch's to decide) and every VM port's conf.
Status Datapath::sync_ports() {
  std::map<uint64_t, xvmq_dest> want;
  std::map<uint64_t, const Connected*> owner;
  for (const auto& [name, cp] : connected_) {
    const Connected& c = *cp;
    const NicDesc& n = c.spec.nic;
    auto put = [&](const Mac& m, uint16_t v) {
      const uint64_t k = xvmq_filter_word(m.data(), v);
      xvmq_dest d{c.kernel ? c.spec.vmq_id : XVMQ_DEST_SWITCH, n.vlans.sends_tagged(v) ? 0u : XVMQ_DEST_F_UNTAGGED,
                  static_cast<uint32_t>(c.ifindex), 0};
      auto [it, first] = owner.emplace(k, &c);
      if (!first && it->second != &c) d.dev = XVMQ_DEST_SWITCH;  // two NICs: the switch picks
      if (first || it->second != &c) want[k] = d;
    };
    for (uint16_t v : n.vlans.carried()) put(n.mac, v);
    for (const auto& [m, v] : n.statics)
      if (n.vlans.carries(v)) put(m, v);
  }
  Status st;
  for (auto it = dests_.begin(); it != dests_.end();) {
    if (want.count(it->first)) {
      ++it;
      continue;
    }
    const uint64_t k = it->first;
    (void)bpf_map_delete_elem(kd_->dests_fd(), &k);
    it = dests_.erase(it);
  }
  bool complete = true;
  for (const auto& [k, d] : want) {
    auto cur = dests_.find(k);
    if (cur != dests_.end() && std::memcmp(&cur->second, &d, sizeof(d)) == 0) continue;
    if (bpf_map_update_elem(kd_->dests_fd(), &k, &d, BPF_ANY) != 0) {
      complete = false;
      if (st)
        st = make_error(errno, "the switch's destinations for VM egress in XDP (" + std::to_string(want.size()) +
                                   ", at most " + std::to_string(XVMQ_MAX_DESTS) + ")");
      continue;
    }
    dests_[k] = d;
  }
  dests_complete_ = complete;
  // Each port's conf and static MACs, written when they changed.
  for (auto& [name, c] : connected_) {
    if (!c->port) continue;
    const xvmq_port_conf conf = port_conf(*c);
    std::vector<Mac> macs;
    for (const auto& [m, v] : c->spec.nic.statics) macs.push_back(m);
    if (c->port_synced && std::memcmp(&conf, &c->conf, sizeof(conf)) == 0 && macs == c->static_macs) continue;
    Status s2 = c->port->set_conf(conf);
    if (s2) s2 = c->port->set_statics(macs);
    if (!s2) {
      if (st) st = s2;
      continue;
    }
    c->conf = conf;
    c->static_macs = macs;
    c->port_synced = true;
  }
  return st;
}

std::optional<DeliveryState> Datapath::delivery(const std::string& nic) const {
  auto it = connected_.find(nic);
  if (it == connected_.end()) return std::nullopt;
  return it->second->delivery;
}

Status Datapath::set_vmq_cpu(const std::string& nic, std::optional<uint32_t> cpu) {
  auto it = connected_.find(nic);
  if (it == connected_.end()) return {};  // applied at connect
  Connected& c = *it->second;
  c.spec.nic.vmq_cpu = cpu;
  if (!c.kernel) return {};  // taken when kernel delivery starts
  const uint32_t to = cpu ? *cpu : static_cast<uint32_t>(spread_cpu());
  const uint32_t from = static_cast<uint32_t>(c.delivery.cpu);
  const bool receiving = on_receiving_cpu(c.tap, cpu.has_value());
  const char* source = cpu ? "configured" : receiving ? "receiving" : "spread";
  if (to == from && (receiving == (c.delivery.cpu_source == "receiving"))) {
    c.delivery.cpu_source = source;
    return {};
  }
  if (auto st = use_cpu(to); !st) return st;
  // The classifier follows the conf per receiving CPU once the old
  // processor has passed on every frame it had (xvmq_vmq_flow): nothing is
  // lost or reordered, nothing to wait for here.
  if (auto st = kd_->set_vmq(c.spec.vmq_id, to, c.delivery.effective == Delivery::Kernel ? vmq_flags(receiving) : 0);
      !st)
    return st;
  cpu_vmqs_[from]--;
  c.delivery.cpu = static_cast<int>(to);
  c.delivery.cpu_source = source;
  return {};
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
