#include "switchd/dp/queue_worker.h"

#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_xdp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xdp/xsk.h>

#include <chrono>
#include <cstring>

#include "loader/log.h"
#include "switchd/core/fdb.h"
#include "switchd/host/service.h"

namespace xvmq::switchd {

std::string_view to_string(XskStat s) {
  switch (s) {
    case XskStat::RxDropped: return "rx_dropped";
    case XskStat::RxRingFull: return "rx_ring_full";
    case XskStat::RxFillRingEmpty: return "rx_fill_ring_empty_descs";
    case XskStat::RxInvalidDescs: return "rx_invalid_descs";
    case XskStat::TxInvalidDescs: return "tx_invalid_descs";
    case XskStat::Count: break;
  }
  return "unknown";
}

std::string_view to_string(Drop d) {
  switch (d) {
    case Drop::UnknownUnicast: return "unknown_unicast";
    case Drop::SpoofedSource: return "spoofed_source";
    case Drop::TaggedOnAccess: return "tagged_on_access";
    case Drop::VlanNotAllowed: return "vlan_not_allowed";
    case Drop::NoPort: return "no_port";
    case Drop::Backpressure: return "backpressure";
    case Drop::TxRingFull: return "tx_ring_full";
    case Drop::NoBuffer: return "no_buffer";
    case Drop::Malformed: return "malformed";
    case Drop::Count: break;
  }
  return "?";
}

namespace {

constexpr uint32_t kHeadroom = 64;  // room to push a VLAN tag in place
constexpr uint32_t kBatch = 64;

// Close fds from up to 16 threads at once.
void close_in_parallel(std::vector<int> fds) {
  const size_t threads = std::min<size_t>(16, fds.size());
  std::vector<std::thread> t;
  for (size_t k = 0; k < threads; k++)
    t.emplace_back([&fds, k, threads] {
      for (size_t i = k; i < fds.size(); i += threads) ::close(fds[i]);
    });
  for (auto& x : t) x.join();
}

void bump(std::atomic<uint64_t>& c, uint64_t n = 1) { c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }


}  // namespace

struct QueueWorker::Ctx {
  std::string ifname;
  xsk_ring_prod fill{};
  xsk_ring_cons comp{};
  uint32_t in_fill = 0;   // frames posted to the fill ring, not yet received
  bool active = false;    // received since the worker's last refill
  Sock* tx_sock = nullptr;
};

struct QueueWorker::Sock {
  enum Kind { Default, Vmq, Backend } kind = Default;
  uint64_t seen[kXskStats] = {};  // the kernel's counters at the last look
  xsk_socket* xsk = nullptr;
  xsk_ring_cons rx{};
  xsk_ring_prod tx{};
  Ctx* ctx = nullptr;
  Nic* nic = nullptr;  // its NIC; a vmq socket being taken away has none
  uint32_t outstanding = 0;  // sent, not yet completed
  bool queued_kick = false;
};

struct QueueWorker::Nic {
  WorkerNic cfg;
  std::unique_ptr<Ctx> ctx;  // the backend's (netdev, queue)
  Sock* backend = nullptr;   // delivers, and receives what the VM sends on this queue
  Sock* vmq_sock = nullptr;
  // The backend's reserved queues this worker serves: receive only.
  std::vector<std::pair<std::unique_ptr<Ctx>, Sock*>> extras;
  bool removing = false;
};

QueueWorker::QueueWorker(std::string uplink, uint32_t queue, int cpu, WorkerOptions opts, Fdb* fdb)
    : uplink_(std::move(uplink)), queue_(queue), cpu_(cpu), opts_(opts), fdb_(fdb) {}

QueueWorker::~QueueWorker() {
  stop_ = true;
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  if (thread_.joinable()) thread_.join();
  // The kernel waits for an RCU grace period in each socket's release
  // (xsk_unbind_dev): one after the other, a thousand NICs' sockets take
  // seconds. libxdp's bookkeeping is done here, one socket at a time, with
  // a duplicate of each fd kept; the duplicates are then closed from
  // several threads at once, whose grace periods overlap.
  std::vector<int> last_refs;
  auto destroy_later = [&](Sock* s) {
    int d = fcntl(xsk_socket__fd(s->xsk), F_DUPFD_CLOEXEC, 0);
    if (d >= 0) last_refs.push_back(d);
    destroy_socket(s);
  };
  // The UMEM's first socket (default, or a dedicated queue's vmq socket)
  // goes last: it owns the UMEM's fd.
  for (auto& [_, n] : nics_) {
    for (auto& [ctx, sock] : n->extras) destroy_later(sock);
    if (n->backend) destroy_later(n->backend);
    if (n->vmq_sock && !dedicated_) destroy_later(n->vmq_sock);
  }
  close_in_parallel(std::move(last_refs));
  for (auto& [_, n] : nics_)
    if (n->vmq_sock && dedicated_) destroy_socket(n->vmq_sock);
  nics_.clear();
  if (default_sock_) destroy_socket(default_sock_);
  if (umem_) xsk_umem__delete(umem_);
  if (area_) munmap(area_, area_size_);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

Status QueueWorker::create_umem() {
  const std::string where = uplink_ + " queue " + std::to_string(queue_);
  if (opts_.frame_size != 2048 && opts_.frame_size != 4096)
    return Error{EINVAL, "UMEM of " + where + ": frame size must be 2048 or 4096"};
  area_size_ = static_cast<size_t>(opts_.frames) * opts_.frame_size;
  area_ = mmap(nullptr, area_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (area_ == MAP_FAILED) {
    area_ = nullptr;
    return make_error(errno, "UMEM of " + where + ": mmap " + std::to_string(area_size_) + " bytes");
  }
  uplink_ctx_ = std::make_unique<Ctx>();
  uplink_ctx_->ifname = uplink_;
  xsk_umem_config cfg{};
  cfg.fill_size = opts_.ring_size;
  cfg.comp_size = opts_.ring_size;
  cfg.frame_size = opts_.frame_size;
  cfg.frame_headroom = kHeadroom;
  log::clear_captured();
  if (int err = xsk_umem__create(&umem_, area_, area_size_, &uplink_ctx_->fill, &uplink_ctx_->comp, &cfg); err)
    return make_error(err, "UMEM of " + where);
  refs_.assign(opts_.frames, 0);
  for (uint32_t i = opts_.frames; i-- > 0;) free_.push_back(static_cast<uint64_t>(i) * opts_.frame_size);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return make_error(errno, "eventfd for " + where);
  // The idle worker waits on every socket: epoll, so that a wakeup costs
  // what is ready, not a pass over a thousand sockets as poll() does.
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return make_error(errno, "epoll for " + where);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) return make_error(errno, "epoll for " + where);
  return {};
}

Result<int> QueueWorker::start() {
  if (auto st = create_umem(); !st) return st.error();
  auto s = create_socket(uplink_, queue_, uplink_ctx_.get(), opts_.ring_size);
  if (!s) return s.error();
  default_sock_ = *s;
  default_sock_->kind = Sock::Default;
  uplink_ctx_->tx_sock = default_sock_;
  refill(*uplink_ctx_, opts_.uplink_reserve);
  thread_ = std::thread([this] { loop(); });
  return xsk_socket__fd(default_sock_->xsk);
}

Status QueueWorker::open_backend_socket(Nic& n) {
  n.ctx = std::make_unique<Ctx>();
  n.ctx->ifname = n.cfg.nic.backend;
  auto b = create_socket(n.cfg.nic.backend, queue_, n.ctx.get(), opts_.nic_ring_size);
  if (!b) return b.error();
  n.backend = *b;
  n.backend->kind = Sock::Backend;
  n.backend->nic = &n;
  n.ctx->tx_sock = n.backend;
  return {};
}

Status QueueWorker::open_vmq_socket(Nic& n) {
  auto v = create_socket(uplink_, queue_, uplink_ctx_.get(), opts_.ring_size);
  if (!v) return v.error();
  n.vmq_sock = *v;
  n.vmq_sock->kind = Sock::Vmq;
  n.vmq_sock->nic = &n;
  return {};
}

Result<NicSockets> QueueWorker::start_dedicated(const WorkerNic& cfg, QueueWorker* handoff) {
  dedicated_ = true;
  handoff_ = handoff;
  if (auto st = create_umem(); !st) return st.error();
  auto n = std::make_unique<Nic>();
  n->cfg = cfg;
  // The vmq socket first: the UMEM's fd is bound to the uplink's queue.
  if (auto st = open_vmq_socket(*n); !st) return st.error();
  if (auto st = open_backend_socket(*n); !st) return st.error();
  NicSockets out{{{queue_, xsk_socket__fd(n->backend->xsk)}}, xsk_socket__fd(n->vmq_sock->xsk)};
  nics_[cfg.nic.name] = std::move(n);
  rebuild_fill_ctxs();
  refill(*uplink_ctx_, opts_.uplink_reserve);
  thread_ = std::thread([this] { loop(); });
  return out;
}

Result<QueueWorker::Sock*> QueueWorker::create_socket(const std::string& ifname, uint32_t queue, Ctx* ctx, uint32_t ring) {
  auto s = std::make_unique<Sock>();
  xsk_socket_config cfg{};
  cfg.rx_size = ring;
  cfg.tx_size = ring;
  cfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
  cfg.bind_flags = XDP_USE_NEED_WAKEUP;  // zero-copy where the driver has it, else copy
  // A queue a killed switchd had sockets on is released by a kernel work
  // item after its exit: until then binding it says EBUSY. Wait a little.
  int err = 0;
  for (int attempt = 0; attempt < 100; attempt++) {
    log::clear_captured();
    err = xsk_socket__create_shared(&s->xsk, ifname.c_str(), queue, umem_, &s->rx, &s->tx, &ctx->fill,
                                    &ctx->comp, &cfg);
    if (err != -EBUSY) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (err == -EMFILE || err == -ENFILE) {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    return Error{EMFILE, "AF_XDP socket on " + ifname + " queue " + std::to_string(queue) + ": out of file descriptors (" +
                             (err == -ENFILE ? std::string("the system's fs.file-max") :
                                               "RLIMIT_NOFILE " + std::to_string(rl.rlim_cur) + "; raise switchd's LimitNOFILE") +
                             ")"};
  }
  if (err) return make_error(err, "AF_XDP socket on " + ifname + " queue " + std::to_string(queue));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = s.get();
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, xsk_socket__fd(s->xsk), &ev) != 0) {
    Error e = make_error(errno, "AF_XDP socket on " + ifname + " queue " + std::to_string(queue) + ": epoll");
    xsk_socket__delete(s->xsk);
    return e;
  }
  s->ctx = ctx;
  socks_.push_back(std::move(s));
  return socks_.back().get();
}

void QueueWorker::read_xsk_stats(Sock& s) {
  xdp_statistics st{};
  socklen_t len = sizeof(st);
  if (getsockopt(xsk_socket__fd(s.xsk), SOL_XDP, XDP_STATISTICS, &st, &len) != 0) return;
  // Sockets on one (netdev, queue) share its fill ring, and each reports
  // the ring's count: only the ring's first socket adds it.
  const bool fill_owner = s.kind != Sock::Vmq || dedicated_;
  const uint64_t now[kXskStats] = {st.rx_dropped, st.rx_ring_full, fill_owner ? st.rx_fill_ring_empty_descs : 0,
                                   st.rx_invalid_descs, st.tx_invalid_descs};
  for (size_t i = 0; i < kXskStats; i++) {
    if (now[i] <= s.seen[i]) continue;
    const uint64_t d = now[i] - s.seen[i];
    s.seen[i] = now[i];
    bump(counters_.xsk[i], d);
    if (s.nic) bump((s.kind == Sock::Backend ? s.nic->cfg.counters->xsk_backend : s.nic->cfg.counters->xsk_vmq)[i], d);
  }
}

void QueueWorker::destroy_socket(Sock* s) {
  read_xsk_stats(*s);  // the last drops count too
  (void)epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, xsk_socket__fd(s->xsk), nullptr);
  xsk_socket__delete(s->xsk);
  for (auto it = socks_.begin(); it != socks_.end(); ++it)
    if (it->get() == s) {
      socks_.erase(it);
      break;
    }
}

