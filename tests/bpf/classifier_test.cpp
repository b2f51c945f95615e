// Table-driven BPF_PROG_RUN tests of the uplink classifier on the real
// kernel. Socket slots hold real AF_XDP sockets bound to a veth's queues,
// and the classifier is also attached to that veth: every row that expects a
// redirect is sent again through the real path and read back from the
// socket of the slot it names.
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <net/if.h>

#include <map>
#include <thread>
#include <memory>

#include "loader/classifier.h"
#include "xsk/queue.h"
#include "tests/lib/harness.h"
#include "tests/lib/prog_run.h"

namespace xvmq::test {
namespace {

constexpr const char* kDev = "xq0";
constexpr const char* kPeer = "xq0p";
constexpr uint16_t k8021Q = 0x8100, k8021AD = 0x88a8;

struct Filter {
  std::string mac;
  uint16_t vlan;  // XVMQ_VLAN_ANY for MAC-only
  uint32_t vmq;
  bool strip = false;
};

struct Slot {
  uint32_t vmq, queue;
  bool operator==(const Slot&) const = default;
};

struct Row {
  std::string name;
  Bytes frame;
  std::vector<Filter> filters;
  uint32_t queue = 0;
  uint32_t action = XDP_REDIRECT;
  std::optional<Slot> slot;                      // where the frame must land
  std::optional<Bytes> out;                      // expected bytes; default: the frame
  std::map<uint32_t, uint64_t> vmq;              // vmq -> frames delta
  std::map<uint32_t, uint64_t> reason;           // reason -> frames delta
  bool no_default = false;                       // run with no default socket on the row's queue
  std::vector<std::pair<Filter, uint64_t>> raw;  // value words written to the table as is
  bool kernel_refuses = false;                   // BPF_PROG_RUN itself says EINVAL
};

Bytes tagged(std::vector<std::pair<uint16_t, uint16_t>> tags, std::string dst = "02:00:00:00:00:01",
             size_t payload = 46) {
  FrameSpec s;
  s.dst = std::move(dst);
  s.tags = std::move(tags);
  s.payload = payload;
  return build_frame(s);
}

Bytes untagged(std::string dst = "02:00:00:00:00:01", size_t payload = 46) {
  return tagged({}, std::move(dst), payload);
}

// The frame as a VM behind an access port sees it: its first n tags gone.
Bytes strip(const Bytes& f, size_t n) {
  Bytes out(f.begin(), f.begin() + 12);
  out.insert(out.end(), f.begin() + 12 + static_cast<long>(4 * n), f.end());
  return out;
}

class ClassifierTable : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (privileged_skip_reason()) return;
    ASSERT_TRUE(make_veth(kDev, kPeer, 2));
    ifindex_ = static_cast<int>(if_nametoindex(kDev));
    auto c = Classifier::open();
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_TRUE(c->load()) << "load";
    cls_ = new Classifier(std::move(c.value()));
    for (uint32_t q = 0; q < 2; q++) {
      auto x = XskQueue::create(kDev, q, XskOptions{.frames = 512, .frame_size = 4096, .ring_size = 256});
      ASSERT_TRUE(x) << x.error().message;
      for (int i = 0; i < 4; i++) {
        auto s = (*x)->add_socket();
        ASSERT_TRUE(s) << s.error().message;
      }
      queues_[q] = x.value().release();
    }
    auto mode = cls_->attach(kDev, AttachMode::Native);
    ASSERT_TRUE(mode) << mode.error().message;
  }
  static void TearDownTestSuite() {
    delete cls_;
    cls_ = nullptr;
    for (auto*& q : queues_) {
      delete q;
      q = nullptr;
    }
    sh("ip link del xq0");
  }

