// Seeded random frames and mutations of valid ones through the classifier
// with BPF_PROG_RUN, each checked against a reference model of the VMQ
// filter test: action, output bytes, and in the end every counter. No
// crash, and every frame counted under exactly one outcome.
//
// XVMQ_SEED=<n> replays a run; XVMQ_FRAMES=<n> changes its length.
#include <linux/bpf.h>
#include <net/if.h>

#include <cstdlib>
#include <map>
#include <random>

#include "loader/classifier.h"
#include "xsk/queue.h"
#include "tests/lib/harness.h"
#include "tests/lib/prog_run.h"

namespace xvmq::test {
namespace {

constexpr const char* kDev = "rf0";
constexpr const char* kPeer = "rf0p";

uint16_t be16(const Bytes& f, size_t at) { return static_cast<uint16_t>(f[at] << 8 | f[at + 1]); }

// What the classifier must do with a frame, written from the design, not
// from the BPF code.
struct Model {
  std::map<std::pair<Mac, uint16_t>, FilterValue> filters;
  // slot (vmq, queue) -> the queue its socket is bound to
  std::map<std::pair<uint32_t, uint32_t>, uint32_t> sockets;

  struct Outcome {
    uint32_t action;
    Bytes out;
    int vmq = -1;     // vmq counted (>= 1), or -1
    int reason = -1;  // reason counted, or -1
    bool to_default = false;
  };

  bool socket_ok(uint32_t vmq, uint32_t queue) const {
    auto it = sockets.find({vmq, queue});
    return it != sockets.end() && it->second == queue;
  }

  Outcome run(const Bytes& f, uint32_t queue) const {
    Outcome o{XDP_PASS, f};
    auto fallback = [&](int reason) {
      o.reason = reason;
      if (socket_ok(0, queue)) {
        o.action = XDP_REDIRECT;
        o.to_default = true;
      }
      return o;
    };
    if (f.size() < 14) {
      o.action = XDP_DROP;
      o.reason = XVMQ_REASON_RUNT;
      return o;
    }
    uint16_t proto = be16(f, 12), vlan = 0;
    size_t pos = 14, ntags = 0, strip = 0;
    for (size_t i = 0; i < 2; i++) {
      if (!(proto == 0x8100 || (i == 0 && proto == 0x88a8))) break;
      if (pos + 4 > f.size()) {
        o.action = XDP_DROP;
        o.reason = XVMQ_REASON_TRUNCATED_TAG;
        return o;
      }
      uint16_t vid = be16(f, pos) & 0x0fff;
      ntags = i + 1;
      if (vid && vlan == 0) {
        vlan = vid;
        strip = i + 1;
      }
      proto = be16(f, pos + 2);
      pos += 4;
    }
    if (vlan == 0) strip = ntags;
    Mac dst;
    std::copy(f.begin(), f.begin() + 6, dst.begin());
    bool bcast = dst == Mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    if (bcast) return fallback(XVMQ_REASON_BROADCAST);
    if (dst[0] & 1) return fallback(XVMQ_REASON_MULTICAST);
    auto it = filters.find({dst, vlan});
    if (it == filters.end()) it = filters.find({dst, XVMQ_VLAN_ANY});
    if (it == filters.end()) return fallback(XVMQ_REASON_MISS);
    const FilterValue& v = it->second;
    if (v.vmq == 0 || v.vmq >= XVMQ_MAX_VMQS) return fallback(XVMQ_REASON_BAD_VMQ);
    auto s = sockets.find({v.vmq, queue});
    if (s == sockets.end()) return fallback(XVMQ_REASON_NO_SOCKET);
    if (s->second != queue) return fallback(XVMQ_REASON_WRONG_QUEUE);
    o.action = XDP_REDIRECT;
    o.vmq = static_cast<int>(v.vmq);
    if (v.strip_tag && strip) {
      o.out.assign(f.begin(), f.begin() + 12);
      o.out.insert(o.out.end(), f.begin() + 12 + static_cast<long>(4 * strip), f.end());
    }
    return o;
  }
};

class RandomFrames : public ::testing::Test {
 protected:
  void SetUp() override {
    XVMQ_REQUIRE_PRIVILEGES();
    ASSERT_TRUE(make_veth(kDev, kPeer, 2));
    ifindex_ = static_cast<int>(if_nametoindex(kDev));
    auto c = Classifier::open();
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_TRUE(c->load());
    cls_.emplace(std::move(c.value()));
    for (uint32_t q = 0; q < 2; q++) {
      auto x = XskQueue::create(kDev, q, XskOptions{.frames = 256, .frame_size = 4096, .ring_size = 128});
      ASSERT_TRUE(x) << x.error().message;
      queues_.push_back(std::move(x.value()));
      for (int i = 0; i < 3; i++) ASSERT_TRUE(queues_.back()->add_socket());
    }
    // (vmq, slot queue) <- (socket queue, index). vmq 3's slot on queue 0
    // holds a socket of queue 1; vmq 4 has filters and no socket.
    const std::pair<std::pair<uint32_t, uint32_t>, std::pair<uint32_t, size_t>> slots[] = {
        {{0, 0}, {0, 0}}, {{1, 0}, {0, 1}}, {{2, 0}, {0, 2}}, {{3, 0}, {1, 2}}, {{0, 1}, {1, 0}}, {{1, 1}, {1, 1}}};
    for (auto& [slot, sock] : slots) {
      ASSERT_TRUE(cls_->set_socket(slot.first, slot.second, queues_[sock.first]->fd(sock.second)));
      model_.sockets[slot] = sock.first;
    }
  }
  void TearDown() override {
    cls_.reset();
    queues_.clear();
    sh(std::string("ip link del ") + kDev);
  }

