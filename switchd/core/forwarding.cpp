#include "switchd/core/forwarding.h"

#include <linux/if_ether.h>

#include <cstring>

namespace xvmq::switchd {

std::string_view to_string(SwitchDrop d) {
  switch (d) {
    case SwitchDrop::Malformed: return "malformed";
    case SwitchDrop::SpoofedSource: return "spoofed_source";
    case SwitchDrop::TaggedOnAccess: return "tagged_on_access";
    case SwitchDrop::VlanNotAllowed: return "vlan_not_allowed";
    case SwitchDrop::UnknownUnicast: return "unknown_unicast";
    case SwitchDrop::NoPort: return "no_port";
    case SwitchDrop::Count: break;
  }
  return "?";
}

namespace {

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

Decision dropped(SwitchDrop why) {
  Decision d;
  d.drop = why;
  return d;
}

}  // namespace

static Decision decide(const uint8_t* f, uint32_t len, int ingress, const std::vector<NicDesc>& ports,
                       const PortIndex* index);

PortIndex index_ports(const std::vector<NicDesc>& ports) {
  PortIndex idx;
  for (size_t i = 0; i < ports.size(); i++) {
    auto put = [&](const Mac& m) {
      auto& v = idx[m];
      if (v.empty() || v.back() != static_cast<int>(i)) v.push_back(static_cast<int>(i));
    };
    put(ports[i].mac);
    for (const auto& [m, _] : ports[i].statics) put(m);
  }
  return idx;
}

Decision decide(const uint8_t* f, uint32_t len, int ingress, const std::vector<NicDesc>& ports) {
  return decide(f, len, ingress, ports, nullptr);
}

Decision decide(const uint8_t* f, uint32_t len, int ingress, const std::vector<NicDesc>& ports, const PortIndex& index) {
  return decide(f, len, ingress, ports, &index);
}

static Decision decide(const uint8_t* f, uint32_t len, int ingress, const std::vector<NicDesc>& ports,
                       const PortIndex* index) {
  if (len < ETH_HLEN) return dropped(SwitchDrop::Malformed);
  // Tags as the classifier reads them: outer 0x8100/0x88a8, inner 0x8100;
  // the VLAN is the first VID that is not 0 (priority tags carry none).
  uint16_t proto = rd16(f + 12), vlan = 0;
  uint32_t pos = ETH_HLEN, ntags = 0, vlan_tags = 0;
  for (uint32_t i = 0; i < 2; i++) {
    if (!(proto == 0x8100 || (i == 0 && proto == 0x88a8))) break;
    if (pos + 4 > len) return dropped(SwitchDrop::Malformed);
    uint16_t vid = rd16(f + pos) & 0x0fff;
    ntags = i + 1;
    if (vid && !vlan) {
      vlan = vid;
      vlan_tags = i + 1;
    }
    proto = rd16(f + pos + 2);
    pos += 4;
  }
  Decision d;
  d.tags = vlan ? vlan_tags : ntags;  // the tags that make the frame's VLAN; the rest is payload
  Mac dst, src;
  std::copy(f, f + 6, dst.begin());
  std::copy(f + 6, f + 12, src.begin());

  if (ingress == kUplink) {
    d.vlan = vlan;
    d.learn = !is_multicast(src) && src != Mac{};
  } else {
    const NicDesc& p = ports.at(static_cast<size_t>(ingress));
    if (!p.sends_from(src)) return dropped(SwitchDrop::SpoofedSource);
    if (p.vlans.mode == VlanMode::Access) {
      if (vlan) return dropped(SwitchDrop::TaggedOnAccess);
      d.vlan = p.vlans.access;
    } else if (vlan) {
      if (!p.vlans.carries(vlan)) return dropped(SwitchDrop::VlanNotAllowed);
      d.vlan = vlan;
    } else {
      if (!p.vlans.native) return dropped(SwitchDrop::VlanNotAllowed);
      d.vlan = *p.vlans.native;
    }
  }

  auto add = [&](int port) {
    bool tagged = port == kUplink ? d.vlan != 0 : ports[static_cast<size_t>(port)].vlans.sends_tagged(d.vlan);
    d.out.push_back({port, tagged});
  };
  if (is_multicast(dst)) {
    for (size_t i = 0; i < ports.size(); i++)
      if (static_cast<int>(i) != ingress && ports[i].vlans.carries(d.vlan)) add(static_cast<int>(i));
    if (ingress != kUplink) add(kUplink);
    if (d.out.empty()) d.drop = SwitchDrop::NoPort;
    return d;
  }
  // The first port, in order, with dst on the frame's VLAN: among the
  // index's candidates for dst, or (no index) among all ports.
  const std::vector<int>* cand = nullptr;
  if (index) {
    auto it = index->find(dst);
    static const std::vector<int> none;
    cand = it == index->end() ? &none : &it->second;
  }
  const size_t n = cand ? cand->size() : ports.size();
  for (size_t k = 0; k < n; k++) {
    const size_t i = cand ? static_cast<size_t>((*cand)[k]) : k;
    if ((ports[i].mac != dst && !ports[i].has_static(dst, d.vlan)) || !ports[i].vlans.carries(d.vlan)) continue;
    if (static_cast<int>(i) == ingress) {
      d.drop = SwitchDrop::NoPort;  // back where it came from
      return d;
    }
    add(static_cast<int>(i));
    return d;
  }
  if (ingress == kUplink) {
    d.drop = SwitchDrop::UnknownUnicast;
    return d;
  }
  add(kUplink);
  return d;
}

void shape_untagged(uint8_t* buf, uint64_t& addr, uint32_t& len, uint32_t tags) {
  if (!tags) return;
  std::memmove(buf + addr + 4 * tags, buf + addr, 12);
  addr += 4 * tags;
  len -= 4 * tags;
}

void shape_tagged(uint8_t* buf, uint64_t& addr, uint32_t& len, uint32_t tags, uint16_t vlan) {
  uint16_t pcp = tags ? static_cast<uint16_t>(buf[addr + 14] & 0xe0) << 8 : 0;
  if (tags > 1) shape_untagged(buf, addr, len, tags - 1);
  if (!tags) {
    std::memmove(buf + addr - 4, buf + addr, 12);
    addr -= 4;
    len += 4;
  }
  uint16_t tci = static_cast<uint16_t>(pcp | vlan);
  buf[addr + 12] = 0x81;
  buf[addr + 13] = 0x00;
  buf[addr + 14] = static_cast<uint8_t>(tci >> 8);
  buf[addr + 15] = static_cast<uint8_t>(tci);
}

}  // namespace xvmq::switchd