  // Standard sockets: on queue 0, vmq 0/1/2 and, in vmq 3's slot, a socket
  // bound to queue 1 (the wrong queue); on queue 1, vmq 0/1. vmq 4 has none.
  static std::map<std::pair<uint32_t, uint32_t>, std::pair<uint32_t, size_t>> standard_slots() {
    return {{{0, 0}, {0, 0}}, {{1, 0}, {0, 1}}, {{2, 0}, {0, 2}}, {{3, 0}, {1, 2}}, {{0, 1}, {1, 0}}, {{1, 1}, {1, 1}}};
  }

  void prepare(const Row& row) {
    for (uint32_t pos : raw_slots_) {
      xvmq_filter_slot unused{};
      ASSERT_EQ(bpf_map_update_elem(cls_->map_fd(XVMQ_MAP_FILTERS), &pos, &unused, BPF_ANY), 0);
    }
    raw_slots_.clear();
    auto fl = cls_->filters();
    ASSERT_TRUE(fl);
    for (auto& [k, v] : *fl) ASSERT_TRUE(cls_->clear_filter(k));
    for (uint32_t vmq = 0; vmq < 5; vmq++)
      for (uint32_t q = 0; q < 2; q++) ASSERT_TRUE(cls_->clear_socket(vmq, q));
    for (auto& [slot, sock] : standard_slots()) {
      if (row.no_default && slot.first == 0 && slot.second == row.queue) continue;
      auto st = cls_->set_socket(slot.first, slot.second, queues_[sock.first]->fd(sock.second));
      ASSERT_TRUE(st) << st.error().message;
    }
    for (const auto& f : row.filters) {
      FilterKey k{*parse_mac(f.mac), f.vlan};
      auto st = cls_->set_filter(k, FilterValue{f.vmq, f.strip});
      ASSERT_TRUE(st) << st.error().message;
    }
    for (const auto& [f, v] : row.raw) {
      // Past the loader's checks: into the first unused slot of the key's probe.
      xvmq_filter_slot slot{xvmq_filter_word(parse_mac(f.mac)->data(), f.vlan), v};
      int fd = cls_->map_fd(XVMQ_MAP_FILTERS);
      uint32_t pos = xvmq_filter_hash(slot.key);
      xvmq_filter_slot cur{};
      while (bpf_map_lookup_elem(fd, &pos, &cur) == 0 && cur.key != XVMQ_FILTER_EMPTY)
        pos = (pos + 1) % XVMQ_FILTER_SLOTS;
      ASSERT_EQ(bpf_map_update_elem(fd, &pos, &slot, BPF_ANY), 0);
      raw_slots_.push_back(pos);
    }
    drain();
  }

  void drain() {
    for (auto* q : queues_)
      for (size_t s = 0; s < q->sockets(); s++) (void)q->receive(s, 1024);
  }

  void check(const Row& row) {
    SCOPED_TRACE(row.name);
    prepare(row);
    if (HasFatalFailure()) return;
    auto before = cls_->counters();
    ASSERT_TRUE(before);
    auto r = prog_run(cls_->prog_fd(), row.frame, {.ifindex = ifindex_, .queue = row.queue});
    if (row.kernel_refuses) {
      EXPECT_EQ(r.err, -EINVAL) << "BPF_PROG_RUN of a " << row.frame.size() << "-byte frame";
      auto after = cls_->counters();
      ASSERT_TRUE(after);
      EXPECT_EQ(after->total_frames(), before->total_frames()) << "a refused frame was counted";
      return;
    }
    ASSERT_EQ(r.err, 0) << "BPF_PROG_RUN: " << strerror(-r.err);
    EXPECT_EQ(r.action, row.action) << xdp_action_name(r.action) << " != " << xdp_action_name(row.action);
    const Bytes& want = row.out ? *row.out : row.frame;
    EXPECT_EQ(r.out, want) << "got  " << hex(r.out) << "\nwant " << hex(want);

    auto after = cls_->counters();
    ASSERT_TRUE(after);
    for (uint32_t i = 0; i < XVMQ_MAX_VMQS; i++) {
      uint64_t want_frames = row.vmq.count(i) ? row.vmq.at(i) : 0;
      EXPECT_EQ(after->vmq[i].frames - before->vmq[i].frames, want_frames) << "vmq " << i << " frames";
      EXPECT_EQ(after->vmq[i].bytes - before->vmq[i].bytes, want_frames * want.size()) << "vmq " << i << " bytes";
    }
    for (uint32_t i = 0; i < XVMQ_REASON_COUNT; i++) {
      uint64_t want_frames = row.reason.count(i) ? row.reason.at(i) : 0;
      EXPECT_EQ(after->reason[i].frames - before->reason[i].frames, want_frames) << "reason " << reason_name(i);
      EXPECT_EQ(after->reason[i].bytes - before->reason[i].bytes, want_frames * row.frame.size())
          << "reason " << reason_name(i) << " bytes";
    }
    EXPECT_EQ(after->total_frames() - before->total_frames(), 1u) << "a frame is counted exactly once";

    EXPECT_EQ(row.slot.has_value(), row.action == XDP_REDIRECT) << "table row is inconsistent";
    if (row.slot && row.frame.size() >= 14 && row.frame.size() <= 1514) check_delivery(row, want);
  }

