// The queue worker's thread: receive, transmit, completions and refill,
// one pass after the other, sleeping in epoll_wait() when there is nothing
// to do (docs/architecture.md, "Receive buffers", for the refill rule).
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "switchd/dp/queue_worker.h"
#include "switchd/dp/queue_worker_parts.h"
#include "switchd/host/service.h"

namespace xvmq::switchd {

void QueueWorker::set_up_thread() {
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
      service::log(service::Level::Warn,
                   "queue %u: SCHED_FIFO priority %d refused: %s; the worker keeps the normal scheduler", queue_,
                   opts_.rt_priority, std::strerror(errno));
  }
}

void QueueWorker::loop() {
  set_up_thread();
  auto next_xsk_look = std::chrono::steady_clock::now();
  while (!stop_) {
    const auto now = std::chrono::steady_clock::now();
    now_s_ = static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());
    if (now >= next_xsk_look) {  // the kernel's drops, ten times a second
      for (auto& sock : socks_) read_xsk_stats(*sock);
      next_xsk_look = now + std::chrono::milliseconds(100);
    }
    mailbox_.run_pending();
    const uint32_t work = pass();
    const uint32_t flight = publish_pool_state();
    if (work || inbox_waiting() || !to_kick_.empty() || opts_.busy_poll) continue;
    wait_for_work(flight);
  }
}

// One pass over every socket; returns the frames that were waiting.
uint32_t QueueWorker::pass() {
  uint32_t work = 0;
  for (auto& s : socks_) {
    const uint32_t before = s->xs->rx_ready();
    if (before) {
      process_rx(*s, kBatch);
      work += before;
    }
  }
  drain_inboxes();
  for (Nic* n : vhost_nics_) work += serve_vhost(*n);
  kick_tx();
  wake_owners();
  reap_completions(*uplink_ctx_);
  // Only a backend with sends outstanding has completions (extras never send).
  for (Ctx* c : fill_ctxs_)
    if (c->tx_sock && c->tx_sock->outstanding) reap_completions(*c);
  // What a VM sends lands in its backend's fill ring: each has its floor
  // always, and a VM sending at full rate its share of the burst budget
  // (a ring of 64 lost four frames in five).
  refill_all();
  return work;
}

// Where the pool's frames are, for pool(); returns the frames in flight.
uint32_t QueueWorker::publish_pool_state() {
  uint32_t fill = uplink_ctx_->in_fill, flight = default_sock_ ? default_sock_->outstanding : 0;
  for (const Ctx* c : fill_ctxs_) {
    fill += c->in_fill;
    flight += c->tx_sock ? c->tx_sock->outstanding : 0;
  }
  pool_free_.store(pool_.size(), std::memory_order_relaxed);
  pool_fill_.store(fill, std::memory_order_relaxed);
  pool_flight_.store(flight, std::memory_order_relaxed);
  pool_above_.store(above_floor_, std::memory_order_relaxed);
  return flight;
}

void QueueWorker::wait_for_work(uint32_t in_flight) {
  // Completions of sends in flight need no wakeup in copy mode; a short
  // timeout covers drivers that complete asynchronously.
  epoll_event evs[64];
  const int ready = epoll_wait(epoll_fd_, evs, 64, in_flight ? 1 : 100);
  for (int i = 0; i < ready; i++)
    if (!evs[i].data.ptr) {
      uint64_t v;
      (void)!read(wake_fd_, &v, sizeof(v));
    }
}

void QueueWorker::process_rx(Sock& s, uint32_t budget) {
  uint32_t idx = 0;
  const uint32_t n = xsk_ring_cons__peek(&s.xs->rx(), budget, &idx);
  for (uint32_t i = 0; i < n; i++) {
    const xdp_desc* d = xsk_ring_cons__rx_desc(&s.xs->rx(), idx + i);
    const uint64_t addr = d->addr;
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
    pool_.free_if_unheld(pool_.base(addr));
  }
  xsk_ring_cons__release(&s.xs->rx(), n);
  s.ctx->in_fill -= std::min(n, s.ctx->in_fill);
  if (n) s.ctx->active = true;
}

void QueueWorker::kick_tx() {
  // Copy mode sends a bounded batch per call (32 frames): a pass may have
  // queued a whole receive batch for one socket, so it is kicked until its
  // ring is empty, at most kKicksPerPass times (a pass that sent less than it
  // received would let the ring fill, and frames go to backpressure, at a
  // rate the worker keeps up with). A socket with more to send stays on the
  // list (compacted in place: no allocation).
  size_t keep = 0;
  for (Sock* s : to_kick_) {
    s->queued_kick = false;
    bool ok = s->xs->kick();
    for (uint32_t k = 1; ok && k < kKicksPerPass && s->xs->tx_pending(); k++) ok = s->xs->kick();
    if (!ok || !s->xs->tx_pending()) continue;
    s->queued_kick = true;
    to_kick_[keep++] = s;
  }
  to_kick_.resize(keep);
}

void QueueWorker::reap_completions(Ctx& c) {
  const uint32_t n = xsk::complete(c, pool_, opts_.ring_size);
  if (c.tx_sock) c.tx_sock->outstanding -= std::min(n, c.tx_sock->outstanding);
}

void QueueWorker::refill(Ctx& c, uint32_t target) {
  if (c.in_fill >= target || pool_.empty()) return;
  (void)xsk::fill(c, pool_, target - c.in_fill);
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

}  // namespace xvmq::switchd
