// The loader against the real kernel on veth pairs: attach modes, detach
// after a restart, pinned maps kept and adopted, refusals, and xdp-loader
// working on the same object and pins. One veth pair per test.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "loader/classifier.h"
#include "tests/lib/harness.h"

namespace xvmq::test {
namespace {

namespace fs = std::filesystem;

const std::string kObject = XVMQ_UPLINK_OBJECT;
// Every map the classifier pins: its own, and kernel delivery's.
const std::vector<std::string> kMaps = {XVMQ_MAP_CPUS,   XVMQ_MAP_DESTS,     XVMQ_MAP_DEVS,    XVMQ_MAP_FILTERS,
                                        XVMQ_MAP_LOSSES, XVMQ_MAP_PENDING,   XVMQ_MAP_REASONS, XVMQ_MAP_DONE,
                                        XVMQ_MAP_FLOWS,  XVMQ_MAP_VMQ_STATS, XVMQ_MAP_VMQS,    XVMQ_MAP_XMIT_LOSSES,
                                        XVMQ_MAP_XSKS};  // sorted
// The maps the classifier's own program reads or writes (the others are its
// CPUMAP program's, the VM port program's and the loss tracer's).
bool used_by_classifier(const std::string& map) {
  return map != XVMQ_MAP_DESTS && map != XVMQ_MAP_LOSSES && map != XVMQ_MAP_XMIT_LOSSES;
}
const std::string VM1 = "02:00:00:00:00:01", VM9 = "02:00:00:00:00:09";

// A loader call must succeed; a failure shows the loader's message.
#define ASSERT_OK(expr)                                  \
  do {                                                   \
    auto r_ = (expr);                                    \
    ASSERT_TRUE(r_) << #expr ": " << r_.error().message; \
  } while (0)

bool has(const std::string& text, const std::string& words) { return text.find(words) != std::string::npos; }

// A veth pair (dev, dev + "p") and the pin directory of dev, removed at the
// end of the test, on failure too.
struct Uplink {
  explicit Uplink(const std::string& name)
      : dev(name), peer(name + "p"), pin_dir("/sys/fs/bpf/xvmq/" + name), ok(make_veth(dev, peer, 1)) {}
  ~Uplink() {
    sh("ip link del " + dev);
    sh("rm -rf " + pin_dir);
  }
  std::string dev, peer, pin_dir;
  bool ok;
};

std::optional<AttachedProgram> attached(const std::string& dev) {
  auto q = Classifier::query(dev);
  if (!q) {
    ADD_FAILURE() << q.error().message;
    return std::nullopt;
  }
  return *q;
}

// The id of a map or a program: both info structs start with type, id.
uint32_t obj_id(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  return fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

uint32_t pinned_id(const std::string& path) {
  int fd = bpf_obj_get(path.c_str());
  uint32_t id = obj_id(fd);
  if (fd >= 0) close(fd);
  return id;
}

std::vector<uint32_t> prog_map_ids(uint32_t prog_id) {
  int fd = bpf_prog_get_fd_by_id(prog_id);
  if (fd < 0) return {};
  std::vector<uint32_t> ids(16);
  bpf_prog_info info{};
  info.nr_map_ids = static_cast<uint32_t>(ids.size());
  info.map_ids = reinterpret_cast<uint64_t>(ids.data());
  uint32_t len = sizeof(info);
  int err = bpf_obj_get_info_by_fd(fd, &info, &len);
  close(fd);
  if (err) return {};
  ids.resize(std::min<size_t>(info.nr_map_ids, ids.size()));
  return ids;
}

bool contains(const std::vector<uint32_t>& ids, uint32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<std::string> pins(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) names.push_back(e.path().filename());
  return sorted(names);
}

// The fields of dev's row in `xdp-loader status`: name, program, mode, id, tag.
std::vector<std::string> loader_status(const std::string& dev) {
  std::string out;
  EXPECT_EQ(sh("xdp-loader status " + dev, &out), 0) << out;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::vector<std::string> row;
    for (std::string w; words >> w;) row.push_back(w);
    if (!row.empty() && row[0] == dev) return row;
  }
  ADD_FAILURE() << "no row for " << dev << " in xdp-loader status:\n" << out;
  return {};
}

Bytes frame_to(const std::string& dst) { return build_frame({.dst = dst}); }

// Frames from the peer reach XDP in the receiving veth's NAPI poll, after
// the send returned: poll the counters for up to two seconds.
std::optional<Counters> wait_counters(const Classifier& c, const std::function<bool(const Counters&)>& done) {
  for (int i = 0; i < 200; i++) {
    auto k = c.counters();
    if (!k) {
      ADD_FAILURE() << k.error().message;
      return std::nullopt;
    }
    if (done(*k)) return *k;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

void expect_same_counters(const Counters& a, const Counters& b) {
  for (uint32_t i = 0; i < XVMQ_MAX_VMQS; i++) {
    EXPECT_EQ(a.vmq[i].frames, b.vmq[i].frames) << "vmq " << i;
    EXPECT_EQ(a.vmq[i].bytes, b.vmq[i].bytes) << "vmq " << i;
  }
  for (uint32_t i = 0; i < XVMQ_REASON_COUNT; i++) {
    EXPECT_EQ(a.reason[i].frames, b.reason[i].frames) << reason_name(i);
    EXPECT_EQ(a.reason[i].bytes, b.reason[i].bytes) << reason_name(i);
  }
}

// An XDP program that is not the classifier: return XDP_PASS.
int load_other_program() {
  bpf_insn insns[2]{};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[0].dst_reg = BPF_REG_0;
  insns[0].imm = XDP_PASS;
  insns[1].code = BPF_JMP | BPF_EXIT;
  return bpf_prog_load(BPF_PROG_TYPE_XDP, "not_xvmq", "GPL", insns, 2, nullptr);
}

TEST(Loader, AttachInEachMode) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt1");
  ASSERT_TRUE(up.ok);
  auto c = Classifier::open();
  ASSERT_TRUE(c) << c.error().message;
  struct Case {
    AttachMode ask, want;
  };
  for (auto [ask, want] : {Case{AttachMode::Native, AttachMode::Native}, Case{AttachMode::Skb, AttachMode::Skb},
                           Case{AttachMode::Auto, AttachMode::Native}}) {
    SCOPED_TRACE("attach " + std::string(to_string(ask)));
    auto mode = c->attach(up.dev, ask);
    ASSERT_TRUE(mode) << mode.error().message;
    EXPECT_EQ(*mode, want) << to_string(*mode);
    auto p = attached(up.dev);
    ASSERT_TRUE(p) << "nothing attached";
    EXPECT_EQ(p->name, kClassifierName);
    EXPECT_EQ(p->mode, want) << to_string(p->mode);
    EXPECT_EQ(p->id, obj_id(c->prog_fd())) << "not this object's program";
    auto row = loader_status(up.dev);
    ASSERT_GE(row.size(), 4u);
    EXPECT_EQ(row[1], kClassifierName);
    EXPECT_EQ(row[2], to_string(want));
    EXPECT_EQ(row[3], std::to_string(p->id));

    ASSERT_OK(c->detach());
    EXPECT_FALSE(attached(up.dev)) << "still attached after detach";
  }
  auto again = c->detach();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ENOENT);
}

TEST(Loader, DetachFromAfterRestartAndXdpLoader) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt2");
  ASSERT_TRUE(up.ok);
  {
    auto c = Classifier::open();
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_OK(c->attach(up.dev, AttachMode::Native));
  }  // the object is gone, as after a restart; the program stays
  auto p = attached(up.dev);
  ASSERT_TRUE(p) << "destroying the Classifier detached it";
  EXPECT_EQ(p->name, kClassifierName);
  ASSERT_OK(Classifier::detach_from(up.dev));
  EXPECT_FALSE(attached(up.dev));

