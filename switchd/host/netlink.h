// The host's network configuration, through rtnetlink (libmnl) and the one
// ethtool ioctl switchd needs: links (veth pairs, up/down, MAC, counters,
// state), addresses and routes; and a device's XDP features through the
// generic netlink family "netdev". switchd never runs `ip` or `ethtool`.
//
// Every call opens its own netlink socket: calls are rare (attach, detach)
// and this keeps them safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "loader/abi.h"
#include "common/result.h"

namespace xvmq::switchd::netlink {

// An address as the kernel reported it, enough to add it elsewhere.
struct Address {
  int family = 0;  // AF_INET, AF_INET6
  uint8_t prefixlen = 0;
  uint8_t scope = 0;
  uint32_t flags = 0;                         // IFA_F_*
  std::vector<uint8_t> local;                 // IFA_LOCAL (IPv4), else IFA_ADDRESS
  std::vector<uint8_t> peer;                  // IFA_ADDRESS when it differs (point-to-point)
  std::vector<uint8_t> broadcast;             // IFA_BROADCAST (IPv4)
  uint32_t valid_lft = 0, preferred_lft = 0;  // when not IFA_F_PERMANENT
  std::string str() const;                    // "10.0.0.1/24"
};

// A route through one device, as the kernel reported it: its header and the
// attributes that make it (not the device, not the kernel's cache info).
struct Route {
  std::vector<uint8_t> rtm;  // struct rtmsg
  std::vector<std::pair<uint16_t, std::vector<uint8_t>>> attrs;
  std::string str() const;  // "default via 10.0.0.254", "10.1.0.0/16 via ..."
};

struct LinkStats {
  uint64_t rx_packets = 0, tx_packets = 0, rx_dropped = 0, tx_dropped = 0;
};

// What a link is and whether it can carry frames now (RTM_GETLINK).
struct LinkState {
  bool up = false;              // IFF_UP (administrative)
  bool carrier = false;         // IFLA_CARRIER: veth, both ends up; tap, a queue attached
  std::string kind;             // IFLA_INFO_KIND: "veth", "tun"; empty for a hardware NIC
  int link_ifindex = 0;         // IFLA_LINK: a veth's peer (0: none)
  bool link_elsewhere = false;  // IFLA_LINK_NETNSID: that ifindex is another namespace's
  // tun/tap only (IFLA_INFO_DATA, drivers/net/tun.c tun_fill_info):
  bool tun_tap = false;          // IFLA_TUN_TYPE is IFF_TAP (Ethernet), not IFF_TUN
  bool tun_multi_queue = false;  // IFLA_TUN_MULTI_QUEUE
  // IFLA_TUN_NUM_QUEUES, the queues attached now: the kernel says it for
  // multi-queue devices only.
  std::optional<uint32_t> tun_queues;
};

// The XDP features a device reports, NETDEV_XDP_ACT_* bits (enum
// netdev_xdp_act in the kernel's include/uapi/linux/netdev.h, 6.3+; Debian
// 12's linux-libc-dev 6.1 has no linux/netdev.h, so the values are here).
namespace xdp_act {
constexpr uint64_t kBasic = 1;        // XDP_ABORTED, DROP, PASS, TX
constexpr uint64_t kRedirect = 2;     // XDP_REDIRECT out of the device's own program
constexpr uint64_t kNdoXmit = 4;      // ndo_xdp_xmit: a DEVMAP or CPUMAP may redirect into it
constexpr uint64_t kXskZerocopy = 8;  // AF_XDP zero copy
constexpr uint64_t kHwOffload = 16;   // XDP in the NIC
constexpr uint64_t kRxSg = 32;        // multi-buffer frames in its own program
constexpr uint64_t kNdoXmitSg = 64;   // multi-buffer frames into ndo_xdp_xmit
}  // namespace xdp_act

// The addresses of a device the host uses: global scope (no IPv6 link-local,
// no loopback scope), primaries before secondaries.
Result<std::vector<Address>> addresses(const std::string& dev);
Status add_address(const std::string& dev, const Address& a);
Status delete_address(const std::string& dev, const Address& a);

// Routes whose output device is `dev`, in every table but local, made by
// an administrator or a daemon (not the kernel's own prefix routes, which
// come and go with the addresses).
Result<std::vector<Route>> routes(const std::string& dev);
Status add_route(const std::string& dev, const Route& r);
Status delete_route(const std::string& dev, const Route& r);

// A veth pair, `name` and `peer`, each with `queues` receive and transmit
// queues; `name` gets `mac`. EEXIST when either name is taken.
Status create_veth(const std::string& name, const std::string& peer, uint32_t queues, const Mac& mac);
Status delete_link(const std::string& dev);
Status set_up(const std::string& dev, bool up);
// No IPv6 link-local address (a switch-side backend speaks for nobody).
Status disable_ipv6_addresses(const std::string& dev);
// Counters (IFLA_STATS64) of a device in this network namespace: netlink, not
// /sys/class/net, whose view may be another namespace's (switchd entered with
// `nsenter --net`).
Result<LinkStats> link_stats(const std::string& dev);
Result<LinkState> link_state(const std::string& dev);
// NETDEV_A_DEV_XDP_FEATURES (NETDEV_CMD_DEV_GET of the generic netlink family
// "netdev", whose id is asked of the controller each call). ENOENT when the
// kernel has no such family (before 6.3).
Result<uint64_t> xdp_features(int ifindex);
Result<uint64_t> xdp_features(const std::string& dev);
Result<Mac> link_mac(const std::string& dev);
bool link_exists(const std::string& dev);

// Transmit checksum, scatter-gather and segmentation offloads off (ethtool
// ioctl): frames a host port sends must be complete when switchd reads them
// from its AF_XDP socket (copy mode, no checksum help).
Status tx_offloads_off(const std::string& dev);

}  // namespace xvmq::switchd::netlink
