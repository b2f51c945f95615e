// xvmq-pace: one frame, sent again and again at a steady rate over AF_PACKET
// (qdisc bypass), for the switch benchmark's cases at a fixed offered rate.
//
//   xvmq-pace --dev IF --frame HEX --rate PPS [--cpu C] [--seconds S]
//
// trafgen cannot offer such a rate here: its --gap sleeps after every frame
// (about 100 us per sleep on this kind of VM, so at most ~10 kpps whatever
// the gap), and its --rate sends each second's quota in one burst at full
// speed. This one keeps a token bucket: it wakes every 50 us, sends what the
// elapsed time allows (up to 32 frames a call) and sleeps again, so it never
// runs ahead of the rate, and a sender that was kept off its CPU catches up.
// It stops on SIGINT or SIGTERM (or after --seconds) and prints
// {"sent":N,"seconds":S,"pps":R,"behind":B} (B: calls that sent less than asked).
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr unsigned kBatch = 32;
constexpr long kNapNs = 50000;

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "xvmq-pace: %s\n", msg.c_str());
  std::exit(2);
}

std::vector<uint8_t> parse_hex(const std::string& hex) {
  if (hex.size() % 2 || hex.size() < 28 || hex.size() > 2 * 1514) die("--frame: 14 to 1514 bytes of hex");
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); i++) {
    char* end = nullptr;
    std::string byte = hex.substr(2 * i, 2);
    out[i] = static_cast<uint8_t>(std::strtoul(byte.c_str(), &end, 16));
    if (*end) die("--frame: not hex: " + byte);
  }
  return out;
}

int open_socket(const std::string& dev, sockaddr_ll* to) {
  int ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
  if (!ifindex) die("no netdev " + dev);
  // Protocol 0: the socket only sends, nothing is queued to it.
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) die(std::string("socket(AF_PACKET): ") + std::strerror(errno));
  int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) != 0)
    die(std::string("PACKET_QDISC_BYPASS: ") + std::strerror(errno));
  *to = {};
  to->sll_family = AF_PACKET;
  to->sll_ifindex = ifindex;
  to->sll_halen = 6;
  return fd;
}

struct Totals {
  uint64_t sent = 0, behind = 0, start = 0, end = 0;
};

Totals send_loop(int fd, sockaddr_ll* to, std::vector<uint8_t>& frame, uint64_t rate, double seconds) {
  std::memcpy(to->sll_addr, frame.data(), 6);
  iovec iov{frame.data(), frame.size()};
  std::vector<mmsghdr> msgs(kBatch);
  for (auto& m : msgs) {
    m.msg_hdr.msg_name = to;
    m.msg_hdr.msg_namelen = sizeof(*to);
    m.msg_hdr.msg_iov = &iov;
    m.msg_hdr.msg_iovlen = 1;
  }
  Totals t;
  t.start = now_ns();
  const uint64_t stop_at = seconds > 0 ? t.start + static_cast<uint64_t>(seconds * 1e9) : UINT64_MAX;
  while (!g_stop) {
    const uint64_t now = now_ns();
    if (now >= stop_at) break;
    const uint64_t allowed = static_cast<uint64_t>(static_cast<double>(now - t.start) * 1e-9 * rate) + 1;
    if (allowed <= t.sent) {
      timespec nap{0, kNapNs};
      nanosleep(&nap, nullptr);
      continue;
    }
    const unsigned n = static_cast<unsigned>(std::min<uint64_t>(kBatch, allowed - t.sent));
    const int r = sendmmsg(fd, msgs.data(), n, 0);
    if (r > 0) t.sent += static_cast<uint64_t>(r);
    if (r < static_cast<int>(n)) {
      // A full ring pushes back (ENOBUFS): the rest goes on the next turn.
      if (r < 0 && errno != ENOBUFS && errno != EAGAIN && errno != EINTR)
        die(std::string("sendmmsg: ") + std::strerror(errno));
      t.behind++;
      sched_yield();
    }
  }
  t.end = now_ns();
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xvmq-pace: one frame at a steady rate over AF_PACKET (the switch benchmark's paced cases)"};
  std::string dev, hex;
  uint64_t rate = 0;
  int cpu = -1;
  double seconds = 0;
  app.add_option("--dev", dev, "the netdev to send on")->required();
  app.add_option("--frame", hex, "the frame, without FCS, in hex")->required();
  app.add_option("--rate", rate, "frames per second")->required()->check(CLI::Range(1ull, 100000000ull));
  app.add_option("--cpu", cpu, "run on this CPU (on a veth the frame lands on receive queue cpu % queues)");
  app.add_option("--seconds", seconds, "stop after this long (default: at SIGINT or SIGTERM)");
  CLI11_PARSE(app, argc, argv);
  std::vector<uint8_t> frame = parse_hex(hex);
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) die("pin to CPU " + std::to_string(cpu) + ": " + strerror(errno));
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  sockaddr_ll to;
  int fd = open_socket(dev, &to);
  Totals t = send_loop(fd, &to, frame, rate, seconds);
  close(fd);
  const double secs = static_cast<double>(t.end - t.start) / 1e9;
  std::printf("{\"sent\":%llu,\"seconds\":%.6f,\"pps\":%.0f,\"behind\":%llu}\n",
              static_cast<unsigned long long>(t.sent), secs, secs > 0 ? static_cast<double>(t.sent) / secs : 0.0,
              static_cast<unsigned long long>(t.behind));
  return 0;
}
