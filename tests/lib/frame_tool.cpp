// xvmq-frames: sequence-numbered test frames over AF_PACKET, for the switchd
// selftests. `send` numbers the frames of one stream; `recv` checks each
// stream's order, losses and payload checksum.
//
//   xvmq-frames send --dev IF --dst MAC [--src MAC] [--vlan N] --count N [--size 64]
//                    [--rate PPS|max] [--pulse MS] [--cpu C] [--stream ID] [--timeout S]
//   xvmq-frames recv --dev IF --seconds S [--stream ID] [--until-frames N]
//                    [--idle-ms MS] [--ready FILE] [--stall-ms MS]
//
// --pulse MS (with --rate): send for MS ms, pause for MS ms, in turn.
// recv stops after --seconds, after --until-frames test frames, or when no
// frame came for --idle-ms after the first. Times are CLOCK_MONOTONIC ns;
// "stalls" are the receive gaps longer than --stall-ms (default 50); "late"
// the first 16 frames that came after a later one of their stream, each
// [seq, the highest seq before it, time].
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <array>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/mac.h"
#include "tests/lib/frames.h"

namespace {

using xvmq::test::frames_checksum;
using xvmq::test::FramesHeader;
using xvmq::test::kFramesEthertype;
using xvmq::test::kFramesMagic;

constexpr size_t kBatch = 64;
constexpr size_t kMaxFrame = 1514;

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

[[noreturn, gnu::format(printf, 1, 2)]] void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "xvmq-frames: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
  std::exit(2);
}

struct Args {
  std::map<std::string, std::string> kv;
  std::optional<std::string> get(const std::string& k) const {
    auto it = kv.find(k);
    return it == kv.end() ? std::nullopt : std::optional(it->second);
  }
  std::string need(const std::string& k) const {
    auto v = get(k);
    if (!v) die("missing --%s", k.c_str());
    return *v;
  }
  uint64_t num(const std::string& k, uint64_t dflt) const {
    auto v = get(k);
    if (!v) return dflt;
    char* end = nullptr;
    uint64_t n = std::strtoull(v->c_str(), &end, 10);
    if (end == v->c_str() || *end) die("--%s: not a number", k.c_str());
    return n;
  }
};

int packet_socket(const std::string& dev, uint16_t proto, int* ifindex) {
  *ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
  if (!*ifindex) die("no netdev %s", dev.c_str());
  // Protocol 0 until bound, so no frame of another netdev is queued first.
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket(AF_PACKET): %s", std::strerror(errno));
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(proto);
  sll.sll_ifindex = *ifindex;
  if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0)
    die("bind to %s: %s", dev.c_str(), std::strerror(errno));
  return fd;
}

