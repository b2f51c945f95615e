#include "switchd/host/netlink.h"

#include "switchd/host/nl.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/ethtool.h>
#include <linux/genetlink.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>

#if __has_include(<linux/netdev.h>)
#include <linux/netdev.h>
static_assert(NETDEV_XDP_ACT_NDO_XMIT == xvmq::switchd::netlink::xdp_act::kNdoXmit);
static_assert(NETDEV_A_DEV_XDP_FEATURES == 3 && NETDEV_CMD_DEV_GET == 1);
#endif

namespace xvmq::switchd::netlink {
namespace {

// The generic netlink family "netdev" (include/uapi/linux/netdev.h, kernel
// 6.3+), spelled out for headers older than it: its name and version, the
// command that reads one device, and the attributes it carries.
constexpr char kNetdevFamily[] = "netdev";
constexpr uint8_t kNetdevVersion = 1;           // NETDEV_FAMILY_VERSION
constexpr uint8_t kNetdevCmdDevGet = 1;         // NETDEV_CMD_DEV_GET
constexpr uint16_t kNetdevADevIfindex = 1;      // NETDEV_A_DEV_IFINDEX, u32
constexpr uint16_t kNetdevADevXdpFeatures = 3;  // NETDEV_A_DEV_XDP_FEATURES, u64

std::string ip_str(int family, const std::vector<uint8_t>& bytes) {
  char s[INET6_ADDRSTRLEN] = "?";
  if ((family == AF_INET && bytes.size() == 4) || (family == AF_INET6 && bytes.size() == 16))
    inet_ntop(family, bytes.data(), s, sizeof(s));
  return s;
}

std::vector<uint8_t> attr_bytes(const nlattr* a) {
  const auto* p = static_cast<const uint8_t*>(mnl_attr_get_payload(a));
  return {p, p + mnl_attr_get_payload_len(a)};
}

const std::vector<uint8_t>* route_attr(const Route& r, uint16_t type) {
  for (const auto& [t, v] : r.attrs)
    if (t == type) return &v;
  return nullptr;
}

void put_route(Msg& m, const Route& r, int ifindex) {
  auto* rtm = m.header<rtmsg>();
  std::memcpy(rtm, r.rtm.data(), std::min(r.rtm.size(), sizeof(rtmsg)));
  rtm->rtm_flags &= RTNH_F_ONLINK;  // the rest describe the route's state
  for (const auto& [t, v] : r.attrs) mnl_attr_put(m.nlh, t, v.size(), v.data());
  mnl_attr_put_u32(m.nlh, RTA_OIF, static_cast<uint32_t>(ifindex));
}

Status link_request(const std::string& dev, const std::string& what, const std::function<void(Msg&, ifinfomsg*)>& fill,
                    uint16_t type = RTM_NEWLINK) {
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

std::string Address::str() const { return ip_str(family, local) + "/" + std::to_string(prefixlen); }

std::string Route::str() const {
  if (this->rtm.size() < sizeof(rtmsg)) return "?";
  const rtmsg* rtm = reinterpret_cast<const rtmsg*>(this->rtm.data());
  std::string s;
  if (auto* d = route_attr(*this, RTA_DST))
    s = ip_str(rtm->rtm_family, *d) + "/" + std::to_string(rtm->rtm_dst_len);
  else
    s = "default";
  if (auto* g = route_attr(*this, RTA_GATEWAY)) s += " via " + ip_str(rtm->rtm_family, *g);
  if (auto* p = route_attr(*this, RTA_PRIORITY); p && p->size() == 4) {
    uint32_t metric;
    std::memcpy(&metric, p->data(), 4);
    s += " metric " + std::to_string(metric);
  }
  return s;
}

Result<std::vector<Address>> addresses(const std::string& dev) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  Msg m(RTM_GETADDR, NLM_F_DUMP);
  m.header<ifaddrmsg>()->ifa_family = AF_UNSPEC;
  std::vector<Address> out;
  auto st = talk(m.nlh, "list the addresses of " + dev, [&](const nlmsghdr* nlh) {
    const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
    if (nlh->nlmsg_type != RTM_NEWADDR || static_cast<int>(ifa->ifa_index) != *idx) return;
    if (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6) return;
    if (ifa->ifa_scope >= RT_SCOPE_LINK) return;
    Address a;
    a.family = ifa->ifa_family;
    a.prefixlen = ifa->ifa_prefixlen;
    a.scope = ifa->ifa_scope;
    a.flags = ifa->ifa_flags;
    std::vector<uint8_t> address, local;
    for_each_attr(nlh, sizeof(*ifa), [&](const nlattr* attr) {
      switch (mnl_attr_get_type(attr)) {
        case IFA_ADDRESS:
          address = attr_bytes(attr);
          break;
        case IFA_LOCAL:
          local = attr_bytes(attr);
          break;
        case IFA_BROADCAST:
          a.broadcast = attr_bytes(attr);
          break;
        case IFA_FLAGS:
          a.flags = mnl_attr_get_u32(attr);
          break;
        case IFA_CACHEINFO: {
          const auto* ci = static_cast<const ifa_cacheinfo*>(mnl_attr_get_payload(attr));
          a.valid_lft = ci->ifa_valid;
          a.preferred_lft = ci->ifa_prefered;
          break;
        }
        default:
          break;
      }
    });
    a.local = local.empty() ? address : local;
    if (!local.empty() && address != local) a.peer = address;
    out.push_back(std::move(a));
  });
  if (!st) return st.error();
  // Primaries first: deleting a primary IPv4 address takes its secondaries with it.
  std::stable_partition(out.begin(), out.end(), [](const Address& a) { return !(a.flags & IFA_F_SECONDARY); });
  return out;
}

Status add_address(const std::string& dev, const Address& a) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  Msg m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  auto* ifa = m.header<ifaddrmsg>();
  ifa->ifa_family = static_cast<uint8_t>(a.family);
  ifa->ifa_prefixlen = a.prefixlen;
  ifa->ifa_scope = a.scope;
  ifa->ifa_index = static_cast<uint32_t>(*idx);
  // What the address is, not its state (tentative, secondary, permanent: the kernel's).
  uint32_t flags =
      a.flags & (IFA_F_NODAD | IFA_F_HOMEADDRESS | IFA_F_MANAGETEMPADDR | IFA_F_NOPREFIXROUTE | IFA_F_MCAUTOJOIN);
  // The address was in use on the same link a moment ago: no new DAD.
  if (a.family == AF_INET6) flags |= IFA_F_NODAD;
  ifa->ifa_flags = static_cast<uint8_t>(flags);
  mnl_attr_put(m.nlh, IFA_LOCAL, a.local.size(), a.local.data());
  const auto& address = a.peer.empty() ? a.local : a.peer;
  mnl_attr_put(m.nlh, IFA_ADDRESS, address.size(), address.data());
  if (!a.broadcast.empty()) mnl_attr_put(m.nlh, IFA_BROADCAST, a.broadcast.size(), a.broadcast.data());
  mnl_attr_put_u32(m.nlh, IFA_FLAGS, flags);
  if (!(a.flags & IFA_F_PERMANENT) && a.valid_lft) {
    ifa_cacheinfo ci{};
    ci.ifa_valid = a.valid_lft;
    ci.ifa_prefered = a.preferred_lft;
    mnl_attr_put(m.nlh, IFA_CACHEINFO, sizeof(ci), &ci);
  }
  return talk(m.nlh, "add address " + a.str() + " to " + dev);
}

Status delete_address(const std::string& dev, const Address& a) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  Msg m(RTM_DELADDR, 0);
  auto* ifa = m.header<ifaddrmsg>();
  ifa->ifa_family = static_cast<uint8_t>(a.family);
  ifa->ifa_prefixlen = a.prefixlen;
  ifa->ifa_index = static_cast<uint32_t>(*idx);
  mnl_attr_put(m.nlh, IFA_LOCAL, a.local.size(), a.local.data());
  const auto& address = a.peer.empty() ? a.local : a.peer;
  mnl_attr_put(m.nlh, IFA_ADDRESS, address.size(), address.data());
  return talk(m.nlh, "delete address " + a.str() + " from " + dev);
}

