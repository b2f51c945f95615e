#include "switchd/dp/backend_watch.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "loader/netdev.h"
#include "switchd/host/service.h"

namespace xvmq::switchd {

Result<std::unique_ptr<BackendWatch>> BackendWatch::start(Grew grew) {
  std::unique_ptr<BackendWatch> w(new BackendWatch());
  w->grew_ = std::move(grew);
  w->stop_fd_ = eventfd(0, EFD_CLOEXEC);
  w->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->stop_fd_ < 0 || w->wake_fd_ < 0) return make_error(errno, "eventfd for the backends' queue watch");
  w->fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (w->fd_ < 0) return make_error(errno, "rtnetlink socket for the backends' queue watch");
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK;
  if (bind(w->fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
    return make_error(errno, "rtnetlink: join RTNLGRP_LINK for the backends' queue watch");
  w->thread_ = std::thread([p = w.get()] { p->run(); });
  return w;
}

BackendWatch::~BackendWatch() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (fd_ >= 0) ::close(fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void BackendWatch::watch(int ifindex, const std::string& nic, const std::string& backend, uint32_t at_connect,
                         std::shared_ptr<std::atomic<uint32_t>> live) {
  std::lock_guard<std::mutex> lk(mu_);
  Watched& w = watched_[ifindex] = Watched{nic, backend, at_connect, std::move(live)};
  reread(w);  // a change between connect's read and now
  if (!grown_.empty()) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
}

void BackendWatch::unwatch(int ifindex) {
  std::lock_guard<std::mutex> lk(mu_);
  if (auto it = watched_.find(ifindex); it != watched_.end()) grown_.erase(it->second.nic);
  watched_.erase(ifindex);
}

void BackendWatch::reread(Watched& w) {
  auto dev = netdev_info(w.backend);
  if (!dev) return;  // going away: disconnect follows
  const uint32_t now = dev->xsk_queues();
  const uint32_t was = w.live->exchange(now, std::memory_order_relaxed);
  if (now == was) return;
  if (now > w.at_connect && grew_) {
    service::log(service::Level::Info,
                 "nic %s: backend %s now has %u queue(s) in use, %u at connect: its sockets are bound again on all "
                 "of them",
                 w.nic.c_str(), w.backend.c_str(), now, w.at_connect);
    grown_.insert(w.nic);
  } else if (now > w.at_connect)
    service::log(service::Level::Warn,
                 "nic %s: backend %s now has %u queue(s) in use, %u at connect: what the guest sends on queues %u.. "
                 "goes to the host's stack until the NIC is disconnected and connected again",
                 w.nic.c_str(), w.backend.c_str(), now, w.at_connect, w.at_connect);
  else
    service::log(service::Level::Info,
                 "nic %s: backend %s now has %u queue(s) in use (was %u): the workers of queues %u.. hand what they "
                 "deliver to it to those of its queues",
                 w.nic.c_str(), w.backend.c_str(), now, was, now);
}

// Each pending NIC once: taken off the list first, so that a growth seen
// while its sockets are bound again is not lost; put back when the owner
// cannot take it now.
void BackendWatch::ask_grown() {
  std::vector<std::string> todo;
  {
    std::lock_guard<std::mutex> lk(mu_);
    todo.assign(grown_.begin(), grown_.end());
    grown_.clear();
  }
  for (const auto& nic : todo) {
    if (grew_(nic)) continue;
    std::lock_guard<std::mutex> lk(mu_);
    grown_.insert(nic);
  }
}

void BackendWatch::run() {
  std::vector<char> buf(16384);
  for (;;) {
    bool pending = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      pending = !grown_.empty();
    }
    pollfd p[3] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(p, 3, pending ? 20 : -1) < 0) continue;  // EINTR
    if (p[1].revents) return;
    if (p[2].revents) {
      uint64_t n = 0;
      (void)!read(wake_fd_, &n, sizeof(n));
    }
    for (;;) {
      const ssize_t n = recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n < 0 && errno == ENOBUFS) {  // notifications lost: read every backend
        std::lock_guard<std::mutex> lk(mu_);
        for (auto& [_, w] : watched_) reread(w);
        continue;
      }
      if (n <= 0) break;
      std::lock_guard<std::mutex> lk(mu_);
      int len = static_cast<int>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) continue;
        const auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
        if (auto it = watched_.find(ifi->ifi_index); it != watched_.end()) reread(it->second);
      }
    }
    ask_grown();
  }
}

}  // namespace xvmq::switchd
