// The queues in use of connected tap backends, kept current while their
// guests change them (ethtool -L eth0 combined N in the guest: QEMU
// attaches or detaches the tap's queues with TUNSETQUEUE). The kernel says
// so on rtnetlink: each attach and detach sends an RTM_NEWLINK for the tap
// (measured on 6.18: one per change, with IFLA_TUN_NUM_QUEUES), so a thread
// listening to RTNLGRP_LINK re-reads the count of the tap it names and
// nothing is polled. A lost notification (ENOBUFS) re-reads them all.
//
// The workers read the count (WorkerNic::live_queues) per frame they
// deliver: a worker whose backend queue is gone hands its frames to one that
// still has one (docs/architecture.md, "Backends with fewer queues").
// Queues beyond those the NIC had at connect have no socket yet: the watch
// asks its owner (`grew`, from its own thread) to bind the NIC's sockets
// again, and asks again while the owner is busy.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/result.h"

namespace xvmq::switchd {

class BackendWatch {
 public:
  // NIC `nic`'s backend now has more queues in use than at connect: bind
  // its sockets again. False: not now (the switch is busy), ask again soon.
  // Called on the watch's thread, without the watch's lock.
  using Grew = std::function<bool(const std::string& nic)>;
  static Result<std::unique_ptr<BackendWatch>> start(Grew grew = {});
  ~BackendWatch();  // stops the thread
  BackendWatch(const BackendWatch&) = delete;
  BackendWatch& operator=(const BackendWatch&) = delete;

  // Keep `live` at the queues in use of `backend` (ifindex), NIC `nic`'s,
  // which had `at_connect` when its sockets were bound; read once now too.
  void watch(int ifindex, const std::string& nic, const std::string& backend, uint32_t at_connect,
             std::shared_ptr<std::atomic<uint32_t>> live);
  void unwatch(int ifindex);

 private:
  struct Watched {
    std::string nic, backend;
    uint32_t at_connect = 0;
    std::shared_ptr<std::atomic<uint32_t>> live;
  };
  BackendWatch() = default;
  void run();
  void reread(Watched& w);  // under mu_
  void ask_grown();         // not under mu_

  Grew grew_;
  int fd_ = -1;
  int stop_fd_ = -1;
  int wake_fd_ = -1;  // a NIC became pending outside the thread
  std::mutex mu_;
  std::map<int, Watched> watched_;  // by ifindex
  std::set<std::string> grown_;     // NICs whose sockets are to be bound again
  std::thread thread_;
};

}  // namespace xvmq::switchd