Result<std::vector<Route>> routes(const std::string& dev) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  std::vector<Route> out;
  for (uint8_t family : {AF_INET, AF_INET6}) {
    Msg m(RTM_GETROUTE, NLM_F_DUMP);
    m.header<rtmsg>()->rtm_family = family;
    auto st = talk(m.nlh, "list the routes of " + dev, [&](const nlmsghdr* nlh) {
      const auto* rtm = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(nlh));
      if (nlh->nlmsg_type != RTM_NEWROUTE || rtm->rtm_family != family) return;
      if (rtm->rtm_type != RTN_UNICAST || rtm->rtm_protocol == RTPROT_KERNEL || rtm->rtm_protocol == RTPROT_RA ||
          (rtm->rtm_flags & RTM_F_CLONED))
        return;
      Route r;
      r.rtm.assign(reinterpret_cast<const uint8_t*>(rtm), reinterpret_cast<const uint8_t*>(rtm) + sizeof(*rtm));
      uint32_t table = rtm->rtm_table;
      int oif = 0;
      for_each_attr(nlh, sizeof(*rtm), [&](const nlattr* attr) {
        uint16_t t = mnl_attr_get_type(attr);
        switch (t) {
          case RTA_OIF:
            oif = static_cast<int>(mnl_attr_get_u32(attr));
            break;
          case RTA_TABLE:
            table = mnl_attr_get_u32(attr);
            [[fallthrough]];
          case RTA_DST:
          case RTA_SRC:
          case RTA_GATEWAY:
          case RTA_PRIORITY:
          case RTA_PREFSRC:
          case RTA_METRICS:
          case RTA_PREF:
          case RTA_FLOW:
          case RTA_VIA:
          case RTA_ENCAP_TYPE:
          case RTA_ENCAP:
            r.attrs.emplace_back(t, attr_bytes(attr));
            break;
          default:
            break;
        }
      });
      if (oif != *idx || table == RT_TABLE_LOCAL) return;
      out.push_back(std::move(r));
    });
    if (!st) return st.error();
  }
  // Routes to a link before routes through a gateway on it.
  std::stable_partition(out.begin(), out.end(), [](const Route& r) { return !route_attr(r, RTA_GATEWAY); });
  return out;
}

