// Many VM NICs on one switchd: receive buffers must scale with the number of
// NICs, so that no NIC starves because others were connected first.
//
//   ext: ext0 <-> up0 (uplink, 2 queues)      vmN: eth0 (vm_mac(N)) <-> vmN-host
//
// The built switchd with its default buffer options (only --max-vmqs 8 and
// the fixture's --queue-cpus), between network namespaces made in batches
// (`ip -batch`, one `ip -n NS -batch` per VM). VM N has 10.78.N/256.N%256
// on a /16, the outside 10.78.255.254. The first 8 NICs get a vmq (the VMQ
// path), the others take the default queue's software path.
//
// Every namespace and link is removed in TearDown, on failure too; the test
// process's own namespaces (tests/lib/main.cpp) take whatever is left.
#include <signal.h>

#include <algorithm>
#include <cinttypes>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "tests/lib/switchd_fixture.h"

namespace {

// The flood's offered load. Under AddressSanitizer (./tools/test.sh
// --sanitize) the workers run about three times slower, so the 256 pingers
// send every 50 ms instead of as fast as replies come: a load the switch
// can carry, with the same bounds on what may be lost.
const char* flood_ping_options() {
#if defined(__SANITIZE_ADDRESS__)
  return "-i 0.05 -c 100 -W 2";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return "-i 0.05 -c 100 -W 2";
#else
  return "-f -c 100 -W 2";
#endif
#else
  return "-f -c 100 -W 2";
#endif
}

using namespace std::chrono_literals;
using namespace xvmq::test;

std::string vm_ip(int i) { return "10.78." + std::to_string(i / 256) + "." + std::to_string(i % 256); }
constexpr const char* kExtIp = "10.78.255.254";
constexpr const char* kExtMac = "02:00:00:00:ff:fe";

class ScaleTest : public SwitchdFixture {
 protected:
  explicit ScaleTest(int vms) : vms_(vms) {
    vm_count_ = 0;  // made here, in batches
    max_vmqs_ = 8;
    prefix_tag_ = "sc";
  }

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(SwitchdFixture::SetUp());
    const uint64_t t0 = mono_ns();
    ASSERT_NO_FATAL_FAILURE(make_vms());
    ASSERT_TRUE(sh_ok("ip -n " + ns("ext") + " link set ext0 address " + std::string(kExtMac) + " && ip -n " +
                      ns("ext") + " addr add " + std::string(kExtIp) + "/16 dev ext0"));
    attach();
    const uint64_t t1 = mono_ns();
    for (int i = 1; i <= vms_; i++) {
      json r = add_vm(i);
      ASSERT_EQ(r.value("state", ""), "connected") << vm(i) << ": " << r.dump();
    }
    const uint64_t t2 = mono_ns();
    std::printf(
        "[ setup    ] %d VMs: namespaces and veths %.2f s, port+nic create and connect %.2f s (%.1f ms per NIC)\n",
        vms_, (t1 - t0) / 1e9, (t2 - t1) / 1e9, (t2 - t1) / 1e6 / vms_);
  }

  void TearDown() override {
    if (active_) {
      const uint64_t t0 = mono_ns();
      stop_switchd(SIGTERM);
      std::printf("[ teardown ] switchd stopped with %d NICs connected in %.2f s\n", vms_, (mono_ns() - t0) / 1e9);
      // The VMs' namespaces in one batch (their veths go with them); the
      // fixture removes ext and checks the log.
      std::ofstream b(dir_ + "/teardown.batch");
      for (const auto& n : made_ns_)
        if (n != "ext") b << "netns del " << ns(n) << "\n";
      b.close();
      sh("ip -force -batch " + dir_ + "/teardown.batch");
      std::erase_if(made_ns_, [](const std::string& n) { return n != "ext"; });
    }
    SwitchdFixture::TearDown();
  }