Status QueueWorker::run_on_thread(std::function<Status()> fn) {
  if (!thread_.joinable()) return fn();
  std::promise<Status> done;
  auto result = done.get_future();
  {
    std::lock_guard lock(cmd_mu_);
    cmds_.emplace_back(std::move(fn), std::move(done));
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  return result.get();
}

uint64_t QueueWorker::alloc_frame() {
  if (free_.empty()) return UINT64_MAX;
  uint64_t a = free_.back();
  free_.pop_back();
  return a;
}

void QueueWorker::release(uint64_t addr) {
  uint64_t base = addr - addr % opts_.frame_size;
  uint16_t& r = refs_[base / opts_.frame_size];
  if (r == 0 || --r == 0) free_.push_back(base);
}

void QueueWorker::refill(Ctx& c, uint32_t target) {
  if (c.in_fill >= target || free_.empty()) return;
  uint32_t want = std::min<uint32_t>(target - c.in_fill, static_cast<uint32_t>(free_.size()));
  want = xsk_prod_nb_free(&c.fill, want) < want ? xsk_prod_nb_free(&c.fill, want) : want;
  uint32_t idx = 0;
  if (want == 0 || xsk_ring_prod__reserve(&c.fill, want, &idx) != want) return;
  for (uint32_t i = 0; i < want; i++) *xsk_ring_prod__fill_addr(&c.fill, idx + i) = alloc_frame();
  xsk_ring_prod__submit(&c.fill, want);
  c.in_fill += want;
}

void QueueWorker::drop(Nic* nic, Drop why) {
  bump(counters_.drops[static_cast<size_t>(why)]);
  if (nic) bump(nic->cfg.counters->drops[static_cast<size_t>(why)]);
}

bool QueueWorker::send(Sock& to, Nic* nic, uint64_t addr, uint32_t len) {
  if (to.kind == Sock::Backend && to.outstanding >= opts_.nic_inflight) {
    drop(nic, Drop::Backpressure);
    return false;
  }
  uint32_t idx = 0;
  if (xsk_ring_prod__reserve(&to.tx, 1, &idx) != 1) {
    drop(nic, Drop::TxRingFull);
    return false;
  }
  xdp_desc* d = xsk_ring_prod__tx_desc(&to.tx, idx);
  d->addr = addr;
  d->len = len;
  d->options = 0;
  xsk_ring_prod__submit(&to.tx, 1);
  refs_[addr / opts_.frame_size]++;
  to.outstanding++;
  bump(counters_.tx);
  if (!to.queued_kick) {
    to.queued_kick = true;
    to_kick_.push_back(&to);
  }
  return true;
}

void QueueWorker::kick_tx() {
  std::vector<Sock*> again;
  for (Sock* s : to_kick_) {
    s->queued_kick = false;
    if (sendto(xsk_socket__fd(s->xsk), nullptr, 0, MSG_DONTWAIT, nullptr, 0) < 0 && errno != EAGAIN &&
        errno != EBUSY && errno != ENOBUFS && errno != ENETDOWN)
      continue;
    // Copy mode sends a bounded batch per call: come back for the rest.
    if (*s->tx.consumer != s->tx.cached_prod) {
      s->queued_kick = true;
      again.push_back(s);
    }
  }
  to_kick_.swap(again);
}

void QueueWorker::reap_completions(Ctx& c) {
  uint32_t idx = 0;
  uint32_t n = xsk_ring_cons__peek(&c.comp, opts_.ring_size, &idx);
  for (uint32_t i = 0; i < n; i++) release(*xsk_ring_cons__comp_addr(&c.comp, idx + i));
  xsk_ring_cons__release(&c.comp, n);
  if (c.tx_sock) c.tx_sock->outstanding -= std::min(n, c.tx_sock->outstanding);
}

Drop to_drop(SwitchDrop d) {
  switch (d) {
    case SwitchDrop::Malformed: return Drop::Malformed;
    case SwitchDrop::SpoofedSource: return Drop::SpoofedSource;
    case SwitchDrop::TaggedOnAccess: return Drop::TaggedOnAccess;
    case SwitchDrop::VlanNotAllowed: return Drop::VlanNotAllowed;
    case SwitchDrop::UnknownUnicast: return Drop::UnknownUnicast;
    case SwitchDrop::NoPort:
    case SwitchDrop::Count: break;
  }
  return Drop::NoPort;
}

void QueueWorker::forward_from_uplink(uint64_t addr, uint32_t len, Nic* vmq_nic) {
  if (vmq_nic) {  // the VMQ path: the classifier matched this NIC and shaped the frame
    bump(vmq_nic->cfg.counters->fast_frames);
    bump(vmq_nic->cfg.counters->fast_bytes, len);
    send(*vmq_nic->backend, vmq_nic, addr, len);
    return;
  }
  auto* umem = static_cast<uint8_t*>(area_);
  execute(decide(umem + addr, len, kUplink, ports_, port_macs_), nullptr, addr, len);
}

void QueueWorker::forward_from_vm(Nic& from, uint64_t addr, uint32_t len) {
  auto* umem = static_cast<uint8_t*>(area_);
  if (dedicated_) {  // switched by a general worker, which knows every port
    if (handoff_) handoff_->inject_from_vm(from.cfg.nic.name, std::vector<uint8_t>(umem + addr, umem + addr + len));
    return;
  }
  bump(from.cfg.counters->from_vm_frames);
  bump(from.cfg.counters->from_vm_bytes, len);
  auto it = port_index_.find(&from);
  if (it == port_index_.end()) return drop(&from, Drop::NoPort);  // being removed
  execute(decide(umem + addr, len, it->second, ports_, port_macs_), &from, addr, len);
}

void QueueWorker::execute(const Decision& d, Nic* from, uint64_t addr, uint32_t len) {
  auto* umem = static_cast<uint8_t*>(area_);
  if (d.learn && fdb_) {
    Mac src;
    std::copy(umem + addr + 6, umem + addr + 12, src.begin());
    switch (fdb_->learn(src, d.vlan, now_s_)) {
      case Fdb::Learned::Added: bump(counters_.learned); break;
      case Fdb::Learned::Full: bump(counters_.learn_refused); break;
      case Fdb::Learned::Known: break;
    }
  }
  if (d.drop) return drop(from, to_drop(*d.drop));
  bump(counters_.vlan_frames[d.vlan & 0xfff]);
  bool untagged = false, tagged = false;
  for (const auto& e : d.out) (e.tagged ? tagged : untagged) = true;
  // Both shapes: the tagged one gets its own copy of the frame.
  uint64_t t_addr = addr, copy = UINT64_MAX;
  uint32_t t_len = len;
  if (tagged && untagged) {
    copy = alloc_frame();
    if (copy == UINT64_MAX) {
      drop(from, Drop::NoBuffer);
      tagged = false;
    } else {
      t_addr = copy + kHeadroom;
      std::memcpy(umem + t_addr, umem + addr, len);
    }
  }
  if (tagged) shape_tagged(umem, t_addr, t_len, d.tags, d.vlan);
  if (untagged) shape_untagged(umem, addr, len, d.tags);
  for (const auto& e : d.out) {
    if (e.tagged && !tagged) continue;
    uint64_t a = e.tagged ? t_addr : addr;
    uint32_t l = e.tagged ? t_len : len;
    if (e.port == kUplink) {
      send(*default_sock_, nullptr, a, l);
      continue;
    }
    Nic* n = port_nics_[static_cast<size_t>(e.port)];
    bump(n->cfg.counters->default_frames);
    bump(n->cfg.counters->default_bytes, l);
    send(*n->backend, n, a, l);
  }
  if (copy != UINT64_MAX && refs_[copy / opts_.frame_size] == 0) free_.push_back(copy);
}

void QueueWorker::rebuild_ports() {
  ports_.clear();
  port_nics_.clear();
  port_index_.clear();
  for (auto& [_, n] : nics_) {
    if (n->removing) continue;
    port_index_[n.get()] = static_cast<int>(ports_.size());
    ports_.push_back(n->cfg.nic);
    port_nics_.push_back(n.get());
  }
  port_macs_ = index_ports(ports_);
}

void QueueWorker::process_rx(Sock& s, uint32_t budget) {
  uint32_t idx = 0;
  uint32_t n = xsk_ring_cons__peek(&s.rx, budget, &idx);
  for (uint32_t i = 0; i < n; i++) {
    const xdp_desc* d = xsk_ring_cons__rx_desc(&s.rx, idx + i);
    uint64_t addr = d->addr;
    switch (s.kind) {
      case Sock::Default:
        bump(counters_.rx_default);
        forward_from_uplink(addr, d->len, nullptr);
        break;
      case Sock::Vmq:
        bump(counters_.rx_vmq);
        forward_from_uplink(addr, d->len, s.nic);  // nullptr once the vmq is being taken away
        break;
      case Sock::Backend:
        bump(counters_.rx_vm);
        forward_from_vm(*s.nic, addr, d->len);
        break;
    }
    uint64_t base = addr - addr % opts_.frame_size;
    if (refs_[base / opts_.frame_size] == 0) free_.push_back(base);
  }
  xsk_ring_cons__release(&s.rx, n);
  s.ctx->in_fill -= std::min(n, s.ctx->in_fill);
  if (n) s.ctx->active = true;
}

void QueueWorker::rebuild_fill_ctxs() {
  fill_ctxs_.clear();
  for (auto& [_, n] : nics_) {
    if (n->ctx) fill_ctxs_.push_back(n->ctx.get());
    for (auto& [ctx, sock] : n->extras) fill_ctxs_.push_back(ctx.get());
  }
  fill_start_ = 0;
}

void QueueWorker::refill_all() {
  refill(*uplink_ctx_, opts_.uplink_reserve);
  const uint32_t floor = opts_.nic_floor, budget = opts_.burst_budget;
  auto above = [floor](const Ctx* c) { return c->in_fill > floor ? c->in_fill - floor : 0; };
  uint32_t held = 0, held_idle = 0, active = 0;
  for (const Ctx* c : fill_ctxs_) {
    held += above(c);
    if (c->active)
      active++;
    else
      held_idle += above(c);
  }
  // Floors first, for everyone; then the active ones above theirs: the
  // budget that idle sockets do not hold, in equal shares (a socket alone
  // may have it all, up to its cap), never more than the budget in all,
  // starting with a different socket each pass.
  for (Ctx* c : fill_ctxs_) refill(*c, floor);
  const size_t n = fill_ctxs_.size();
  if (active) {
    const uint32_t share = std::max<uint32_t>(1, (budget > held_idle ? budget - held_idle : 0) / active);
    const uint32_t want = std::min(opts_.burst_cap - std::min(opts_.burst_cap, floor), share);
    for (size_t k = 0; k < n && held < budget; k++) {
      Ctx* c = fill_ctxs_[(fill_start_ + k) % n];
      if (!c->active) continue;
      const uint32_t before = above(c);
      if (before >= want) continue;
      refill(*c, floor + std::min(want, before + (budget - held)));
      held += above(c) - before;
    }
  }
  for (Ctx* c : fill_ctxs_) c->active = false;
  if (n) fill_start_ = (fill_start_ + 1) % n;
  above_floor_ = held;
}

void QueueWorker::loop() {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu_, &set);
  (void)sched_setaffinity(0, sizeof(set), &set);
  // Named for top, perf and /proc: "xvmq-q<queue>".
  pthread_setname_np(pthread_self(), ("xvmq-q" + std::to_string(queue_)).c_str());
  // A woken worker otherwise waits for the running task's time slice on a
  // busy CPU (a scheduler tick, 4 ms at HZ=250), while the kernel's own
  // forwarding runs in softirq. With SCHED_FIFO it runs as soon as its
  // socket has frames; it still sleeps in epoll_wait() when idle.
  if (opts_.rt_priority > 0) {
    sched_param sp{};
    sp.sched_priority = opts_.rt_priority;
    if (sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &sp) != 0)
      service::log(service::Level::Warn, "queue %u: SCHED_FIFO priority %d refused: %s; the worker keeps the normal scheduler", queue_,
                opts_.rt_priority, std::strerror(errno));
  }
  epoll_event evs[64];
  auto next_xsk_look = std::chrono::steady_clock::now();

  while (!stop_) {
    const auto now = std::chrono::steady_clock::now();
    now_s_ = static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());
    if (now >= next_xsk_look) {  // the kernel's drops, ten times a second
      for (auto& sock : socks_) read_xsk_stats(*sock);
      next_xsk_look = now + std::chrono::milliseconds(100);
    }
    {
      std::vector<std::pair<std::function<Status()>, std::promise<Status>>> cmds;
      {
        std::lock_guard lock(cmd_mu_);
        cmds.swap(cmds_);
      }
      for (auto& [fn, done] : cmds) done.set_value(fn());
    }
    uint32_t work = 0;
    for (auto& s : socks_) {
      uint32_t before = *s->rx.producer - s->rx.cached_cons;
      if (before) {
        process_rx(*s, kBatch);
        work += before;
      }
    }
    drain_inbox();
    kick_tx();
    reap_completions(*uplink_ctx_);
    // Only a backend with sends outstanding has completions (extras never send).
    for (Ctx* c : fill_ctxs_)
      if (c->tx_sock && c->tx_sock->outstanding) reap_completions(*c);
    // What a VM sends lands in its backend's fill ring: each has its floor
    // always, and a VM sending at full rate its share of the burst budget
    // (a ring of 64 lost four frames in five).
    refill_all();

    uint32_t fill = uplink_ctx_->in_fill, flight = default_sock_ ? default_sock_->outstanding : 0;
    for (const Ctx* c : fill_ctxs_) {
      fill += c->in_fill;
      flight += c->tx_sock ? c->tx_sock->outstanding : 0;
    }
    pool_free_.store(static_cast<uint32_t>(free_.size()), std::memory_order_relaxed);
    pool_fill_.store(fill, std::memory_order_relaxed);
    pool_flight_.store(flight, std::memory_order_relaxed);
    pool_above_.store(above_floor_, std::memory_order_relaxed);

    bool inbox;
    {
      std::lock_guard lock(inbox_mu_);
      inbox = !inbox_.empty();
    }
    if (work || inbox || !to_kick_.empty() || opts_.busy_poll) continue;
    // Completions of sends in flight need no wakeup in copy mode; a short
    // timeout covers drivers that complete asynchronously.
    const int ready = epoll_wait(epoll_fd_, evs, 64, flight ? 1 : 100);
    for (int i = 0; i < ready; i++)
      if (!evs[i].data.ptr) {
        uint64_t v;
        (void)!read(wake_fd_, &v, sizeof(v));
      }
  }
}

