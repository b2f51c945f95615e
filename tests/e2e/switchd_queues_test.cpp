// Backends with fewer queues than the uplink (docs/architecture.md,
// "Backends with fewer queues"), on the real kernel: a 1-queue veth and a
// 1-queue tap behind a 2-queue uplink, on kernel and on xsk delivery.
//
//   ext: ext0 <-> up0 (uplink, 2 queues)      vm1: eth0 <-> vm1-host (1 queue)
//                                             a tap vmt1 in this process's namespace (1 queue, this process reads it)
//
// Frames from ext come on both uplink queues (sent from CPU c they land on
// up0's queue c % 2), unicast to the VM's vmq and broadcast (the software
// switch on each queue's worker); frames from the VM leave by the uplink.
// Every stream arrives whole, in order, intact. With xsk delivery each
// queue's worker receives its own queue's frames on the vmq socket: queue
// 1's reach the backend through queue 0's worker, the only one with a
// socket on the backend's queue.
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstring>
#include <map>
#include <thread>

#include "tests/lib/frames.h"
#include "tests/lib/switchd_fixture.h"

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;

constexpr const char* kExtMac = "02:00:00:00:00:fe";
constexpr uint64_t N = 400;  // frames per stream

uint64_t queue_stat(const json& st, size_t q, const char* key) { return u64(st["queues"][q], {key}); }

// A VM on a tap: this process holds the tap's one queue (as QEMU would) and
// reads and writes the VM's frames on it. The tap goes with the fd.
class TapVm {
 public:
  explicit TapVm(const std::string& name) : name_(name) {
    fd_ = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) {
      ADD_FAILURE() << "/dev/net/tun: " << strerror(errno);
      return;
    }
    ifreq ifr{};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (ioctl(fd_, TUNSETIFF, &ifr) != 0) {
      ADD_FAILURE() << "TUNSETIFF " << name << ": " << strerror(errno);
      close(fd_);
      fd_ = -1;
    }
  }
  ~TapVm() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  // `count` xvmq-frames frames of stream `stream` from the VM's MAC.
  uint64_t send(const std::string& src, const std::string& dst, uint32_t stream, uint64_t count) {
    auto s = xvmq::parse_mac(src), d = xvmq::parse_mac(dst);
    uint64_t sent = 0;
    for (uint64_t seq = 0; seq < count; seq++) {
      uint8_t f[128] = {};
      std::memcpy(f, d->data(), 6);
      std::memcpy(f + 6, s->data(), 6);
      f[12] = kFramesEthertype >> 8, f[13] = kFramesEthertype & 0xff;
      FramesHeader h{kFramesMagic, stream, seq, static_cast<uint16_t>(sizeof(f) - 14 - sizeof(FramesHeader)), 0};
      uint8_t* payload = f + 14 + sizeof(FramesHeader);
      for (size_t i = 0; i < h.len; i++) payload[i] = static_cast<uint8_t>(seq * 31 + i);
      h.csum = frames_checksum(h, payload);
      std::memcpy(f + 14, &h, sizeof(h));
      for (int tries = 0; tries < 100; tries++) {
        if (write(fd_, f, sizeof(f)) == static_cast<ssize_t>(sizeof(f))) {
          sent++;
          break;
        }
        std::this_thread::sleep_for(1ms);
      }
      // A paced sender: bursts of 8, under the 12 buffers (--nic-floor) an
      // idle backend socket keeps in its fill ring; a burst of 32 from an
      // idle VM on xsk delivery loses 20, counted as xsk_rx_dropped.
      if (seq % 8 == 7) std::this_thread::sleep_for(1ms);
    }
    return sent;
  }

  // Per stream: frames, and whether each came in order and intact; until
  // `want` test frames came or `limit` passed.
  struct Stream {
    uint64_t frames = 0, next = 0, bad = 0;
  };
  std::map<uint32_t, Stream> receive(uint64_t want, std::chrono::milliseconds limit) {
    std::map<uint32_t, Stream> out;
    uint64_t got = 0;
    const auto end = std::chrono::steady_clock::now() + limit;
    uint8_t f[2048];
    while (got < want && std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      const ssize_t n = read(fd_, f, sizeof(f));
      if (n < static_cast<ssize_t>(14 + sizeof(FramesHeader))) continue;
      if (f[12] != (kFramesEthertype >> 8) || f[13] != (kFramesEthertype & 0xff)) continue;
      FramesHeader h;
      std::memcpy(&h, f + 14, sizeof(h));
      if (h.magic != kFramesMagic) continue;
      Stream& s = out[h.stream];
      const bool intact =
          14 + sizeof(h) + h.len <= static_cast<size_t>(n) && frames_checksum(h, f + 14 + sizeof(h)) == h.csum;
      if (!intact || h.seq != s.next) s.bad++;
      s.next = h.seq + 1;
      s.frames++;
      got++;
    }
    return out;
  }

 private:
  std::string name_;
  int fd_ = -1;
};

