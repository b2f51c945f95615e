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
};

Result<NetdevInfo> netdev_info(const std::string& ifname);

// Drivers that can run an XDP program in the NIC (XDP_MODE_HW).
bool driver_can_offload(const std::string& driver);

}  // namespace xvmq
