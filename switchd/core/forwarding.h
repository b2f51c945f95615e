// The software switch's decision for one frame: where it goes and in which
// shape, or why it is dropped. Pure: no sockets, no locks; the queue
// workers execute it. It behaves like an Ethernet switch with VLANs (IEEE
// 802.1Q), Hyper-V's port security, and the uplink as a trunk that carries
// every VLAN (VLAN 0: untagged).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <unordered_map>
#include <string_view>
#include <vector>

#include "loader/abi.h"
#include "switchd/core/nic.h"

namespace xvmq::switchd {

enum class SwitchDrop : uint8_t {
  Malformed,       // shorter than an Ethernet header, or a truncated tag
  SpoofedSource,   // a VM sent with a source MAC not its NIC's
  TaggedOnAccess,  // a tagged frame from an access NIC
  VlanNotAllowed,  // a trunk NIC sent on a VLAN it does not carry, or untagged with no native VLAN
  UnknownUnicast,  // from the uplink, to no port
  NoPort,          // no port to send to: alone on its VLAN, or to the port it came from
  Count
};
std::string_view to_string(SwitchDrop d);

inline constexpr int kUplink = -1;

// The ports are the connected NICs (index = position in the ports vector).

struct Egress {
  int port;     // kUplink or an index into the ports
  bool tagged;  // leaves with one tag of the frame's VLAN, else untagged
};

struct Decision {
  std::optional<SwitchDrop> drop;
  uint16_t vlan = 0;  // the frame's VLAN inside the switch
  uint32_t tags = 0;  // tags on the frame as received (removed before shaping)
  std::vector<Egress> out;
  bool learn = false;  // the source MAC (on `vlan`) is behind the uplink
};

// Decide for a frame entering on `ingress` (kUplink or a port index).
// Unicast goes to the port that has the destination MAC on the frame's
// VLAN; a VM's frame to anyone else goes to the uplink; the uplink's frame
// to no port is dropped. Broadcast and multicast go to every other port of
// the VLAN, the uplink included when a VM sent it.
Decision decide(const uint8_t* frame, uint32_t len, int ingress, const std::vector<NicDesc>& ports);

// The ports that have a MAC (their own or a static entry), in port order:
// a unicast lookup among hundreds of ports without a scan of all of them.
struct MacHash {
  size_t operator()(const Mac& m) const {
    uint64_t v = 0;
    for (uint8_t b : m) v = v << 8 | b;
    return std::hash<uint64_t>{}(v);
  }
};
using PortIndex = std::unordered_map<Mac, std::vector<int>, MacHash>;
PortIndex index_ports(const std::vector<NicDesc>& ports);
// The same decision, with the index of `ports`.
Decision decide(const uint8_t* frame, uint32_t len, int ingress, const std::vector<NicDesc>& ports,
                const PortIndex& index);

// The same decision without allocating, for the per-frame path: the
// verdict, and a flood's egresses in chunks into the caller's array.
// decide() is made of these two.
struct Verdict {
  std::optional<SwitchDrop> drop;
  uint16_t vlan = 0;
  uint32_t tags = 0;
  bool learn = false;
  bool flood = false;         // to every other port of `vlan`, and the uplink if a VM sent it: flood_egress()
  Egress to{kUplink, false};  // not dropped, not a flood: the one egress
  bool tagged = false, untagged = false;  // the shapes its egresses take
};
Verdict judge(const uint8_t* frame, uint32_t len, int ingress, const std::vector<NicDesc>& ports,
              const PortIndex* index);
// A flood's egresses from `cursor` on (start at 0), at most `cap`, in port
// order with the uplink last; advances `cursor`. Returns how many (0: done).
size_t flood_egress(const std::vector<NicDesc>& ports, int ingress, uint16_t vlan, size_t& cursor, Egress* out,
                    size_t cap);

}  // namespace xvmq::switchd