  // The same frame through the real path: sent from the peer on the CPU
  // (and so the transmit queue) whose number is the row's receive queue, it
  // must arrive on the socket of the expected slot, and on no other.
  void check_delivery(const Row& row, const Bytes& want) {
    if (row.queue >= static_cast<uint32_t>(std::thread::hardware_concurrency())) return;
    ASSERT_EQ(send_raw(kPeer, row.frame, static_cast<int>(row.queue)), 0);
    for (auto& [slot, sock] : standard_slots()) {
      bool expected = Slot{slot.first, slot.second} == *row.slot;
      if (row.no_default && slot.first == 0 && slot.second == row.queue) continue;
      auto got = queues_[sock.first]->receive(sock.second, 16, expected ? 1000 : 0);
      if (expected) {
        ASSERT_EQ(got.size(), 1u) << "socket of vmq " << slot.first << " queue " << slot.second
                                  << " did not receive the frame";
        EXPECT_EQ(got[0], want) << "socket got " << hex(got[0]) << "\nwant " << hex(want);
      } else {
        EXPECT_TRUE(got.empty()) << "socket of vmq " << slot.first << " queue " << slot.second << " received "
                                 << got.size() << " frame(s)";
      }
    }
  }

  static inline Classifier* cls_ = nullptr;
  static inline XskQueue* queues_[2] = {nullptr, nullptr};
  static inline int ifindex_ = 0;
  std::vector<uint32_t> raw_slots_;
};

const std::string VM1 = "02:00:00:00:00:01", VM2 = "02:00:00:00:00:02", VM3 = "02:00:00:00:00:03",
                  VM4 = "02:00:00:00:00:04", VM9 = "02:00:00:00:00:09";
constexpr uint16_t ANY = XVMQ_VLAN_ANY;

