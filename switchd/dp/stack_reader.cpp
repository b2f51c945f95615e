#include "switchd/dp/stack_reader.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <iterator>

namespace xvmq::switchd {
namespace {

constexpr size_t kMacs = 12;  // destination and source MAC: where a tag goes

Result<int> open_socket(const std::string& uplink, int ifindex) {
  const std::string what = "uplink " + uplink + ": AF_PACKET socket for the host's group frames";
  // No protocol until the filter is on: nothing unfiltered gets queued.
  int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errno, what);
  // Group destinations only (the I/G bit of the first byte).
  sock_filter code[] = {
      {BPF_LD | BPF_B | BPF_ABS, 0, 0, 0},
      {BPF_JMP | BPF_JSET | BPF_K, 0, 1, 1},
      {BPF_RET | BPF_K, 0, 0, 0xffffffff},
      {BPF_RET | BPF_K, 0, 0, 0},
  };
  sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
  int one = 1;
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = ifindex;
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) != 0 ||
      setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) != 0 ||
      setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Error e = make_error(errno, what);
    ::close(fd);
    return e;
  }
  return fd;
}

}  // namespace

void restore_vlan_tag(std::vector<uint8_t>& frame, const tpacket_auxdata& aux) {
  if (!(aux.tp_status & TP_STATUS_VLAN_VALID) || frame.size() < kMacs) return;
  uint16_t tpid = aux.tp_status & TP_STATUS_VLAN_TPID_VALID ? aux.tp_vlan_tpid : ETH_P_8021Q;
  const uint8_t tag[4] = {static_cast<uint8_t>(tpid >> 8), static_cast<uint8_t>(tpid),
                          static_cast<uint8_t>(aux.tp_vlan_tci >> 8), static_cast<uint8_t>(aux.tp_vlan_tci)};
  frame.insert(frame.begin() + kMacs, tag, tag + 4);
}

Result<std::unique_ptr<StackReader>> StackReader::start(const std::string& uplink, int ifindex, Deliver deliver) {
  std::unique_ptr<StackReader> r(new StackReader());
  r->stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (r->stop_fd_ < 0) return make_error(errno, "uplink " + uplink + ": eventfd for the host's group frames");
  auto fd = open_socket(uplink, ifindex);
  if (!fd) return fd.error();
  r->fd_ = *fd;
  r->deliver_ = std::move(deliver);
  r->thread_ = std::thread([p = r.get()] { p->run(); });
  return r;
}

// Stopping is a stated handshake, not a timeout: the eventfd wakes the
// thread's poll, the thread returns, and join() waits for exactly that;
// only then are the fds closed.
StackReader::~StackReader() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (fd_ >= 0) ::close(fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void StackReader::run() {
  std::vector<uint8_t> buf(65536);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(tpacket_auxdata))];
  for (;;) {
    pollfd p[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) continue;  // EINTR
    if (p[1].revents) return;
    if (!p[0].revents) continue;
    iovec iov{buf.data(), buf.size()};
    msghdr msg{.msg_name = nullptr,
               .msg_namelen = 0,
               .msg_iov = &iov,
               .msg_iovlen = 1,
               .msg_control = control,
               .msg_controllen = sizeof(control),
               .msg_flags = 0};
    ssize_t n = recvmsg(fd_, &msg, MSG_DONTWAIT);
    if (n < 14) continue;
    std::vector<uint8_t> frame(buf.begin(), buf.begin() + n);
    // The stack took the VLAN tag off into the metadata: put it back.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
      tpacket_auxdata aux;
      std::memcpy(&aux, CMSG_DATA(c), sizeof(aux));
      restore_vlan_tag(frame, aux);
    }
    deliver_(std::move(frame));
  }
}

}  // namespace xvmq::switchd
