#include "switchd/dp/vhost_user.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "switchd/host/service.h"

namespace xvmq::switchd {

// The split virtqueue's layout (virtio 1.x, 2.7), little-endian on x86.
struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags, next;
};
struct Avail {
  uint16_t flags, idx;
  uint16_t ring[];
};
struct UsedElem {
  uint32_t id, len;
};
struct Used {
  uint16_t flags, idx;
  UsedElem ring[];
};

namespace {

constexpr uint16_t kDescNext = 1, kDescWrite = 2;
constexpr uint16_t kAvailNoInterrupt = 1;
constexpr uint32_t kMaxRing = 32768;
constexpr uint32_t kMaxChain = 1024, kMaxDropped = 64;  // next_tx's bounds

// Feature bits (virtio 1.x, 5.1.3; the vhost-user spec).
constexpr uint64_t kNetMrgRxbuf = 1ull << 15;
constexpr uint64_t kRingEventIdx = 1ull << 29;
constexpr uint64_t kNetMq = 1ull << 22;  // offered with more than one pair; QEMU masks it off without mq=on
constexpr uint64_t kProtocolFeatures = 1ull << 30;
constexpr uint64_t kVersion1 = 1ull << 32;
constexpr uint64_t kOffered = kNetMrgRxbuf | kRingEventIdx | kProtocolFeatures | kVersion1;
constexpr uint64_t kProtocolMq = 1ull << 0;

// Requests (front-end to back-end) and header flags.
enum : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
};
constexpr uint32_t kVersion = 0x1, kReplyFlag = 0x4;
constexpr uint64_t kVringNoFd = 1ull << 8;
constexpr size_t kMaxFds = 8, kMaxPayload = 8 + 8 * 32;

struct Header {
  uint32_t request, flags, size;
};
struct VringState {
  uint32_t index, num;
};
struct VringAddr {
  uint32_t index, flags;
  uint64_t desc, used, avail, log;
};
struct MemRegion {
  uint64_t gpa, size, uva, mmap_offset;
};

uint16_t load_acquire(const uint16_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

}  // namespace