std::vector<Row> table() {
  std::vector<Row> rows;
  auto hit = [](uint32_t vmq, uint32_t q = 0) { return std::optional<Slot>(Slot{vmq, q}); };
  auto dflt = [](uint32_t q = 0) { return std::optional<Slot>(Slot{0, q}); };

  rows.push_back(
      {.name = "untagged hit", .frame = untagged(VM1), .filters = {{VM1, 0, 1}}, .slot = hit(1), .vmq = {{1, 1}}});
  rows.push_back({.name = "untagged hit, vmq 2",
                  .frame = untagged(VM2),
                  .filters = {{VM1, 0, 1}, {VM2, 0, 2}},
                  .slot = hit(2),
                  .vmq = {{2, 1}}});
  rows.push_back({.name = "untagged miss",
                  .frame = untagged(VM9),
                  .filters = {{VM1, 0, 1}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MISS, 1}}});
  rows.push_back({.name = "tagged hit",
                  .frame = tagged({{k8021Q, 10}}),
                  .filters = {{VM1, 10, 1}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "tagged hit keeps PCP and tag",
                  .frame = tagged({{k8021Q, 0xa00a}}),
                  .filters = {{VM1, 10, 1}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "tagged miss",
                  .frame = tagged({{k8021Q, 10}}, VM9),
                  .filters = {{VM1, 10, 1}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MISS, 1}}});
  rows.push_back({.name = "filter on another VLAN",
                  .frame = tagged({{k8021Q, 20}}),
                  .filters = {{VM1, 10, 1}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MISS, 1}}});
  rows.push_back({.name = "untagged frame, filter on VLAN 10",
                  .frame = untagged(VM1),
                  .filters = {{VM1, 10, 1}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MISS, 1}}});
  rows.push_back({.name = "tagged frame, untagged filter",
                  .frame = tagged({{k8021Q, 10}}),
                  .filters = {{VM1, 0, 1}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MISS, 1}}});
  rows.push_back({.name = "priority tag is VLAN 0",
                  .frame = tagged({{k8021Q, 0xa000}}),
                  .filters = {{VM1, 0, 1}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "VID 4095 matches no filter",
                  .frame = tagged({{k8021Q, 4095}}),
                  .filters = {{VM1, ANY, 1}, {VM2, 0, 2}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "802.1ad outer decides",
                  .frame = tagged({{k8021AD, 100}, {k8021Q, 10}}),
                  .filters = {{VM1, 100, 1}, {VM1, 10, 2}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "double 802.1Q, inner VLAN is payload",
                  .frame = tagged({{k8021Q, 100}, {k8021Q, 10}}),
                  .filters = {{VM1, 10, 2}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MISS, 1}}});
  rows.push_back({.name = "priority outer, VLAN inner",
                  .frame = tagged({{k8021AD, 0x2000}, {k8021Q, 10}}),
                  .filters = {{VM1, 10, 2}},
                  .slot = hit(2),
                  .vmq = {{2, 1}}});
  rows.push_back({.name = "0x88a8 inner is not a tag",
                  .frame = tagged({{k8021Q, 10}, {k8021AD, 20}}),
                  .filters = {{VM1, 10, 1}, {VM1, 20, 2}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "third tag is payload",
                  .frame = tagged({{k8021AD, 7}, {k8021Q, 8}, {k8021Q, 9}}),
                  .filters = {{VM1, 7, 1}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "MAC-only filter, untagged",
                  .frame = untagged(VM1),
                  .filters = {{VM1, ANY, 1}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "MAC-only filter, VLAN 4094",
                  .frame = tagged({{k8021Q, 4094}}),
                  .filters = {{VM1, ANY, 1}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "exact filter wins over MAC-only",
                  .frame = tagged({{k8021Q, 10}}),
                  .filters = {{VM1, ANY, 1}, {VM1, 10, 2}},
                  .slot = hit(2),
                  .vmq = {{2, 1}}});
  rows.push_back({.name = "MAC-only catches other VLANs",
                  .frame = tagged({{k8021Q, 20}}),
                  .filters = {{VM1, ANY, 1}, {VM1, 10, 2}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "all-zero MAC misses (its key word is the empty slot's)",
                  .frame = untagged("00:00:00:00:00:00"),
                  .filters = {{VM1, ANY, 1}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MISS, 1}}});
  rows.push_back({.name = "broadcast",
                  .frame = untagged("ff:ff:ff:ff:ff:ff"),
                  .filters = {{VM1, ANY, 1}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_BROADCAST, 1}}});
  rows.push_back({.name = "tagged broadcast",
                  .frame = tagged({{k8021Q, 10}}, "ff:ff:ff:ff:ff:ff"),
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_BROADCAST, 1}}});
  rows.push_back({.name = "IPv4 multicast",
                  .frame = untagged("01:00:5e:00:00:fb"),
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MULTICAST, 1}}});
  rows.push_back({.name = "IPv6 multicast",
                  .frame = untagged("33:33:00:00:00:01"),
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MULTICAST, 1}}});
  rows.push_back({.name = "miss without default socket passes",
                  .frame = untagged(VM9),
                  .action = XDP_PASS,
                  .reason = {{XVMQ_REASON_MISS, 1}},
                  .no_default = true});
  rows.push_back({.name = "broadcast without default socket passes",
                  .frame = untagged("ff:ff:ff:ff:ff:ff"),
                  .action = XDP_PASS,
                  .reason = {{XVMQ_REASON_BROADCAST, 1}},
                  .no_default = true});
  rows.push_back({.name = "missing socket falls back",
                  .frame = untagged(VM4),
                  .filters = {{VM4, 0, 4}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_NO_SOCKET, 1}}});
  rows.push_back({.name = "missing socket, no default: pass",
                  .frame = untagged(VM4),
                  .filters = {{VM4, 0, 4}},
                  .action = XDP_PASS,
                  .reason = {{XVMQ_REASON_NO_SOCKET, 1}},
                  .no_default = true});
  rows.push_back({.name = "socket bound to another queue",
                  .frame = untagged(VM3),
                  .filters = {{VM3, 0, 3}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_WRONG_QUEUE, 1}}});
  rows.push_back({.name = "queue 1 hit",
                  .frame = untagged(VM1),
                  .filters = {{VM1, 0, 1}},
                  .queue = 1,
                  .slot = hit(1, 1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "queue 1, vmq without socket there",
                  .frame = untagged(VM2),
                  .filters = {{VM2, 0, 2}},
                  .queue = 1,
                  .slot = dflt(1),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_NO_SOCKET, 1}}});
  rows.push_back({.name = "queue 1 miss",
                  .frame = untagged(VM9),
                  .queue = 1,
                  .slot = dflt(1),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MISS, 1}}});

  rows.push_back({.name = "filter naming vmq 0",
                  .frame = untagged(VM1),
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_BAD_VMQ, 1}},
                  .raw = {{{VM1, 0, 0}, xvmq_filter_value_word(0, 0)}}});
  rows.push_back({.name = "filter naming vmq 200",
                  .frame = untagged(VM1),
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_BAD_VMQ, 1}},
                  .raw = {{{VM1, 0, 0}, xvmq_filter_value_word(200, 0)}}});

  rows.push_back({.name = "to the host's own MAC: its stack",
                  .frame = tagged({{k8021Q, 10}}),
                  .action = XDP_PASS,
                  .reason = {{XVMQ_REASON_HOST, 1}},
                  .raw = {{{VM1, ANY, 0}, xvmq_filter_value_word(XVMQ_HOST_VMQ, 0)}}});
  // host=stack's group flag: broadcast and multicast to the host's stack, unicast untouched.
  const std::pair<Filter, uint64_t> groups{{"ff:ff:ff:ff:ff:ff", XVMQ_HOST_GROUPS_VLAN, 0},
                                           xvmq_filter_value_word(XVMQ_HOST_VMQ, 0)};
  Row hg_b{.name = "host groups: broadcast to the host's stack",
           .frame = untagged("ff:ff:ff:ff:ff:ff"),
           .action = XDP_PASS,
           .reason = {{XVMQ_REASON_HOST_GROUP, 1}}};
  Row hg_m{.name = "host groups: tagged multicast to the host's stack",
           .frame = tagged({{k8021Q, 10}}, "33:33:00:00:00:01"),
           .action = XDP_PASS,
           .reason = {{XVMQ_REASON_HOST_GROUP, 1}}};
  Row hg_u{.name = "host groups: a unicast miss still goes to the default queue",
           .frame = untagged(VM9),
           .slot = dflt(),
           .vmq = {{0, 1}},
           .reason = {{XVMQ_REASON_MISS, 1}}};
  Row hg_h{.name = "host groups: a unicast hit still goes to its vmq",
           .frame = untagged(VM1),
           .filters = {{VM1, ANY, 1}},
           .slot = hit(1),
           .vmq = {{1, 1}}};
  Row hg_v{.name = "host groups' VLAN with another vmq: not the flag",
           .frame = untagged("ff:ff:ff:ff:ff:ff"),
           .slot = dflt(),
           .vmq = {{0, 1}},
           .reason = {{XVMQ_REASON_BROADCAST, 1}}};
  for (Row* r : {&hg_b, &hg_m, &hg_u, &hg_h}) {
    r->raw = {groups};
    rows.push_back(*r);
  }
  hg_v.raw = {{groups.first, xvmq_filter_value_word(3, 0)}};
  rows.push_back(hg_v);

  // Tag removal for access ports.
  Bytes t10 = tagged({{k8021Q, 10}});
  rows.push_back({.name = "strip tag",
                  .frame = t10,
                  .filters = {{VM1, 10, 1, true}},
                  .slot = hit(1),
                  .out = strip(t10, 1),
                  .vmq = {{1, 1}}});
  Bytes qq = tagged({{k8021AD, 100}, {k8021Q, 10}});
  rows.push_back({.name = "strip outer tag only",
                  .frame = qq,
                  .filters = {{VM1, 100, 1, true}},
                  .slot = hit(1),
                  .out = strip(qq, 1),
                  .vmq = {{1, 1}}});
  Bytes pq = tagged({{k8021Q, 0x2000}, {k8021Q, 10}});
  rows.push_back({.name = "strip priority and VLAN tag",
                  .frame = pq,
                  .filters = {{VM1, 10, 1, true}},
                  .slot = hit(1),
                  .out = strip(pq, 2),
                  .vmq = {{1, 1}}});
  Bytes pr = tagged({{k8021Q, 0x6000}});
  rows.push_back({.name = "strip priority tag",
                  .frame = pr,
                  .filters = {{VM1, 0, 1, true}},
                  .slot = hit(1),
                  .out = strip(pr, 1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "strip on untagged frame is a no-op",
                  .frame = untagged(VM1),
                  .filters = {{VM1, 0, 1, true}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "strip with MAC-only filter",
                  .frame = t10,
                  .filters = {{VM1, ANY, 1, true}},
                  .slot = hit(1),
                  .out = strip(t10, 1),
                  .vmq = {{1, 1}}});
  rows.push_back({.name = "no strip on fallback",
                  .frame = t10,
                  .filters = {{VM4, 10, 4, true}, {VM1, 10, 4, true}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_NO_SOCKET, 1}}});
  rows.push_back({.name = "strip on queue 1",
                  .frame = t10,
                  .filters = {{VM1, 10, 1, true}},
                  .queue = 1,
                  .slot = hit(1, 1),
                  .out = strip(t10, 1),
                  .vmq = {{1, 1}}});
  Bytes min_tagged = tagged({{k8021Q, 10}}, VM1, 0);
  rows.push_back({.name = "strip an 18-byte frame",
                  .frame = min_tagged,
                  .filters = {{VM1, 10, 1, true}},
                  .slot = hit(1),
                  .out = strip(min_tagged, 1),
                  .vmq = {{1, 1}}});

  // Frames shorter than an Ethernet header never reach XDP: this kernel's
  // BPF_PROG_RUN refuses them (even behind metadata), as adjust_head/tail
  // refuse to make one. The classifier would drop one as "runt".
  for (size_t n = 0; n < 14; n++) {
    Bytes f = untagged(VM1);
    f.resize(n);
    rows.push_back({.name = "runt of " + std::to_string(n) + " bytes",
                    .frame = f,
                    .filters = {{VM1, ANY, 1}},
                    .action = XDP_DROP,
                    .kernel_refuses = true});
  }
  Bytes trunc = untagged(VM1, 0);
  trunc[12] = 0x81, trunc[13] = 0x00;
  rows.push_back({.name = "truncated tag: TPID only",
                  .frame = trunc,
                  .filters = {{VM1, ANY, 1}},
                  .action = XDP_DROP,
                  .reason = {{XVMQ_REASON_TRUNCATED_TAG, 1}}});
  Bytes trunc2 = trunc;
  trunc2.push_back(0);
  trunc2.push_back(10);
  trunc2.push_back(0x81);
  rows.push_back({.name = "truncated tag: 3 bytes of tag",
                  .frame = trunc2,
                  .filters = {{VM1, ANY, 1}},
                  .action = XDP_DROP,
                  .reason = {{XVMQ_REASON_TRUNCATED_TAG, 1}}});
  Bytes trunc3 = tagged({{k8021AD, 10}, {k8021Q, 20}}, VM1, 0);
  trunc3.resize(trunc3.size() - 3);
  rows.push_back({.name = "truncated inner tag",
                  .frame = trunc3,
                  .filters = {{VM1, ANY, 1}},
                  .action = XDP_DROP,
                  .reason = {{XVMQ_REASON_TRUNCATED_TAG, 1}}});
  Bytes just_tag = tagged({{k8021Q, 10}}, VM1, 0);
  just_tag.resize(16);
  rows.push_back({.name = "tag without ethertype",
                  .frame = just_tag,
                  .filters = {{VM1, ANY, 1}},
                  .action = XDP_DROP,
                  .reason = {{XVMQ_REASON_TRUNCATED_TAG, 1}}});
  rows.push_back({.name = "14-byte header only",
                  .frame = untagged(VM1, 0),
                  .filters = {{VM1, ANY, 1}},
                  .slot = hit(1),
                  .vmq = {{1, 1}}});

  // Jumbo frames: multi-buffer in BPF_PROG_RUN (the program is xdp.frags).
  Bytes jumbo = untagged(VM1, 9000 - 14);
  rows.push_back({.name = "9000-byte hit", .frame = jumbo, .filters = {{VM1, 0, 1}}, .slot = hit(1), .vmq = {{1, 1}}});
  rows.push_back({.name = "9000-byte miss",
                  .frame = untagged(VM9, 9000 - 14),
                  .filters = {{VM1, 0, 1}},
                  .slot = dflt(),
                  .vmq = {{0, 1}},
                  .reason = {{XVMQ_REASON_MISS, 1}}});
  Bytes jumbo_tagged = tagged({{k8021Q, 10}}, VM1, 9000 - 18);
  rows.push_back({.name = "9000-byte strip",
                  .frame = jumbo_tagged,
                  .filters = {{VM1, 10, 1, true}},
                  .slot = hit(1),
                  .out = strip(jumbo_tagged, 1),
                  .vmq = {{1, 1}}});
  return rows;
}

