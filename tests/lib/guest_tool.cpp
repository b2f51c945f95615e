// xvmq-guest: a QEMU guest (tests/lib/qemu_guest.h) for scripts. `serve`
// boots one and then answers commands on a Unix socket until it is told to
// stop or gets SIGTERM, SIGINT or SIGHUP; the other modes are its clients.
//
//   xvmq-guest serve --socket PATH (--tap DEV | --vhost-user PATH) --mac MAC --addr A/P
//                    [--cpus N] [--queues N] [--memory MB] [--boot-limit S] [--accel tcg|kvm]
//   xvmq-guest run --socket PATH [--timeout S] COMMAND...   the guest's output, its exit status
//   xvmq-guest console --socket PATH                         the kernel's console so far
//   xvmq-guest stop --socket PATH
//
// `serve` makes the socket only once the guest is up (eth0 up, its command
// loop answering), and says so on stdout: a script waits for the socket.
// It runs QEMU as its child, which dies with it (PR_SET_PDEATHSIG); on a
// signal it kills QEMU at once, removes the guest's temporary directory and
// the socket, and exits. `run` exits 124 when the guest did not answer
// within --timeout (default 30 s). One client at a time: commands are
// served in the order they come.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "tests/lib/qemu_guest.h"

namespace {

using xvmq::test::GuestConfig;
using xvmq::test::QemuGuest;

volatile sig_atomic_t g_stop = 0;

// Kills this process's children (QEMU; while booting, also a helper that
// builds the initramfs): a boot or a command in flight ends at once, its
// serial port closed, and the QemuGuest cleans up as it returns. Only
// async-signal-safe calls.
void on_signal(int) {
  g_stop = 1;
  const int fd = open("/proc/thread-self/children", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char b[512];
  const ssize_t n = read(fd, b, sizeof(b) - 1);
  close(fd);
  pid_t pid = 0;
  for (ssize_t i = 0; i <= n; i++) {
    if (i < n && b[i] >= '0' && b[i] <= '9') {
      pid = pid * 10 + (b[i] - '0');
    } else {
      if (pid > 0) kill(pid, SIGKILL);
      pid = 0;
    }
  }
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "xvmq-guest: %s\n", msg.c_str());
  std::exit(1);
}

struct Args {
  std::map<std::string, std::string> kv;
  std::vector<std::string> rest;  // run: the command's words
  std::string get(const std::string& k, const std::string& dflt = "") const {
    auto it = kv.find(k);
    return it == kv.end() ? dflt : it->second;
  }
  int num(const std::string& k, int dflt) const {
    const std::string v = get(k);
    if (v.empty()) return dflt;
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (*end != '\0' || n < 0) die("--" + k + ": not a count: " + v);
    return static_cast<int>(n);
  }
};

sockaddr_un address(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) die("socket path too long: " + path);
  std::memcpy(sa.sun_path, path.c_str(), path.size());
  return sa;
}