  // The VMs' namespaces, veths and addresses: a few `ip -batch` runs.
  void make_vms() {
    const std::string nsb = dir_ + "/ns.batch", linkb = dir_ + "/link.batch", vmsh = dir_ + "/vms.sh";
    {
      std::ofstream b(nsb);
      for (int i = 1; i <= vms_; i++) b << "netns add " << ns(vm(i)) << "\n";
    }
    ASSERT_TRUE(sh_ok("ip -batch " + nsb));
    for (int i = 1; i <= vms_; i++) made_ns_.push_back(vm(i));
    {
      std::ofstream b(linkb);
      for (int i = 1; i <= vms_; i++) {
        b << "link add " << vm(i) << "-host numrxqueues 2 numtxqueues 2 type veth peer name eth0 netns " << ns(vm(i))
          << " address " << mac_of(i) << " numrxqueues 2 numtxqueues 2\n";
        // No IPv6 link-local address: no DAD or router solicitations flooded to every VM.
        b << "link set " << vm(i) << "-host addrgenmode none\n";
        b << "link set " << vm(i) << "-host up\n";
      }
    }
    ASSERT_TRUE(sh_ok("ip -batch " + linkb));
    {
      std::ofstream s(vmsh);
      s << "set -e\n";
      // The outside is a permanent neighbour of every VM: the kernel's ARP
      // table is shared by all namespaces (gc_thresh3, 1024 by default).
      for (int i = 1; i <= vms_; i++)
        s << "printf 'link set lo up\\nlink set eth0 addrgenmode none\\naddr add " << vm_ip(i)
          << "/16 dev eth0\\nlink set eth0 up\\nneigh replace " << kExtIp << " lladdr " << kExtMac
          << " dev eth0 nud permanent\\n' | ip -n " << ns(vm(i)) << " -batch -\n";
    }
    std::string out;
    ASSERT_EQ(sh("sh " + vmsh, &out), 0) << out;
  }

  struct PingResult {
    int sent = 0, received = 0;
    bool answered = false;
  };

  // One ping per (from, to) pair, all at once; from "ext" or a VM index.
  // Returns by pair index. `opts` are ping's options (bounded in count and time).
  std::vector<PingResult> ping_all(const std::vector<std::pair<std::string, std::string>>& pairs,
                                   const std::string& opts, int limit_s) {
    const std::string script = dir_ + "/ping" + std::to_string(next_script_++) + ".sh";
    {
      std::ofstream s(script);
      for (size_t k = 0; k < pairs.size(); k++)
        s << "(r=$(nsenter --net=/run/netns/" << ns(pairs[k].first) << " timeout " << limit_s << " ping -n -q " << opts
          << " " << pairs[k].second << " 2>&1 | grep -o '[0-9]* packets transmitted, [0-9]* received'); echo \"R " << k
          << " $r\") &\n";
      s << "wait\n";
    }
    std::string out;
    sh("sh " + script, &out);
    std::vector<PingResult> res(pairs.size());
    std::regex line(R"(R (\d+) (\d+) packets transmitted, (\d+) received)");
    for (std::sregex_iterator it(out.begin(), out.end(), line), end; it != end; ++it) {
      size_t k = std::stoul((*it)[1]);
      if (k >= res.size()) continue;
      res[k].sent = std::stoi((*it)[2]);
      res[k].received = std::stoi((*it)[3]);
      res[k].answered = res[k].received > 0;
    }
    return res;
  }

  // Every VM answers a ping from the outside.
  void expect_all_answer_outside() {
    std::vector<std::pair<std::string, std::string>> pairs;
    for (int i = 1; i <= vms_; i++) pairs.push_back({"ext", vm_ip(i)});
    auto res = ping_all(pairs, "-c 3 -i 0.3 -W 2 -w 8", 15);
    std::vector<int> silent;
    for (int i = 1; i <= vms_; i++)
      if (!res[static_cast<size_t>(i - 1)].answered) silent.push_back(i);
    std::printf("[ ping     ] ext -> every VM: %d/%d answer\n", vms_ - static_cast<int>(silent.size()), vms_);
    if (!silent.empty()) {
      std::string names;
      for (int i : silent) names += " " + vm(i);
      json st = call("stats");
      ADD_FAILURE() << silent.size() << " of " << vms_ << " VMs do not answer ping from outside:" << names
                    << "\nqueues: " << st["queues"].dump()
                    << "\nfirst silent NIC: " << st["nics"][vm(silent.front())].dump();
    }
  }