class QueuesTest : public SwitchdFixture {
 protected:
  QueuesTest() {
    prefix_tag_ = "qs";
    vm_count_ = 1;
    vm_queues_ = 1;
    offloads_off_ = true;
    vm_gro_ = true;  // the veth's VM end takes redirected frames: kernel delivery can serve it
  }

  Bg ext_send(const std::string& dst, int cpu, int stream) {
    return background(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + dst + " --count " +
                                    std::to_string(N) + " --rate 4000 --cpu " + std::to_string(cpu) + " --stream " +
                                    std::to_string(stream) + " --timeout 20"));
  }
  Bg ext_receive(uint64_t frames) {
    return background(
        in("ext", std::string(FRAME_TOOL) + " recv --dev ext0 --seconds 15 --until-frames " + std::to_string(frames)));
  }

  // A stream from `r` (xvmq-frames recv's JSON): all N, in order, intact.
  void expect_stream(const json& r, int id, const std::string& who) {
    const json s = r["streams"].value(std::to_string(id), json::object());
    EXPECT_EQ(u64(s, {"frames"}), N) << who << " stream " << id << ": " << r.dump();
    EXPECT_EQ(u64(s, {"lost"}), 0u) << who << " stream " << id;
    EXPECT_EQ(u64(s, {"reordered"}), 0u) << who << " stream " << id;
    EXPECT_EQ(u64(s, {"corrupt"}), 0u) << who << " stream " << id;
  }

  // The NIC on port vm1 with `backend`, connected with `delivery`.
  void connect_nic(const std::string& backend, const std::string& delivery) {
    attach();
    call("port.create", {{"name", "vm1"}});
    call("nic.create",
         {{"port", "vm1"}, {"mac", mac_of(1)}, {"backend", backend}, {"vmq", "auto"}, {"delivery", delivery}});
    EXPECT_EQ(call("nic.connect", {{"port", "vm1"}}).value("state", ""), "connected");
    ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", delivery));
  }

  // After ext sent N unicast frames on each queue (streams 1, 2) and N
  // broadcast ones on queue 1 (stream 3): each queue's share arrived where
  // the delivery says.
  void expect_queues(const json& before, const json& after, const std::string& delivery) {
    const json& a = after["nics"]["vm1"];
    const json& b = before["nics"]["vm1"];
    EXPECT_EQ(u64(a, {"fast_frames"}) - u64(b, {"fast_frames"}), 2 * N) << "both queues' unicast by the vmq";
    EXPECT_GE(u64(a, {"default_frames"}) - u64(b, {"default_frames"}), N) << "queue 1's broadcast, switched there";
    for (size_t q = 0; q < 2; q++) {
      const uint64_t vmq = queue_stat(after, q, "rx_vmq") - queue_stat(before, q, "rx_vmq");
      std::printf("[ queue %zu  ] rx_vmq +%" PRIu64 ", rx_default +%" PRIu64 ", tx +%" PRIu64 "\n", q, vmq,
                  queue_stat(after, q, "rx_default") - queue_stat(before, q, "rx_default"),
                  queue_stat(after, q, "tx") - queue_stat(before, q, "tx"));
      if (delivery == "xsk") {
        EXPECT_EQ(vmq, N) << "queue " << q << "'s vmq socket had its queue's frames";
      }
    }
    EXPECT_GE(queue_stat(after, 1, "rx_default") - queue_stat(before, 1, "rx_default"), N)
        << "the broadcast on queue 1";
    std::string drops;
    const json bd = b.value("drops", json::object()), ad = a.value("drops", json::object());
    for (const auto& [why, n] : ad.items())
      if (n.is_number() && n.get<uint64_t>() != bd.value(why, uint64_t{0})) drops += " " + why;
    EXPECT_EQ(drops, "") << "vm1 dropped frames: " << a.dump();
  }

  void veth_both_ways(const std::string& delivery) {
    ASSERT_NO_FATAL_FAILURE(connect_nic("vm1-host", delivery));
    const json before = call("stats");
    Bg rx = receive(1, 15, "--until-frames " + std::to_string(3 * N));
    Bg t0 = ext_send(mac_of(1), 0, 1), t1 = ext_send(mac_of(1), 1, 2);
    Bg t2 = ext_send("ff:ff:ff:ff:ff:ff", 1, 3);
    for (Bg* t : {&t0, &t1, &t2}) EXPECT_EQ(u64(t->wait(), {"sent"}), N);
    const json r = rx.wait();
    for (int s : {1, 2, 3}) expect_stream(r, s, "vm1");
    expect_queues(before, call("stats"), delivery);

    // And back: the VM sends on its one queue, from either CPU.
    Bg er = ext_receive(2 * N);
    std::this_thread::sleep_for(200ms);
    for (int cpu : {0, 1}) {
      Bg t = background(in(vm(1), std::string(FRAME_TOOL) + " send --dev eth0 --src " + mac_of(1) + " --dst " +
                                      kExtMac + " --count " + std::to_string(N) + " --rate 4000 --cpu " +
                                      std::to_string(cpu) + " --stream " + std::to_string(10 + cpu) + " --timeout 20"));
      EXPECT_EQ(u64(t.wait(), {"sent"}), N);
    }
    const json back = er.wait();
    for (int s : {10, 11}) expect_stream(back, s, "ext");
    call("nic.disconnect", {{"port", "vm1"}});
    expect_pools_idle();
  }

  void tap_both_ways(const std::string& delivery) {
    TapVm tap("vmt1");
    ASSERT_TRUE(tap.ok());
    ASSERT_TRUE(sh_ok("ip link set vmt1 up"));
    ASSERT_NO_FATAL_FAILURE(connect_nic("vmt1", delivery));
    const json before = call("stats");
    auto rx = std::async(std::launch::async, [&tap] { return tap.receive(3 * N, 15s); });
    std::this_thread::sleep_for(100ms);
    Bg t0 = ext_send(mac_of(1), 0, 1), t1 = ext_send(mac_of(1), 1, 2);
    Bg t2 = ext_send("ff:ff:ff:ff:ff:ff", 1, 3);
    for (Bg* t : {&t0, &t1, &t2}) EXPECT_EQ(u64(t->wait(), {"sent"}), N);
    const auto got = rx.get();
    for (uint32_t s : {1u, 2u, 3u}) {
      const auto it = got.find(s);
      const TapVm::Stream st = it == got.end() ? TapVm::Stream{} : it->second;
      std::printf("[ tap      ] stream %u: %" PRIu64 " frames, %" PRIu64 " out of order or damaged\n", s, st.frames,
                  st.bad);
      EXPECT_EQ(st.frames, N) << "stream " << s;
      EXPECT_EQ(st.bad, 0u) << "stream " << s;
    }
    expect_queues(before, call("stats"), delivery);

    Bg er = ext_receive(N);
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(tap.send(mac_of(1), kExtMac, 20, N), N);
    expect_stream(er.wait(), 20, "ext");
    call("nic.disconnect", {{"port", "vm1"}});
    expect_pools_idle();
  }
};

