// wait_for_xdp_programs(): the RCU grace period switchd waits for between
// taking a socket's slot away and closing the socket (loader/grace.h).
#include "loader/grace.h"

#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

#include "tests/lib/harness.h"

namespace xvmq::test {
namespace {

TEST(Grace, Returns) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (BPF maps)";
  EXPECT_TRUE(wait_for_xdp_programs().ok());
  EXPECT_TRUE(wait_for_xdp_programs().ok());  // the map made once serves again
}

TEST(Grace, FromThreadsAtOnce) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (BPF maps)";
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (size_t i = 0; i < ok.size(); i++) threads.emplace_back([&ok, i] { ok[i] = wait_for_xdp_programs().ok(); });
  for (auto& t : threads) t.join();
  for (int o : ok) EXPECT_EQ(o, 1);
}

}  // namespace
}  // namespace xvmq::test