  // The ARP entries learned so far, out of the kernel's table (shared by
  // all namespaces): in ext, and in every VM (the outside's permanent one stays).
  void flush_neighbours(bool vms) {
    sh("ip -n " + ns("ext") + " neigh flush dev ext0");
    if (!vms) return;
    const std::string script = dir_ + "/flush.sh";
    {
      std::ofstream s(script);
      for (int i = 1; i <= vms_; i++) s << "ip -n " << ns(vm(i)) << " neigh flush dev eth0\n";
    }
    sh("sh " + script);
  }

  // Per NIC, the kernel's drops at its sockets (frames lost before switchd saw them).
  std::map<std::string, uint64_t> socket_drops(const json& st) {
    std::map<std::string, uint64_t> out;
    for (const auto& [name, n] : st["nics"].items())
      for (const char* k : {"xsk_rx_dropped", "xsk_rx_ring_full", "xsk_vmq_rx_dropped", "xsk_vmq_rx_ring_full"})
        if (uint64_t v = u64(n, {"drops", k})) out[name + " " + k] += v;
    for (const auto& q : st["queues"])
      for (const char* k : {"xsk_rx_dropped", "xsk_rx_ring_full"})
        if (uint64_t v = u64(q, {"drops", k})) out["queue " + std::to_string(q["queue"].get<int>()) + " " + k] += v;
    return out;
  }

  int vms_;
  int next_script_ = 0;
};

// The old default buffers starved the NICs connected last: with 32 NICs on a
// 2-queue uplink, 24 of them never got a fill buffer and dropped their ARP
// replies at the kernel.
class Scale32Test : public ScaleTest {
 protected:
  Scale32Test() : ScaleTest(32) {}
};

TEST_F(Scale32Test, EveryVmAnswersWithDefaultBuffers) {
  expect_all_answer_outside();
  json st = call("stats");
  for (const auto& q : st["queues"]) {
    const json& b = q["buffers"];
    std::printf("[ buffers  ] queue %d: total %" PRIu64 ", free %" PRIu64 ", in_fill %" PRIu64 ", in_flight %" PRIu64
                "\n",
                q["queue"].get<int>(), u64(b, {"total"}), u64(b, {"free"}), u64(b, {"in_fill"}), u64(b, {"in_flight"}));
  }
  expect_pools_idle();
  auto drops = socket_drops(call("stats"));
  EXPECT_TRUE(drops.empty()) << [&] {
    std::string s;
    for (const auto& [k, v] : drops) s += k + " " + std::to_string(v) + "\n";
    return s;
  }();
}

class Scale256Test : public ScaleTest {
 protected:
  Scale256Test() : ScaleTest(256) {}
};

