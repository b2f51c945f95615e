// The vhost-user device (switchd/dp/vhost_user.h) against a front-end
// played by the test: the protocol's messages over its socket, a memfd as
// the guest's memory, split rings laid out in it by hand. What a guest
// cannot easily be made to do is here: buffers outside its memory, a
// descriptor chain that loops, notifications suppressed, a ring stopped.
// No privileges needed.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "switchd/dp/vhost_user.h"

namespace xvmq::switchd {
namespace {

constexpr uint64_t kGpa = 0x100000, kUvaOffset = 0x10000000, kMemSize = 1 << 20;
constexpr uint32_t kNum = 8;
// Ring r's descriptor table, avail and used rings, at these offsets in the memory.
constexpr uint64_t desc_at(int r) { return 0x4000 * r; }
constexpr uint64_t avail_at(int r) { return 0x4000 * r + 0x1000; }
constexpr uint64_t used_at(int r) { return 0x4000 * r + 0x2000; }
constexpr uint64_t kBuffers = 0x10000;

struct TestDesc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags, next;
};

class VhostUserDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/xvmq-vhost-test-XXXXXX";
    ASSERT_TRUE(mkdtemp(tmpl));
    dir_ = tmpl;
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    auto d = VhostUserDevice::listen(dir_ + "/vm.sock", {epoll_, epoll_}, "vm1");
    ASSERT_TRUE(d) << d.error().message;
    dev_ = std::move(d.value());
    mem_fd_ = memfd_create("guest", MFD_CLOEXEC);
    ASSERT_EQ(ftruncate(mem_fd_, kMemSize), 0);
    mem_ = static_cast<uint8_t*>(mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE, MAP_SHARED, mem_fd_, 0));
    ASSERT_NE(mem_, MAP_FAILED);
    fe_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, (dir_ + "/vm.sock").c_str());
    ASSERT_EQ(connect(fe_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    call_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  void TearDown() override {
    dev_.reset();
    if (fe_ >= 0) close(fe_);
    if (mem_ && mem_ != MAP_FAILED) munmap(mem_, kMemSize);
    close(mem_fd_);
    close(call_);
    close(epoll_);
    rmdir(dir_.c_str());
  }

  void send_msg(uint32_t req, const void* payload, uint32_t size, std::vector<int> fds = {}) {
    uint8_t buf[512];
    const uint32_t h[3] = {req, 1, size};
    std::memcpy(buf, h, 12);
    if (size) std::memcpy(buf + 12, payload, size);  // payload may be null for none
    iovec iov{buf, 12 + size};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    if (!fds.empty()) {
      m.msg_control = control;
      m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ASSERT_EQ(sendmsg(fe_, &m, 0), static_cast<ssize_t>(12 + size));
    dev_->poll_control();
  }
  uint64_t get_u64(uint32_t req) {
    send_msg(req, nullptr, 0);
    uint8_t buf[20];
    EXPECT_EQ(recv(fe_, buf, sizeof(buf), MSG_DONTWAIT), 20);
    uint64_t v;
    std::memcpy(&v, buf + 12, 8);
    return v;
  }
  void set_ring(uint32_t r, int kick) {
    const uint32_t num[2] = {r, kNum};
    send_msg(8, num, 8);
    const uint64_t addr[5] = {r, kGpa + desc_at(r) + kUvaOffset, kGpa + used_at(r) + kUvaOffset,
                              kGpa + avail_at(r) + kUvaOffset, 0};
    send_msg(9, addr, 40);  // {index, flags} share the first word
    const uint32_t base[2] = {r, 0};
    send_msg(10, base, 8);
    const uint64_t idx = r;
    send_msg(13, &idx, 8, {call_});
    send_msg(12, &idx, 8, {kick});
    const uint32_t on[2] = {r, 1};
    send_msg(18, on, 8);
  }
  // The features a front-end takes: MRG_RXBUF, PROTOCOL_FEATURES, VERSION_1, and `more`.
  void set_up_device(uint64_t more = 0) {
    EXPECT_EQ(get_u64(1), (1ull << 15) | (1ull << 22) | (1ull << 29) | (1ull << 30) | (1ull << 32));
    EXPECT_EQ(get_u64(15), 1u) << "protocol feature MQ";
    EXPECT_EQ(get_u64(17), 2u) << "a queue pair per epoll given";
    const uint64_t f = (1ull << 15) | (1ull << 30) | (1ull << 32) | more;
    send_msg(2, &f, 8);
    const uint64_t table[5] = {1, kGpa, kMemSize, kGpa + kUvaOffset, 0};
    send_msg(5, table, 40, {mem_fd_});
    const int kick = eventfd(0, EFD_CLOEXEC);
    set_ring(0, kick);
    set_ring(1, kick);
    close(kick);
    ASSERT_TRUE(dev_->rx_live(0));
  }
  TestDesc* desc(int r) { return reinterpret_cast<TestDesc*>(mem_ + desc_at(r)); }
  uint16_t* avail(int r) { return reinterpret_cast<uint16_t*>(mem_ + avail_at(r)); }  // flags, idx, ring[]
  uint16_t* used(int r) { return reinterpret_cast<uint16_t*>(mem_ + used_at(r)); }    // flags, idx, then elems
  uint32_t used_len(int r, int i) { return reinterpret_cast<uint32_t*>(mem_ + used_at(r) + 4)[2 * i + 1]; }
  void post(int r, uint16_t id, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next = 0) {
    desc(r)[id] = {gpa, len, flags, next};
  }
  void make_avail(int r, uint16_t head) {
    uint16_t* a = avail(r);
    a[2 + a[1] % kNum] = head;
    a[1]++;
  }
  uint64_t calls() {
    uint64_t v = 0;
    return read(call_, &v, 8) == 8 ? v : 0;
  }

  std::string dir_;
  int epoll_ = -1, mem_fd_ = -1, fe_ = -1, call_ = -1;
  uint8_t* mem_ = nullptr;
  std::unique_ptr<VhostUserDevice> dev_;
};

TEST_F(VhostUserDeviceTest, ReceiveAcrossMergeableBuffers) {
  std::vector<uint8_t> frame(2000);
  for (size_t i = 0; i < frame.size(); i++) frame[i] = static_cast<uint8_t>(i * 7);
  EXPECT_EQ(dev_->deliver(0, frame.data(), 2000), VhostUserDevice::Rx::NotReady) << "no front-end yet";
  ASSERT_NO_FATAL_FAILURE(set_up_device());
  EXPECT_EQ(dev_->deliver(0, frame.data(), 2000), VhostUserDevice::Rx::RingFull) << "no buffers posted";
  for (uint16_t i = 0; i < 3; i++) {
    post(0, i, kGpa + kBuffers + i * 1024, 1024, 2 /* write */);
    make_avail(0, i);
  }
  ASSERT_EQ(dev_->deliver(0, frame.data(), 2000), VhostUserDevice::Rx::Ok);
  EXPECT_EQ(used(0)[1], 2) << "two buffers used";
  EXPECT_EQ(used_len(0, 0), 1024u);
  EXPECT_EQ(used_len(0, 1), 2000u + 12 - 1024);
  uint16_t num_buffers;
  std::memcpy(&num_buffers, mem_ + kBuffers + 10, 2);
  EXPECT_EQ(num_buffers, 2);
  std::vector<uint8_t> got(mem_ + kBuffers + 12, mem_ + kBuffers + 1024);
  got.insert(got.end(), mem_ + kBuffers + 1024, mem_ + kBuffers + 1024 + 988);
  EXPECT_EQ(got, frame);
  dev_->flush(0);
  EXPECT_EQ(calls(), 1u) << "the guest is notified once";

  // One buffer left, too small: the frame is dropped, nothing published.
  EXPECT_EQ(dev_->deliver(0, frame.data(), 2000), VhostUserDevice::Rx::RingFull);
  EXPECT_EQ(used(0)[1], 2);
  // It fits; with notifications suppressed the guest is not called.
  avail(0)[0] = 1;  // VRING_AVAIL_F_NO_INTERRUPT
  EXPECT_EQ(dev_->deliver(0, frame.data(), 60), VhostUserDevice::Rx::Ok);
  dev_->flush(0);
  EXPECT_EQ(calls(), 0u);
}

// VIRTIO_RING_F_EVENT_IDX: the guest is called only when the used index
// passes its used_event (after the avail ring's entries), and the device
// asks for a kick at the next buffer (avail_event, after the used ring's).
TEST_F(VhostUserDeviceTest, EventIndexSuppressesNotifications) {
  ASSERT_NO_FATAL_FAILURE(set_up_device(1ull << 29));
  for (uint16_t i = 0; i < kNum; i++) {
    post(0, i, kGpa + kBuffers + i * 2048, 2048, 2 /* write */);
    make_avail(0, i);
  }
  uint16_t* used_event = &avail(0)[2 + kNum];
  uint16_t* avail_event = reinterpret_cast<uint16_t*>(mem_ + used_at(0) + 4 + 8 * kNum);
  const uint8_t frame[64] = {1};
  *used_event = 2;  // call me once the third buffer is used
  ASSERT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::Ok);
  dev_->flush(0);
  EXPECT_EQ(calls(), 1u) << "the first completion after a start always calls";
  EXPECT_EQ(*avail_event, 1) << "kick me at the next buffer";
  ASSERT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::Ok);
  dev_->flush(0);
  EXPECT_EQ(calls(), 0u) << "used index 2: not past used_event 2";
  ASSERT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::Ok);
  ASSERT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::Ok);
  dev_->flush(0);
  EXPECT_EQ(calls(), 1u) << "used index 4: went past used_event 2";
  EXPECT_EQ(*avail_event, 4);
  ASSERT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::Ok);
  dev_->flush(0);
  EXPECT_EQ(calls(), 0u) << "used_event 2 already passed at the last call";
  *used_event = 5;  // the guest read up to 5 and asks again
  ASSERT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::Ok);
  dev_->flush(0);
  EXPECT_EQ(calls(), 1u) << "used index 6 passed used_event 5";
}

