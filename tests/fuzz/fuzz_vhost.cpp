// Fuzz target: the vhost-user backend (switchd/dp/vhost_user.h), both of its
// outside inputs at once: the front-end's messages on the socket (QEMU's
// side) and the split rings in guest memory (the guest's side).
//
// Each input is a fresh device listening in a private directory under /tmp,
// a connected front-end played here (as tests/unit/vhost_user_device_test.cpp
// does), and a memfd of 64 to 256 KiB as the guest's memory, mapped here too.
// Byte 0 picks one or two queue pairs and the memory's size; then up to
// kMaxOps operations, each an opcode byte and its operands (missing bytes
// read as zero):
//   0 message      request, fds (bit 0 the memfd, bit 1 an eventfd, bit 7:
//                  a size past the largest payload), size, payload bytes
//   1 mem table    one region over the memfd: exact, twice its size, half,
//                  none; at GPA 0 or elsewhere; with or without the fd
//   2 ring         SET_VRING_NUM/ADDR/BASE/CALL/KICK/ENABLE as QEMU sends
//                  them, the tables at offsets from the input
//   3 write        bytes from the input into guest memory at an offset
//   4 descriptor   one descriptor of a ring set up by op 2
//   5 avail        a head into a ring's avail ring, its index moved on
//   6 deliver      a frame of up to 4 KiB into a pair's receive ring
//   7 next_tx      the next frame from a pair's transmit ring, cap from input
//   8 flush        a pair's kicks cleared, the guest notified
//   9 poll         poll_control() alone
//  10 reconnect    the front-end closes and connects again
// Checked besides "no crash, no sanitizer report, no hang": next_tx never
// returns more than its cap; pairs() stays; the device, gone, leaves no fd
// and no mapping of the guest memory behind, and its socket file is removed.
#include <dirent.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "switchd/dp/vhost_user.h"
#include "switchd/host/service.h"

using namespace xvmq::switchd;

namespace {

constexpr int kMaxOps = 64;
constexpr uint64_t kUvaOffset = 0x7f0000000000;  // QEMU's addresses, as far from the GPAs as its are
constexpr uint32_t kMaxPayload = 264;            // the device's largest: 8 regions

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_vhost: invariant broken: %s\n", what);
  std::abort();
}

// The input, read front to back; past its end every byte is zero.
struct Reader {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  uint8_t u8() {
    if (!n) return 0;
    n--;
    return *p++;
  }
  uint16_t u16() { return static_cast<uint16_t>(u8() | u8() << 8); }
  uint32_t u32() { return u16() | static_cast<uint32_t>(u16()) << 16; }
  uint64_t u64() { return u32() | static_cast<uint64_t>(u32()) << 32; }
  void bytes(uint8_t* to, size_t len) {
    const size_t k = std::min(len, n);
    std::memcpy(to, p, k);
    std::memset(to + k, 0, len - k);
    p += k, n -= k;
  }
};

int count_fds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

bool guest_memory_mapped() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find("xvmq-fuzz-guest") != std::string::npos) return true;
  return false;
}

struct Ring {
  bool set = false;
  uint32_t num = 0;
  uint64_t desc = 0, avail = 0, used = 0;  // offsets in guest memory
};

class Harness {
 public:
  Harness(uint8_t config) {
    pairs_ = 1 + (config & 1);
    mem_size_ = (64u << 10) * (1 + ((config >> 1) & 3));
    gpa_base_ = (config & 8) ? 0x100000 : 0;
    char tmpl[] = "/tmp/xvmq-fuzz-vhost-XXXXXX";
    if (!mkdtemp(tmpl)) broken("mkdtemp");
    dir_ = tmpl;
    path_ = dir_ + "/vm.sock";
    for (uint32_t p = 0; p < pairs_; p++) epolls_.push_back(epoll_create1(EPOLL_CLOEXEC));
    auto d = VhostUserDevice::listen(path_, epolls_, "vm1");
    if (!d) broken("listen");
    dev_ = std::move(d.value());
    mem_fd_ = memfd_create("xvmq-fuzz-guest", MFD_CLOEXEC);
    if (mem_fd_ < 0 || ftruncate(mem_fd_, mem_size_) != 0) broken("memfd");
    mem_ = static_cast<uint8_t*>(mmap(nullptr, mem_size_, PROT_READ | PROT_WRITE, MAP_SHARED, mem_fd_, 0));
    if (mem_ == MAP_FAILED) broken("mmap");
    connect_front_end();
  }
  ~Harness() {
    if (fe_ >= 0) close(fe_);
    if (!dev_->connected()) dev_->poll_control();  // an accept pending is taken
    dev_.reset();
    munmap(mem_, mem_size_);
    close(mem_fd_);
    for (int e : epolls_) close(e);
    struct stat st{};
    if (lstat(path_.c_str(), &st) == 0) broken("the device removes its socket file");
    if (rmdir(dir_.c_str()) != 0) broken("the private directory is empty at the end");
  }