  void add_filter(const Mac& mac, uint16_t vlan, uint32_t vmq, bool strip) {
    ASSERT_TRUE(cls_->set_filter({mac, vlan}, {vmq, strip}));
    model_.filters[{mac, vlan}] = {vmq, strip};
  }

  std::optional<Classifier> cls_;
  std::vector<std::unique_ptr<XskQueue>> queues_;
  Model model_;
  int ifindex_ = 0;
};

TEST_F(RandomFrames, MatchModelAndCountEachFrameOnce) {
  XVMQ_REQUIRE_PRIVILEGES();
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("XVMQ_SEED")) seed = std::strtoull(s, nullptr, 0);
  size_t frames = 100000;
  if (const char* s = std::getenv("XVMQ_FRAMES")) frames = std::strtoull(s, nullptr, 0);
  RecordProperty("seed", std::to_string(seed));
  std::printf("seed %llu (replay: XVMQ_SEED=%llu)\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };

  // 24 VM MACs; filters exact, MAC-only, stripping, on vmqs with and
  // without sockets (vmq 3: wrong queue, vmq 4: none).
  const uint16_t vlans[] = {0, 1, 10, 20, 100, 4094};
  std::vector<Mac> macs;
  for (uint8_t i = 1; i <= 24; i++) macs.push_back(Mac{0x02, 0, 0, 0, 0, i});
  for (size_t i = 0; i < macs.size(); i++) {
    uint32_t vmq = 1 + static_cast<uint32_t>(i % 4);
    if (i % 3 == 0) add_filter(macs[i], XVMQ_VLAN_ANY, vmq, i % 2);
    if (i % 3 != 2) add_filter(macs[i], vlans[i % 6], 1 + static_cast<uint32_t>((i + 1) % 4), i % 4 == 1);
  }
  ASSERT_FALSE(HasFailure());

  auto valid_frame = [&]() {
    FrameSpec s;
    size_t kind = pick(10);
    Mac dst = kind < 6    ? macs[pick(macs.size())]
              : kind == 6 ? Mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
              : kind == 7 ? Mac{0x01, 0x00, 0x5e, 0, 0, static_cast<uint8_t>(rng())}
                          : Mac{0x02, 0x99, 0, 0, static_cast<uint8_t>(rng()), static_cast<uint8_t>(rng())};
    s.dst = format_mac(dst);
    size_t ntags = pick(4);
    for (size_t t = 0; t < ntags; t++) {
      const uint16_t tpids[] = {0x8100, 0x88a8, 0x8100, 0x9100};
      uint16_t vid = pick(4) ? vlans[pick(6)] : static_cast<uint16_t>(rng() & 0xfff);
      s.tags.push_back({tpids[pick(4)], static_cast<uint16_t>((rng() & 0xe000) | vid)});
    }
    s.ethertype = pick(2) ? 0x0800 : static_cast<uint16_t>(rng());
    s.payload = pick(8) ? pick(120) : pick(1500);
    s.fill = static_cast<uint8_t>(rng());
    return build_frame(s);
  };
  auto mutate = [&](Bytes f) {
    size_t n = 1 + pick(4);
    for (size_t i = 0; i < n && !f.empty(); i++) {
      switch (pick(4)) {
        case 0:
          f[pick(f.size())] = static_cast<uint8_t>(rng());
          break;  // any byte
        case 1:
          f[pick(std::min<size_t>(f.size(), 22))] ^= static_cast<uint8_t>(1u << pick(8));
          break;  // a header bit
        case 2:
          f.resize(14 + pick(f.size() > 14 ? f.size() - 13 : 1));
          break;   // truncate
        case 3: {  // a TPID where the type was
          size_t at = 12 + 4 * pick(3);
          if (at + 1 < f.size()) f[at] = pick(2) ? 0x81 : 0x88, f[at + 1] = f[at] == 0x81 ? 0x00 : 0xa8;
          break;
        }
      }
    }
    return f;
  };

  auto before = cls_->counters();
  ASSERT_TRUE(before);
  std::array<Counter, XVMQ_MAX_VMQS> want_vmq{};
  std::array<Counter, XVMQ_REASON_COUNT> want_reason{};
  uint64_t run = 0, refused = 0;
  for (size_t i = 0; run < frames; i++) {
    Bytes f;
    switch (pick(4)) {
      case 0: {  // random bytes
        f.resize(pick(200));
        for (auto& b : f) b = static_cast<uint8_t>(rng());
        break;
      }
      case 1:
        f = valid_frame();
        break;
      default:
        f = mutate(valid_frame());
        break;
    }
    uint32_t queue = static_cast<uint32_t>(pick(2));
    auto r = prog_run(cls_->prog_fd(), f, {.ifindex = ifindex_, .queue = queue});
    if (f.size() < 14) {  // the kernel does not run XDP on these
      ASSERT_EQ(r.err, -EINVAL) << "frame " << i << " of " << f.size() << " bytes";
      refused++;
      continue;
    }
    ASSERT_EQ(r.err, 0) << "frame " << i;
    run++;
    auto want = model_.run(f, queue);
    ASSERT_EQ(r.action, want.action) << "frame " << i << " queue " << queue << ": " << hex(f);
    ASSERT_EQ(r.out, want.out) << "frame " << i << " queue " << queue << ": " << hex(f);
    if (want.vmq > 0) {
      want_vmq[want.vmq].frames++;
      want_vmq[want.vmq].bytes += want.out.size();
    }
    if (want.reason >= 0) {
      want_reason[want.reason].frames++;
      want_reason[want.reason].bytes += f.size();
    }
    if (want.to_default) {
      want_vmq[0].frames++;
      want_vmq[0].bytes += f.size();
    }
  }
  auto after = cls_->counters();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->total_frames() - before->total_frames(), run) << "each frame counted exactly once";
  for (size_t v = 0; v < XVMQ_MAX_VMQS; v++) {
    EXPECT_EQ(after->vmq[v].frames - before->vmq[v].frames, want_vmq[v].frames) << "vmq " << v;
    EXPECT_EQ(after->vmq[v].bytes - before->vmq[v].bytes, want_vmq[v].bytes) << "vmq " << v;
  }
  for (size_t r = 0; r < XVMQ_REASON_COUNT; r++) {
    EXPECT_EQ(after->reason[r].frames - before->reason[r].frames, want_reason[r].frames) << reason_name(r);
    EXPECT_EQ(after->reason[r].bytes - before->reason[r].bytes, want_reason[r].bytes) << reason_name(r);
  }
  std::printf("%llu frames run, %llu runts refused by the kernel\n", static_cast<unsigned long long>(run),
              static_cast<unsigned long long>(refused));
  for (size_t r = 0; r < XVMQ_REASON_COUNT; r++)
    std::printf("  %-15s %llu\n", std::string(reason_name(r)).c_str(),
                static_cast<unsigned long long>(want_reason[r].frames));
  for (size_t v = 1; v < 5; v++)
    std::printf("  vmq %zu          %llu\n", v, static_cast<unsigned long long>(want_vmq[v].frames));
  // Every outcome must have been reached, or the generator is too narrow.
  for (uint32_t r : {XVMQ_REASON_MISS, XVMQ_REASON_BROADCAST, XVMQ_REASON_MULTICAST, XVMQ_REASON_NO_SOCKET,
                     XVMQ_REASON_WRONG_QUEUE, XVMQ_REASON_TRUNCATED_TAG})
    EXPECT_GT(want_reason[r].frames, 0u) << "no frame reached " << reason_name(r);
  EXPECT_GT(want_vmq[1].frames + want_vmq[2].frames, 0u);
}

}  // namespace
}  // namespace xvmq::test
