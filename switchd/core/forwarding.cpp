#include "switchd/core/forwarding.h"

#include <linux/if_ether.h>

#include <cstring>

namespace xvmq::switchd {

std::string_view to_string(SwitchDrop d) {
  switch (d) {
    case SwitchDrop::Malformed:
      return "malformed";
    case SwitchDrop::SpoofedSource:
      return "spoofed_source";
    case SwitchDrop::TaggedOnAccess:
      return "tagged_on_access";
    case SwitchDrop::VlanNotAllowed:
      return "vlan_not_allowed";
    case SwitchDrop::UnknownUnicast:
      return "unknown_unicast";
    case SwitchDrop::NoPort:
      return "no_port";
    case SwitchDrop::Count:
      break;
  }
  return "?";
}

namespace {

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

Verdict dropped(SwitchDrop why) {
  Verdict v;
  v.drop = why;
  return v;
}

Decision decide_all(const uint8_t* f, uint32_t len, int ingress, const std::vector<NicDesc>& ports,
                    const PortIndex* index) {
  const Verdict v = judge(f, len, ingress, ports, index);
  Decision d{v.drop, v.vlan, v.tags, {}, v.learn};
  if (v.drop) return d;
  if (!v.flood) {
    d.out.push_back(v.to);
    return d;
  }
  Egress batch[64];
  size_t cursor = 0;
  while (size_t n = flood_egress(ports, ingress, v.vlan, cursor, batch, 64))
    d.out.insert(d.out.end(), batch, batch + n);
  return d;
}

bool egress_tagged(const std::vector<NicDesc>& ports, int port, uint16_t vlan) {
  return port == kUplink ? vlan != 0 : ports[static_cast<size_t>(port)].vlans.sends_tagged(vlan);
}

}  // namespace

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
  return decide_all(f, len, ingress, ports, nullptr);
}

Decision decide(const uint8_t* f, uint32_t len, int ingress, const std::vector<NicDesc>& ports,
                const PortIndex& index) {
  return decide_all(f, len, ingress, ports, &index);
}

namespace {

// The frame's VLAN as it entered, by the ingress port's rules; or why not.
std::optional<SwitchDrop> ingress_vlan(const uint8_t* f, int ingress, const std::vector<NicDesc>& ports, uint16_t vlan,
                                       Verdict& v) {
  Mac src;
  std::copy(f + 6, f + 12, src.begin());
  if (ingress == kUplink) {
    v.vlan = vlan;
    v.learn = !is_multicast(src) && src != Mac{};
    return std::nullopt;
  }
  const NicDesc& p = ports.at(static_cast<size_t>(ingress));
  if (!p.sends_from(src)) return SwitchDrop::SpoofedSource;
  if (p.vlans.mode == VlanMode::Access) {
    if (vlan) return SwitchDrop::TaggedOnAccess;
    v.vlan = p.vlans.access;
  } else if (vlan) {
    if (!p.vlans.carries(vlan)) return SwitchDrop::VlanNotAllowed;
    v.vlan = vlan;
  } else {
    if (!p.vlans.native) return SwitchDrop::VlanNotAllowed;
    v.vlan = *p.vlans.native;
  }
  return std::nullopt;
}

// A flood: its shapes, or no port to go to.
void judge_flood(const std::vector<NicDesc>& ports, int ingress, Verdict& v) {
  v.flood = true;
  for (size_t i = 0; i < ports.size(); i++)
    if (static_cast<int>(i) != ingress && ports[i].vlans.carries(v.vlan))
      (ports[i].vlans.sends_tagged(v.vlan) ? v.tagged : v.untagged) = true;
  if (ingress != kUplink) (v.vlan != 0 ? v.tagged : v.untagged) = true;
  if (!v.tagged && !v.untagged) v.drop = SwitchDrop::NoPort;
}

// Unicast: the first port, in order, with dst on the frame's VLAN: among
// the index's candidates for dst, or (no index) among all ports.
void judge_unicast(const Mac& dst, const std::vector<NicDesc>& ports, const PortIndex* index, int ingress, Verdict& v) {
  const std::vector<int>* cand = nullptr;
  if (index) {
    auto it = index->find(dst);
    static const std::vector<int> none;
    cand = it == index->end() ? &none : &it->second;
  }
  const size_t n = cand ? cand->size() : ports.size();
  int to = kUplink;
  for (size_t k = 0; k < n; k++) {
    const size_t i = cand ? static_cast<size_t>((*cand)[k]) : k;
    if ((ports[i].mac != dst && !ports[i].has_static(dst, v.vlan)) || !ports[i].vlans.carries(v.vlan)) continue;
    to = static_cast<int>(i);
    break;
  }
  if (to == kUplink && ingress == kUplink) {
    v.drop = SwitchDrop::UnknownUnicast;
  } else if (to == ingress) {
    v.drop = SwitchDrop::NoPort;  // back where it came from
  } else {
    v.to = {to, egress_tagged(ports, to, v.vlan)};
    (v.to.tagged ? v.tagged : v.untagged) = true;
  }
}

}  // namespace

Verdict judge(const uint8_t* f, uint32_t len, int ingress, const std::vector<NicDesc>& ports, const PortIndex* index) {
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
  Verdict v;
  v.tags = vlan ? vlan_tags : ntags;  // the tags that make the frame's VLAN; the rest is payload
  if (auto why = ingress_vlan(f, ingress, ports, vlan, v)) return dropped(*why);
  Mac dst;
  std::copy(f, f + 6, dst.begin());
  if (is_multicast(dst))
    judge_flood(ports, ingress, v);
  else
    judge_unicast(dst, ports, index, ingress, v);
  return v;
}

size_t flood_egress(const std::vector<NicDesc>& ports, int ingress, uint16_t vlan, size_t& cursor, Egress* out,
                    size_t cap) {
  size_t n = 0;
  for (; cursor < ports.size() && n < cap; cursor++)
    if (static_cast<int>(cursor) != ingress && ports[cursor].vlans.carries(vlan))
      out[n++] = {static_cast<int>(cursor), ports[cursor].vlans.sends_tagged(vlan)};
  if (cursor == ports.size() && n < cap) {
    if (ingress != kUplink) out[n++] = {kUplink, vlan != 0};
    cursor++;
  }
  return n;
}

}  // namespace xvmq::switchd