int do_send(const Args& a) {
  const std::string dev = a.need("dev");
  const std::optional<xvmq::Mac> dst_mac = xvmq::parse_mac(a.need("dst"));
  if (!dst_mac) die("--dst: not a MAC");
  const std::optional<xvmq::Mac> src_mac = xvmq::parse_mac(a.get("src").value_or("02:00:00:00:00:fe"));
  if (!src_mac) die("--src: not a MAC");
  const uint8_t* dst = dst_mac->data();
  const uint8_t* src = src_mac->data();
  const uint64_t count = a.num("count", 0), vlan = a.num("vlan", 0), size = a.num("size", 64);
  const uint32_t stream = static_cast<uint32_t>(a.num("stream", 0));
  const std::string rate_s = a.get("rate").value_or("max");
  const uint64_t rate = rate_s == "max" ? 0 : a.num("rate", 0);
  const uint64_t deadline = now_ns() + a.num("timeout", 30) * 1000000000ull;
  const uint64_t pulse_ns = a.num("pulse", 0) * 1000000ull;
  if (!count) die("--count must be > 0");
  if (pulse_ns && !rate) die("--pulse needs --rate");
  if (vlan > 4094) die("--vlan: 0..4094");
  const size_t l2 = vlan ? 18 : 14;
  if (size < l2 + sizeof(FramesHeader) || size > kMaxFrame) die("--size: out of range");

  if (auto cpu = a.get("cpu")) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<int>(a.num("cpu", 0)), &set);
    // On a veth the frame lands on the peer's receive queue cpu % queues.
    if (sched_setaffinity(0, sizeof(set), &set) != 0) die("pin to CPU %s: %s", cpu->c_str(), std::strerror(errno));
  }
  int ifindex = 0;
  int fd = packet_socket(dev, 0, &ifindex);
  int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) != 0)
    die("PACKET_QDISC_BYPASS: %s", std::strerror(errno));

  std::vector<std::vector<uint8_t>> frames(kBatch, std::vector<uint8_t>(size));
  std::vector<iovec> iov(kBatch);
  std::vector<mmsghdr> msgs(kBatch);
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = ifindex;
  to.sll_halen = 6;
  std::memcpy(to.sll_addr, dst, 6);
  auto build = [&](std::vector<uint8_t>& f, uint64_t seq) {
    uint8_t* p = f.data();
    std::memcpy(p, dst, 6);
    std::memcpy(p + 6, src, 6);
    size_t off = 12;
    if (vlan) {
      p[12] = 0x81, p[13] = 0x00, p[14] = static_cast<uint8_t>(vlan >> 8), p[15] = static_cast<uint8_t>(vlan);
      off = 16;
    }
    p[off] = kFramesEthertype >> 8, p[off + 1] = kFramesEthertype & 0xff;
    off += 2;
    FramesHeader h{kFramesMagic, stream, seq, static_cast<uint16_t>(size - off - sizeof(FramesHeader)), 0};
    uint8_t* filler = p + off + sizeof(FramesHeader);
    for (size_t i = 0; i < h.len; i++) filler[i] = static_cast<uint8_t>(seq * 31 + i);
    h.csum = frames_checksum(h, filler);
    std::memcpy(p + off, &h, sizeof(h));
  };

  uint64_t sent = 0, busy = 0;
  const uint64_t start = now_ns();
  bool timed_out = false;
  while (sent < count) {
    uint64_t t = now_ns();
    if (t > deadline) {
      timed_out = true;
      break;
    }
    uint64_t n = std::min<uint64_t>(kBatch, count - sent);
    if (rate) {
      uint64_t on = t - start;  // time in the sending phases so far
      if (pulse_ns) {
        const uint64_t rem = on % (2 * pulse_ns);
        if (rem >= pulse_ns) {  // a pause
          timespec ts{0, 50000};
          nanosleep(&ts, nullptr);
          continue;
        }
        on = on / (2 * pulse_ns) * pulse_ns + rem;
      }
      uint64_t allowed = static_cast<uint64_t>(static_cast<double>(on) * rate / 1e9) + 1;
      if (allowed <= sent) {
        timespec ts{0, 50000};
        nanosleep(&ts, nullptr);
        continue;
      }
      n = std::min(n, allowed - sent);
    }
    for (uint64_t i = 0; i < n; i++) {
      build(frames[i], sent + i);
      iov[i] = {frames[i].data(), size};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_name = &to;
      msgs[i].msg_hdr.msg_namelen = sizeof(to);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int r = sendmmsg(fd, msgs.data(), static_cast<unsigned>(n), 0);
    if (r > 0) sent += static_cast<uint64_t>(r);
    if (r < static_cast<int>(n)) {
      // A full veth ring pushes back (ENOBUFS): the unsent rest goes again, same numbers.
      if (r < 0 && errno != ENOBUFS && errno != EAGAIN && errno != EINTR) die("sendmmsg: %s", std::strerror(errno));
      busy++;
      sched_yield();
    }
  }
  double secs = static_cast<double>(now_ns() - start) / 1e9;
  std::printf("{\"sent\":%" PRIu64 ",\"seconds\":%.6f,\"pps\":%.0f,\"busy\":%" PRIu64
              ",\"timed_out\":%s,"
              "\"stream\":%u,\"start_ns\":%" PRIu64 "}\n",
              sent, secs, secs > 0 ? static_cast<double>(sent) / secs : 0.0, busy, timed_out ? "true" : "false", stream,
              start);
  close(fd);
  return timed_out ? 1 : 0;
}

struct Stream {
  uint64_t frames = 0, reordered = 0, corrupt = 0, lost = 0;
  uint64_t first = 0, last = 0;
  uint64_t t_first = 0, t_last = 0;
  std::vector<std::pair<uint64_t, uint64_t>> stalls;  // receive gaps longer than --stall-ms
  // The first frames that came after a later one: (seq, the highest seq before it, time).
  std::vector<std::array<uint64_t, 3>> late;
};

