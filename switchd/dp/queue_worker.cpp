#include "switchd/dp/queue_worker.h"


#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "switchd/dp/queue_worker_parts.h"

namespace xvmq::switchd {

std::string_view to_string(XskStat s) {
  switch (s) {
    case XskStat::RxDropped:
      return "rx_dropped";
    case XskStat::RxRingFull:
      return "rx_ring_full";
    case XskStat::RxFillRingEmpty:
      return "rx_fill_ring_empty_descs";
    case XskStat::RxInvalidDescs:
      return "rx_invalid_descs";
    case XskStat::TxInvalidDescs:
      return "tx_invalid_descs";
    case XskStat::Count:
      break;
  }
  return "unknown";
}

std::string_view to_string(Drop d) {
  switch (d) {
    case Drop::UnknownUnicast:
      return "unknown_unicast";
    case Drop::SpoofedSource:
      return "spoofed_source";
    case Drop::TaggedOnAccess:
      return "tagged_on_access";
    case Drop::VlanNotAllowed:
      return "vlan_not_allowed";
    case Drop::NoPort:
      return "no_port";
    case Drop::Backpressure:
      return "backpressure";
    case Drop::TxRingFull:
      return "tx_ring_full";
    case Drop::NoBuffer:
      return "no_buffer";
    case Drop::Malformed:
      return "malformed";
    case Drop::VhostNotReady:
      return "vhost_not_ready";
    case Drop::VhostRxRingFull:
      return "vhost_rx_ring_full";
    case Drop::VhostBadRing:
      return "vhost_bad_ring";
    case Drop::Count:
      break;
  }
  return "?";
}

namespace {

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

}  // namespace

QueueWorker::QueueWorker(std::string uplink, uint32_t queue, int cpu, WorkerOptions opts, Fdb* fdb)
    : uplink_(std::move(uplink)),
      queue_(queue),
      cpu_(cpu),
      opts_(opts),
      fdb_(fdb),
      pool_(opts.frames, opts.frame_size) {
  // The host's stack reader's ring (inject_from_uplink).
  inboxes_.push_back(std::make_unique<Inbox>(opts_.ring_size, opts_.frame_size - kTagHeadroom, std::string()));
}

QueueWorker::~QueueWorker() {
  stop_ = true;
  if (wake_fd_ >= 0) wake();
  if (thread_.joinable()) thread_.join();
  if (handoff_ && handoff_ring_) handoff_->close_handoff(handoff_ring_);
  // The kernel waits for an RCU grace period in each socket's release
  // (xsk_unbind_dev): one after the other, a thousand NICs' sockets take
  // seconds. libxdp's bookkeeping is done here, one socket at a time, with
  // a duplicate of each fd kept; the duplicates are then closed from
  // several threads at once, whose grace periods overlap.
  std::vector<int> last_refs;
  auto destroy_later = [&](Sock* s) {
    int d = fcntl(s->xs->fd(), F_DUPFD_CLOEXEC, 0);
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
  umem_.reset();
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

void QueueWorker::wake() {
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
}

Status QueueWorker::create_umem() {
  const std::string where = uplink_ + " queue " + std::to_string(queue_);
  if (opts_.frame_size != 2048 && opts_.frame_size != 4096)
    return Error{EINVAL, "UMEM of " + where + ": frame size must be 2048 or 4096"};
  uplink_ctx_ = std::make_unique<Ctx>();
  uplink_ctx_->ifname = uplink_;
  const xsk::UmemConfig cfg{
      .frames = opts_.frames, .frame_size = opts_.frame_size, .fill_size = opts_.ring_size, .headroom = kTagHeadroom};
  auto umem = xsk::Umem::create(cfg, *uplink_ctx_, where);
  if (!umem) return umem.error();
  umem_ = std::move(*umem);
  area_ = umem_->data();
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
  return default_sock_->xs->fd();
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

Status QueueWorker::open_extra_sockets(Nic& n, NicSockets& out) {
  for (uint32_t q : n.cfg.extra_queues) {
    auto ctx = std::make_unique<Ctx>();
    ctx->ifname = n.cfg.nic.backend;
    auto e = create_socket(n.cfg.nic.backend, q, ctx.get(), opts_.nic_ring_size);
    if (!e) return e.error();
    (*e)->kind = Sock::Backend;
    (*e)->nic = &n;
    out.backend.emplace_back(q, (*e)->xs->fd());
    n.extras.emplace_back(std::move(ctx), *e);
  }
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
  NicSockets out{{{queue_, n->backend->xs->fd()}}, n->vmq_sock->xs->fd()};
  nics_[cfg.nic.name] = std::move(n);
  rebuild_fill_ctxs();
  refill(*uplink_ctx_, opts_.uplink_reserve);
  if (handoff_) handoff_ring_ = handoff_->open_handoff(cfg.nic.name);
  thread_ = std::thread([this] { loop(); });
  return out;
}

Result<QueueWorker::Sock*> QueueWorker::create_socket(const std::string& ifname, uint32_t queue, Ctx* ctx,
                                                      uint32_t ring) {
  auto s = std::make_unique<Sock>();
  // Zero-copy where the driver has it, else copy; a queue a killed switchd
  // had sockets on says EBUSY for a while: wait a little (100 tries, 10 ms apart).
  const xsk::SocketConfig cfg{.rx_size = ring, .tx_size = ring, .bind_flags = XDP_USE_NEED_WAKEUP, .busy_retries = 99};
  auto xs = xsk::Socket::create(ifname, queue, *umem_, *ctx, cfg);
  if (!xs) return xs.error();
  s->xs = std::move(*xs);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = s.get();
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, s->xs->fd(), &ev) != 0)
    return make_error(errno, "AF_XDP socket on " + ifname + " queue " + std::to_string(queue) + ": epoll");
  s->ctx = ctx;
  socks_.push_back(std::move(s));
  return socks_.back().get();
}

void QueueWorker::read_xsk_stats(Sock& s) {
  xdp_statistics st{};
  if (!s.xs->statistics(st)) return;
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
  (void)epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, s->xs->fd(), nullptr);
  s->xs.reset();
  for (auto it = socks_.begin(); it != socks_.end(); ++it)
    if (it->get() == s) {
      socks_.erase(it);
      break;
    }
}

Status QueueWorker::run_on_thread(std::function<Status()> fn) {
  if (!thread_.joinable()) return fn();
  return mailbox_.post(std::move(fn), [this] { wake(); });
}

void QueueWorker::rebuild_fill_ctxs() {
  fill_ctxs_.clear();
  for (auto& [_, n] : nics_) {
    if (n->ctx) fill_ctxs_.push_back(n->ctx.get());
    for (auto& [ctx, sock] : n->extras) fill_ctxs_.push_back(ctx.get());
  }
  fill_start_ = 0;
}

Result<NicSockets> QueueWorker::add_nic(const WorkerNic& cfg) {
  NicSockets out;
  Status st = run_on_thread([&]() -> Status {
    if (nics_.count(cfg.nic.name))
      return Error{EEXIST, "nic " + cfg.nic.name + " is already on queue " + std::to_string(queue_)};
    const size_t own = cfg.owner ? 0 : 1;
    if (fill_ctxs_.size() + (cfg.vhost ? 0 : own) + cfg.extra_queues.size() > opts_.max_sockets)
      return Error{ENOSPC, "queue " + std::to_string(queue_) + " has receive buffers for " +
                               std::to_string(opts_.max_sockets) + " backend sockets, all reserved (--max-nics)"};
    auto n = std::make_unique<Nic>();
    n->cfg = cfg;
    auto undo = [&] {
      for (auto& [ctx, sock] : n->extras) destroy_socket(sock);
      if (n->backend) destroy_socket(n->backend);
      if (n->vmq_sock) destroy_socket(n->vmq_sock);
    };
    if (cfg.vhost) {  // no socket on a backend: the guest's rings (vhost_user.h)
      n->vhost = cfg.vhost.get();
      n->vhost_pair = std::min(queue_, cfg.vhost->pairs() - 1);
    } else if (own) {
      if (auto st = open_backend_socket(*n); !st) return st;
      out.backend.emplace_back(queue_, n->backend->xs->fd());
    }
    Status opened = open_extra_sockets(*n, out);
    if (opened && cfg.vmq) {
      opened = open_vmq_socket(*n);
      if (opened) out.vmq_fd = n->vmq_sock->xs->fd();
    }
    if (!opened) {
      undo();
      return opened;
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
    fd = n.vmq_sock->xs->fd();
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

// Frames already in a NIC's rings: deliver what can be, then wait for its
// sends to complete (bounded), so no buffer stays behind.
void QueueWorker::flush_nic(Nic& n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  do {
    if (n.vmq_sock) process_rx(*n.vmq_sock, opts_.ring_size);
    if (n.backend) process_rx(*n.backend, opts_.ring_size);
    for (auto& [ctx, sock] : n.extras) process_rx(*sock, opts_.ring_size);
    kick_tx();
    wake_owners();
    if (n.ctx) reap_completions(*n.ctx);
    reap_completions(*uplink_ctx_);
  } while (n.backend && n.backend->outstanding && std::chrono::steady_clock::now() < deadline);
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
    flush_nic(n);
    // Buffers still posted to its fill rings come back to the pool.
    if (n.ctx) xsk::reclaim_fill(*n.ctx, pool_);
    for (auto& [ctx, sock] : n.extras) {
      xsk::reclaim_fill(*ctx, pool_);
      destroy_socket(sock);
    }
    if (n.backend) std::erase(to_kick_, n.backend);
    if (n.vmq_sock) std::erase(to_kick_, n.vmq_sock);
    if (n.vmq_sock) destroy_socket(n.vmq_sock);
    if (n.backend) destroy_socket(n.backend);
    if (n.vhost) n.vhost->flush(n.vhost_pair);
    nics_.erase(it);  // the last worker to let a vhost-user device go closes it and its socket file
    rebuild_ports();
    rebuild_fill_ctxs();
    return {};
  });
}

HandoffRing* QueueWorker::open_handoff(const std::string& nic) {
  HandoffRing* ring = nullptr;
  (void)run_on_thread([&]() -> Status {
    inboxes_.push_back(std::make_unique<Inbox>(opts_.ring_size, opts_.frame_size - kTagHeadroom, nic));
    ring = &inboxes_.back()->ring;
    rebuild_ports();  // resolves the inbox's NIC
    return {};
  });
  return ring;
}

HandoffRing* QueueWorker::delivery_ring(uint32_t source) {
  HandoffRing* ring = nullptr;
  (void)run_on_thread([&]() -> Status {
    for (auto& in : inboxes_)
      if (in->deliveries && in->source == source) ring = &in->ring;
    if (ring) return {};
    auto in = std::make_unique<Inbox>(opts_.ring_size, opts_.frame_size - kTagHeadroom, std::string());
    in->deliveries = true;
    in->source = source;
    ring = &in->ring;
    inboxes_.push_back(std::move(in));
    return {};
  });
  return ring;
}

void QueueWorker::close_handoff(HandoffRing* ring) {
  (void)run_on_thread([&]() -> Status {
    std::erase_if(inboxes_, [ring](const auto& in) { return &in->ring == ring; });
    return {};
  });
}

PoolState QueueWorker::pool() const {
  return PoolState{opts_.frames, pool_free_.load(), pool_fill_.load(), pool_flight_.load(), pool_above_.load()};
}

}  // namespace xvmq::switchd