  fs::create_directories(up.pin_dir);  // xdp-loader needs it to exist
  ASSERT_TRUE(sh_ok("xdp-loader load -p " + up.pin_dir + " " + up.dev + " " + kObject));
  p = attached(up.dev);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->name, kClassifierName);
  ASSERT_OK(Classifier::detach_from(up.dev));
  EXPECT_FALSE(attached(up.dev));

  auto st = Classifier::detach_from(up.dev);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ENOENT);
  EXPECT_TRUE(has(st.error().message, up.dev)) << st.error().message;
}

TEST(Loader, LeavesOtherProgramsAlone) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt3");
  ASSERT_TRUE(up.ok);

  // The classifier of another object, in skb mode; this one asks native.
  auto first = Classifier::open();
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_OK(first->attach(up.dev, AttachMode::Skb));
  uint32_t first_id = obj_id(first->prog_fd());
  auto second = Classifier::open();
  ASSERT_TRUE(second) << second.error().message;
  auto mode = second->attach(up.dev, AttachMode::Native);
  ASSERT_FALSE(mode);
  EXPECT_EQ(mode.error().code, EEXIST);
  EXPECT_TRUE(has(mode.error().message, "'xvmq_uplink'")) << mode.error().message;
  EXPECT_TRUE(has(mode.error().message, "mode skb")) << mode.error().message;
  auto p = attached(up.dev);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->id, first_id);
  EXPECT_EQ(p->mode, AttachMode::Skb);
  ASSERT_OK(first->detach());

  // A program that is not the classifier.
  int other = load_other_program();
  ASSERT_GE(other, 0) << strerror(errno);
  int ifindex = static_cast<int>(if_nametoindex(up.dev.c_str()));
  ASSERT_EQ(bpf_xdp_attach(ifindex, other, XDP_FLAGS_DRV_MODE, nullptr), 0) << strerror(errno);
  uint32_t other_id = obj_id(other);
  close(other);

  auto st = Classifier::detach_from(up.dev);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EPERM);
  EXPECT_TRUE(has(st.error().message, "'not_xvmq'")) << st.error().message;
  EXPECT_TRUE(has(st.error().message, up.dev)) << st.error().message;
  mode = second->attach(up.dev, AttachMode::Auto);
  ASSERT_FALSE(mode);
  EXPECT_EQ(mode.error().code, EEXIST);
  EXPECT_TRUE(has(mode.error().message, "'not_xvmq'")) << mode.error().message;
  EXPECT_TRUE(has(mode.error().message, "mode native")) << mode.error().message;
  p = attached(up.dev);
  ASSERT_TRUE(p) << "the other program was detached";
  EXPECT_EQ(p->id, other_id);
  EXPECT_EQ(p->name, "not_xvmq");
}

