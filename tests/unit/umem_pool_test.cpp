// The UMEM's buffer pool: batch operations, exhaustion, the sends holding
// a frame, and a frame put back twice. No kernel needed.
#include "xsk/umem_pool.h"

#include <gtest/gtest.h>

#include <set>

using xvmq::xsk::UmemPool;

TEST(UmemPool, HandsOutEveryFrameOnceThenNone) {
  UmemPool p(8, 2048);
  EXPECT_EQ(p.total(), 8u);
  EXPECT_EQ(p.size(), 8u);
  EXPECT_EQ(p.pop(), 0u);  // frame 0 first
  std::set<uint64_t> seen{0};
  for (int i = 1; i < 8; i++) {
    uint64_t a = p.pop();
    ASSERT_NE(a, UmemPool::kNone);
    EXPECT_EQ(a % 2048, 0u);
    EXPECT_TRUE(seen.insert(a).second) << a;
  }
  EXPECT_TRUE(p.empty());
  EXPECT_EQ(p.pop(), UmemPool::kNone);
}

TEST(UmemPool, PopNAndPushN) {
  UmemPool p(10, 4096);
  uint64_t a[16];
  EXPECT_EQ(p.pop_n(a, 4), 4u);
  EXPECT_EQ(p.size(), 6u);
  EXPECT_EQ(p.pop_n(a + 4, 16), 6u);  // only what is left
  EXPECT_EQ(p.pop_n(a, 1), 0u);
  std::set<uint64_t> all(a, a + 10);
  EXPECT_EQ(all.size(), 10u);
  p.push_n(a, 10);
  EXPECT_EQ(p.size(), 10u);
  EXPECT_EQ(p.double_frees(), 0u);
}

TEST(UmemPool, PushTakesAnyAddressInTheFrame) {
  UmemPool p(2, 4096);
  uint64_t a = p.pop();
  p.push(a + 256 + 64);  // a received descriptor's address: headroom in
  EXPECT_EQ(p.size(), 2u);
  EXPECT_EQ(p.pop(), a);
}

TEST(UmemPool, DoubleFreeIsRefusedAndCounted) {
  UmemPool p(4, 2048);
  uint64_t a = p.pop();
  p.push(a);
  p.push(a);
  EXPECT_EQ(p.size(), 4u);
  EXPECT_EQ(p.double_frees(), 1u);
  uint64_t b[2] = {2048, 2048};  // never taken
  p.push_n(b, 2);
  EXPECT_EQ(p.size(), 4u);
  EXPECT_EQ(p.double_frees(), 3u);
}

TEST(UmemPool, HeldFramesReturnAfterTheLastCompletion) {
  UmemPool p(4, 2048);
  uint64_t a = p.pop();
  p.hold(a + 64);  // sent to two destinations
  p.hold(a + 64);
  p.free_if_unheld(a);  // the receive path is done with it: still held
  EXPECT_EQ(p.size(), 3u);
  p.complete(a + 64);
  EXPECT_EQ(p.size(), 3u);
  EXPECT_EQ(p.holds(a), 1u);
  p.complete(a + 64);
  EXPECT_EQ(p.size(), 4u);
  EXPECT_EQ(p.double_frees(), 0u);
}

TEST(UmemPool, UnheldFrameReturnsAtOnce) {
  UmemPool p(4, 2048);
  uint64_t a = p.pop();
  p.free_if_unheld(a + 100);
  EXPECT_EQ(p.size(), 4u);
}