Result<NicSockets> QueueWorker::add_nic(const WorkerNic& cfg) {
  NicSockets out;
  Status st = run_on_thread([&]() -> Status {
    if (nics_.count(cfg.nic.name)) return Error{EEXIST, "nic " + cfg.nic.name + " is already on queue " + std::to_string(queue_)};
    if (fill_ctxs_.size() + 1 + cfg.extra_queues.size() > opts_.max_sockets)
      return Error{ENOSPC, "queue " + std::to_string(queue_) + " has receive buffers for " + std::to_string(opts_.max_sockets) +
                               " backend sockets, all reserved (--max-nics)"};
    auto n = std::make_unique<Nic>();
    n->cfg = cfg;
    auto undo = [&] {
      for (auto& [ctx, sock] : n->extras) destroy_socket(sock);
      if (n->backend) destroy_socket(n->backend);
      if (n->vmq_sock) destroy_socket(n->vmq_sock);
    };
    if (auto st = open_backend_socket(*n); !st) return st;
    out.backend.emplace_back(queue_, xsk_socket__fd(n->backend->xsk));
    for (uint32_t q : cfg.extra_queues) {
      auto ctx = std::make_unique<Ctx>();
      ctx->ifname = cfg.nic.backend;
      auto e = create_socket(cfg.nic.backend, q, ctx.get(), opts_.nic_ring_size);
      if (!e) {
        undo();
        return e.error();
      }
      (*e)->kind = Sock::Backend;
      (*e)->nic = n.get();
      out.backend.emplace_back(q, xsk_socket__fd((*e)->xsk));
      n->extras.emplace_back(std::move(ctx), *e);
    }
    if (cfg.vmq) {
      if (auto st = open_vmq_socket(*n); !st) {
        undo();
        return st;
      }
      out.vmq_fd = xsk_socket__fd(n->vmq_sock->xsk);
    }
    nics_[cfg.nic.name] = std::move(n);
    rebuild_ports();
    rebuild_fill_ctxs();
    return {};
  });
  if (!st) return st.error();
  return out;
}

