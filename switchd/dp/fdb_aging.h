// The FDB's aging timer: a thread that, once a second, forgets the MACs
// not seen for `age_s` seconds.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "switchd/core/fdb.h"

namespace xvmq::switchd {

// The FDB's clock: whole seconds of CLOCK_MONOTONIC (std::steady_clock).
uint32_t fdb_now_s();

class FdbAging {
 public:
  FdbAging(Fdb& fdb, uint32_t age_s);
  // Stops and joins the thread: no expire() runs once it has returned.
  ~FdbAging();
  FdbAging(const FdbAging&) = delete;
  FdbAging& operator=(const FdbAging&) = delete;

 private:
  Fdb& fdb_;
  const uint32_t age_s_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace xvmq::switchd