TEST_F(Scale256Test, EveryVmAnswersAndNoneStarvesUnderFloodPing) {
  const uint64_t t0 = mono_ns();
  expect_all_answer_outside();
  flush_neighbours(false);
  // Each VM pings its neighbour (the last one the first): VM to VM through the switch.
  {
    std::vector<std::pair<std::string, std::string>> pairs;
    for (int i = 1; i <= vms_; i++) pairs.push_back({vm(i), vm_ip(i % vms_ + 1)});
    auto res = ping_all(pairs, "-c 3 -i 0.3 -W 2 -w 8", 15);
    std::string silent;
    int ok = 0;
    for (int i = 1; i <= vms_; i++) {
      if (res[static_cast<size_t>(i - 1)].answered)
        ok++;
      else
        silent += " " + vm(i) + "->" + vm(i % vms_ + 1);
    }
    std::printf("[ ping     ] every VM -> its neighbour: %d/%d answered\n", ok, vms_);
    EXPECT_EQ(ok, vms_) << "no answer:" << silent;
  }
  // The outside resolves every VM again (their neighbours' entries gone),
  // so that the flood measures the buffers, not 256 ARP resolutions at once.
  flush_neighbours(true);
  expect_all_answer_outside();
  const uint64_t t1 = mono_ns();
  // All of them flood-ping the outside at once (flood_ping_options): bounded to 100 requests each
  // (and 40 s); a reply lost is a request without its reply after 2 s.
  const json before = call("stats");
  {
    std::vector<std::pair<std::string, std::string>> pairs;
    for (int i = 1; i <= vms_; i++) pairs.push_back({vm(i), kExtIp});
    auto res = ping_all(pairs, flood_ping_options(), 40);
    int worst = 0, sent = 0, received = 0;
    std::string lossy;
    for (int i = 1; i <= vms_; i++) {
      const auto& r = res[static_cast<size_t>(i - 1)];
      sent += r.sent;
      received += r.received;
      const int lost = r.sent - r.received;
      worst = std::max(worst, r.sent ? lost * 100 / r.sent : 100);
      if (r.sent == 0 || lost * 20 > r.sent)
        lossy += " " + vm(i) + " (" + std::to_string(r.received) + "/" + std::to_string(r.sent) + ")";
    }
    std::printf("[ flood    ] %d VMs flood-pinging the outside at once: %d/%d replies, worst VM lost %d%%\n", vms_,
                received, sent, worst);
    EXPECT_TRUE(lossy.empty()) << "VMs that lost more than 5%:" << lossy;
  }
  const uint64_t t2 = mono_ns();
  // Every buffer accounted for, and no frame lost at a socket.
  expect_pools_idle();
  json after = call("stats");
  for (const auto& q : after["queues"]) {
    const json& b = q["buffers"];
    std::printf("[ buffers  ] queue %d: total %" PRIu64 ", free %" PRIu64 ", in_fill %" PRIu64 ", in_flight %" PRIu64
                ", above floors %" PRIu64 "\n",
                q["queue"].get<int>(), u64(b, {"total"}), u64(b, {"free"}), u64(b, {"in_fill"}), u64(b, {"in_flight"}),
                u64(b, {"above_floor"}));
  }
  {
    // Where the flood's lost replies went, by the switch's reasons.
    std::string why;
    for (size_t q = 0; q < after["queues"].size(); q++)
      for (const auto& [k, v] : after["queues"][q]["drops"].items())
        if (uint64_t d = v.get<uint64_t>() - u64(before["queues"][q], {"drops", k.c_str()}))
          why += " queue " + std::to_string(q) + " " + k + " " + std::to_string(d) + ";";
    std::printf("[ flood    ] switch drops during the flood:%s\n", why.empty() ? " none" : why.c_str());
  }
  // Before the flood no socket may have dropped anything: a NIC without
  // buffers drops every frame sent to it. During the flood, 256 pingers and
  // the outside's replies share the machine's CPUs with the two workers; a
  // worker not scheduled for a while lets a fill ring run dry (the uplink's
  // 1024, a VM backend's floor of --nic-floor frames at 100 frames/s). That
  // costs a few frames, never a NIC's whole traffic: at most 5 per NIC and
  // 1% of the flood's frames in all, and every drop is printed.
  auto d0 = socket_drops(before), d1 = socket_drops(after);
  std::string drops;
  uint64_t in_flood = 0;
  for (const auto& [k, v] : d1) {
    const uint64_t d = v - d0[k];
    in_flood += d;
    drops += k + " " + std::to_string(v) + " (" + std::to_string(d) + " in the flood)\n";
    if (k.rfind("queue ", 0) != 0) {
      EXPECT_LE(d, 5u) << k << ": a NIC that lost more than a few frames at its socket";
    }
  }
  if (!d1.empty()) std::printf("[ drops    ] at the sockets:\n%s", drops.c_str());
  uint64_t d0_total = 0;
  for (const auto& [k, v] : d0) d0_total += v;
  EXPECT_EQ(d0_total, 0u) << "frames lost at the sockets before the flood:\n" << drops;
  EXPECT_LE(in_flood, static_cast<uint64_t>(vms_) * 100 * 2 / 100) << "frames lost at the sockets in the flood:\n"
                                                                   << drops;
  std::printf("[ timing   ] ping from outside and neighbours %.1f s, flood %.1f s\n", (t1 - t0) / 1e9, (t2 - t1) / 1e9);
}

}  // namespace