Result<int> QueueWorker::set_vmq(const std::string& name, int vmq) {
  int fd = -1;
  Status st = run_on_thread([&]() -> Status {
    auto it = nics_.find(name);
    if (it == nics_.end()) return Error{ENOENT, "nic " + name + " is not on queue " + std::to_string(queue_)};
    Nic& n = *it->second;
    if (n.vmq_sock) {
      n.vmq_sock->nic = nullptr;
      process_rx(*n.vmq_sock, opts_.ring_size);  // what arrived is delivered by the software path
      destroy_socket(n.vmq_sock);
      n.vmq_sock = nullptr;
    }
    n.cfg.vmq = vmq;
    if (!vmq) return {};
    if (auto st = open_vmq_socket(n); !st) return st;
    fd = xsk_socket__fd(n.vmq_sock->xsk);
    return {};
  });
  if (!st) return st.error();
  return fd;
}

Status QueueWorker::set_statics(const std::string& name, std::vector<std::pair<Mac, uint16_t>> statics) {
  return run_on_thread([&]() -> Status {
    auto it = nics_.find(name);
    if (it == nics_.end()) return Error{ENOENT, "nic " + name + " is not on queue " + std::to_string(queue_)};
    it->second->cfg.nic.statics = std::move(statics);
    rebuild_ports();
    return {};
  });
}