TEST(Loader, PinnedMapsSurviveRestart) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt4");
  ASSERT_TRUE(up.ok);
  const ClassifierOptions opts{up.pin_dir};
  const FilterKey vm1{*parse_mac(VM1), XVMQ_VLAN_ANY};
  std::map<std::string, uint32_t> ids;
  Counters before;
  {
    auto c = Classifier::open(opts);
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_TRUE(c->adopted_maps().empty());
    ASSERT_OK(c->attach(up.dev, AttachMode::Native));
    ASSERT_OK(c->set_filter(vm1, {1, false}));
    for (const auto& name : kMaps) {
      ids[name] = obj_id(c->map_fd(name));
      EXPECT_EQ(pinned_id(up.pin_dir + "/" + name), ids[name]) << name << " is not pinned";
    }
    // vmq 1 has no socket: the frame is counted and passes.
    ASSERT_EQ(send_raw(up.peer, frame_to(VM1), 0), 0);
    auto k = wait_counters(*c, [](const Counters& k) { return k.reason[XVMQ_REASON_NO_SOCKET].frames == 1; });
    ASSERT_TRUE(k) << "the frame was not counted";
    EXPECT_EQ(k->total_frames(), 1u);
    before = *k;
  }
  auto p = attached(up.dev);
  ASSERT_TRUE(p) << "destroying the Classifier detached it";
  EXPECT_EQ(p->name, kClassifierName);
  EXPECT_EQ(pins(up.pin_dir), kMaps);
  ASSERT_OK(Classifier::detach_from(up.dev));

  auto c = Classifier::open(opts);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(sorted(c->adopted_maps()), kMaps);
  for (const auto& name : kMaps) EXPECT_EQ(obj_id(c->map_fd(name)), ids[name]) << name;
  auto fl = c->filters();
  ASSERT_TRUE(fl) << fl.error().message;
  ASSERT_EQ(fl->size(), 1u);
  EXPECT_EQ((*fl)[0].first, vm1);
  EXPECT_EQ((*fl)[0].second, (FilterValue{1, false}));
  auto kept = c->counters();
  ASSERT_TRUE(kept) << kept.error().message;
  expect_same_counters(*kept, before);

  ASSERT_OK(c->attach(up.dev, AttachMode::Native));
  p = attached(up.dev);
  ASSERT_TRUE(p);
  auto used = prog_map_ids(p->id);
  for (const auto& name : kMaps)
    if (used_by_classifier(name)) EXPECT_TRUE(contains(used, ids[name])) << "the program does not use pinned " << name;
  ASSERT_EQ(send_raw(up.peer, frame_to(VM1), 0), 0);
  EXPECT_TRUE(wait_counters(*c, [](const Counters& k) { return k.reason[XVMQ_REASON_NO_SOCKET].frames == 2; }))
      << "the re-attached program does not count in the kept counters";

  ASSERT_OK(c->detach());
  ASSERT_OK(c->unpin());
  EXPECT_FALSE(fs::exists(up.pin_dir)) << "pins left: " << ::testing::PrintToString(pins(up.pin_dir));
}

