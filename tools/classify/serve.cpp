// serve: one XskQueue (one UMEM) per receive queue of the uplink, with a
// socket for the default queue and one per requested vmq on each, put in the
// classifier's slots for a bounded time.
#include <poll.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>

#include "loader/netdev.h"
#include "xsk/queue.h"
#include "tools/classify/commands.h"
#include "tools/classify/table.h"

namespace xvmq::classify {
namespace {

volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// One socket: which slot it fills and what it got.
struct Socket {
  uint32_t vmq = 0;
  XskQueue* queue = nullptr;
  size_t index = 0;
  uint64_t frames = 0;
  uint64_t bytes = 0;
};

// Clears the slots it set, on every way out.
class Slots {
 public:
  explicit Slots(Classifier& cls) : cls_(cls) {}
  ~Slots() { clear(); }
  void clear() {
    for (auto [vmq, queue] : set_)
      if (auto st = cls_.clear_socket(vmq, queue); !st) fail(st.error().message);
    set_.clear();
  }
  Status set(uint32_t vmq, uint32_t queue, int fd) {
    auto st = cls_.set_socket(vmq, queue, fd);
    if (st) set_.emplace_back(vmq, queue);
    return st;
  }

 private:
  Classifier& cls_;
  std::vector<std::pair<uint32_t, uint32_t>> set_;
};

// "02:00:00:00:00:01  vlan 10  64 bytes": what the socket got, tags as they
// are in the delivered frame (after any strip).
std::string describe_frame(const std::vector<uint8_t>& f) {
  if (f.size() < 14) return "runt  " + std::to_string(f.size()) + " bytes";
  Mac dst{};
  std::copy(f.begin(), f.begin() + 6, dst.begin());
  std::string vlan;
  size_t off = 12;
  for (int tag = 0; tag < 2 && off + 4 <= f.size(); tag++) {
    uint16_t tpid = static_cast<uint16_t>(f[off] << 8 | f[off + 1]);
    if (!(tpid == 0x8100 || (tag == 0 && tpid == 0x88a8))) break;
    uint16_t vid = static_cast<uint16_t>((f[off + 2] << 8 | f[off + 3]) & 0x0fff);
    vlan += (vlan.empty() ? "vlan " : ".") + std::to_string(vid);
    off += 4;
  }
  if (vlan.empty()) vlan = "untagged";
  char buf[96];
  std::snprintf(buf, sizeof(buf), "dst %s  %-9s  %zu bytes", format_mac(dst).c_str(), vlan.c_str(), f.size());
  return buf;
}

std::string vmq_list(const std::vector<uint32_t>& vmqs) {
  std::string s = "0 (default)";
  for (uint32_t v : vmqs) s += ", " + std::to_string(v);
  return s;
}

}  // namespace

int serve(const Common& c, const ServeOptions& o) {
  auto dev = netdev_info(c.dev);
  if (!dev) return fail(dev.error().message);
  uint32_t nqueues = std::min<uint32_t>(dev->rx_queues, XVMQ_MAX_QUEUES);

  auto present = Classifier::query(c.dev);
  if (!present) return fail(present.error().message);
  if (!*present || (*present)->name != kClassifierName)
    return fail("the classifier is not attached to " + c.dev + " (" + command_line(c, "attach") + ")");

  auto cls = open_pinned(c);
  if (!cls) return 1;

  std::vector<uint32_t> vmqs;
  for (uint32_t v : o.vmqs)
    if (std::find(vmqs.begin(), vmqs.end(), v) == vmqs.end()) vmqs.push_back(v);

  std::vector<std::unique_ptr<XskQueue>> queues;
  std::vector<Socket> sockets;
  // Small UMEMs: the demo and an operator's look need few buffers.
  XskOptions xopt{.frames = 1024, .frame_size = 4096, .ring_size = 512};
  for (uint32_t q = 0; q < nqueues; q++) {
    auto xq = XskQueue::create(c.dev, q, xopt);
    if (!xq) return fail(xq.error().message);
    queues.push_back(std::move(xq.value()));
    std::vector<uint32_t> all{XVMQ_DEFAULT_VMQ};
    all.insert(all.end(), vmqs.begin(), vmqs.end());
    for (uint32_t vmq : all) {
      auto idx = queues.back()->add_socket();
      if (!idx) return fail(idx.error().message);
      sockets.push_back(Socket{vmq, queues.back().get(), *idx});
    }
  }

  catch_stop_signals();
  Slots slots(*cls);
  for (const auto& s : sockets)
    if (auto st = slots.set(s.vmq, s.queue->queue(), s.queue->fd(s.index)); !st) return fail(st.error().message);

  std::printf("%s: sockets for vmq %s on %u receive queue%s; receiving for %g s\n", c.dev.c_str(),
              vmq_list(vmqs).c_str(), nqueues, nqueues == 1 ? "" : "s", o.seconds);
  std::fflush(stdout);

  using clock = std::chrono::steady_clock;
  auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<pollfd> fds;
  for (const auto& s : sockets) fds.push_back(pollfd{s.queue->fd(s.index), POLLIN, 0});

  while (!g_stop) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (left <= 0) break;
    int n = poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(left, 200)));
    if (n < 0 && errno != EINTR) return fail(std::string("poll: ") + std::strerror(errno));
    for (auto& s : sockets) {
      for (;;) {
        auto frames = s.queue->receive(s.index, 64);
        if (frames.empty()) break;
        for (const auto& f : frames) {
          s.frames++;
          s.bytes += f.size();
          if (o.print) std::printf("  vmq %u queue %u: %s\n", s.vmq, s.queue->queue(), describe_frame(f).c_str());
        }
        std::fflush(stdout);
      }
    }
  }

  slots.clear();
  std::printf("%s: %s, slots cleared; received per socket:\n", c.dev.c_str(),
              g_stop ? "stopped by signal" : "time is up");
  Table t({{"vmq", Align::Right}, {"queue", Align::Right}, {"frames", Align::Right}, {"bytes", Align::Right}});
  for (const auto& s : sockets)
    t.add({std::to_string(s.vmq), std::to_string(s.queue->queue()), std::to_string(s.frames), std::to_string(s.bytes)});
  t.print();
  return 0;
}

}  // namespace xvmq::classify