namespace {

// The limits: a connect beyond --max-nics, or with switchd out of file
// descriptors, is refused as exhausted naming the limit, and changes
// nothing; --umem-frames below the buffer rule is refused at start.
class ScaleLimitsTest : public ScaleTest {
 protected:
  ScaleLimitsTest() : ScaleTest(0) { switchd_extra_ = {"--max-nics", "4"}; }
  void SetUp() override {
    vms_ = 6;
    ASSERT_NO_FATAL_FAILURE(SwitchdFixture::SetUp());
    ASSERT_NO_FATAL_FAILURE(make_vms());
    attach();
    for (int i = 1; i <= vms_; i++) {
      call("port.create", {{"name", vm(i)}});
      call("nic.create", {{"port", vm(i)}, {"mac", mac_of(i)}, {"backend", vm(i) + "-host"}, {"vmq", "auto"}});
    }
  }
};

TEST_F(ScaleLimitsTest, ConnectBeyondMaxNicsIsRefused) {
  json show = call("show");
  const json& q = show["uplink"]["queues"][0]["buffers"];
  // 1024 + 512 + 2048 + 4 NICs x 1 socket x 12 on each queue.
  EXPECT_EQ(q["frames"], 3632) << q.dump();
  EXPECT_EQ(q["nic_capacity"], 4) << q.dump();
  EXPECT_EQ(show["uplink"]["pinned_bytes"], 2ull * 3632 * 4096) << show["uplink"].dump();
  for (int i = 1; i <= 4; i++) EXPECT_EQ(call("nic.connect", {{"port", vm(i)}}).value("state", ""), "connected");
  expect_refused("nic.connect", {{"port", vm(5)}}, "exhausted", {"--max-nics 4"});
  std::printf("[ refused  ] %s\n", request("nic.connect", {{"port", vm(5)}}).message.c_str());
  // One disconnected: its buffers are free again for another.
  call("nic.disconnect", {{"port", vm(1)}});
  EXPECT_EQ(call("nic.connect", {{"port", vm(5)}}).value("state", ""), "connected");
  show = call("show");
  const json nic = nic_of(show, vm(5));
  EXPECT_EQ(nic["buffers"]["sockets"], 2) << nic.dump();
  EXPECT_EQ(nic["buffers"]["reserved_frames"], 24) << nic.dump();
  EXPECT_EQ(nic["buffers"]["reserved_bytes"], 24 * 4096) << nic.dump();
  EXPECT_TRUE(nic_of(show, vm(1))["buffers"].is_null()) << "a disconnected NIC reserves nothing";
  expect_pools_idle();
}

TEST_F(ScaleLimitsTest, OutOfFileDescriptorsIsRefusedNamingTheLimit) {
  call("nic.connect", {{"port", vm(1)}});
  // What switchd has open now, and room for a few more: not for a NIC's
  // VM port program and its sockets on both queues.
  std::string fds;
  sh("ls /proc/" + std::to_string(pid_) + "/fd | wc -l", &fds);
  const int open_now = std::stoi(fds);
  // The soft limit only (the hard one may not be raised again here).
  std::string soft;
  sh("prlimit --pid " + std::to_string(pid_) + " --nofile --output SOFT --noheadings", &soft);
  soft.erase(soft.find_last_not_of(" \n") + 1);
  soft.erase(0, soft.find_first_not_of(' '));
  ASSERT_TRUE(sh_ok("prlimit --pid " + std::to_string(pid_) + " --nofile=" + std::to_string(open_now + 3) + ":"));
  expect_refused("nic.connect", {{"port", vm(2)}}, "exhausted", {"RLIMIT_NOFILE"});
  std::printf("[ refused  ] %s\n", request("nic.connect", {{"port", vm(2)}}).message.c_str());
  expected_log_.push_back("RLIMIT_NOFILE");
  ASSERT_TRUE(sh_ok("prlimit --pid " + std::to_string(pid_) + " --nofile=" + soft + ":")) << soft;
  EXPECT_EQ(call("nic.connect", {{"port", vm(2)}}).value("state", ""), "connected");
  expect_pools_idle();
}

// Started by hand: the fixture's switchd is stopped first.
TEST_F(ScaleLimitsTest, UmemFramesBelowTheRuleIsRefusedAtStart) {
  stop_switchd(SIGTERM);
  std::string out;
  const int rc = sh(std::string(SWITCHD_PATH) + " --socket " + dir_ + "/other.sock --state-dir " + dir_ +
                        "/other --umem-frames 4096 --max-nics 1024",
                    &out);
  EXPECT_EQ(rc, 2) << out;
  std::printf("[ refused  ] %s", out.c_str());
  for (const char* w : {"--umem-frames 4096", "minimum of 15872", "--max-nics 1024", "raise --umem-frames"})
    EXPECT_NE(out.find(w), std::string::npos) << "'" << w << "' not in: " << out;
}

}  // namespace
