// Commands for a worker's thread: another thread posts a function and
// waits for its Status; the worker runs what is pending between passes.
// So every socket and table change happens on the worker's thread, and
// the per-frame path takes no lock.
#pragma once

#include <functional>
#include <future>
#include <mutex>
#include <utility>
#include <vector>

#include "common/result.h"

namespace xvmq::switchd {

class CommandMailbox {
 public:
  // Queue fn, call wake() so the worker looks, wait for fn's result.
  template <class Wake>
  Status post(std::function<Status()> fn, Wake&& wake) {
    std::promise<Status> done;
    auto result = done.get_future();
    {
      std::lock_guard lock(mu_);
      cmds_.emplace_back(std::move(fn), std::move(done));
    }
    wake();
    return result.get();
  }

  // On the worker's thread: run everything posted so far.
  void run_pending() {
    std::vector<std::pair<std::function<Status()>, std::promise<Status>>> cmds;
    {
      std::lock_guard lock(mu_);
      cmds.swap(cmds_);
    }
    for (auto& [fn, done] : cmds) done.set_value(fn());
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<std::function<Status()>, std::promise<Status>>> cmds_;
};

}  // namespace xvmq::switchd
