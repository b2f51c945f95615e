#include "tests/lib/qemu_guest.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/lib/harness.h"

namespace fs = std::filesystem;

namespace xvmq::test {
namespace {

constexpr const char* kQemu = "/usr/bin/qemu-system-x86_64";
constexpr const char* kBusybox = "/bin/busybox";
constexpr const char* kReady = "@@XVMQ-READY";
constexpr const char* kEnd = "@@XVMQ-END ";

// virtio-net and what it needs, in dependency order (DESIGN.md fact 16),
// then 802.1Q (VLAN subinterfaces in the guest: the host has no such module,
// fact 5, the guest's kernel does) after llc, stp, garp and mrp, which it needs.
constexpr const char* kModules[] = {"virtio_ring",
                                    "virtio",
                                    "virtio_pci_legacy_dev",
                                    "virtio_pci_modern_dev",
                                    "virtio_pci",
                                    "failover",
                                    "net_failover",
                                    "virtio_net",
                                    "llc",
                                    "stp",
                                    "garp",
                                    "mrp",
                                    "8021q"};

// The guest's /init: modules, eth0, then one command per line from ttyS1.
constexpr const char* kInit = R"(#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net \
         llc stp garp mrp 8021q; do
  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done
addr=$(sed -n 's/.*xvmq\.addr=\([^ ]*\).*/\1/p' /proc/cmdline)
for i in $(seq 1 100); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip link set lo up
ip link set eth0 up
ip addr add "$addr" dev eth0
stty -F /dev/ttyS1 raw -echo 115200
exec 3<>/dev/ttyS1
echo "eth0 $addr up" > /dev/console
echo "@@XVMQ-READY" >&3
while IFS= read -r line <&3; do
  # "LENGTH COMMAND": a serial line can lose a character under load; a
  # command that did not arrive whole is asked for again.
  len=${line%% *}
  cmd=${line#* }
  if [ "$len" != "${#cmd}" ]; then
    echo "@@XVMQ-END retry" >&3
    continue
  fi
  sh -c "$cmd" > /tmp/.out 2>&1 < /dev/null
  rc=$?
  cat /tmp/.out >&3
  echo "@@XVMQ-END $rc" >&3
done
poweroff -f
)";

std::string newest_cloud_kernel() {
  std::string best;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/boot", ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("vmlinuz-", 0) == 0 && n.size() > 19 && n.ends_with("-cloud-amd64") && n > best) best = n;
  }
  return best.empty() ? "" : best.substr(std::strlen("vmlinuz-"));
}

}  // namespace

std::optional<std::string> qemu_guest_missing() {
  if (access(kQemu, X_OK) != 0) return std::string("no ") + kQemu + " (Debian package qemu-system-x86)";
  if (access(kBusybox, X_OK) != 0) return std::string("no ") + kBusybox + " (Debian package busybox-static)";
  const std::string kver = newest_cloud_kernel();
  if (kver.empty()) return std::string("no /boot/vmlinuz-*-cloud-amd64 (Debian package linux-image-cloud-amd64)");
  if (!fs::exists("/lib/modules/" + kver)) return "no /lib/modules/" + kver + " for the guest's virtio_net";
  if (access("/dev/net/tun", R_OK | W_OK) != 0) return std::string("no /dev/net/tun");
  return std::nullopt;
}

QemuGuest::~QemuGuest() { stop(); }

void QemuGuest::stop() {
  if (ctl_ >= 0) close(ctl_);
  ctl_ = -1;
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_ = -1;
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  dir_.clear();
}