TEST_F(VhostUserDeviceTest, BuffersOutsideMemoryAreRefused) {
  ASSERT_NO_FATAL_FAILURE(set_up_device());
  const uint8_t frame[64] = {1, 2, 3};
  post(0, 0, kGpa + kMemSize - 16, 1024, 2);  // runs past the region's end
  make_avail(0, 0);
  EXPECT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::BadRing);
  EXPECT_EQ(used(0)[1], 0) << "nothing published";
  post(0, 1, kGpa + kBuffers, 1024, 0);  // not writable
  make_avail(0, 1);
  EXPECT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::BadRing);
}

TEST_F(VhostUserDeviceTest, TransmitChainsAndLoops) {
  ASSERT_NO_FATAL_FAILURE(set_up_device());
  uint8_t out[4096];
  uint64_t bad = 0;
  EXPECT_EQ(dev_->next_tx(0, out, sizeof(out), &bad), 0u) << "nothing sent yet";
  // The header in one buffer, the frame in the next.
  std::memset(mem_ + kBuffers, 0, 12);
  for (int i = 0; i < 100; i++) mem_[kBuffers + 0x100 + i] = static_cast<uint8_t>(i);
  post(1, 0, kGpa + kBuffers, 12, 1 /* next */, 1);
  post(1, 1, kGpa + kBuffers + 0x100, 100, 0);
  make_avail(1, 0);
  ASSERT_EQ(dev_->next_tx(0, out, sizeof(out), &bad), 100u);
  EXPECT_EQ(out[99], 99);
  EXPECT_EQ(used(1)[1], 1) << "the guest's buffer is returned at once";
  // A chain that loops on itself, and one longer than the caller's buffer.
  post(1, 2, kGpa + kBuffers, 64, 1, 2);
  make_avail(1, 2);
  post(1, 3, kGpa + kBuffers, 2000, 0);
  make_avail(1, 3);
  EXPECT_EQ(dev_->next_tx(0, out, 1000, &bad), 0u);
  EXPECT_EQ(bad, 2u);
  EXPECT_EQ(used(1)[1], 3) << "bad chains are returned too";
}

