// The host's network configuration, through rtnetlink (libmnl) and the one
// ethtool ioctl switchd needs: links (veth pairs, up/down, MAC, counters),
// addresses and routes. switchd never runs `ip` or `ethtool`.
//
// Every call opens its own netlink socket: calls are rare (attach, detach)
// and this keeps them safe from any thread.
#pragma once

#include <cstdint>
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
Result<LinkStats> link_stats(const std::string& dev);
Result<Mac> link_mac(const std::string& dev);
bool link_exists(const std::string& dev);

// Transmit checksum, scatter-gather and segmentation offloads off (ethtool
// ioctl): frames a host port sends must be complete when switchd reads them
// from its AF_XDP socket (copy mode, no checksum help).
Status tx_offloads_off(const std::string& dev);

}  // namespace xvmq::switchd::netlink