TEST(Loader, IncompatiblePinRefused) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt5");
  ASSERT_TRUE(up.ok);
  const std::string path = up.pin_dir + "/" + XVMQ_MAP_FILTERS;
  struct Case {
    bpf_map_type type;
    uint32_t key, value, entries, flags;
    std::vector<std::string> words;
  };
  const uint32_t mm = BPF_F_MMAPABLE;
  const std::vector<Case> cases = {
      {BPF_MAP_TYPE_ARRAY,
       4,
       16,
       1024,
       mm,
       {"max_entries 1024 (classifier has " + std::to_string(XVMQ_FILTER_SLOTS) + ")"}},
      {BPF_MAP_TYPE_ARRAY, 4, 8, XVMQ_FILTER_SLOTS, mm, {"value size 8 (classifier has 16)"}},
      {BPF_MAP_TYPE_ARRAY, 4, 16, XVMQ_FILTER_SLOTS, 0, {"flags 0 (classifier has 1024)"}},
      {BPF_MAP_TYPE_HASH, 8, 16, 1024, 0, {"type hash (classifier has array)", "key size 8 (classifier has 4)"}},
  };
  fs::create_directories(up.pin_dir);
  for (const auto& k : cases) {
    SCOPED_TRACE(k.words[0]);
    LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = k.flags);
    int fd = bpf_map_create(k.type, XVMQ_MAP_FILTERS, k.key, k.value, k.entries, &opts);
    ASSERT_GE(fd, 0) << strerror(errno);
    ASSERT_EQ(bpf_obj_pin(fd, path.c_str()), 0) << strerror(errno);
    uint32_t id = obj_id(fd);
    close(fd);

    auto c = Classifier::open({up.pin_dir});
    ASSERT_FALSE(c) << "opened over an incompatible pin";
    EXPECT_EQ(c.error().code, EEXIST);
    EXPECT_TRUE(has(c.error().message, path)) << c.error().message;
    for (const auto& w : k.words) EXPECT_TRUE(has(c.error().message, w)) << c.error().message;
    EXPECT_EQ(pinned_id(path), id) << "the pin was replaced";
    EXPECT_EQ(pins(up.pin_dir), std::vector<std::string>{XVMQ_MAP_FILTERS});
    ASSERT_EQ(unlink(path.c_str()), 0);
  }
}