Status add_route(const std::string& dev, const Route& r) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  Msg m(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  put_route(m, r, *idx);
  return talk(m.nlh, "add route " + r.str() + " dev " + dev);
}

Status delete_route(const std::string& dev, const Route& r) {
  auto idx = index_of(dev);
  if (!idx) return idx.error();
  Msg m(RTM_DELROUTE, 0);
  put_route(m, r, *idx);
  return talk(m.nlh, "delete route " + r.str() + " dev " + dev);
}

Status create_veth(const std::string& name, const std::string& peer, uint32_t queues, const Mac& mac) {
  Msg m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  m.header<ifinfomsg>()->ifi_family = AF_UNSPEC;
  mnl_attr_put_strz(m.nlh, IFLA_IFNAME, name.c_str());
  mnl_attr_put(m.nlh, IFLA_ADDRESS, mac.size(), mac.data());
  mnl_attr_put_u32(m.nlh, IFLA_NUM_TX_QUEUES, queues);
  mnl_attr_put_u32(m.nlh, IFLA_NUM_RX_QUEUES, queues);
  nlattr* info = mnl_attr_nest_start(m.nlh, IFLA_LINKINFO);
  mnl_attr_put_strz(m.nlh, IFLA_INFO_KIND, "veth");
  nlattr* data = mnl_attr_nest_start(m.nlh, IFLA_INFO_DATA);
  nlattr* p = mnl_attr_nest_start(m.nlh, VETH_INFO_PEER);
  auto* pifm = static_cast<ifinfomsg*>(mnl_nlmsg_get_payload_tail(m.nlh));
  std::memset(pifm, 0, sizeof(*pifm));
  m.nlh->nlmsg_len += MNL_ALIGN(sizeof(*pifm));
  mnl_attr_put_strz(m.nlh, IFLA_IFNAME, peer.c_str());
  mnl_attr_put_u32(m.nlh, IFLA_NUM_TX_QUEUES, queues);
  mnl_attr_put_u32(m.nlh, IFLA_NUM_RX_QUEUES, queues);
  mnl_attr_nest_end(m.nlh, p);
  mnl_attr_nest_end(m.nlh, data);
  mnl_attr_nest_end(m.nlh, info);
  return talk(m.nlh, "create veth pair " + name + " / " + peer);
}

Status delete_link(const std::string& dev) { return link_request(dev, "delete " + dev, nullptr, RTM_DELLINK); }