Status QueueWorker::remove_nic(const std::string& name) {
  return run_on_thread([&]() -> Status {
    auto it = nics_.find(name);
    if (it == nics_.end()) return Error{ENOENT, "nic " + name + " is not on queue " + std::to_string(queue_)};
    Nic& n = *it->second;
    // No new deliveries to it: what reaches its vmq socket takes the software
    // path, which no longer knows it; what it still sends is dropped (no_port).
    if (n.vmq_sock) n.vmq_sock->nic = nullptr;
    n.removing = true;
    rebuild_ports();
    // Frames already in its rings: deliver what can be, then wait for its
    // sends to complete (bounded), so no buffer stays behind.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    do {
      if (n.vmq_sock) process_rx(*n.vmq_sock, opts_.ring_size);
      process_rx(*n.backend, opts_.ring_size);
      for (auto& [ctx, sock] : n.extras) process_rx(*sock, opts_.ring_size);
      kick_tx();
      reap_completions(*n.ctx);
      reap_completions(*uplink_ctx_);
    } while (n.backend->outstanding && std::chrono::steady_clock::now() < deadline);
    // Buffers still posted to its fill rings come back to the pool.
    auto reclaim = [&](Ctx& c) {
      for (uint32_t i = *c.fill.consumer; i != c.fill.cached_prod; i++)
        free_.push_back(*xsk_ring_prod__fill_addr(&c.fill, i));
      c.in_fill = 0;
    };
    reclaim(*n.ctx);
    for (auto& [ctx, sock] : n.extras) {
      reclaim(*ctx);
      destroy_socket(sock);
    }
    std::erase(to_kick_, n.backend);
    if (n.vmq_sock) std::erase(to_kick_, n.vmq_sock);
    if (n.vmq_sock) destroy_socket(n.vmq_sock);
    destroy_socket(n.backend);
    nics_.erase(it);
    rebuild_ports();
    rebuild_fill_ctxs();
    return {};
  });
}