TEST(Loader, OffloadRefusedOnVeth) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt6");
  ASSERT_TRUE(up.ok);
  auto c = Classifier::open();
  ASSERT_TRUE(c) << c.error().message;
  auto mode = c->attach(up.dev, AttachMode::Offload);
  ASSERT_FALSE(mode);
  const auto& e = mode.error();
  EXPECT_EQ(e.code, EOPNOTSUPP);
  EXPECT_TRUE(has(e.message, "driver 'veth'")) << e.message;
  EXPECT_TRUE(has(e.message, "native")) << e.message;
  EXPECT_TRUE(has(e.message, "skb")) << e.message;
  EXPECT_FALSE(attached(up.dev));

  mode = c->attach(up.dev, AttachMode::Native);
  ASSERT_TRUE(mode) << mode.error().message;
  auto p = attached(up.dev);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, AttachMode::Native);
  EXPECT_EQ(p->id, obj_id(c->prog_fd()));
  ASSERT_OK(c->detach());
}

TEST(Loader, XdpLoaderSharesPinnedMaps) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt7");
  ASSERT_TRUE(up.ok);
  fs::create_directories(up.pin_dir);  // xdp-loader needs it to exist
  ASSERT_TRUE(sh_ok("xdp-loader load -p " + up.pin_dir + " " + up.dev + " " + kObject));
  auto p = attached(up.dev);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->name, kClassifierName);
  ASSERT_EQ(pins(up.pin_dir), kMaps);
  auto used = prog_map_ids(p->id);

  auto c = Classifier::open({up.pin_dir});
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(sorted(c->adopted_maps()), kMaps);
  for (const auto& name : kMaps) {
    uint32_t id = pinned_id(up.pin_dir + "/" + name);
    EXPECT_EQ(obj_id(c->map_fd(name)), id) << name;
    if (used_by_classifier(name))
      EXPECT_TRUE(contains(used, id)) << "xdp-loader's program does not use pinned " << name;
  }

  // No default socket: the hit without a socket and the miss both pass.
  ASSERT_OK(c->set_filter({*parse_mac(VM1), XVMQ_VLAN_ANY}, {1, false}));
  ASSERT_EQ(send_raw(up.peer, frame_to(VM1), 0), 0);
  ASSERT_EQ(send_raw(up.peer, frame_to(VM9), 0), 0);
  auto k = wait_counters(*c, [](const Counters& k) {
    return k.reason[XVMQ_REASON_NO_SOCKET].frames == 1 && k.reason[XVMQ_REASON_MISS].frames == 1;
  });
  ASSERT_TRUE(k) << "frames through xdp-loader's program were not counted";
  EXPECT_EQ(k->total_frames(), 2u);
  EXPECT_EQ(k->vmq[XVMQ_DEFAULT_VMQ].frames, 0u);

  ASSERT_TRUE(sh_ok("xdp-loader unload " + up.dev + " --all"));
  EXPECT_FALSE(attached(up.dev));
}

