#include "xsk/queue.h"

#include <poll.h>

namespace xvmq {

Result<std::unique_ptr<XskQueue>> XskQueue::create(const std::string& ifname, uint32_t queue, const XskOptions& opts) {
  std::unique_ptr<XskQueue> q(new XskQueue(opts.frames, opts.frame_size));
  q->ifname_ = ifname;
  q->queue_ = queue;
  q->opts_ = opts;
  const xsk::UmemConfig cfg{
      .frames = opts.frames, .frame_size = opts.frame_size, .fill_size = opts.ring_size, .headroom = 0};
  auto umem = xsk::Umem::create(cfg, q->rings_, ifname + " queue " + std::to_string(queue));
  if (!umem) return umem.error();
  q->umem_ = std::move(*umem);
  return q;
}

XskQueue::~XskQueue() {
  socks_.clear();  // the sockets before their UMEM
  umem_.reset();
}

Result<size_t> XskQueue::add_socket() {
  const xsk::SocketConfig cfg{
      .rx_size = opts_.ring_size,
      .tx_size = opts_.ring_size,
      .bind_flags = static_cast<uint16_t>((opts_.zero_copy ? XDP_ZEROCOPY : XDP_COPY) | XDP_USE_NEED_WAKEUP),
      .busy_retries = 0};
  auto s = xsk::Socket::create(ifname_, queue_, *umem_, rings_, cfg);
  if (!s) return s.error();
  socks_.push_back(std::move(*s));
  if (socks_.size() == 1) xsk::fill(rings_, pool_, pool_.size());
  return socks_.size() - 1;
}

std::vector<std::vector<uint8_t>> XskQueue::receive(size_t socket, size_t max, int timeout_ms) {
  std::vector<std::vector<uint8_t>> out;
  auto& rx = socks_.at(socket)->rx();
  if (timeout_ms > 0 && !xsk_cons_nb_avail(&rx, 1)) {
    pollfd p{fd(socket), POLLIN, 0};
    (void)poll(&p, 1, timeout_ms);
  }
  uint32_t idx = 0;
  const uint32_t n = xsk_ring_cons__peek(&rx, static_cast<uint32_t>(max), &idx);
  for (uint32_t i = 0; i < n; i++) {
    const xdp_desc* d = xsk_ring_cons__rx_desc(&rx, idx + i);
    const uint8_t* p = umem_->at(d->addr);
    out.emplace_back(p, p + d->len);
    pool_.push(xsk_umem__extract_addr(d->addr));
  }
  xsk_ring_cons__release(&rx, n);
  xsk::fill(rings_, pool_, pool_.size());
  return out;
}

}  // namespace xvmq