// recv's result: each stream, the foreign frames, the socket's drops.
std::string streams_json(const std::map<uint32_t, Stream>& streams, uint64_t foreign, unsigned socket_drops) {
  std::string out = "{\"streams\":{";
  char tmp[512];
  bool firstj = true;
  for (const auto& [id, s] : streams) {
    double secs = s.t_last > s.t_first ? static_cast<double>(s.t_last - s.t_first) / 1e9 : 0;
    std::snprintf(tmp, sizeof(tmp),
                  "%s\"%u\":{\"frames\":%" PRIu64 ",\"reordered\":%" PRIu64 ",\"corrupt\":%" PRIu64 ",\"lost\":%" PRIu64
                  ",\"first\":%" PRIu64 ",\"last\":%" PRIu64 ",\"t_first\":%" PRIu64 ",\"t_last\":%" PRIu64
                  ",\"pps\":%.0f,\"stalls\":[",
                  firstj ? "" : ",", id, s.frames, s.reordered, s.corrupt, s.lost, s.first, s.last, s.t_first, s.t_last,
                  secs > 0 ? static_cast<double>(s.frames - 1) / secs : 0.0);
    out += tmp;
    for (size_t i = 0; i < s.stalls.size(); i++) {
      std::snprintf(tmp, sizeof(tmp), "%s[%" PRIu64 ",%" PRIu64 "]", i ? "," : "", s.stalls[i].first,
                    s.stalls[i].second);
      out += tmp;
    }
    out += "],\"late\":[";
    for (size_t i = 0; i < s.late.size(); i++) {
      std::snprintf(tmp, sizeof(tmp), "%s[%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]", i ? "," : "", s.late[i][0],
                    s.late[i][1], s.late[i][2]);
      out += tmp;
    }
    out += "]}";
    firstj = false;
  }
  std::snprintf(tmp, sizeof(tmp), "},\"foreign\":%" PRIu64 ",\"socket_drops\":%u}", foreign, socket_drops);
  out += tmp;
  return out;
}

int do_recv(const Args& a) {
  const std::string dev = a.need("dev");
  const uint64_t until = a.num("until-frames", 0);
  const uint64_t stall_ns = a.num("stall-ms", 50) * 1000000ull;
  const uint64_t idle_ns = a.num("idle-ms", 0) * 1000000ull;
  const bool filter = a.get("stream").has_value();
  const uint32_t only = static_cast<uint32_t>(a.num("stream", 0));
  int ifindex = 0;
  int fd = packet_socket(dev, ETH_P_ALL, &ifindex);
  int one = 1, buf = 64 << 20;
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) != 0)
    die("PACKET_IGNORE_OUTGOING: %s", std::strerror(errno));
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
  if (auto ready = a.get("ready")) std::ofstream(*ready) << "ready\n";

  std::map<uint32_t, Stream> streams;
  uint64_t foreign = 0, total = 0;
  std::vector<std::vector<uint8_t>> frames(kBatch, std::vector<uint8_t>(2048));
  std::vector<iovec> iov(kBatch);
  std::vector<mmsghdr> msgs(kBatch);
  const uint64_t start = now_ns(), end = start + a.num("seconds", 1) * 1000000000ull;
  uint64_t t_seen = 0;
  while (now_ns() < end && !(until && total >= until) && !(idle_ns && t_seen && now_ns() - t_seen > idle_ns)) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10) <= 0) continue;
    for (size_t i = 0; i < kBatch; i++) {
      iov[i] = {frames[i].data(), frames[i].size()};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
    const uint64_t t = now_ns();
    if (n > 0) t_seen = t;
    for (int i = 0; i < n; i++) {
      const uint8_t* f = frames[i].data();
      size_t len = msgs[i].msg_len, off = 12;
      if (len >= 16 && f[12] == 0x81 && f[13] == 0x00) off = 16;
      FramesHeader h;
      if (len < off + 2 + sizeof(h) || (f[off] << 8 | f[off + 1]) != kFramesEthertype ||
          (std::memcpy(&h, f + off + 2, sizeof(h)), h.magic != kFramesMagic) || (filter && h.stream != only)) {
        foreign++;
        continue;
      }
      total++;
      Stream& s = streams[h.stream];
      const uint8_t* filler = f + off + 2 + sizeof(h);
      if (len < off + 2 + sizeof(h) + h.len || frames_checksum(h, filler) != h.csum) {
        s.corrupt++;
        continue;
      }
      if (s.frames == 0) {
        s.first = h.seq;
        s.t_first = t;
      } else if (h.seq <= s.last) {
        s.reordered++;
        if (s.late.size() < 16) s.late.push_back({h.seq, s.last, t});
      } else {
        s.lost += h.seq - s.last - 1;
      }
      if (s.frames && t - s.t_last > stall_ns) s.stalls.push_back({s.t_last, t});
      if (s.frames == 0 || h.seq > s.last) s.last = h.seq;
      s.t_last = t;
      s.frames++;
    }
  }
  tpacket_stats st{};
  socklen_t sl = sizeof(st);
  (void)getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl);
  const std::string out = streams_json(streams, foreign, st.tp_drops);
  std::printf("%s\n", out.c_str());
  close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: xvmq-frames send|recv --option value ...");
  std::string mode = argv[1];
  Args a;
  for (int i = 2; i < argc; i++) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc) die("bad argument %s", k.c_str());
    a.kv[k.substr(2)] = argv[++i];
  }
  if (mode == "send") return do_send(a);
  if (mode == "recv") return do_recv(a);
  die("unknown mode %s: use send or recv", mode.c_str());
}