TEST(Loader, BadRequests) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt8");
  ASSERT_TRUE(up.ok);

  auto c = Classifier::open();
  ASSERT_TRUE(c) << c.error().message;
  auto mode = c->attach("nosuchdev0", AttachMode::Native);
  ASSERT_FALSE(mode);
  EXPECT_EQ(mode.error().code, ENODEV);
  EXPECT_TRUE(has(mode.error().message, "nosuchdev0")) << mode.error().message;
  auto st = Classifier::detach_from("nosuchdev0");
  ASSERT_FALSE(st);
  EXPECT_TRUE(has(st.error().message, "nosuchdev0")) << st.error().message;

  st = c->set_filter({*parse_mac(VM1), 0}, {1, false});
  ASSERT_FALSE(st);
  EXPECT_TRUE(has(st.error().message, "load")) << st.error().message;
  auto k = c->counters();
  ASSERT_FALSE(k);
  EXPECT_TRUE(has(k.error().message, "load")) << k.error().message;

  // A pin directory outside bpffs: refused at open when it exists, at load
  // or attach when it does not, and nothing stays attached.
  char tmpl[] = "/tmp/xvmq-loader-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string tmp = tmpl;
  struct RemoveTmp {
    std::string dir;
    ~RemoveTmp() { fs::remove_all(dir); }
  } remove_tmp{tmp};
  auto on_tmp = Classifier::open({tmp});
  ASSERT_FALSE(on_tmp);
  EXPECT_EQ(on_tmp.error().code, EINVAL);
  EXPECT_TRUE(has(on_tmp.error().message, tmp + " is not on a bpffs mount")) << on_tmp.error().message;

  const std::string missing = tmp + "/pins";
  {
    auto d = Classifier::open({missing});
    ASSERT_TRUE(d) << d.error().message;  // nothing there to adopt
    st = d->load();
    ASSERT_FALSE(st) << "load pinned outside bpffs";
    EXPECT_EQ(st.error().code, EINVAL);
    EXPECT_TRUE(has(st.error().message, "not on a bpffs mount")) << st.error().message;
    EXPECT_FALSE(fs::exists(missing)) << "a refused load created " << missing;
    EXPECT_FALSE(d->load()) << "a second load claims success without its pins";
  }
  auto d = Classifier::open({missing});
  ASSERT_TRUE(d) << d.error().message;
  mode = d->attach(up.dev, AttachMode::Native);
  ASSERT_FALSE(mode) << "attach pinned outside bpffs";
  EXPECT_EQ(mode.error().code, EINVAL);
  EXPECT_TRUE(has(mode.error().message, "not on a bpffs mount")) << mode.error().message;
  EXPECT_FALSE(attached(up.dev)) << "a refused attach left the program attached";
  EXPECT_FALSE(fs::exists(missing)) << "a refused attach created " << missing;
}

// switchd may load (to test with BPF_PROG_RUN) before it attaches, and
// detach and attach again: the maps are pinned once.
TEST(Loader, LoadThenAttachPinsOnce) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt9");
  ASSERT_TRUE(up.ok);
  auto c = Classifier::open({up.pin_dir});
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_OK(c->load());
  EXPECT_EQ(pins(up.pin_dir), kMaps);
  ASSERT_OK(c->attach(up.dev, AttachMode::Native));
  auto p = attached(up.dev);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->id, obj_id(c->prog_fd()));
  for (const auto& name : kMaps) EXPECT_EQ(pinned_id(up.pin_dir + "/" + name), obj_id(c->map_fd(name))) << name;
  ASSERT_OK(c->detach());
  ASSERT_OK(c->attach(up.dev, AttachMode::Skb));
  ASSERT_OK(c->detach());
}

}  // namespace
}  // namespace xvmq::test

namespace xvmq::test {
namespace {

TEST(Loader, OneFilterWriterAtATime) {
  XVMQ_REQUIRE_PRIVILEGES();
  Uplink up("lt9");
  ASSERT_TRUE(up.ok);
  auto first = Classifier::open({up.pin_dir});
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_TRUE(first->load());
  ASSERT_TRUE(first->lock_filters());
  auto second = Classifier::open({up.pin_dir});
  ASSERT_TRUE(second) << second.error().message;
  auto st = second->lock_filters(std::chrono::milliseconds(50));
  ASSERT_FALSE(st) << "two writers hold the filter table";
  EXPECT_EQ(st.error().code, EBUSY);
  EXPECT_NE(st.error().message.find(up.pin_dir), std::string::npos) << st.error().message;
  // The lock goes with its holder.
  first = Error{0, ""};
  EXPECT_TRUE(second->lock_filters(std::chrono::milliseconds(50)));
  ASSERT_TRUE(second->unpin());
}

}  // namespace
}  // namespace xvmq::test