TEST_F(QueuesTest, OneQueueVethOnKernelDelivery) { veth_both_ways("kernel"); }
TEST_F(QueuesTest, OneQueueVethOnXskDelivery) { veth_both_ways("xsk"); }
TEST_F(QueuesTest, OneQueueTapOnKernelDelivery) { tap_both_ways("kernel"); }
TEST_F(QueuesTest, OneQueueTapOnXskDelivery) { tap_both_ways("xsk"); }

// More backend queues than the uplink's: what the VM sends on queues 2 and
// 3 reaches the switch too (queue 2 on worker 0, queue 3 on worker 1, each
// beside its own). XPS in the VM sends CPU 0's frames on queue 2 and CPU
// 1's on queue 3; a veth receives on the queue its peer sent on.
class MoreQueuesTest : public QueuesTest {
 protected:
  MoreQueuesTest() { vm_queues_ = 4; }
};

TEST_F(MoreQueuesTest, FourQueueVethSendsOnEveryQueue) {
  if (cpu_count() < 2) GTEST_SKIP() << "queues 2 and 3 by XPS need 2 CPUs";
  ASSERT_NO_FATAL_FAILURE(connect_nic("vm1-host", "xsk"));
  ASSERT_TRUE(sh_ok(in(vm(1),
                       "sh -c 'echo 0 > /sys/class/net/eth0/queues/tx-0/xps_cpus; "
                       "echo 0 > /sys/class/net/eth0/queues/tx-1/xps_cpus; "
                       "echo 1 > /sys/class/net/eth0/queues/tx-2/xps_cpus; "
                       "echo 2 > /sys/class/net/eth0/queues/tx-3/xps_cpus'")));
  const json before = call("stats");
  Bg er = ext_receive(2 * N);
  std::this_thread::sleep_for(200ms);
  for (int cpu : {0, 1}) {
    Bg t = background(in(vm(1), std::string(FRAME_TOOL) + " send --dev eth0 --src " + mac_of(1) + " --dst " + kExtMac +
                                    " --count " + std::to_string(N) + " --rate 4000 --cpu " + std::to_string(cpu) +
                                    " --stream " + std::to_string(30 + cpu) + " --timeout 20"));
    EXPECT_EQ(u64(t.wait(), {"sent"}), N);
  }
  const json back = er.wait();
  for (int s : {30, 31}) expect_stream(back, s, "ext");
  const json after = call("stats");
  for (size_t q = 0; q < 2; q++) {
    EXPECT_EQ(queue_stat(after, q, "rx_vm") - queue_stat(before, q, "rx_vm"), N)
        << "worker " << q << " receives backend queue " << q + 2 << " for the VM";
  }
  call("nic.disconnect", {{"port", "vm1"}});
  expect_pools_idle();
}

}  // namespace
