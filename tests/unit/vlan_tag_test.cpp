// VLAN tags pushed and popped in place, as the queue workers shape frames,
// and the handoff ring between threads. No kernel needed.
#include "switchd/dp/vlan_tag.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "switchd/dp/handoff_ring.h"

using namespace xvmq::switchd;
using Bytes = std::vector<uint8_t>;

namespace {

constexpr uint64_t kRoom = 8;  // bytes before the frame, as the UMEM's headroom

// dst 02:..:01, src 02:..:02, then `tags` (TPID, TCI), then type 0x0800 and a payload.
Bytes frame(std::vector<std::pair<uint16_t, uint16_t>> tags) {
  Bytes f = {2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2};
  for (auto [tpid, tci] : tags) f.insert(f.end(), {uint8_t(tpid >> 8), uint8_t(tpid), uint8_t(tci >> 8), uint8_t(tci)});
  f.insert(f.end(), {0x08, 0x00, 0xde, 0xad, 0xbe, 0xef});
  return f;
}

struct Buf {
  Bytes mem;
  uint64_t addr = kRoom;
  uint32_t len;
  explicit Buf(const Bytes& f) : mem(kRoom), len(static_cast<uint32_t>(f.size())) {
    mem.insert(mem.end(), f.begin(), f.end());
  }
  Bytes now() const {
    return Bytes(mem.begin() + static_cast<long>(addr), mem.begin() + static_cast<long>(addr + len));
  }
};

}  // namespace

TEST(VlanTag, PopNothing) {
  Buf b(frame({}));
  pop_vlan_tags(b.mem.data(), b.addr, b.len, 0);
  EXPECT_EQ(b.now(), frame({}));
}

TEST(VlanTag, PopOneAndTwo) {
  Buf one(frame({{0x8100, 10}}));
  pop_vlan_tags(one.mem.data(), one.addr, one.len, 1);
  EXPECT_EQ(one.now(), frame({}));
  Buf two(frame({{0x88a8, 10}, {0x8100, 5}}));
  pop_vlan_tags(two.mem.data(), two.addr, two.len, 2);
  EXPECT_EQ(two.now(), frame({}));
}

TEST(VlanTag, PopOuterKeepsInner) {
  Buf b(frame({{0x88a8, 10}, {0x8100, 5}}));
  pop_vlan_tags(b.mem.data(), b.addr, b.len, 1);
  EXPECT_EQ(b.now(), frame({{0x8100, 5}}));
}

TEST(VlanTag, PushOntoUntaggedUsesHeadroom) {
  Buf b(frame({}));
  push_vlan_tag(b.mem.data(), b.addr, b.len, 0, 20);
  EXPECT_EQ(b.addr, kRoom - 4);
  EXPECT_EQ(b.now(), frame({{0x8100, 20}}));
}

TEST(VlanTag, PushReplacesTheTagKeepingPriority) {
  Buf b(frame({{0x88a8, 0xa000 | 10}}));  // priority 5
  push_vlan_tag(b.mem.data(), b.addr, b.len, 1, 30);
  EXPECT_EQ(b.now(), frame({{0x8100, 0xa000 | 30}}));
}

TEST(VlanTag, PushOntoTwoTagsLeavesOne) {
  Buf b(frame({{0x8100, 0x2000 | 0}, {0x8100, 7}}));  // a priority tag, then VLAN 7
  push_vlan_tag(b.mem.data(), b.addr, b.len, 2, 7);
  EXPECT_EQ(b.now(), frame({{0x8100, 0x2000 | 7}}));
}

TEST(VlanTag, PopThenPushRoundTrips) {
  const Bytes tagged = frame({{0x8100, 42}});
  Buf b(tagged);
  pop_vlan_tags(b.mem.data(), b.addr, b.len, 1);
  push_vlan_tag(b.mem.data(), b.addr, b.len, 0, 42);
  EXPECT_EQ(b.now(), tagged);
}

TEST(HandoffRing, BoundedAndInOrder) {
  HandoffRing r(3, 16);  // rounded up to 4 slots
  EXPECT_EQ(r.capacity(), 4u);
  EXPECT_TRUE(r.empty());
  for (uint8_t i = 0; i < 4; i++) EXPECT_TRUE(r.push(Bytes(i + 1, i)));
  EXPECT_FALSE(r.push(Bytes(1, 9)));
  EXPECT_FALSE(r.push(Bytes(17, 0)));
  EXPECT_EQ(r.take_full(), 1u);
  EXPECT_EQ(r.take_too_long(), 1u);
  EXPECT_EQ(r.take_full(), 0u);
  for (uint8_t i = 0; i < 4; i++) {
    auto f = r.front();
    ASSERT_EQ(f.size(), i + 1u);
    EXPECT_EQ(f[0], i);
    r.pop();
  }
  EXPECT_TRUE(r.empty());
  EXPECT_TRUE(r.front().empty());
}

// A delivery ring's frames each carry the NIC they are for.
TEST(HandoffRing, TagsTravelWithTheirFrames) {
  HandoffRing r(4, 16);
  EXPECT_TRUE(r.push(Bytes(2, 1), 7));
  EXPECT_TRUE(r.push(Bytes(3, 2), 9));
  EXPECT_TRUE(r.push(Bytes(1, 3)));  // untagged: 0
  for (uint32_t want : {7u, 9u, 0u}) {
    ASSERT_FALSE(r.empty());
    EXPECT_EQ(r.front_tag(), want);
    r.pop();
  }
  EXPECT_TRUE(r.empty());
}

TEST(HandoffRing, OneProducerOneConsumer) {
  HandoffRing r(64, 8);
  constexpr uint32_t kFrames = 20000;
  std::thread producer([&] {
    for (uint32_t i = 0; i < kFrames;) {
      uint8_t b[4] = {uint8_t(i), uint8_t(i >> 8), uint8_t(i >> 16), uint8_t(i >> 24)};
      if (r.push(b))
        i++;
      else
        std::this_thread::yield();
    }
  });
  uint32_t next = 0;
  while (next < kFrames) {
    if (r.empty()) {
      std::this_thread::yield();
      continue;
    }
    auto f = r.front();
    ASSERT_EQ(f.size(), 4u);
    const uint32_t got = f[0] | f[1] << 8 | f[2] << 16 | uint32_t(f[3]) << 24;
    ASSERT_EQ(got, next);
    r.pop();
    next++;
  }
  producer.join();
}