  void run(Reader& in) {
    for (int op = 0; op < kMaxOps && !in.empty(); op++) {
      switch (in.u8() % 11) {
        case 0: raw_message(in); break;
        case 1: mem_table(in); break;
        case 2: ring(in); break;
        case 3: write_memory(in); break;
        case 4: descriptor(in); break;
        case 5: avail(in); break;
        case 6: deliver(in); break;
        case 7: next_tx(in); break;
        case 8: dev_->flush(in.u8() % pairs_); break;
        case 9: poll(); break;
        case 10: reconnect(); break;
      }
      if (dev_->pairs() != pairs_) broken("pairs() stays what listen() was given");
    }
  }

 private:
  void connect_front_end() {
    fe_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, path_.c_str());
    if (connect(fe_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) broken("connect");
    dev_->poll_control();
  }
  void reconnect() {
    close(fe_);
    dev_->poll_control();  // sees the close, listens again
    connect_front_end();
  }
  // The device serves what was sent; its replies are read and dropped.
  void poll() {
    dev_->poll_control();
    uint8_t buf[256];
    while (recv(fe_, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
    }
  }
  // One message, the payload padded to its declared size (the device would
  // wait a second for the rest); `fds` sent with it, then closed here.
  void send_msg(uint32_t req, uint32_t declared, const uint8_t* payload, uint32_t len, std::vector<int> fds) {
    uint8_t buf[12 + kMaxPayload] = {};
    const uint32_t h[3] = {req, 1, declared};
    std::memcpy(buf, h, 12);
    std::memcpy(buf + 12, payload, std::min(len, kMaxPayload));
    iovec iov{buf, 12 + (declared <= kMaxPayload ? declared : 0)};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 2)];
    if (!fds.empty()) {
      m.msg_control = control;
      m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    (void)sendmsg(fe_, &m, MSG_NOSIGNAL);  // fails once the device dropped us: fine
    for (int fd : fds)
      if (fd != mem_fd_) close(fd);
    poll();
  }
  int event() { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

  void raw_message(Reader& in) {
    const uint32_t req = in.u8();
    const uint8_t fdbits = in.u8();
    const uint32_t size = in.u8() + ((fdbits & 0x80) ? kMaxPayload + 1 : 0);
    uint8_t payload[kMaxPayload];
    in.bytes(payload, std::min(size, kMaxPayload));
    std::vector<int> fds;
    if (fdbits & 1) fds.push_back(mem_fd_);
    if (fdbits & 2) fds.push_back(event());
    send_msg(req, size, payload, std::min(size, kMaxPayload), fds);
  }
  void mem_table(Reader& in) {
    const uint8_t k = in.u8();
    static constexpr uint64_t kScale[4] = {2, 4, 1, 0};  // halves: exact, twice, half, none
    const uint64_t size = mem_size_ * kScale[k & 3] / 2;
    const uint64_t offset = (k & 0x10) ? 0x1000 * ((k >> 5) & 7) : 0;
    const uint64_t table[5] = {1, gpa_base_, size - std::min(size, offset), gpa_base_ + kUvaOffset, offset};
    std::vector<int> fds;
    if (!(k & 4)) fds.push_back(mem_fd_);
    send_msg(5, 40, reinterpret_cast<const uint8_t*>(table), 40, fds);
  }
  void ring(Reader& in) {
    const uint32_t r = in.u8() % (2 * pairs_ + 1);  // one index past the last
    const uint32_t num = 1u << (in.u8() % 9);
    Ring& t = rings_[r % 4];
    t.num = num;
    t.desc = (in.u16() * 16ull) % mem_size_;
    t.avail = (in.u16() * 2ull) % mem_size_;
    t.used = (in.u16() * 4ull) % mem_size_;
    t.set = r < 2 * pairs_;
    const uint32_t state[2] = {r, num};
    send_msg(8, 8, reinterpret_cast<const uint8_t*>(state), 8, {});
    const uint64_t addr[5] = {r, gpa_base_ + kUvaOffset + t.desc, gpa_base_ + kUvaOffset + t.used,
                              gpa_base_ + kUvaOffset + t.avail, 0};
    send_msg(9, 40, reinterpret_cast<const uint8_t*>(addr), 40, {});
    const uint32_t base[2] = {r, in.u16()};
    send_msg(10, 8, reinterpret_cast<const uint8_t*>(base), 8, {});
    const uint64_t idx = r;
    send_msg(13, 8, reinterpret_cast<const uint8_t*>(&idx), 8, {event()});
    send_msg(12, 8, reinterpret_cast<const uint8_t*>(&idx), 8, {event()});
    const uint32_t on[2] = {r, 1};
    send_msg(18, 8, reinterpret_cast<const uint8_t*>(on), 8, {});
  }
  void write_memory(Reader& in) {
    const uint32_t at = in.u32() % mem_size_;
    const uint32_t len = std::min<uint32_t>(in.u8(), mem_size_ - at);
    in.bytes(mem_ + at, len);
  }
  void descriptor(Reader& in) {
    Ring& t = rings_[in.u8() % 4];
    const uint16_t id = in.u16();
    const uint8_t kind = in.u8();
    uint64_t addr = gpa_base_ + in.u16() * 16ull;  // inside the memory mostly
    if (kind & 0x80) addr = in.u64();              // anywhere
    const uint32_t len = (kind & 0x40) ? in.u32() : in.u16();
    const uint16_t flags = kind & 7;  // next, write, indirect
    const uint16_t next = in.u16();
    if (!t.set) return;
    const uint64_t at = t.desc + 16ull * (id % t.num);
    if (at + 16 > mem_size_) return;
    std::memcpy(mem_ + at, &addr, 8);
    std::memcpy(mem_ + at + 8, &len, 4);
    std::memcpy(mem_ + at + 12, &flags, 2);
    std::memcpy(mem_ + at + 14, &next, 2);
  }
  void avail(Reader& in) {
    Ring& t = rings_[in.u8() % 4];
    const uint16_t head = in.u16();
    const uint8_t step = in.u8();
    if (!t.set || t.avail + 4 + 2ull * t.num > mem_size_) return;
    uint16_t idx;
    std::memcpy(&idx, mem_ + t.avail + 2, 2);
    std::memcpy(mem_ + t.avail + 4 + 2 * (idx % t.num), &head, 2);
    idx = static_cast<uint16_t>(idx + (step ? step : 1));
    std::memcpy(mem_ + t.avail + 2, &idx, 2);
  }
  void deliver(Reader& in) {
    const uint32_t p = in.u8() % pairs_;
    const uint32_t len = in.u16() % 4097;
    std::vector<uint8_t> frame(len + 1);  // never null: workers pass UMEM, not nullptr, for 0 bytes
    for (uint32_t i = 0; i < len; i++) frame[i] = static_cast<uint8_t>(i);
    (void)dev_->deliver(p, frame.data(), len);
  }
  void next_tx(Reader& in) {
    const uint32_t p = in.u8() % pairs_;
    const uint32_t cap = in.u16() % 4097;
    std::unique_ptr<uint8_t[]> buf(new uint8_t[cap ? cap : 1]);  // exact: ASan sees a byte past it
    uint64_t too_long = 0;
    if (dev_->next_tx(p, buf.get(), cap, &too_long) > cap) broken("next_tx returns at most its cap");
  }

  uint32_t pairs_ = 1, mem_size_ = 0;
  uint64_t gpa_base_ = 0;
  std::string dir_, path_;
  std::vector<int> epolls_;
  std::unique_ptr<VhostUserDevice> dev_;
  int mem_fd_ = -1, fe_ = -1;
  uint8_t* mem_ = nullptr;
  Ring rings_[4];
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  service::init_log(service::Level::Error);  // a line per connection and refusal otherwise
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int fds_before = count_fds();
  {
    Reader in{data + 1, size - 1};
    Harness h(data[0]);
    h.run(in);
  }
  if (count_fds() != fds_before) broken("no fd left open once the device is gone");
  if (guest_memory_mapped()) broken("no guest memory left mapped once the device is gone");
  return 0;
}
