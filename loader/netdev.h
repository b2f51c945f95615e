// What the loader needs to know about a netdev, read through ioctl.
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace xvmq {

struct NetdevInfo {
  std::string name;
  int ifindex = 0;
  std::string driver;      // ETHTOOL_GDRVINFO: "veth", "mlx5_core", ...
  uint32_t rx_queues = 0;  // receive queues in use
  uint32_t tx_queues = 0;  // transmit queues in use
  // Queues an AF_XDP socket can bind (it needs both a receive and a
  // transmit queue of that number): a tap has those its reader attached.
  uint32_t xsk_queues() const { return rx_queues < tx_queues ? rx_queues : tx_queues; }
  bool is_tap() const { return driver == "tun"; }
};

// How to give a netdev `want` queues, by its kind: a tap's guest enables
// them itself; a veth has them from its creation.
std::string queue_hint(const NetdevInfo& dev, uint32_t want);

Result<NetdevInfo> netdev_info(const std::string& ifname);

// Drivers that can run an XDP program in the NIC (XDP_MODE_HW).
bool driver_can_offload(const std::string& driver);

}  // namespace xvmq
