// 802.1Q tags pushed and popped in place in a frame's buffer: the shapes a
// decided frame leaves in (untagged, or exactly one tag of its VLAN).
//
// A frame is `len` bytes at buf + addr; addr and len follow it. Popping
// moves the MAC addresses forward over the tags; pushing onto an untagged
// frame moves them 4 bytes back, so it needs 4 bytes of headroom before
// the frame (the UMEM's frame headroom).
#pragma once

#include <cstdint>
#include <cstring>

namespace xvmq::switchd {

// Remove the first `tags` tags (after the MAC addresses).
inline void pop_vlan_tags(uint8_t* buf, uint64_t& addr, uint32_t& len, uint32_t tags) {
  if (!tags) return;
  std::memmove(buf + addr + 4 * tags, buf + addr, 12);
  addr += 4 * tags;
  len -= 4 * tags;
}

// Leave exactly one tag, of `vlan`, where the frame had `tags` (0, 1 or 2):
// the priority bits of the first tag it had are kept.
inline void push_vlan_tag(uint8_t* buf, uint64_t& addr, uint32_t& len, uint32_t tags, uint16_t vlan) {
  const uint16_t pcp = tags ? static_cast<uint16_t>((buf[addr + 14] & 0xe0) << 8) : 0;
  if (tags > 1) pop_vlan_tags(buf, addr, len, tags - 1);
  if (!tags) {
    std::memmove(buf + addr - 4, buf + addr, 12);
    addr -= 4;
    len += 4;
  }
  const uint16_t tci = static_cast<uint16_t>(pcp | vlan);
  buf[addr + 12] = 0x81;
  buf[addr + 13] = 0x00;
  buf[addr + 14] = static_cast<uint8_t>(tci >> 8);
  buf[addr + 15] = static_cast<uint8_t>(tci);
}

}  // namespace xvmq::switchd
