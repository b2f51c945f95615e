#include "switchd/dp/fdb_aging.h"

#include <chrono>

namespace xvmq::switchd {

uint32_t fdb_now_s() {
  return static_cast<uint32_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

FdbAging::FdbAging(Fdb& fdb, uint32_t age_s) : fdb_(fdb), age_s_(age_s) {
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; })) fdb_.expire(fdb_now_s(), age_s_);
  });
}

FdbAging::~FdbAging() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

}  // namespace xvmq::switchd