TEST_F(VhostUserDeviceTest, StoppedRingAndFrontEndGone) {
  ASSERT_NO_FATAL_FAILURE(set_up_device());
  post(0, 0, kGpa + kBuffers, 1024, 2);
  make_avail(0, 0);
  const uint8_t frame[64] = {};
  ASSERT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::Ok);
  const uint32_t which[2] = {0, 0};
  send_msg(11, which, 8);  // GET_VRING_BASE: stop ring 0
  uint8_t reply[20];
  ASSERT_EQ(recv(fe_, reply, sizeof(reply), MSG_DONTWAIT), 20);
  uint32_t base;
  std::memcpy(&base, reply + 16, 4);
  EXPECT_EQ(base, 1u) << "the next avail index";
  EXPECT_EQ(dev_->deliver(0, frame, 64), VhostUserDevice::Rx::NotReady);
  close(fe_);
  fe_ = -1;
  dev_->poll_control();
  EXPECT_FALSE(dev_->connected());
  EXPECT_EQ(dev_->pairs(), 2u);
  EXPECT_FALSE(dev_->rx_live(0));
}

// Found by fuzz_vhost: a region larger than its file was mapped, and the
// first touch past the file's end was SIGBUS in the worker.
TEST_F(VhostUserDeviceTest, MemoryPastItsFileIsRefused) {
  const uint64_t twice[5] = {1, kGpa, 2 * kMemSize, kGpa + kUvaOffset, 0};
  send_msg(5, twice, 40, {mem_fd_});
  EXPECT_FALSE(dev_->connected()) << "the front-end is dropped";
  EXPECT_FALSE(dev_->rx_live(0));
}

