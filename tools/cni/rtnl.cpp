#include "tools/cni/rtnl.h"

#include "switchd/host/nl.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/ethtool.h>
#include <linux/if_addr.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <functional>
#include <memory>

namespace xvmq::cni::rtnl {

using switchd::netlink::for_each_attr;
using switchd::netlink::index_of;
using switchd::netlink::Msg;
using switchd::netlink::talk;

std::string Prefix::str() const {
  char s[INET6_ADDRSTRLEN] = "?";
  inet_ntop(family, addr.data(), s, sizeof(s));
  return std::string(s) + "/" + std::to_string(len);
}

std::optional<Prefix> parse_prefix(const std::string& text, bool bare) {
  auto slash = text.find('/');
  if (slash == std::string::npos && !bare) return std::nullopt;
  const std::string ip = text.substr(0, slash);
  Prefix p;
  p.family = ip.find(':') == std::string::npos ? AF_INET : AF_INET6;
  if (inet_pton(p.family, ip.c_str(), p.addr.data()) != 1) return std::nullopt;
  const int max = p.family == AF_INET ? 32 : 128;
  if (slash == std::string::npos) {
    p.len = static_cast<uint8_t>(max);
    return p;
  }
  const std::string len = text.substr(slash + 1);
  if (len.empty() || len.size() > 3 || len.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  const int n = std::stoi(len);
  if (n > max) return std::nullopt;
  p.len = static_cast<uint8_t>(n);
  return p;
}

Result<NetnsScope> NetnsScope::enter(const std::string& path) {
  Fd home(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (home.get() < 0) return sys_error(errno, "open this thread's network namespace");
  Fd target(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (target.get() < 0) return sys_error(errno, "open network namespace " + path);
  if (::setns(target.get(), CLONE_NEWNET) != 0) return sys_error(errno, "enter network namespace " + path);
  return NetnsScope(home.release());
}

NetnsScope::~NetnsScope() {
  if (home_.get() >= 0) (void)::setns(home_.get(), CLONE_NEWNET);
}

Status create_veth(const std::string& host, const std::string& peer, int netns_fd, const std::optional<Mac>& peer_mac) {
  Msg m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  m.header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  mnl_attr_put_strz(m.nlh, IFLA_IFNAME, host.c_str());
  nlattr* info = mnl_attr_nest_start(m.nlh, IFLA_LINKINFO);
  mnl_attr_put_strz(m.nlh, IFLA_INFO_KIND, "veth");
  nlattr* data = mnl_attr_nest_start(m.nlh, IFLA_INFO_DATA);
  nlattr* p = mnl_attr_nest_start(m.nlh, VETH_INFO_PEER);
  auto* pifm = static_cast<ifinfomsg*>(mnl_nlmsg_get_payload_tail(m.nlh));
  std::memset(pifm, 0, sizeof(*pifm));
  m.nlh->nlmsg_len += MNL_ALIGN(sizeof(*pifm));
  mnl_attr_put_strz(m.nlh, IFLA_IFNAME, peer.c_str());
  mnl_attr_put_u32(m.nlh, IFLA_NET_NS_FD, static_cast<uint32_t>(netns_fd));
  if (peer_mac) mnl_attr_put(m.nlh, IFLA_ADDRESS, peer_mac->size(), peer_mac->data());
  mnl_attr_nest_end(m.nlh, p);
  mnl_attr_nest_end(m.nlh, data);
  mnl_attr_nest_end(m.nlh, info);
  return talk(m.nlh, "create veth pair " + host + " / " + peer + " (in the container)");
}

namespace {

Status link_request(const std::string& dev, const std::string& what, uint16_t type,
                    const std::function<void(Msg&, ifinfomsg*)>& fill) {
  auto idx = index_of(dev);
  if (!idx) return Error{idx.error().code, what + ": " + idx.error().message};
  Msg m(type, 0);
  auto* ifm = m.header<ifinfomsg>();
  ifm->ifi_family = AF_UNSPEC;
  ifm->ifi_index = *idx;
  if (fill) fill(m, ifm);
  return talk(m.nlh, what);
}

}  // namespace

Status delete_link(const std::string& dev) { return link_request(dev, "delete " + dev, RTM_DELLINK, nullptr); }

bool link_exists(const std::string& dev) { return if_nametoindex(dev.c_str()) != 0; }

Status set_up(const std::string& dev) {
  return link_request(dev, "set " + dev + " up", RTM_NEWLINK, [](Msg&, ifinfomsg* ifm) {
    ifm->ifi_flags = IFF_UP;
    ifm->ifi_change = IFF_UP;
  });
}

Status no_ipv6_addresses(const std::string& dev) {
  return link_request(dev, "IPv6 address generation off on " + dev, RTM_NEWLINK, [](Msg& m, ifinfomsg*) {
    nlattr* spec = mnl_attr_nest_start(m.nlh, IFLA_AF_SPEC);
    nlattr* v6 = mnl_attr_nest_start(m.nlh, AF_INET6);
    mnl_attr_put_u8(m.nlh, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
    mnl_attr_nest_end(m.nlh, v6);
    mnl_attr_nest_end(m.nlh, spec);
  });
}

Result<Mac> link_mac(const std::string& dev) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  Msg m(RTM_GETLINK, 0);
  auto* ifm = m.header<ifinfomsg>();
  ifm->ifi_family = AF_UNSPEC;
  ifm->ifi_index = *idx;
  std::optional<Mac> mac;
  auto st = talk(m.nlh, "read the MAC of " + dev, [&](const nlmsghdr* nlh) {
    if (nlh->nlmsg_type != RTM_NEWLINK) return;
    for_each_attr(nlh, sizeof(ifinfomsg), [&](const nlattr* a) {
      if (mnl_attr_get_type(a) == IFLA_ADDRESS && mnl_attr_get_payload_len(a) == 6) {
        Mac v;
        std::memcpy(v.data(), mnl_attr_get_payload(a), 6);
        mac = v;
      }
    });
  });
  if (!st) return st.error();
  if (!mac) return Error{ENODATA, "read the MAC of " + dev + ": the kernel did not say"};
  return *mac;
}

Status add_address(const std::string& dev, const Prefix& p) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  Msg m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  auto* ifa = m.header<ifaddrmsg>();
  ifa->ifa_family = static_cast<uint8_t>(p.family);
  ifa->ifa_prefixlen = p.len;
  ifa->ifa_index = static_cast<uint32_t>(*idx);
  mnl_attr_put(m.nlh, IFA_LOCAL, p.bytes(), p.addr.data());
  mnl_attr_put(m.nlh, IFA_ADDRESS, p.bytes(), p.addr.data());
  if (p.family == AF_INET6) mnl_attr_put_u32(m.nlh, IFA_FLAGS, IFA_F_NODAD);  // IPAM made it unique
  return talk(m.nlh, "add address " + p.str() + " to " + dev);
}

Result<std::vector<Prefix>> addresses(const std::string& dev) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  Msg m(RTM_GETADDR, NLM_F_DUMP);
  m.header<ifaddrmsg>()->ifa_family = AF_UNSPEC;
  std::vector<Prefix> out;
  auto st = talk(m.nlh, "list the addresses of " + dev, [&](const nlmsghdr* nlh) {
    const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
    if (nlh->nlmsg_type != RTM_NEWADDR || static_cast<int>(ifa->ifa_index) != *idx) return;
    if ((ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6) || ifa->ifa_scope >= RT_SCOPE_LINK) return;
    Prefix p{.family = ifa->ifa_family, .len = ifa->ifa_prefixlen};
    for_each_attr(nlh, sizeof(*ifa), [&](const nlattr* a) {
      const uint16_t t = mnl_attr_get_type(a);
      if ((t == IFA_LOCAL || (t == IFA_ADDRESS && p.addr == decltype(p.addr){})) &&
          mnl_attr_get_payload_len(a) == p.bytes())
        std::memcpy(p.addr.data(), mnl_attr_get_payload(a), p.bytes());
    });
    out.push_back(p);
  });
  if (!st) return st.error();
  return out;
}

Status add_route(const std::string& dev, const Prefix& dst, const std::optional<Prefix>& gw) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  Msg m(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  auto* rtm = m.header<rtmsg>();
  rtm->rtm_family = static_cast<uint8_t>(dst.family);
  rtm->rtm_dst_len = dst.len;
  rtm->rtm_table = RT_TABLE_MAIN;
  rtm->rtm_protocol = RTPROT_BOOT;
  rtm->rtm_scope = gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
  rtm->rtm_type = RTN_UNICAST;
  if (dst.len) mnl_attr_put(m.nlh, RTA_DST, dst.bytes(), dst.addr.data());
  if (gw) mnl_attr_put(m.nlh, RTA_GATEWAY, gw->bytes(), gw->addr.data());
  mnl_attr_put_u32(m.nlh, RTA_OIF, static_cast<uint32_t>(*idx));
  std::string via;
  if (gw) via = " via " + gw->str().substr(0, gw->str().find('/'));
  return talk(m.nlh, "add route " + dst.str() + via + " dev " + dev);
}

Status gro_on(const std::string& dev) {
  Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (s.get() < 0) return sys_error(errno, "GRO on " + dev + ": socket");
  ethtool_value v{ETHTOOL_SGRO, 1};
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, dev.c_str(), IFNAMSIZ - 1);
  ifr.ifr_data = reinterpret_cast<char*>(&v);
  if (::ioctl(s.get(), SIOCETHTOOL, &ifr) < 0) return sys_error(errno, "GRO on " + dev);
  return {};
}

Status gratuitous_arp(const std::string& dev, const Prefix& ip) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  auto mac = link_mac(dev);
  if (!mac) return mac.error();
  Fd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP)));
  if (s.get() < 0) return sys_error(errno, "gratuitous ARP on " + dev + ": packet socket");
  uint8_t f[42] = {};
  std::memset(f, 0xff, 6);  // to the broadcast
  std::memcpy(f + 6, mac->data(), 6);
  const uint8_t arp[] = {0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01};  // type; Ethernet, IPv4; request
  std::memcpy(f + 12, arp, sizeof(arp));
  std::memcpy(f + 22, mac->data(), 6);     // sender MAC
  std::memcpy(f + 28, ip.addr.data(), 4);  // sender IP
  std::memcpy(f + 38, ip.addr.data(), 4);  // target IP: the same, target MAC zero
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = *idx;
  to.sll_halen = 6;
  std::memset(to.sll_addr, 0xff, 6);
  if (::sendto(s.get(), f, sizeof(f), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != sizeof(f))
    return sys_error(errno, "gratuitous ARP for " + ip.str() + " on " + dev);
  return {};
}

}  // namespace xvmq::cni::rtnl