TEST_F(ClassifierTable, Rows) {
  XVMQ_REQUIRE_PRIVILEGES();
  for (const auto& row : table()) check(row);
}

TEST_F(ClassifierTable, FullFilterMap) {
  XVMQ_REQUIRE_PRIVILEGES();
  Row empty{.frame = untagged(VM1)};
  prepare(empty);
  // Fill the map: MAC 02:00:00:xx:yy:zz, MAC-only and VLAN filters mixed.
  for (uint32_t i = 0; i < XVMQ_MAX_FILTERS; i++) {
    Mac m{0x02, 0x10, 0, static_cast<uint8_t>(i >> 16), static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
    auto st = cls_->set_filter({m, static_cast<uint16_t>(i % 2 ? XVMQ_VLAN_ANY : i % 4094)}, {1, false});
    ASSERT_TRUE(st) << "filter " << i << ": " << st.error().message;
  }
  auto extra = cls_->set_filter({*parse_mac(VM1), 0}, {2, false});
  ASSERT_FALSE(extra);
  EXPECT_EQ(extra.error().code, E2BIG);
  EXPECT_NE(extra.error().message.find("full"), std::string::npos) << extra.error().message;
  // An existing filter can still be changed and is still matched.
  Mac last{0x02, 0x10, 0, 0, 0xff, 0xff};
  ASSERT_TRUE(cls_->set_filter({last, XVMQ_VLAN_ANY}, {2, false}));
  auto before = cls_->counters();
  auto r = prog_run(cls_->prog_fd(), untagged("02:10:00:00:ff:ff"), {.ifindex = ifindex_});
  EXPECT_EQ(r.action, XDP_REDIRECT);
  auto after = cls_->counters();
  EXPECT_EQ(after->vmq[2].frames - before->vmq[2].frames, 1u);
  // The frame to the MAC that did not fit misses.
  r = prog_run(cls_->prog_fd(), untagged(VM1), {.ifindex = ifindex_});
  auto after2 = cls_->counters();
  EXPECT_EQ(after2->reason[XVMQ_REASON_MISS].frames - after->reason[XVMQ_REASON_MISS].frames, 1u);
}

TEST_F(ClassifierTable, LoaderRefusesBadFilters) {
  XVMQ_REQUIRE_PRIVILEGES();
  Row empty{.frame = untagged(VM1)};
  prepare(empty);
  Mac vm1 = *parse_mac(VM1);
  struct Case {
    FilterKey k;
    FilterValue v;
    const char* words;
  };
  std::vector<Case> cases = {
      {{*parse_mac("01:00:5e:00:00:01"), 0}, {1, false}, "multicast"},
      {{*parse_mac("ff:ff:ff:ff:ff:ff"), XVMQ_VLAN_ANY}, {1, false}, "multicast"},
      {{vm1, 4095}, {1, false}, "VLAN"},
      {{vm1, 0}, {0, false}, "vmq 0"},
      {{vm1, 0}, {XVMQ_MAX_VMQS, false}, "vmq 128"},
  };
  for (const auto& c : cases) {
    auto st = cls_->set_filter(c.k, c.v);
    ASSERT_FALSE(st) << c.k.to_string();
    EXPECT_EQ(st.error().code, EINVAL);
    EXPECT_NE(st.error().message.find(c.words), std::string::npos) << st.error().message;
  }
  auto fl = cls_->filters();
  ASSERT_TRUE(fl);
  EXPECT_TRUE(fl->empty()) << "a refused filter changed the map";
  auto st = cls_->clear_filter({vm1, 0});
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ENOENT);
  EXPECT_FALSE(cls_->set_socket(0, XVMQ_MAX_QUEUES, queues_[0]->fd(0)));
  EXPECT_FALSE(cls_->set_socket(XVMQ_MAX_VMQS, 0, queues_[0]->fd(0)));
}

}  // namespace
}  // namespace xvmq::test

