// A QEMU guest for the tests: Debian 12's cloud kernel booting a busybox
// initramfs that the harness builds at run time, under TCG (this host's
// KVM is PVM, where a stock kernel hangs: DESIGN.md fact 16), with one
// virtio-net NIC on a tap backend that the test made, or on a vhost-user
// backend's socket (switchd's).
//
// Only Debian 12 packages: qemu-system-x86 (7.2), linux-image-cloud-amd64
// (/boot/vmlinuz-*-cloud-amd64 and its modules) and busybox-static. The
// guest's /init loads virtio-net's modules in dependency order, brings eth0
// up with the address given on the kernel command line (and 8021q, for VLAN
// subinterfaces: `ip link add link eth0 name eth0.10 type vlan id 10`), says it is ready
// and then runs one shell command per line from a second serial port
// (ttyS1, a Unix socket on this side), answering with the output and the
// exit status. The kernel's console (ttyS0) goes to a file the test can
// print on failure.
//
// QEMU runs as this process's child in its network namespace (where the tap
// is) with PR_SET_PDEATHSIG: it dies with the test. The destructor kills it
// by its pid and removes the temporary directory (initramfs, sockets, logs).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

namespace xvmq::test {

struct GuestConfig {
  std::string tap;   // the tap netdev QEMU opens (ifname=, script=no)
  // Instead of a tap: a vhost-user backend's socket (switchd's), QEMU the
  // client, reconnecting every second; the guest's memory shared (memfd) and
  // the device's MSI-X off, which QEMU 7.2 needs under TCG (DESIGN.md fact 19).
  std::string vhost_user;
  // Queue pairs of the device (mq=on beyond 1); a tap must then be made
  // multi_queue. The guest's `channels eth0 [N]` reads or sets how many it
  // uses (ethtool -l/-L eth0 combined N; busybox has no ethtool).
  int queues = 1;
  int cpus = 1;    // the guest's vCPUs (Linux enables min(queues, CPUs) pairs)
  std::string mac;   // the guest's eth0
  std::string addr;  // eth0's address with prefix, e.g. 10.77.0.2/24
  int memory_mb = 256;
  std::chrono::seconds boot_limit{60};  // until the guest says it is ready
  std::string accel = "tcg";  // QEMU's -accel: "kvm" where KVM runs a stock kernel (not here: fact 16)
};

// Why a guest cannot run here (a package missing), or nullopt.
std::optional<std::string> qemu_guest_missing();

class QemuGuest {
 public:
  QemuGuest() = default;
  ~QemuGuest();
  QemuGuest(const QemuGuest&) = delete;
  QemuGuest& operator=(const QemuGuest&) = delete;

  // Build the initramfs, start QEMU, wait until the guest's eth0 is up and
  // its command loop answers. The error names the step that failed.
  std::optional<std::string> start(const GuestConfig& cfg);

  struct Result {
    int status = -1;  // the command's exit status; -1: no answer within the limit
    std::string out;  // its stdout and stderr
  };
  // One shell command line in the guest (busybox sh), waiting for its end.
  Result run(const std::string& cmd, std::chrono::seconds limit = std::chrono::seconds(30));

  // Stop QEMU (SIGKILL) and remove the temporary directory; also done by the destructor.
  void stop();
  std::string console() const;  // the kernel's console so far
  double boot_seconds() const { return boot_s_; }
  pid_t pid() const { return pid_; }

 private:
  std::optional<std::string> build_initramfs(const std::string& kver);
  std::optional<std::string> spawn(const GuestConfig& cfg, const std::string& kernel);
  bool read_until(const std::string& marker, std::string& out, std::chrono::steady_clock::time_point end);

  std::string dir_;
  pid_t pid_ = -1;
  int ctl_ = -1;     // the guest's command port (ttyS1)
  std::string buf_;  // what came from it and is not yet taken
  double boot_s_ = 0;
};

}  // namespace xvmq::test