TEST_F(VhostUserDeviceTest, MemoryOffsetThatWrapsIsRefused) {
  const uint64_t wraps[5] = {1, kGpa, 0x2000, kGpa + kUvaOffset, ~uint64_t{0} - 0xfff};
  send_msg(5, wraps, 40, {mem_fd_});
  EXPECT_FALSE(dev_->connected());
}

// A ring made larger after its addresses were checked: checked again.
TEST_F(VhostUserDeviceTest, RingResizedPastTheMemoryIsNotLive) {
  ASSERT_NO_FATAL_FAILURE(set_up_device());
  const uint64_t end = kGpa + kUvaOffset + kMemSize;
  const uint64_t addr[5] = {0, end - 16 * kNum, kGpa + used_at(0) + kUvaOffset, kGpa + avail_at(0) + kUvaOffset, 0};
  send_msg(9, addr, 40);
  ASSERT_TRUE(dev_->rx_live(0)) << "8 descriptors fit at the memory's end";
  const uint32_t num[2] = {0, 2 * kNum};
  send_msg(8, num, 8);
  EXPECT_FALSE(dev_->rx_live(0)) << "16 do not";
}

TEST_F(VhostUserDeviceTest, MisalignedRingIsNotLive) {
  ASSERT_NO_FATAL_FAILURE(set_up_device());
  const uint64_t addr[5] = {0, kGpa + desc_at(0) + kUvaOffset + 8, kGpa + used_at(0) + kUvaOffset,
                            kGpa + avail_at(0) + kUvaOffset, 0};
  send_msg(9, addr, 40);
  EXPECT_FALSE(dev_->rx_live(0)) << "descriptors are 16-byte aligned";
}

// A guest with more than 4 GiB can post a buffer of nearly 4 GiB: the
// frame's length so far plus its length wrapped, and the copy ran past dst.
TEST_F(VhostUserDeviceTest, TransmitBufferNear4GiBIsDropped) {
  ASSERT_NO_FATAL_FAILURE(set_up_device());
  constexpr uint64_t kBig = 5ull << 30, kBigGpa = 1ull << 32;  // sparse: no memory used
  const int big = memfd_create("big", MFD_CLOEXEC);
  ASSERT_EQ(ftruncate(big, kBig), 0);
  const uint64_t table[9] = {2, kGpa, kMemSize, kGpa + kUvaOffset, 0, kBigGpa, kBig, kBigGpa + kUvaOffset, 0};
  send_msg(5, table, 72, {mem_fd_, big});
  close(big);
  ASSERT_TRUE(dev_->connected());
  std::memset(mem_ + kBuffers, 0, 112);
  post(1, 0, kGpa + kBuffers, 112, 1, 1);  // the header and 100 bytes
  post(1, 1, kBigGpa, 0xfffffff0, 0);
  make_avail(1, 0);
  uint8_t out[4096];
  uint64_t bad = 0;
  EXPECT_EQ(dev_->next_tx(0, out, sizeof(out), &bad), 0u);
  EXPECT_EQ(bad, 1u);
}

// Found by fuzz_vhost: an avail index far ahead over chains that loop made
// one next_tx walk 65,535 chains of up to 32,768 descriptors each.
TEST_F(VhostUserDeviceTest, TransmitWorkIsBoundedPerCall) {
  ASSERT_NO_FATAL_FAILURE(set_up_device());
  for (uint16_t i = 0; i < kNum; i++) post(1, i, kGpa + kBuffers, 64, 1, i);  // each loops on itself
  avail(1)[1] = 1000;  // far more than the ring holds
  uint8_t out[4096];
  uint64_t bad = 0;
  EXPECT_EQ(dev_->next_tx(0, out, sizeof(out), &bad), 0u);
  EXPECT_EQ(bad, 64u) << "at most 64 bad chains skipped per call";
  bad = 0;
  EXPECT_EQ(dev_->next_tx(0, out, sizeof(out), &bad), 0u);
  EXPECT_EQ(bad, 64u) << "the rest on the next call";
}

}  // namespace
}  // namespace xvmq::switchd
