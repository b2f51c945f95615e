// Fuzz target: the software switch's frame parsing and decisions
// (switchd/core/forwarding.h: decide; switchd/dp/vlan_tag.h: the shapes the queue workers give a
// frame), over a few port tables: access ports on the untagged network and
// on a VLAN, trunks with and without a native VLAN, a port allowed to spoof,
// static FDB entries.
//
// Input: byte 0 picks the table, byte 1 the ingress (the uplink or a port),
// the rest is the frame. Checked:
//   - a dropped frame goes nowhere; an output is the uplink or a port of the
//     table, never the ingress, at most once, on the frame's VLAN, in the
//     shape that port takes it (tagged only with a VLAN);
//   - the tags counted are there in the frame;
//   - shaped, the frame is its MACs, one tag of the VLAN or none, then the
//     bytes after the removed tags; its length follows.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <vector>

#include "switchd/core/forwarding.h"
#include "switchd/dp/vlan_tag.h"

using namespace xvmq;
using namespace xvmq::switchd;

namespace {

constexpr Mac mac(uint8_t last) { return Mac{0x02, 0, 0, 0, 0, last}; }

NicDesc port(uint8_t last, PortVlans vlans, bool spoof = false, std::vector<std::pair<Mac, uint16_t>> statics = {}) {
  return NicDesc{
      .mac = mac(last), .vlans = std::move(vlans), .allow_mac_spoofing = spoof, .statics = std::move(statics)};
}

const std::vector<std::vector<NicDesc>>& tables() {
  static const std::vector<std::vector<NicDesc>> t{
      // Access ports: two untagged, one on VLAN 10.
      {port(1, PortVlans::access_vlan(0)), port(2, PortVlans::access_vlan(0)), port(3, PortVlans::access_vlan(10))},
      // Trunks: 10 and 20 tagged without a native VLAN; 10, 20, 30 with 30
      // native and spoofing allowed; an access port on 10.
      {port(4, PortVlans::trunk({10, 20}, std::nullopt)), port(5, PortVlans::access_vlan(10)),
       port(6, PortVlans::trunk({10, 20, 30}, 30), true)},
      // Statics behind an untagged port; a trunk whose native VLAN is the
      // untagged network; an access port on 5 that may spoof.
      {port(7, PortVlans::access_vlan(0), false, {{mac(0x70), 0}, {mac(0x71), 0}}),
       port(8, PortVlans::trunk({5, 4094}, 0), false, {{mac(0x80), 5}}), port(9, PortVlans::access_vlan(5), true)},
      // No port at all.
      {},
  };
  return t;
}

[[noreturn]] void broken(const char* what, const uint8_t* f, uint32_t len, int ingress, size_t table) {
  std::fprintf(stderr, "fuzz_frames: invariant broken: %s (table %zu, ingress %d, %u bytes:", what, table, ingress,
               len);
  for (uint32_t i = 0; i < len && i < 64; i++) std::fprintf(stderr, " %02x", f[i]);
  std::fprintf(stderr, ")\n");
  std::abort();
}

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t table = data[0] % tables().size();
  const auto& ports = tables()[table];
  const int ingress = static_cast<int>(data[1] % (ports.size() + 1)) - 1;  // -1: the uplink
  const uint8_t* f = data + 2;
  const uint32_t len = static_cast<uint32_t>(size - 2);
  auto fail = [&](const char* what) { broken(what, f, len, ingress, table); };

  const Decision d = decide(f, len, ingress, ports);
  if (d.drop && !d.out.empty()) fail("a dropped frame has no output");
  if (!d.drop && d.out.empty()) fail("a forwarded frame has an output");
  if (d.drop == SwitchDrop::Malformed) return 0;
  if (len < 14 + 4 * d.tags) fail("the tags counted are in the frame");
  if (d.tags > 2) fail("at most two tags");
  if (d.vlan > 4095) fail("a VLAN is 12 bits");
  if (d.learn && ingress != kUplink) fail("only the uplink's sources are learned");

  std::set<int> seen;
  for (const Egress& e : d.out) {
    if (e.port != kUplink && (e.port < 0 || static_cast<size_t>(e.port) >= ports.size())) fail("output in range");
    if (e.port == ingress) fail("never back to the ingress");
    if (!seen.insert(e.port).second) fail("each output once");
    if (e.tagged && d.vlan == 0) fail("tagged only with a VLAN");
    if (e.port == kUplink) {
      if (e.tagged != (d.vlan != 0)) fail("the uplink takes a VLAN tagged and the untagged network untagged");
    } else {
      const NicDesc& p = ports[static_cast<size_t>(e.port)];
      if (!p.vlans.carries(d.vlan)) fail("a port gets only its VLANs");
      if (e.tagged != p.vlans.sends_tagged(d.vlan)) fail("a port gets the shape it takes");
    }
  }

  // The shapes, as a queue worker makes them in a buffer with headroom.
  constexpr uint32_t kHeadroom = 64;
  const uint32_t rest_at = 12 + 4 * d.tags;  // what follows the removed tags
  for (bool tagged : {false, true}) {
    std::vector<uint8_t> buf(kHeadroom + len);
    std::memcpy(buf.data() + kHeadroom, f, len);
    uint64_t addr = kHeadroom;
    uint32_t l = len;
    if (tagged) {
      if (d.vlan == 0 || d.vlan > 4094) continue;
      push_vlan_tag(buf.data(), addr, l, d.tags, d.vlan);
    } else {
      pop_vlan_tags(buf.data(), addr, l, d.tags);
    }
    const uint32_t head = tagged ? 16 : 12;
    if (addr + l != buf.size()) fail("the shaped frame ends where the frame did");
    if (l != len - rest_at + head) fail("the shaped length is the frame's less its tags, plus one when tagged");
    const uint8_t* s = buf.data() + addr;
    if (std::memcmp(s, f, 12) != 0) fail("the MACs stay");
    if (std::memcmp(s + head, f + rest_at, len - rest_at) != 0) fail("what follows the tags stays");
    if (tagged) {
      if (rd16(s + 12) != 0x8100) fail("one 802.1Q tag");
      if ((rd16(s + 14) & 0x0fff) != d.vlan) fail("the tag carries the frame's VLAN");
      const uint16_t pcp = d.tags ? (f[14] & 0xe0) : 0;
      if ((s[14] & 0xe0) != pcp) fail("the priority bits of the first tag stay");
    }
  }
  return 0;
}
