#include "loader/xsk.h"

#include <linux/if_xdp.h>
#include <poll.h>
#include <sys/mman.h>
#include <xdp/xsk.h>

#include <deque>

#include "loader/log.h"

namespace xvmq {

struct XskQueue::Rings {
  xsk_ring_prod fill{};
  xsk_ring_cons comp{};
  std::deque<xsk_ring_cons> rx;  // stable addresses: libxdp keeps pointers
  std::deque<xsk_ring_prod> tx;
};

Result<std::unique_ptr<XskQueue>> XskQueue::create(const std::string& ifname, uint32_t queue,
                                                   const XskOptions& opts) {
  log::install();
  std::unique_ptr<XskQueue> q(new XskQueue());
  q->ifname_ = ifname;
  q->queue_ = queue;
  q->opts_ = opts;
  q->rings_ = std::make_unique<Rings>();
  q->area_size_ = static_cast<size_t>(opts.frames) * opts.frame_size;
  q->area_ = mmap(nullptr, q->area_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q->area_ == MAP_FAILED) {
    q->area_ = nullptr;
    return make_error(errno, "UMEM of " + ifname + " queue " + std::to_string(queue) + ": mmap");
  }
  xsk_umem_config cfg{};
  cfg.fill_size = opts.ring_size;
  cfg.comp_size = opts.ring_size;
  cfg.frame_size = opts.frame_size;
  cfg.frame_headroom = 0;
  log::clear_captured();
  if (int err = xsk_umem__create(&q->umem_, q->area_, q->area_size_, &q->rings_->fill,
                                 &q->rings_->comp, &cfg);
      err)
    return make_error(err, "UMEM of " + ifname + " queue " + std::to_string(queue));
  for (uint32_t i = 0; i < opts.frames; i++)
    q->free_frames_.push_back(static_cast<uint64_t>(i) * opts.frame_size);
  return q;
}

XskQueue::~XskQueue() {
  for (auto* x : xsks_) xsk_socket__delete(x);
  if (umem_) xsk_umem__delete(umem_);
  if (area_) munmap(area_, area_size_);
}

Result<size_t> XskQueue::add_socket() {
  xsk_socket_config cfg{};
  cfg.rx_size = opts_.ring_size;
  cfg.tx_size = opts_.ring_size;
  cfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
  cfg.bind_flags = static_cast<uint16_t>((opts_.zero_copy ? XDP_ZEROCOPY : XDP_COPY) | XDP_USE_NEED_WAKEUP);
  auto& rx = rings_->rx.emplace_back();
  auto& tx = rings_->tx.emplace_back();
  xsk_socket* xsk = nullptr;
  log::clear_captured();
  int err = xsk_socket__create_shared(&xsk, ifname_.c_str(), queue_, umem_, &rx, &tx, &rings_->fill,
                                      &rings_->comp, &cfg);
  if (err) {
    rings_->rx.pop_back();
    rings_->tx.pop_back();
    return make_error(err, "AF_XDP socket on " + ifname_ + " queue " + std::to_string(queue_));
  }
  xsks_.push_back(xsk);
  if (xsks_.size() == 1) refill();
  return xsks_.size() - 1;
}

int XskQueue::fd(size_t socket) const { return xsk_socket__fd(xsks_.at(socket)); }

void XskQueue::refill() {
  uint32_t idx = 0;
  // reserve() is all or nothing: ask for what the ring has room for.
  uint32_t want = xsk_prod_nb_free(&rings_->fill, static_cast<uint32_t>(free_frames_.size()));
  if (want > free_frames_.size()) want = static_cast<uint32_t>(free_frames_.size());
  if (want == 0) return;
  uint32_t n = xsk_ring_prod__reserve(&rings_->fill, want, &idx);
  for (uint32_t i = 0; i < n; i++) {
    *xsk_ring_prod__fill_addr(&rings_->fill, idx + i) = free_frames_.back();
    free_frames_.pop_back();
  }
  xsk_ring_prod__submit(&rings_->fill, n);
}

std::vector<std::vector<uint8_t>> XskQueue::receive(size_t socket, size_t max, int timeout_ms) {
  std::vector<std::vector<uint8_t>> out;
  auto& rx = rings_->rx.at(socket);
  if (timeout_ms > 0 && !xsk_cons_nb_avail(&rx, 1)) {
    pollfd p{fd(socket), POLLIN, 0};
    (void)poll(&p, 1, timeout_ms);
  }
  uint32_t idx = 0;
  uint32_t n = xsk_ring_cons__peek(&rx, static_cast<uint32_t>(max), &idx);
  for (uint32_t i = 0; i < n; i++) {
    const xdp_desc* d = xsk_ring_cons__rx_desc(&rx, idx + i);
    auto* p = static_cast<uint8_t*>(xsk_umem__get_data(area_, d->addr));
    out.emplace_back(p, p + d->len);
    free_frames_.push_back(xsk_umem__extract_addr(d->addr));
  }
  xsk_ring_cons__release(&rx, n);
  refill();
  return out;
}

}  // namespace xvmq