Result<std::unique_ptr<VhostUserDevice>> VhostUserDevice::listen(const std::string& path, std::vector<int> epoll_fds,
                                                                 const std::string& nic) {
  std::unique_ptr<VhostUserDevice> d(new VhostUserDevice());
  if (epoll_fds.empty()) return Error{EINVAL, "vhost-user socket " + path + ": no queue pair"};
  d->path_ = path;
  d->nic_ = nic;
  d->epoll_fd_ = epoll_fds.front();
  d->pair_epoll_ = epoll_fds;
  d->rings_.resize(2 * epoll_fds.size());
  d->locks_ = std::make_unique<std::mutex[]>(epoll_fds.size());
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) return Error{ENAMETOOLONG, "vhost-user socket " + path + ": path too long"};
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  struct stat st{};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Error{EEXIST, "vhost-user socket " + path + ": a file that is not a socket is there"};
    (void)unlink(path.c_str());  // left by a switchd that did not stop cleanly
  }
  d->listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (d->listen_fd_ < 0) return make_error(errno, "vhost-user socket " + path);
  if (bind(d->listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
    return make_error(errno, "vhost-user socket " + path + ": bind");
  (void)chmod(path.c_str(), 0660);
  if (::listen(d->listen_fd_, 1) != 0) return make_error(errno, "vhost-user socket " + path + ": listen");
  d->set_fd(d->listen_fd_, d->listen_fd_, d->epoll_fd_);
  return d;
}

VhostUserDevice::~VhostUserDevice() {
  drop_client();
  if (listen_fd_ >= 0) {
    (void)epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
    close(listen_fd_);
    (void)unlink(path_.c_str());
  }
}

// A new fd in `slot`, watched by the slot's `epoll_fd` (none: -1), closing
// what was there. Out of the epoll first: the front-end holds the same file,
// so closing our fd alone would leave it registered.
void VhostUserDevice::set_fd(int& slot, int fd, int epoll_fd) {
  if (slot >= 0 && slot != fd) {
    if (epoll_fd >= 0) (void)epoll_ctl(epoll_fd, EPOLL_CTL_DEL, slot, nullptr);
    close(slot);
  }
  slot = fd;
  if (fd < 0 || epoll_fd < 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = this;
  (void)epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
}

std::vector<std::unique_lock<std::mutex>> VhostUserDevice::lock_all() {
  std::vector<std::unique_lock<std::mutex>> held;
  for (uint32_t p = 0; p < pairs(); p++) held.emplace_back(locks_[p]);
  return held;
}

void VhostUserDevice::unmap_all() {
  for (auto& r : regions_)
    if (r.map) munmap(r.map, r.map_len);
  regions_.clear();
  for (auto& r : rings_) r.desc = nullptr, r.avail = nullptr, r.used = nullptr;
}

void VhostUserDevice::drop_client() {
  auto held = lock_all();
  reset_rings();
  unmap_all();
  features_ = protocol_features_ = 0;
  if (conn_fd_ >= 0) {
    set_fd(conn_fd_, -1, epoll_fd_);
    service::log(service::Level::Info, "nic %s: vhost-user client on %s went away; listening again", nic_.c_str(),
                 path_.c_str());
  }
}

uint8_t* VhostUserDevice::gpa(uint64_t addr, uint64_t len) const {
  for (const auto& r : regions_)
    if (addr >= r.gpa && len <= r.size && addr - r.gpa <= r.size - len) return r.base + (addr - r.gpa);
  return nullptr;
}

uint8_t* VhostUserDevice::uva(uint64_t addr, uint64_t len) const {
  for (const auto& r : regions_)
    if (addr >= r.uva && len <= r.size && addr - r.uva <= r.size - len) return r.base + (addr - r.uva);
  return nullptr;
}

// Each table inside the memory and aligned as virtio requires (2.7: 16, 2
// and 4 bytes), or not mapped: the ring is not live.
void VhostUserDevice::map_ring(Ring& r) {
  auto at = [&](uint64_t addr, uint64_t len, uintptr_t align) -> uint8_t* {
    uint8_t* p = uva(addr, len);
    return p && reinterpret_cast<uintptr_t>(p) % align == 0 ? p : nullptr;
  };
  r.desc = reinterpret_cast<Desc*>(at(r.desc_uva, uint64_t{16} * r.num, 16));
  r.avail = reinterpret_cast<Avail*>(at(r.avail_uva, 6 + uint64_t{2} * r.num, 2));
  r.used = reinterpret_cast<Used*>(at(r.used_uva, 6 + uint64_t{8} * r.num, 4));
}

bool VhostUserDevice::live(const Ring& r) const {
  const bool enabled = r.enabled || !(features_ & kProtocolFeatures);
  return r.started && enabled && r.num && r.desc && r.avail && r.used;
}

bool VhostUserDevice::rx_live(uint32_t p) const {
  if (p >= pairs()) return false;
  std::lock_guard<std::mutex> lk(locks_[p]);
  return live(rings_[2 * p]);
}

void VhostUserDevice::accept_client() {
  const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  if (conn_fd_ >= 0) {  // one front-end at a time
    close(fd);
    return;
  }
  // The payload follows its header at once; never wait long for it.
  timeval tv{.tv_sec = 1, .tv_usec = 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  set_fd(conn_fd_, fd, epoll_fd_);
  service::log(service::Level::Info, "nic %s: vhost-user client connected on %s", nic_.c_str(), path_.c_str());
}

void VhostUserDevice::poll_control() {
  accept_client();
  for (int k = 0; k < 16 && conn_fd_ >= 0; k++)
    if (!serve_one()) break;
}

// One message, if one is waiting.
bool VhostUserDevice::serve_one() {
  Header h{};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  iovec iov{&h, sizeof(h)};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof(control);
  const ssize_t got = recvmsg(conn_fd_, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
  std::vector<int> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      const size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; i++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.push_back(fd);
      }
    }
  auto close_fds = [&] {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  };
  uint8_t payload[kMaxPayload];
  bool ok = got == static_cast<ssize_t>(sizeof(h)) && h.size <= sizeof(payload);
  if (ok && h.size) ok = recv(conn_fd_, payload, h.size, MSG_WAITALL) == static_cast<ssize_t>(h.size);
  if (ok) ok = handle(h.request, h.flags, payload, h.size, fds);
  close_fds();
  if (!ok) {
    if (got != 0)
      service::log(service::Level::Warn, "nic %s: vhost-user message %u on %s refused; dropping the client",
                   nic_.c_str(), h.request, path_.c_str());
    drop_client();
    return false;
  }
  return true;
}

bool VhostUserDevice::reply(uint32_t req, const void* payload, uint32_t size) {
  uint8_t buf[sizeof(Header) + 16];
  const Header h{req, kVersion | kReplyFlag, size};
  std::memcpy(buf, &h, sizeof(h));
  std::memcpy(buf + sizeof(h), payload, size);
  const size_t n = sizeof(h) + size;
  return send(conn_fd_, buf, n, MSG_NOSIGNAL) == static_cast<ssize_t>(n);
}

// One request. Takes the fds it keeps (sets them to -1 in `fds`).
bool VhostUserDevice::handle(uint32_t req, uint32_t, const uint8_t* p, uint32_t size, std::vector<int>& fds) {
  uint64_t v = 0;
  std::memcpy(&v, p, std::min<uint32_t>(size, 8));
  switch (req) {
    case kGetFeatures: {
      const uint64_t f = kOffered | (pairs() > 1 ? kNetMq : 0);
      return reply(req, &f, 8);
    }
    case kSetFeatures:
      features_ = v & (kOffered | kNetMq);
      hdr_len_ = features_ & (kNetMrgRxbuf | kVersion1) ? 12 : 10;
      return true;
    case kGetProtocolFeatures: {
      const uint64_t f = kProtocolMq;
      return reply(req, &f, 8);
    }
    case kSetProtocolFeatures:
      protocol_features_ = v & kProtocolMq;
      return true;
    case kGetQueueNum: {
      const uint64_t n = pairs();
      return reply(req, &n, 8);
    }
    case kSetOwner:
    case kSendRarp:
    case kSetLogBase:  // no F_LOG_ALL offered: the fds are closed
    case kSetLogFd:
      return true;
    case kResetOwner: {
      auto held = lock_all();
      reset_rings();
    }
      features_ = 0;
      return true;
    case kSetMemTable:
      return set_mem_table(p, size, fds);
    case kSetVringNum:
    case kSetVringAddr:
    case kSetVringBase:
    case kGetVringBase:
    case kSetVringEnable:
      return handle_vring(req, p, size);
    case kSetVringKick:
    case kSetVringCall:
    case kSetVringErr:
      return set_vring_fd(req, v, fds);
    default:
      service::log(service::Level::Warn, "nic %s: vhost-user request %u not served", nic_.c_str(), req);
      return true;
  }
}

void VhostUserDevice::reset_rings() {
  for (size_t i = 0; i < rings_.size(); i++) {
    set_fd(rings_[i].kick, -1, pair_epoll_[i / 2]);
    set_fd(rings_[i].call, -1, -1);
    rings_[i] = Ring{};
  }
}

// The guest's memory: each region's fd mapped whole, the rings found again in it.
bool VhostUserDevice::set_mem_table(const uint8_t* p, uint32_t size, const std::vector<int>& fds) {
  if (size < 8) return false;
  uint32_t n;
  std::memcpy(&n, p, 4);
  if (n > 8 || size < 8 + n * sizeof(MemRegion) || fds.size() < n) return false;
  auto held = lock_all();
  unmap_all();
  for (uint32_t i = 0; i < n; i++) {
    MemRegion mr;
    std::memcpy(&mr, p + 8 + i * sizeof(MemRegion), sizeof(mr));
    // Past the file's end the mapping is there but a touch is SIGBUS.
    struct stat st{};
    if (fstat(fds[i], &st) != 0 || st.st_size < 0 || mr.mmap_offset > static_cast<uint64_t>(st.st_size) ||
        mr.size > static_cast<uint64_t>(st.st_size) - mr.mmap_offset) {
      service::log(service::Level::Warn, "nic %s: vhost-user memory region %u runs past its file", nic_.c_str(), i);
      unmap_all();
      return false;
    }
    Region r{.gpa = mr.gpa, .size = mr.size, .uva = mr.uva};
    r.map_len = mr.size + mr.mmap_offset;
    r.map = mmap(nullptr, r.map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0);
    if (r.map == MAP_FAILED) {
      service::log(service::Level::Warn, "nic %s: vhost-user memory region %u (%llu bytes): mmap: %s", nic_.c_str(), i,
                   static_cast<unsigned long long>(r.map_len), std::strerror(errno));
      unmap_all();
      return false;
    }
    r.base = static_cast<uint8_t*>(r.map) + mr.mmap_offset;
    regions_.push_back(r);
  }
  for (auto& r : rings_)
    if (r.num) map_ring(r);
  return true;
}

bool VhostUserDevice::handle_vring(uint32_t req, const uint8_t* p, uint32_t size) {
  if (req == kSetVringAddr) {
    VringAddr a{};
    std::memcpy(&a, p, std::min<size_t>(size, sizeof(a)));
    if (a.index >= rings_.size()) return true;
    std::lock_guard<std::mutex> lk(locks_[a.index / 2]);
    Ring& r = rings_[a.index];
    r.desc_uva = a.desc, r.avail_uva = a.avail, r.used_uva = a.used;
    map_ring(r);
    return true;
  }
  VringState s{};
  std::memcpy(&s, p, std::min<size_t>(size, sizeof(s)));
  Ring* r = s.index < rings_.size() ? &rings_[s.index] : nullptr;
  std::unique_lock<std::mutex> lk;
  if (r) lk = std::unique_lock<std::mutex>(locks_[s.index / 2]);
  switch (req) {
    case kSetVringNum:
      if (!r) return true;  // a queue pair beyond the one offered
      if (!s.num || s.num > kMaxRing || (s.num & (s.num - 1))) return false;
      r->num = s.num;
      map_ring(*r);  // the tables' bounds were checked for the old size
      return true;
    case kSetVringBase:
      if (r) r->last_avail = static_cast<uint16_t>(s.num);
      return true;
    case kGetVringBase:  // stop the ring; QEMU starts it again with SET_VRING_BASE and KICK
      s.num = 0;
      if (r) {
        r->started = false;
        set_fd(r->kick, -1, pair_epoll_[s.index / 2]);
        s.num = r->last_avail;
      }
      return reply(req, &s, sizeof(s));
    case kSetVringEnable:  // the guest changed its queue pairs (ethtool -L): deliveries go to the enabled ones
      if (!r) return true;
      if (s.index % 2 == 0 && r->enabled != (s.num != 0))
        service::log(service::Level::Info, "nic %s: vhost-user queue pair %u %s", nic_.c_str(), s.index / 2,
                     s.num ? "enabled" : "disabled");
      r->enabled = s.num != 0;
      return true;
    default:
      return true;
  }
}

bool VhostUserDevice::set_vring_fd(uint32_t req, uint64_t v, std::vector<int>& fds) {
  int fd = -1;
  if (!(v & kVringNoFd) && !fds.empty()) std::swap(fd, fds.front());
  const uint32_t index = static_cast<uint32_t>(v & 0xff);
  if (index >= rings_.size() || req == kSetVringErr) {
    if (fd >= 0) close(fd);
    return true;
  }
  std::lock_guard<std::mutex> lk(locks_[index / 2]);
  Ring& r = rings_[index];
  if (req == kSetVringCall) {
    set_fd(r.call, fd, -1);
    return true;
  }
  // Read on every pass to clear it: never blocking, whatever the front-end
  // made it (QEMU's are non-blocking already; the flag is the shared file's).
  if (fd >= 0) (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  set_fd(r.kick, fd, pair_epoll_[index / 2]);
  r.polled = fd < 0;
  r.started = true;
  r.signalled_valid = false;  // the guest's used_event is new: notify at the next completion
  if (index % 2 == 0)
    service::log(service::Level::Info, "nic %s: vhost-user queue pair %u started (%u entries)%s", nic_.c_str(),
                 index / 2, r.num, fd < 0 ? ", polled" : "");
  // Everything before was completed in order: the used index is where the avail one was.
  if (r.used) r.last_used = r.used->idx;
  return true;
}

void VhostUserDevice::complete(Ring& r, uint16_t head, uint32_t len) {
  UsedElem& e = r.used->ring[r.last_used % r.num];
  e.id = head;
  e.len = len;
  r.last_used++;
}

VhostUserDevice::Rx VhostUserDevice::deliver(uint32_t p, const uint8_t* frame, uint32_t len) {
  std::lock_guard<std::mutex> lk(locks_[p]);
  Ring& r = rings_[2 * p];
  if (!live(r)) return Rx::NotReady;
  const bool mrg = features_ & kNetMrgRxbuf;
  const uint16_t avail_idx = load_acquire(&r.avail->idx);
  uint8_t hdr[12] = {};  // no flags, no GSO; num_buffers filled in below
  const uint32_t need = hdr_len_ + len;
  uint32_t done = 0;
  uint16_t a = r.last_avail, bufs = 0;
  uint8_t* num_buffers = nullptr;
  const uint16_t used_start = r.last_used;
  while (done < need) {
    if (a == avail_idx || (!mrg && bufs)) {
      r.last_used = used_start;  // nothing published: the entries written are overwritten later
      return bufs && !mrg ? Rx::BadRing : Rx::RingFull;
    }
    const uint16_t head = r.avail->ring[a % r.num];
    a++;
    uint16_t i = head;
    uint32_t chain = 0;
    for (uint32_t steps = 0; done < need; steps++) {
      if (i >= r.num || steps >= r.num) return r.last_used = used_start, Rx::BadRing;
      const Desc d = r.desc[i];
      uint8_t* to = (d.flags & kDescWrite) ? gpa(d.addr, d.len) : nullptr;
      if (!to || (done == 0 && d.len < hdr_len_)) return r.last_used = used_start, Rx::BadRing;
      uint32_t room = d.len;
      if (done < hdr_len_) {  // the header is in the chain's first buffer
        if (done == 0) num_buffers = to + 10;
        std::memcpy(to, hdr, hdr_len_);
        to += hdr_len_, room -= hdr_len_, done += hdr_len_, chain += hdr_len_;
      }
      const uint32_t n = std::min(room, need - done);
      std::memcpy(to, frame + (done - hdr_len_), n);
      done += n, chain += n;
      if (!(d.flags & kDescNext) || mrg) break;  // mergeable: one buffer per chain as Linux posts them
      i = d.next;
    }
    complete(r, head, chain);
    bufs++;
  }
  if (hdr_len_ == 12) std::memcpy(num_buffers, &bufs, 2);
  r.last_avail = a;
  __atomic_store_n(&r.used->idx, r.last_used, __ATOMIC_RELEASE);
  r.notify = true;
  return Rx::Ok;
}

uint32_t VhostUserDevice::next_tx(uint32_t p, uint8_t* dst, uint32_t cap, uint64_t* too_long) {
  std::lock_guard<std::mutex> lk(locks_[p]);
  Ring& r = rings_[2 * p + 1];
  // Bounded work per call whatever the guest posts: chains of at most
  // kMaxChain descriptors (Linux's vhost: UIO_MAXIOV), at most kMaxDropped
  // bad ones skipped; the rest waits for the worker's next pass.
  const uint32_t max_steps = std::min(r.num, kMaxChain);
  for (uint32_t dropped = 0; dropped < kMaxDropped && live(r) && r.last_avail != load_acquire(&r.avail->idx);) {
    const uint16_t head = r.avail->ring[r.last_avail % r.num];
    r.last_avail++;
    uint32_t skip = hdr_len_, len = 0;
    bool bad = head >= r.num;
    for (uint16_t i = head, steps = 0; !bad; steps++) {
      const Desc d = r.desc[i];
      const uint8_t* from = gpa(d.addr, d.len);
      if (!from || (d.flags & kDescWrite) || steps >= max_steps) {
        bad = true;
        break;
      }
      const uint32_t s = std::min(skip, d.len);
      skip -= s;
      const uint32_t n = d.len - s;
      if (n > cap - len) {  // len + n wraps for a buffer near 4 GiB
        bad = true;
        break;
      }
      std::memcpy(dst + len, from + s, n);
      len += n;
      if (!(d.flags & kDescNext)) break;
      i = d.next;
      if (i >= r.num) bad = true;
    }
    complete(r, head, 0);
    __atomic_store_n(&r.used->idx, r.last_used, __ATOMIC_RELEASE);
    r.notify = true;
    if (bad || len == 0) {
      ++*too_long, ++dropped;
      continue;
    }
    return len;
  }
  return 0;
}

// With VIRTIO_RING_F_EVENT_IDX (virtio 1.x, 2.7.10) each side says at which
// index it wants the next notification: the guest's used_event follows the
// avail ring's entries, ours (avail_event) the used ring's. Both tables were
// mapped with room for them (map_ring).
void VhostUserDevice::flush(uint32_t p) {
  std::lock_guard<std::mutex> lk(locks_[p]);
  const bool event_idx = features_ & kRingEventIdx;
  const uint64_t one = 1;
  for (uint32_t i = 2 * p; i < 2 * p + 2; i++) {
    Ring& r = rings_[i];
    uint64_t v;
    if (r.kick >= 0) (void)!read(r.kick, &v, sizeof(v));  // a level-triggered epoll would not sleep
    if (event_idx && live(r)) {
      // Kick at the next buffer the guest posts; one posted before it could
      // see this is looked for here, and a transmit ring's wakes the worker.
      __atomic_store_n(reinterpret_cast<uint16_t*>(&r.used->ring[r.num]), r.last_avail, __ATOMIC_RELEASE);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (i % 2 && r.kick >= 0 && load_acquire(&r.avail->idx) != r.last_avail) (void)!write(r.kick, &one, sizeof(one));
    }
    if (!r.notify) continue;
    r.notify = false;
    std::atomic_thread_fence(std::memory_order_seq_cst);  // used->idx before reading the guest's flags
    if (r.call < 0 || !r.avail) continue;
    if (event_idx) {
      // vring_need_event: the used index went past used_event since the
      // last notification (always notify the first time after a start).
      const uint16_t event = load_acquire(&r.avail->ring[r.num]);
      const uint16_t old = r.signalled_used;
      const bool valid = r.signalled_valid;
      r.signalled_used = r.last_used;
      r.signalled_valid = true;
      if (valid && static_cast<uint16_t>(r.last_used - event - 1) >= static_cast<uint16_t>(r.last_used - old)) continue;
    } else if (load_acquire(&r.avail->flags) & kAvailNoInterrupt) {
      continue;
    }
    (void)!write(r.call, &one, sizeof(one));
  }
}

}  // namespace xvmq::switchd