Status set_up(const std::string& dev, bool up) {
  return link_request(dev, "set " + dev + (up ? " up" : " down"), [up](Msg&, ifinfomsg* ifm) {
    ifm->ifi_flags = up ? IFF_UP : 0;
    ifm->ifi_change = IFF_UP;
  });
}

Status disable_ipv6_addresses(const std::string& dev) {
  return link_request(dev, "IPv6 address generation off on " + dev, [](Msg& m, ifinfomsg*) {
    nlattr* spec = mnl_attr_nest_start(m.nlh, IFLA_AF_SPEC);
    nlattr* v6 = mnl_attr_nest_start(m.nlh, AF_INET6);
    mnl_attr_put_u8(m.nlh, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
    mnl_attr_nest_end(m.nlh, v6);
    mnl_attr_nest_end(m.nlh, spec);
  });
}

namespace {

// The attribute `type` of a link, raw.
Result<std::vector<uint8_t>> link_attr(const std::string& dev, uint16_t type, const std::string& what) {
  auto idx = index_of(dev);
  if (!idx) return Error{idx.error().code, what + ": " + idx.error().message};
  Msg m(RTM_GETLINK, 0);
  auto* ifm = m.header<ifinfomsg>();
  ifm->ifi_family = AF_UNSPEC;
  ifm->ifi_index = *idx;
  std::optional<std::vector<uint8_t>> out;
  auto st = talk(m.nlh, what, [&](const nlmsghdr* nlh) {
    if (nlh->nlmsg_type != RTM_NEWLINK) return;
    for_each_attr(nlh, sizeof(ifinfomsg), [&](const nlattr* attr) {
      if (mnl_attr_get_type(attr) == type) out = attr_bytes(attr);
    });
  });
  if (!st) return st.error();
  if (!out) return Error{ENODATA, what + ": the kernel did not say"};
  return *out;
}

}  // namespace

Result<LinkStats> link_stats(const std::string& dev) {
  auto raw = link_attr(dev, IFLA_STATS64, "read the counters of " + dev);
  if (!raw) return raw.error();
  rtnl_link_stats64 s{};
  std::memcpy(&s, raw->data(), std::min(raw->size(), sizeof(s)));
  return LinkStats{s.rx_packets, s.tx_packets, s.rx_dropped, s.tx_dropped};
}

namespace {

// IFLA_INFO_DATA of a tun/tap device into `st`.
void read_tun_info(const nlattr* data, LinkState& st) {
  for_each_nested(data, [&](const nlattr* a) {
    switch (mnl_attr_get_type(a)) {
      case IFLA_TUN_TYPE:
        st.tun_tap = mnl_attr_get_u8(a) == IFF_TAP;
        break;
      case IFLA_TUN_MULTI_QUEUE:
        st.tun_multi_queue = mnl_attr_get_u8(a) != 0;
        break;
      case IFLA_TUN_NUM_QUEUES:
        st.tun_queues = mnl_attr_get_u32(a);
        break;
      default:
        break;
    }
  });
}

void read_link_info(const nlattr* info, LinkState& st) {
  const nlattr* data = nullptr;
  for_each_nested(info, [&](const nlattr* a) {
    if (mnl_attr_get_type(a) == IFLA_INFO_KIND) st.kind = mnl_attr_get_str(a);
    if (mnl_attr_get_type(a) == IFLA_INFO_DATA) data = a;
  });
  if (data && st.kind == "tun") read_tun_info(data, st);
}

}  // namespace

Result<LinkState> link_state(const std::string& dev) {
  const std::string what = "read the state of " + dev;
  auto idx = index_of(dev);
  if (!idx) return Error{idx.error().code, what + ": " + idx.error().message};
  Msg m(RTM_GETLINK, 0);
  auto* ifm = m.header<ifinfomsg>();
  ifm->ifi_family = AF_UNSPEC;
  ifm->ifi_index = *idx;
  std::optional<LinkState> out;
  auto st = talk(m.nlh, what, [&](const nlmsghdr* nlh) {
    if (nlh->nlmsg_type != RTM_NEWLINK) return;
    const auto* got = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
    LinkState s;
    s.up = got->ifi_flags & IFF_UP;
    for_each_attr(nlh, sizeof(ifinfomsg), [&](const nlattr* a) {
      switch (mnl_attr_get_type(a)) {
        case IFLA_CARRIER:
          s.carrier = mnl_attr_get_u8(a) != 0;
          break;
        case IFLA_LINK:
          s.link_ifindex = static_cast<int>(mnl_attr_get_u32(a));
          break;
        case IFLA_LINK_NETNSID:
          s.link_elsewhere = true;
          break;
        case IFLA_LINKINFO:
          read_link_info(a, s);
          break;
        default:
          break;
      }
    });
    out = std::move(s);
  });
  if (!st) return st.error();
  if (!out) return Error{ENODATA, what + ": the kernel did not say"};
  return *out;
}

namespace {

// A generic netlink request to the family whose id is `family`.
struct GenlMsg : Msg {
  GenlMsg(uint16_t family, uint8_t cmd, uint8_t version) : Msg(family, 0) {
    auto* g = header<genlmsghdr>();
    g->cmd = cmd;
    g->version = version;
  }
};

Result<uint16_t> genl_family_id(const char* name, const std::string& what) {
  GenlMsg m(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
  mnl_attr_put_strz(m.nlh, CTRL_ATTR_FAMILY_NAME, name);
  std::optional<uint16_t> id;
  auto st = talk(
      m.nlh, what,
      [&](const nlmsghdr* nlh) {
        for_each_attr(nlh, sizeof(genlmsghdr), [&](const nlattr* a) {
          if (mnl_attr_get_type(a) == CTRL_ATTR_FAMILY_ID) id = mnl_attr_get_u16(a);
        });
      },
      NETLINK_GENERIC);
  if (!st && st.error().code == ENOENT)
    return Error{ENOENT, what + ": the kernel has no generic netlink family \"" + name + "\" (it came in 6.3)"};
  if (!st) return st.error();
  if (!id) return Error{ENODATA, what + ": the kernel did not give the id of \"" + std::string(name) + "\""};
  return *id;
}

Result<uint64_t> read_xdp_features(int ifindex, const std::string& what) {
  auto family = genl_family_id(kNetdevFamily, what);
  if (!family) return family.error();
  GenlMsg m(*family, kNetdevCmdDevGet, kNetdevVersion);
  mnl_attr_put_u32(m.nlh, kNetdevADevIfindex, static_cast<uint32_t>(ifindex));
  std::optional<uint64_t> features;
  auto st = talk(
      m.nlh, what,
      [&](const nlmsghdr* nlh) {
        if (nlh->nlmsg_type != *family) return;
        for_each_attr(nlh, sizeof(genlmsghdr), [&](const nlattr* a) {
          if (mnl_attr_get_type(a) == kNetdevADevXdpFeatures) features = mnl_attr_get_u64(a);
        });
      },
      NETLINK_GENERIC);
  if (!st) return st.error();
  if (!features) return Error{ENODATA, what + ": the kernel did not say"};
  return *features;
}

}  // namespace

Result<uint64_t> xdp_features(int ifindex) {
  return read_xdp_features(ifindex, "read the XDP features of ifindex " + std::to_string(ifindex));
}

Result<uint64_t> xdp_features(const std::string& dev) {
  const std::string what = "read the XDP features of " + dev;
  auto idx = index_of(dev);
  if (!idx) return Error{idx.error().code, what + ": " + idx.error().message};
  return read_xdp_features(*idx, what);
}

Result<Mac> link_mac(const std::string& dev) {
  auto raw = link_attr(dev, IFLA_ADDRESS, "read the MAC of " + dev);
  if (!raw) return raw.error();
  if (raw->size() != 6) return Error{EINVAL, "read the MAC of " + dev + ": not an Ethernet device"};
  Mac mac;
  std::copy(raw->begin(), raw->end(), mac.begin());
  return mac;
}

bool link_exists(const std::string& dev) { return if_nametoindex(dev.c_str()) != 0; }

Status tx_offloads_off(const std::string& dev) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(errno, "offloads of " + dev + ": socket");
  Status st;
  for (uint32_t cmd : {ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SSG, ETHTOOL_STXCSUM}) {
    ethtool_value v{cmd, 0};
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, dev.c_str(), IFNAMSIZ - 1);
    ifr.ifr_data = reinterpret_cast<char*>(&v);
    if (ioctl(fd, SIOCETHTOOL, &ifr) < 0 && errno != EOPNOTSUPP) {
      st = make_error(errno, "transmit offloads off on " + dev);
      break;
    }
  }
  ::close(fd);
  return st;
}

}  // namespace xvmq::switchd::netlink
