// The little of rtnetlink (libmnl) xvmq-cni needs: a veth pair whose peer is
// born in the container's network namespace, links up, MACs, addresses and
// routes; and a gratuitous ARP. Calls act in the calling thread's network
// namespace; NetnsScope moves the thread (the plugin has one) into another
// and back.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/mac.h"
#include "common/result.h"

namespace xvmq::cni::rtnl {

// An address with its prefix length: "10.1.0.5/16", "fd00::5/64".
struct Prefix {
  int family = 0;  // AF_INET, AF_INET6
  std::array<uint8_t, 16> addr{};
  uint8_t len = 0;
  std::size_t bytes() const { return family == AF_INET ? 4 : 16; }
  std::string str() const;
  bool operator==(const Prefix& o) const = default;
};
// "A.B.C.D/N" or "X::Y/N"; with bare = true also an address alone (/32, /128).
std::optional<Prefix> parse_prefix(const std::string& text, bool bare = false);

// The thread in the network namespace at `path` until the scope ends.
class NetnsScope {
 public:
  static Result<NetnsScope> enter(const std::string& path);
  NetnsScope(NetnsScope&& o) noexcept : home_(o.home_.release()) {}
  ~NetnsScope();

 private:
  explicit NetnsScope(int home) : home_(home) {}
  Fd home_;
};

// `host` here and `peer` in the namespace `netns_fd`, with `peer_mac` when
// given. EEXIST when a name is taken (the host's here, or the peer's there).
Status create_veth(const std::string& host, const std::string& peer, int netns_fd, const std::optional<Mac>& peer_mac);
Status delete_link(const std::string& dev);  // ENODEV when there is none
bool link_exists(const std::string& dev);
Status set_up(const std::string& dev);
// No IPv6 link-local address on the host end: it speaks for nobody.
Status no_ipv6_addresses(const std::string& dev);
Result<Mac> link_mac(const std::string& dev);
Status add_address(const std::string& dev, const Prefix& p);
// Addresses of `dev`, global scope, IPv4 and IPv6.
Result<std::vector<Prefix>> addresses(const std::string& dev);
// `dst` through `dev`, via `gw` when given (a link route otherwise).
Status add_route(const std::string& dev, const Prefix& dst, const std::optional<Prefix>& gw);
// GRO on `dev` (ethtool ioctl): a veth whose peer has GRO on takes frames
// redirected into that peer by a DEVMAP, what switchd's kernel delivery does
// into the host end (docs/architecture.md).
Status gro_on(const std::string& dev);
// One gratuitous ARP request for `ip` from `dev` (its MAC) to the broadcast.
Status gratuitous_arp(const std::string& dev, const Prefix& ip);

}  // namespace xvmq::cni::rtnl