namespace xvmq::test {
namespace {

// With a frame limit (the sockets' buffer size), longer frames are dropped
// and counted, not lost in a socket that cannot hold them.
TEST(ClassifierLimit, FramesLongerThanTheBuffersAreDroppedAndCounted) {
  XVMQ_REQUIRE_PRIVILEGES();
  auto c = Classifier::open({"", 1500});
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->load());
  for (size_t len : {1500u, 1501u, 9000u}) {
    SCOPED_TRACE(len);
    auto before = c->counters();
    ASSERT_TRUE(before);
    auto r = prog_run(c->prog_fd(), untagged(VM9, len - 14));
    ASSERT_EQ(r.err, 0);
    auto after = c->counters();
    bool big = len > 1500;
    EXPECT_EQ(r.action, big ? XDP_DROP : XDP_PASS);
    EXPECT_EQ(after->reason[XVMQ_REASON_TOO_BIG].frames - before->reason[XVMQ_REASON_TOO_BIG].frames, big ? 1u : 0u);
    EXPECT_EQ(after->reason[XVMQ_REASON_TOO_BIG].bytes - before->reason[XVMQ_REASON_TOO_BIG].bytes, big ? len : 0u);
    EXPECT_EQ(after->total_frames() - before->total_frames(), 1u);
  }
}

}  // namespace
}  // namespace xvmq::test
