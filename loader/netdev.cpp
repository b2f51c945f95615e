#include "loader/netdev.h"

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "common/fd.h"

namespace xvmq {
namespace {

int ethtool(int sock, const std::string& ifname, void* cmd) {
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  ifr.ifr_data = static_cast<char*>(cmd);
  return ioctl(sock, SIOCETHTOOL, &ifr) < 0 ? -errno : 0;
}

// sysfs lists the queues in use (real_num_*), e.g. a tap's attached ones.
uint32_t count_sysfs_queues(const std::string& ifname, const char* prefix) {
  std::error_code ec;
  uint32_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/sys/class/net/" + ifname + "/queues", ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) n++;
  return n;
}

}  // namespace

Result<NetdevInfo> netdev_info(const std::string& ifname) {
  if (ifname.empty() || ifname.size() >= IFNAMSIZ)
    return Error{EINVAL, "netdev name '" + ifname + "' is empty or longer than 15 characters"};
  NetdevInfo info;
  info.name = ifname;
  info.ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (info.ifindex == 0) return make_error(errno, "netdev " + ifname);

  Fd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) return make_error(errno, "netdev " + ifname + ": socket");

  ethtool_drvinfo drv{};
  drv.cmd = ETHTOOL_GDRVINFO;
  if (ethtool(sock.get(), ifname, &drv) == 0) info.driver = drv.driver;

  ethtool_channels ch{};
  ch.cmd = ETHTOOL_GCHANNELS;
  if (ethtool(sock.get(), ifname, &ch) == 0) {
    info.rx_queues = ch.rx_count + ch.combined_count;
    info.tx_queues = ch.tx_count + ch.combined_count;
  }
  if (info.rx_queues == 0) info.rx_queues = count_sysfs_queues(ifname, "rx-");
  if (info.tx_queues == 0) info.tx_queues = count_sysfs_queues(ifname, "tx-");
  if (info.rx_queues == 0) info.rx_queues = 1;
  if (info.tx_queues == 0) info.tx_queues = 1;
  return info;
}

std::string queue_hint(const NetdevInfo& dev, uint32_t want) {
  const std::string n = std::to_string(want);
  if (dev.is_tap())
    return "the guest enables a tap's queues: start QEMU with queues=" + n +
           " (virtio-net-pci,mq=on) and run `ethtool -L eth0 combined " + n + "` in the guest";
  if (dev.driver == "veth")
    return "a veth has its queues from creation: ip link add ... numrxqueues " + n + " numtxqueues " + n + " type veth";
  return "give " + dev.name + " " + n + " channels: ethtool -L " + dev.name + " combined " + n;
}

bool driver_can_offload(const std::string& driver) { return driver == "nfp" || driver == "netdevsim"; }

}  // namespace xvmq
