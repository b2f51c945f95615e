// Whether the kernel takes frames redirected into a device (a DEVMAP entry,
// so ndo_xdp_xmit): a VM NIC's backend for kernel delivery, the uplink for
// VM egress redirected in XDP. A redirect into a device that cannot take it
// drops the frame (EOPNOTSUPP, ENXIO, ENETDOWN) instead of falling back
// (docs: DESIGN.md kernel facts 13, 14), so switchd asks before it chooses
// and says which way it went and why.
//
// What this kernel (6.18) showed, device by device:
// - veth: NETDEV_XDP_ACT_NDO_XMIT is set on a veth when its PEER has an XDP
//   program in native mode or GRO on (drivers/net/veth.c,
//   veth_set_xdp_features, and veth_set_features for GRO). A program in
//   generic mode (xdpgeneric) does not count: it leaves the bit clear, and
//   veth_xdp_xmit needs the peer's NAPI, which only native XDP or GRO starts.
//   When the peer has more transmit queues than this end has receive
//   queues, veth_set_xdp_features clears every bit (features 0).
//   The bit stays set when the peer goes down, but veth_xdp_xmit then finds
//   no NAPI on the peer's queue and fails (ENXIO): the veth's carrier, on
//   only while both ends are up (veth_open), tells it.
// - tap (driver "tun"): its features are always BASIC|REDIRECT|NDO_XMIT,
//   with or without a reader; tun_xdp_xmit fails (ENXIO) while no queue is
//   attached (tun->numqueues == 0). The kernel reports that count only for
//   multi-queue taps (IFLA_TUN_NUM_QUEUES, tun_fill_info). Otherwise the
//   carrier tells it: TUNSETIFF (tun_set_iff) turns it on, the last queue's
//   close turns it off. A reader may keep it off while attached
//   (IFF_NO_CARRIER, TUNSETCARRIER): then this says no queue and switchd
//   falls back, which loses nothing. Neither the transmit queue count
//   (IFLA_NUM_TX_QUEUES: 1, or 256 for multi-queue, allocated not attached)
//   nor /sys/class/net/T/queues (tx-0 with 0 or 1 queue attached) can tell
//   0 from 1. On a multi-queue tap whose every queue its reader detached
//   (TUNSETQUEUE IFF_DETACH_QUEUE) the carrier stays on with no queue
//   attached: IFLA_TUN_NUM_QUEUES is the one to believe there.
// - any device: the DEVMAP enqueue (__xdp_enqueue, xdp_ok_fwd_dev) refuses
//   a device without NDO_XMIT in its features, or that is down.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/result.h"
#include "loader/netdev.h"

namespace xvmq::switchd {

struct KernelDeliveryCheck {
  bool ok = false;
  // One sentence naming the device: what it has, or what is missing and
  // what to do.
  std::string why;
};

// What the kernel says of a device, as netlink reads it.
struct DeliveryFacts {
  std::string device;
  std::string driver;         // ETHTOOL_GDRVINFO: "veth", "tun", "mlx5_core", ...
  uint64_t xdp_features = 0;  // netlink::xdp_act bits
  bool up = false;            // IFF_UP
  bool carrier = false;       // IFLA_CARRIER
  std::string peer;           // a veth's peer, when it is in this namespace; else empty
  // Driver "tun" only (IFLA_INFO_DATA):
  bool tun_tap = true;                 // IFF_TAP, not a layer-3 tun
  std::optional<uint32_t> tun_queues;  // IFLA_TUN_NUM_QUEUES (multi-queue only)
};

// The queues attached to a tap: IFLA_TUN_NUM_QUEUES when the kernel says it
// (multi-queue), else 1 with carrier and 0 without.
uint32_t tap_attached_queues(const DeliveryFacts& tap);

// The rules, pure: a VM NIC's backend for kernel delivery (uplink -> CPUMAP
// -> DEVMAP -> backend), and the uplink as the target of VM egress
// redirected by DEVMAP in the VM port program.
KernelDeliveryCheck kernel_delivery_rule(const DeliveryFacts& backend);
KernelDeliveryCheck uplink_xmit_rule(const DeliveryFacts& uplink);

// The facts of `dev`, read now (rtnetlink and the "netdev" generic netlink
// family).
Result<DeliveryFacts> delivery_facts(const NetdevInfo& dev);

// The facts read and the rule applied; a device whose facts cannot be read
// is not ok, the why saying what failed.
KernelDeliveryCheck check_kernel_delivery(const NetdevInfo& backend);
KernelDeliveryCheck check_uplink_xmit(const NetdevInfo& uplink);

}  // namespace xvmq::switchd
