#include "tests/lib/capture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "tests/lib/frames.h"

namespace xvmq::test {

using namespace std::chrono_literals;

std::string tag_str(int tag) { return tag == kUntagged ? "untagged" : "tag " + std::to_string(tag); }

std::string enter_netns(const std::string& netns) {
  if (netns.empty()) return "";
  int nsfd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) {
    std::string err = "enter netns " + netns + ": " + strerror(errno);
    if (nsfd >= 0) close(nsfd);
    return err;
  }
  close(nsfd);
  return "";
}

Seen parse_seen(const uint8_t* f, size_t len, std::optional<uint16_t> meta_tci) {
  Seen s;
  s.len = len;
  s.wire_len = len + (meta_tci ? 4 : 0);
  if (len < 14) return s;
  std::copy(f, f + 6, s.dst.begin());
  std::copy(f + 6, f + 12, s.src.begin());
  if (meta_tci) s.tags.push_back(*meta_tci & 0x0fff);
  size_t off = 12;
  uint16_t type = static_cast<uint16_t>(f[off] << 8 | f[off + 1]);
  while ((type == 0x8100 || type == 0x88a8) && off + 6 <= len) {
    s.tags.push_back(static_cast<uint16_t>((f[off + 2] << 8 | f[off + 3]) & 0x0fff));
    off += 4;
    type = static_cast<uint16_t>(f[off] << 8 | f[off + 1]);
  }
  s.ethertype = type;
  off += 2;
  FramesHeader h;
  if (type != kFramesEthertype || len < off + sizeof(h)) return s;
  std::memcpy(&h, f + off, sizeof(h));
  if (h.magic != kFramesMagic) return s;
  s.test_frame = true;
  s.stream = h.stream;
  s.seq = h.seq;
  s.intact = len >= off + sizeof(h) + h.len && frames_checksum(h, f + off + sizeof(h)) == h.csum;
  return s;
}

bool Capture::start() {
  auto r = ready_.get_future();
  thread_ = std::thread([this] { run(ready_); });
  error_ = r.get();
  return error_.empty();
}

const std::vector<Seen>& Capture::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  return frames_;
}

int Capture::open_socket(std::string* err) const {
  const int ifindex = static_cast<int>(if_nametoindex(dev_.c_str()));
  // Protocol 0 until bound to the netdev: nothing of another netdev is queued.
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  int one = 1, buf = 64 << 20;
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = ifindex;
  if (!ifindex)
    *err = "no netdev " + dev_ + " in " + netns_;
  else if (fd < 0)
    *err = std::string("socket(AF_PACKET): ") + strerror(errno);
  else if (setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) != 0)
    *err = std::string("PACKET_AUXDATA: ") + strerror(errno);
  else if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) != 0)
    *err = std::string("PACKET_IGNORE_OUTGOING: ") + strerror(errno);
  else if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)) != 0)
    *err = std::string("SO_RCVBUFFORCE: ") + strerror(errno);
  else if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0)
    *err = "bind to " + dev_ + ": " + strerror(errno);
  if (err->empty()) return fd;
  if (fd >= 0) close(fd);
  return -1;
}

void Capture::run(std::promise<std::string>& ready) {
  if (std::string err = enter_netns(netns_); !err.empty()) return ready.set_value(err);
  std::string err;
  int fd = open_socket(&err);
  ready.set_value(err);
  if (fd < 0) return;
  std::vector<uint8_t> frame(65536);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(tpacket_auxdata))];
  // Bounded: a test that forgets stop() still ends (after 5 minutes).
  const auto end = std::chrono::steady_clock::now() + 300s;
  bool draining = false;
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (!draining && poll(&p, 1, 20) <= 0) {
      if (stop_) draining = true;
      continue;
    }
    iovec iov{frame.data(), frame.size()};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof(control);
    ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT);
    if (n < 0) {
      if (draining) break;
      continue;
    }
    std::optional<uint16_t> tci;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
      tpacket_auxdata aux;
      std::memcpy(&aux, CMSG_DATA(c), sizeof(aux));
      if (aux.tp_status & TP_STATUS_VLAN_VALID) tci = aux.tp_vlan_tci;
    }
    frames_.push_back(parse_seen(frame.data(), static_cast<size_t>(n), tci));
  }
  tpacket_stats st{};
  socklen_t sl = sizeof(st);
  if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0) drops_ = st.tp_drops;
  close(fd);
}

std::string with_raw_socket(const std::string& netns, const std::string& dev,
                            const std::function<void(int fd, const sockaddr_ll& to)>& body) {
  std::string err;
  std::thread t([&] {
    if (err = enter_netns(netns); !err.empty()) return;
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
    to.sll_halen = 6;
    if (!to.sll_ifindex) {
      err = "no netdev " + dev;
      return;
    }
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = std::string("socket(AF_PACKET): ") + strerror(errno);
      return;
    }
    body(fd, to);
    close(fd);
  });
  t.join();
  return err;
}

bool send_retrying(int fd, const sockaddr_ll& to, const Bytes& f) {
  for (int i = 0; i < 1000; i++) {
    if (sendto(fd, f.data(), f.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) ==
        static_cast<ssize_t>(f.size()))
      return true;
    if (errno != ENOBUFS && errno != EAGAIN) return false;
    std::this_thread::sleep_for(100us);
  }
  return false;
}

}  // namespace xvmq::test
