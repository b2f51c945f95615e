#include "xsk/socket.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "loader/log.h"

namespace xvmq::xsk {

Result<std::unique_ptr<Umem>> Umem::create(const UmemConfig& cfg, FillComp& first, const std::string& where) {
  log::install();
  std::unique_ptr<Umem> u(new Umem());
  u->cfg_ = cfg;
  u->area_size_ = static_cast<size_t>(cfg.frames) * cfg.frame_size;
  u->area_ = mmap(nullptr, u->area_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (u->area_ == MAP_FAILED) {
    u->area_ = nullptr;
    return make_error(errno, "UMEM of " + where + ": mmap " + std::to_string(u->area_size_) + " bytes");
  }
  xsk_umem_config c{};
  c.fill_size = cfg.fill_size;
  c.comp_size = cfg.fill_size;
  c.frame_size = cfg.frame_size;
  c.frame_headroom = cfg.headroom;
  log::clear_captured();
  if (int err = xsk_umem__create(&u->umem_, u->area_, u->area_size_, &first.fill, &first.comp, &c); err)
    return make_error(err, "UMEM of " + where);
  return u;
}

Umem::~Umem() {
  if (umem_) xsk_umem__delete(umem_);
  if (area_) munmap(area_, area_size_);
}

namespace {

Error socket_error(int err, const std::string& ifname, uint32_t queue) {
  const std::string what = "AF_XDP socket on " + ifname + " queue " + std::to_string(queue);
  if (err != -EMFILE && err != -ENFILE) return make_error(err, what);
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  return Error{EMFILE,
               what + ": out of file descriptors (" +
                   (err == -ENFILE ? std::string("the system's fs.file-max")
                                   : "RLIMIT_NOFILE " + std::to_string(rl.rlim_cur) + "; raise switchd's LimitNOFILE") +
                   ")"};
}

}  // namespace

Result<std::unique_ptr<Socket>> Socket::create(const std::string& ifname, uint32_t queue, Umem& umem, FillComp& rings,
                                               const SocketConfig& cfg) {
  std::unique_ptr<Socket> s(new Socket());
  xsk_socket_config c{};
  c.rx_size = cfg.rx_size;
  c.tx_size = cfg.tx_size;
  c.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
  c.bind_flags = cfg.bind_flags;
  int err = 0;
  for (int attempt = 0;; attempt++) {
    log::clear_captured();
    err = xsk_socket__create_shared(&s->xsk_, ifname.c_str(), queue, umem.umem(), &s->rx_, &s->tx_, &rings.fill,
                                    &rings.comp, &c);
    if (err != -EBUSY || attempt >= cfg.busy_retries) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (err) {
    s->xsk_ = nullptr;
    return socket_error(err, ifname, queue);
  }
  s->rings_ = &rings;
  return s;
}

Socket::~Socket() {
  if (xsk_) xsk_socket__delete(xsk_);
}

bool Socket::kick() {
  if (sendto(fd(), nullptr, 0, MSG_DONTWAIT, nullptr, 0) >= 0) return true;
  return errno == EAGAIN || errno == EBUSY || errno == ENOBUFS || errno == ENETDOWN;
}

bool Socket::statistics(xdp_statistics& st) const {
  socklen_t len = sizeof(st);
  return getsockopt(fd(), SOL_XDP, XDP_STATISTICS, &st, &len) == 0;
}

uint32_t fill(FillComp& r, UmemPool& pool, uint32_t want) {
  want = std::min(want, pool.size());
  if (want == 0) return 0;
  // reserve() is all or nothing: ask for what the ring has room for.
  want = std::min(want, xsk_prod_nb_free(&r.fill, want));
  uint32_t idx = 0;
  if (want == 0 || xsk_ring_prod__reserve(&r.fill, want, &idx) != want) return 0;
  uint64_t batch[64];
  for (uint32_t done = 0; done < want;) {
    const uint32_t n = pool.pop_n(batch, std::min<uint32_t>(64, want - done));
    for (uint32_t i = 0; i < n; i++) *xsk_ring_prod__fill_addr(&r.fill, idx + done + i) = batch[i];
    done += n;
  }
  xsk_ring_prod__submit(&r.fill, want);
  r.in_fill += want;
  return want;
}

void reclaim_fill(FillComp& r, UmemPool& pool) {
  for (uint32_t i = *r.fill.consumer; i != r.fill.cached_prod; i++) pool.push(*xsk_ring_prod__fill_addr(&r.fill, i));
  r.in_fill = 0;
}

uint32_t complete(FillComp& r, UmemPool& pool, uint32_t max) {
  uint32_t idx = 0;
  const uint32_t n = xsk_ring_cons__peek(&r.comp, max, &idx);
  for (uint32_t i = 0; i < n; i++) pool.complete(*xsk_ring_cons__comp_addr(&r.comp, idx + i));
  xsk_ring_cons__release(&r.comp, n);
  return n;
}

}  // namespace xvmq::xsk