void QueueWorker::inject_from_vm(const std::string& nic, std::vector<uint8_t> frame) {
  {
    std::lock_guard lock(inbox_mu_);
    if (inbox_.size() >= opts_.ring_size) {  // bounded, like a ring
      bump(counters_.drops[static_cast<size_t>(Drop::TxRingFull)]);
      return;
    }
    inbox_.emplace_back(nic, std::move(frame));
  }
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
}

void QueueWorker::drain_inbox() {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> frames;
  {
    std::lock_guard lock(inbox_mu_);
    if (inbox_.empty()) return;
    frames.swap(inbox_);
  }
  auto* umem = static_cast<uint8_t*>(area_);
  for (auto& [name, bytes] : frames) {
    if (name.empty()) {  // from the uplink, through the host's stack
      uint64_t base = alloc_frame();
      if (base == UINT64_MAX || bytes.size() + kHeadroom > opts_.frame_size) {
        if (base != UINT64_MAX) free_.push_back(base);
        drop(nullptr, Drop::NoBuffer);
        continue;
      }
      bump(counters_.rx_stack);
      std::memcpy(umem + base + kHeadroom, bytes.data(), bytes.size());
      forward_from_uplink(base + kHeadroom, static_cast<uint32_t>(bytes.size()), nullptr);
      if (refs_[base / opts_.frame_size] == 0) free_.push_back(base);
      continue;
    }
    auto it = nics_.find(name);
    if (it == nics_.end()) continue;  // disconnected meanwhile
    uint64_t base = alloc_frame();
    if (base == UINT64_MAX || bytes.size() + kHeadroom > opts_.frame_size) {
      if (base != UINT64_MAX) free_.push_back(base);
      drop(it->second.get(), Drop::NoBuffer);
      continue;
    }
    std::memcpy(umem + base + kHeadroom, bytes.data(), bytes.size());
    forward_from_vm(*it->second, base + kHeadroom, static_cast<uint32_t>(bytes.size()));
    if (refs_[base / opts_.frame_size] == 0) free_.push_back(base);
  }
}

PoolState QueueWorker::pool() const {
  return PoolState{opts_.frames, pool_free_.load(), pool_fill_.load(), pool_flight_.load(), pool_above_.load()};
}

}  // namespace xvmq::switchd
