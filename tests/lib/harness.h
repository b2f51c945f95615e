// Shared by the test binaries: privilege checks, a private network and
// mount namespace per test process, and frame builders.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace xvmq::test {

// Why privileged tests cannot run here, or nullopt when they can.
std::optional<std::string> missing_privileges();

// Called from main(): when privileged, move this process into its own
// network and mount namespaces, with sysfs and bpffs mounted fresh. Every
// netdev, XDP program and pin a test makes dies with the process, on
// failure too. Returns the reason it could not, or nullopt.
std::optional<std::string> enter_private_namespaces();

// A privileged test calls this first: SKIPPED with the reason when it cannot
// run, or a failure when CI=true (CI always runs privileged tests).
#define XVMQ_REQUIRE_PRIVILEGES()                                                            \
  do {                                                                                       \
    if (auto why_ = ::xvmq::test::privileged_skip_reason()) {                                \
      if (::xvmq::test::in_ci()) FAIL() << "privileged test cannot run under CI: " << *why_; \
      GTEST_SKIP() << *why_;                                                                 \
    }                                                                                        \
  } while (0)

std::optional<std::string> privileged_skip_reason();
bool in_ci();

// Run a shell command; returns its exit status, stdout+stderr in *out.
int sh(const std::string& cmd, std::string* out = nullptr);
// Run a command and fail the test (ADD_FAILURE) when it does not exit 0.
bool sh_ok(const std::string& cmd);

// A veth pair in the test's namespace with n queues, both ends up and
// offloads that would merge frames turned off.
bool make_veth(const std::string& a, const std::string& b, int queues);

using Bytes = std::vector<uint8_t>;

struct FrameSpec {
  std::string dst = "02:00:00:00:00:01";
  std::string src = "02:00:00:00:00:fe";
  // Tags outermost first: {tpid, tci}.
  std::vector<std::pair<uint16_t, uint16_t>> tags;
  uint16_t ethertype = 0x0800;
  size_t payload = 46;
  uint8_t fill = 0;  // payload byte i = fill + i
};

Bytes build_frame(const FrameSpec& spec);
std::string hex(const Bytes& b, size_t max = 64);

}  // namespace xvmq::test

namespace xvmq::test {

// Send one frame as is from a netdev with AF_PACKET, bypassing the qdisc,
// from a thread pinned to `cpu`: on a veth, the frame then arrives on the
// peer's receive queue cpu % queues. Returns 0 or -errno.
int send_raw(const std::string& ifname, const Bytes& frame, int cpu);

// Sockets connected to the Unix socket `path` with the effective uid `uid`,
// changed for one thread only (the raw syscall: glibc's setresuid changes
// every thread's). The gid stays this process's, so that a socket of group
// root lets them in. Stops at the first that cannot connect (within 2 s:
// a full listen backlog).
std::vector<int> connect_as(const std::string& path, unsigned uid, int n);

// What each of `fds` got within `wait_ms` in all: a line (a refusal, its
// text), or nothing (held open, idle).
struct Crowd {
  std::vector<std::string> refusals;
  size_t open = 0;
};
Crowd read_crowd(const std::vector<int>& fds, int wait_ms);
// Every refusal in `c` is switchd's "full" answer given before any request
// (kind exhausted, id null) and its message has `words`.
void expect_refused_as_full(const Crowd& c, const std::string& words);
void close_all(std::vector<int>& fds);

}  // namespace xvmq::test
