#include "tests/lib/harness.h"

#include <linux/capability.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>

#include "loader/abi.h"

namespace xvmq::test {
namespace {

std::optional<std::string> g_namespace_error = std::string("namespaces not entered");

bool has_cap(int cap) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &hdr, data) != 0) return false;
  return data[cap / 32].effective & (1u << (cap % 32));
}

}  // namespace

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

std::optional<std::string> missing_privileges() {
  if (geteuid() != 0) return "needs root (running as uid " + std::to_string(geteuid()) + ")";
  if (!has_cap(CAP_BPF) && !has_cap(CAP_SYS_ADMIN)) return std::string("needs CAP_BPF");
  if (!has_cap(CAP_NET_ADMIN)) return std::string("needs CAP_NET_ADMIN");
  return std::nullopt;
}

std::optional<std::string> enter_private_namespaces() {
  if (auto why = missing_privileges()) return g_namespace_error = why;
  if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0)
    return g_namespace_error = std::string("unshare(CLONE_NEWNET|CLONE_NEWNS) failed: ") + strerror(errno);
  if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return g_namespace_error = std::string("make / private: ") + strerror(errno);
  if (mount("sysfs", "/sys", "sysfs", 0, nullptr) != 0)
    return g_namespace_error = std::string("mount sysfs: ") + strerror(errno);
  if (mount("bpf", "/sys/fs/bpf", "bpf", 0, nullptr) != 0)
    return g_namespace_error = std::string("mount bpffs: ") + strerror(errno);
  // No IPv6 chatter (router solicitations, MLD) on test links.
  sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
  if (sh("ip link set lo up") != 0) return g_namespace_error = std::string("ip link set lo up failed");
  g_namespace_error.reset();
  return std::nullopt;
}

std::optional<std::string> privileged_skip_reason() { return g_namespace_error; }

int sh(const std::string& cmd, std::string* out) {
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf{};
  std::string text;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) text.append(buf.data(), n);
  int status = pclose(p);
  if (out) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool sh_ok(const std::string& cmd) {
  std::string out;
  int rc = sh(cmd, &out);
  if (rc != 0) {
    ADD_FAILURE() << "command failed (" << rc << "): " << cmd << "\n" << out;
    return false;
  }
  return true;
}

bool make_veth(const std::string& a, const std::string& b, int queues) {
  std::string q = std::to_string(queues);
  return sh_ok("ip link add " + a + " numrxqueues " + q + " numtxqueues " + q + " type veth peer name " + b +
               " numrxqueues " + q + " numtxqueues " + q) &&
         sh_ok("ip link set " + a + " up") && sh_ok("ip link set " + b + " up");
}

Bytes build_frame(const FrameSpec& s) {
  Bytes f;
  auto dst = parse_mac(s.dst), src = parse_mac(s.src);
  if (!dst || !src) return f;
  f.insert(f.end(), dst->begin(), dst->end());
  f.insert(f.end(), src->begin(), src->end());
  auto put16 = [&](uint16_t v) {
    f.push_back(static_cast<uint8_t>(v >> 8));
    f.push_back(static_cast<uint8_t>(v));
  };
  for (auto [tpid, tci] : s.tags) {
    put16(tpid);
    put16(tci);
  }
  put16(s.ethertype);
  for (size_t i = 0; i < s.payload; i++) f.push_back(static_cast<uint8_t>(s.fill + i));
  return f;
}

std::string hex(const Bytes& b, size_t max) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < b.size() && i < max; i++) {
    std::snprintf(buf, sizeof(buf), "%02x", b[i]);
    s += buf;
    if (i % 2 == 1) s += ' ';
  }
  if (b.size() > max) s += "...";
  return s;
}

}  // namespace xvmq::test

#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

namespace xvmq::test {

int send_raw(const std::string& ifname, const Bytes& frame, int cpu) {
  int result = 0;
  std::thread t([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
      result = -errno;
      return;
    }
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      result = -errno;
      return;
    }
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
    sll.sll_halen = 6;
    if (sendto(fd, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) < 0) result = -errno;
    close(fd);
  });
  t.join();
  return result;
}

std::vector<int> connect_as(const std::string& path, unsigned uid, int n) {
  std::vector<int> fds;
  std::thread([&] {
    if (::syscall(SYS_setresuid, -1, uid, -1) != 0) return;
    for (int i = 0; i < n; ++i) {
      int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
      timeval tv{2, 0};  // bounds a connect that waits for room in a full backlog
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        ::close(fd);
        break;
      }
      fds.push_back(fd);
    }
    (void)::syscall(SYS_setresuid, -1, 0, -1);
  }).join();
  return fds;
}

Crowd read_crowd(const std::vector<int>& fds, int wait_ms) {
  Crowd c;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  for (int fd : fds) {
    pollfd p{fd, POLLIN, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 0))) != 1) {
      ++c.open;
      continue;
    }
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    c.refusals.emplace_back(n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string());
  }
  return c;
}

void expect_refused_as_full(const Crowd& c, const std::string& words) {
  for (const auto& line : c.refusals) {
    auto r = nlohmann::json::parse(line.substr(0, line.find('\n')), nullptr, false);
    ASSERT_TRUE(r.is_object() && r["error"].is_object()) << line;
    EXPECT_EQ(r["error"]["kind"], "exhausted") << line;
    EXPECT_TRUE(r["id"].is_null()) << line;
    EXPECT_NE(r["error"].value("message", "").find(words), std::string::npos) << line;
  }
}

void close_all(std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
  fds.clear();
}

}  // namespace xvmq::test