std::string QemuGuest::console() const {
  std::ifstream f(dir_ + "/console.log");
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// busybox, /init and the modules (decompressed when .ko.xz), as a gzipped
// newc cpio made by busybox's own cpio.
std::optional<std::string> QemuGuest::build_initramfs(const std::string& kver) {
  const std::string root = dir_ + "/root";
  for (const char* d : {"/bin", "/proc", "/sys", "/dev", "/tmp", "/lib/modules"}) fs::create_directories(root + d);
  std::error_code ec;
  fs::copy_file(kBusybox, root + "/bin/busybox", ec);
  if (ec) return "copy " + std::string(kBusybox) + ": " + ec.message();
  fs::create_symlink("busybox", root + "/bin/sh", ec);
  // ethtool -l/-L, which busybox lacks (GuestConfig).
  fs::copy_file(GUEST_CHANNELS, root + "/bin/channels", ec);
  if (ec) return "copy " + std::string(GUEST_CHANNELS) + ": " + ec.message();
  {
    std::ofstream init(root + "/init");
    init << kInit;
  }
  fs::permissions(root + "/init", fs::perms::owner_all | fs::perms::group_read | fs::perms::others_read);
  // Each module where the package has it; one built in is simply not found.
  std::vector<std::string> found;
  for (auto it = fs::recursive_directory_iterator("/lib/modules/" + kver + "/kernel", ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string n = it->path().filename().string();
    for (const char* m : kModules) {
      const std::string ko = std::string(m) + ".ko";
      if (n == ko) fs::copy_file(it->path(), root + "/lib/modules/" + ko, ec);
      if (n == ko + ".xz" && sh("xz -dc " + it->path().string() + " > " + root + "/lib/modules/" + ko) != 0)
        return "xz -d " + it->path().string() + " failed";
      if (n == ko || n == ko + ".xz") found.push_back(m);
    }
  }
  for (const char* m : {"virtio_net", "8021q"})
    if (std::find(found.begin(), found.end(), std::string(m)) == found.end())
      return std::string(m) + ".ko not under /lib/modules/" + kver;
  std::string out;
  if (sh("cd " + root + " && " + kBusybox + " find . | " + kBusybox + " cpio -o -H newc 2>/dev/null | gzip -1 > " +
             dir_ + "/initrd.gz",
         &out) != 0)
    return "building the initramfs: " + out;
  return std::nullopt;
}

std::optional<std::string> QemuGuest::spawn(const GuestConfig& cfg, const std::string& kernel) {
  const std::string sock = dir_ + "/ctl.sock";
  std::vector<std::string> args{
      kQemu, "-accel", cfg.accel, "-machine", "pc", "-m", std::to_string(cfg.memory_mb), "-smp", std::to_string(cfg.cpus), "-nodefaults",
      "-no-user-config", "-display", "none", "-no-reboot", "-kernel", kernel, "-initrd", dir_ + "/initrd.gz", "-append",
      "console=ttyS0 panic=-1 quiet xvmq.addr=" + cfg.addr, "-serial", "file:" + dir_ + "/console.log", "-chardev",
      "socket,id=ctl,path=" + sock + ",server=on,wait=off", "-serial", "chardev:ctl"};
  // No option ROM: ipxe's is not installed (and TCG boots faster without
  // it). No checksum offload either way: a frame that crosses XDP or
  // AF_XDP carries no partial checksum to finish.
  std::string device = "virtio-net-pci,netdev=n0,mac=" + cfg.mac +
                       ",romfile=,csum=off,guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off";
  if (cfg.vhost_user.empty()) {
    // queues=N opens the tap N times (a multi_queue tap); MSI-X with 2N+2
    // vectors, which the tap's user-space backend has under TCG.
    std::string netdev = "tap,id=n0,ifname=" + cfg.tap + ",script=no,downscript=no";
    if (cfg.queues > 1) {
      netdev += ",queues=" + std::to_string(cfg.queues);
      device += ",mq=on,vectors=" + std::to_string(2 * cfg.queues + 2);
    }
    args.insert(args.end(), {"-netdev", netdev});
  } else {
    args.insert(args.end(), {"-object", "memory-backend-memfd,id=mem,size=" + std::to_string(cfg.memory_mb) +
                                            "M,share=on",
                             "-numa", "node,memdev=mem", "-chardev",
                             "socket,id=c0,path=" + cfg.vhost_user + ",reconnect=1", "-netdev",
                             "vhost-user,id=n0,chardev=c0,queues=" + std::to_string(cfg.queues)});
    device += ",vectors=0";
    if (cfg.queues > 1) device += ",mq=on";
  }
  args.insert(args.end(), {"-device", device});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log = open((dir_ + "/qemu.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) return std::string("fork: ") + strerror(errno);
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (log >= 0) {
      dup2(log, 1);
      dup2(log, 2);
    }
    execv(kQemu, argv.data());
    _exit(127);
  }
  if (log >= 0) close(log);
  // QEMU makes the socket as it starts: connect when it is there.
  for (int i = 0; i < 500; i++) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      std::ifstream f(dir_ + "/qemu.log");
      std::stringstream s;
      s << f.rdbuf();
      return "qemu exited at start: " + s.str();
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, sock.c_str(), sizeof(sa.sun_path) - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
      ctl_ = fd;
      return std::nullopt;
    }
    close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "qemu's command socket " + sock + " never accepted";
}

std::optional<std::string> QemuGuest::start(const GuestConfig& cfg) {
  if (auto why = qemu_guest_missing()) return why;
  char tmpl[] = "/tmp/xvmq-guest-XXXXXX";
  if (!mkdtemp(tmpl)) return std::string("mkdtemp: ") + strerror(errno);
  dir_ = tmpl;
  const std::string kver = newest_cloud_kernel();
  if (auto why = build_initramfs(kver)) return why;
  const auto t0 = std::chrono::steady_clock::now();
  if (auto why = spawn(cfg, "/boot/vmlinuz-" + kver)) return why;
  std::string seen;
  if (!read_until(std::string(kReady) + "\n", seen, t0 + cfg.boot_limit))
    return "the guest did not come up within " + std::to_string(cfg.boot_limit.count()) + " s; console:\n" + console();
  boot_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return std::nullopt;
}

// Reads the command port until `marker`; `out` gets what came before it.
bool QemuGuest::read_until(const std::string& marker, std::string& out, std::chrono::steady_clock::time_point end) {
  for (;;) {
    if (auto at = buf_.find(marker); at != std::string::npos) {
      out = buf_.substr(0, at);
      buf_.erase(0, at + marker.size());
      return true;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    if (left.count() <= 0 || ctl_ < 0) return false;
    pollfd p{ctl_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200))) <= 0) continue;
    char b[4096];
    const ssize_t n = read(ctl_, b, sizeof(b));
    if (n <= 0) return false;
    buf_.append(b, static_cast<size_t>(n));
  }
}

QemuGuest::Result QemuGuest::run(const std::string& cmd, std::chrono::seconds limit) {
  Result r;
  if (ctl_ < 0) return r;
  // The guest checks the length (kInit) and asks again for a command that
  // lost a character on the way; written in short pieces, which a busy
  // guest's UART keeps up with.
  const std::string line = std::to_string(cmd.size()) + " " + cmd + "\n";
  for (int attempt = 0; attempt < 5; attempt++) {
    for (size_t off = 0; off < line.size(); off += 16) {
      const size_t n = std::min<size_t>(16, line.size() - off);
      if (write(ctl_, line.data() + off, n) != static_cast<ssize_t>(n)) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::string text;
    if (!read_until(kEnd, text, std::chrono::steady_clock::now() + limit)) {
      r.out = buf_;
      return r;
    }
    std::string status;
    if (!read_until("\n", status, std::chrono::steady_clock::now() + std::chrono::seconds(2))) return r;
    if (status.rfind("retry", 0) == 0) continue;
    r.status = std::atoi(status.c_str());
    r.out = text;
    return r;
  }
  r.out = "the guest did not receive the command whole in 5 tries";
  return r;
}

}  // namespace xvmq::test