bool write_all(int fd, const std::string& s) {
  for (size_t off = 0; off < s.size();) {
    const ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// The request: one line, "run TIMEOUT COMMAND", "console" or "stop"; a
// client has 5 s to send it (SO_RCVTIMEO), so that one that sends nothing
// does not hold the others up.
std::string read_line(int fd) {
  std::string line;
  char c;
  while (line.size() < 65536) {
    const ssize_t n = read(fd, &c, 1);
    if (n < 0 && errno == EINTR && !g_stop) continue;
    if (n <= 0 || c == '\n') break;
    line.push_back(c);
  }
  return line;
}

int do_serve(const Args& a) {
  const std::string path = a.get("socket");
  if (path.empty()) die("serve: --socket PATH");
  GuestConfig cfg;
  cfg.tap = a.get("tap");
  cfg.vhost_user = a.get("vhost-user");
  if (cfg.tap.empty() == cfg.vhost_user.empty()) die("serve: one of --tap DEV and --vhost-user PATH");
  cfg.mac = a.get("mac");
  cfg.addr = a.get("addr");
  if (cfg.mac.empty() || cfg.addr.empty()) die("serve: --mac and --addr");
  cfg.cpus = a.num("cpus", 1);
  cfg.queues = a.num("queues", 1);
  cfg.memory_mb = a.num("memory", cfg.memory_mb);
  cfg.boot_limit = std::chrono::seconds(a.num("boot-limit", static_cast<int>(cfg.boot_limit.count())));
  cfg.accel = a.get("accel", cfg.accel);
  if (cfg.accel != "tcg" && cfg.accel != "kvm") die("serve: --accel tcg or kvm");

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaction(s, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  QemuGuest guest;
  if (auto why = guest.start(cfg)) {
    if (g_stop) return 1;
    std::fprintf(stderr, "xvmq-guest: the guest did not start (%s): %s\n", cfg.accel.c_str(), why->c_str());
    return 1;
  }
  if (g_stop) return 1;

  const int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const sockaddr_un sun = address(path);
  unlink(path.c_str());
  if (ls < 0 || bind(ls, reinterpret_cast<const sockaddr*>(&sun), sizeof(sun)) != 0 || listen(ls, 8) != 0)
    die("serve: " + path + ": " + std::strerror(errno));
  std::printf("guest up in %.1f s (QEMU pid %d, %s), serving %s\n", guest.boot_seconds(), guest.pid(),
              cfg.accel.c_str(), path.c_str());
  std::fflush(stdout);

  while (!g_stop) {
    pollfd p{ls, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    const int c = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    const timeval tv{5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    const std::string req = read_line(c);
    if (req == "stop") {
      write_all(c, "0\n");
      g_stop = 1;
    } else if (req == "console") {
      write_all(c, "0\n" + guest.console());
    } else if (req.rfind("run ", 0) == 0) {
      const std::string rest = req.substr(4);
      const size_t sp = rest.find(' ');
      const int limit = std::atoi(rest.substr(0, sp).c_str());
      const std::string cmd = sp == std::string::npos ? "" : rest.substr(sp + 1);
      const QemuGuest::Result r = guest.run(cmd, std::chrono::seconds(limit > 0 ? limit : 30));
      write_all(c, std::to_string(r.status) + "\n" + r.out);
    } else {
      write_all(c, "-2\nunknown request\n");
    }
    close(c);
  }
  close(ls);
  unlink(path.c_str());
  guest.stop();
  return 0;
}

// Sends one request to `serve` and prints what came back; the status line
// first, then the text.
int client(const std::string& path, const std::string& req) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const sockaddr_un sun = address(path);
  if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr*>(&sun), sizeof(sun)) != 0)
    die(path + ": " + std::strerror(errno) + " (is `xvmq-guest serve` running?)");
  if (!write_all(fd, req + "\n")) die(path + ": " + std::strerror(errno));
  std::string got;
  char b[4096];
  for (;;) {
    const ssize_t n = read(fd, b, sizeof(b));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got.append(b, static_cast<size_t>(n));
  }
  close(fd);
  const size_t nl = got.find('\n');
  if (nl == std::string::npos) die(path + ": no answer");
  const int status = std::atoi(got.substr(0, nl).c_str());
  std::fwrite(got.data() + nl + 1, 1, got.size() - nl - 1, stdout);
  if (status == -1) {
    std::fprintf(stderr, "xvmq-guest: the guest did not answer in time\n");
    return 124;
  }
  if (status == -2) return 2;
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: xvmq-guest serve|run|console|stop --socket PATH ... (see tests/lib/guest_tool.cpp)");
  const std::string mode = argv[1];
  Args a;
  int i = 2;
  for (; i < argc; i++) {
    const std::string k = argv[i];
    if (k == "--") {
      i++;
      break;
    }
    if (k.rfind("--", 0) != 0) break;
    if (i + 1 >= argc) die("no value for " + k);
    a.kv[k.substr(2)] = argv[++i];
  }
  for (; i < argc; i++) a.rest.emplace_back(argv[i]);
  const std::string path = a.get("socket");
  if (path.empty()) die(mode + ": --socket PATH");
  if (mode == "serve") return do_serve(a);
  if (mode == "run") {
    std::string cmd;
    for (const auto& w : a.rest) cmd += (cmd.empty() ? "" : " ") + w;
    if (cmd.empty() || cmd.find('\n') != std::string::npos) die("run: one command line");
    return client(path, "run " + std::to_string(a.num("timeout", 30)) + " " + cmd);
  }
  if (mode == "console") return client(path, "console");
  if (mode == "stop") return client(path, "stop");
  die("unknown mode " + mode + ": use serve, run, console or stop");
}
