// The frames of xvmq-frames (frame_tool.cpp): after the Ethernet header (and
// any tag), a header with a magic, the stream and sequence number, the
// payload length and a checksum over both, then the payload. The tool
// writes them; the captures of the tests (capture.h) read them back.
#pragma once

#include <cstddef>
#include <cstdint>

namespace xvmq::test {

constexpr uint32_t kFramesMagic = 0x58564d51;  // "XVMQ"
constexpr uint16_t kFramesEthertype = 0x88b5;  // IEEE local experimental: no stack in the VM takes it

struct [[gnu::packed]] FramesHeader {
  uint32_t magic;
  uint32_t stream;
  uint64_t seq;
  uint16_t len;  // bytes after this header
  uint32_t csum;
};

inline uint32_t fnv1a(uint32_t h, const void* p, size_t n) {
  auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
  return h;
}

// The checksum of the header's fields before csum and of its len payload bytes.
inline uint32_t frames_checksum(const FramesHeader& h, const uint8_t* payload) {
  return fnv1a(fnv1a(2166136261u, &h, offsetof(FramesHeader, csum)), payload, h.len);
}

}  // namespace xvmq::test
