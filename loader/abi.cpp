#include "loader/abi.h"

#include <linux/bpf.h>

#include <cstdio>

namespace xvmq {

std::optional<Mac> parse_mac(std::string_view text) {
  Mac mac{};
  if (text.size() != 17) return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < 6; i++) {
    int hi = hex(text[i * 3]), lo = hex(text[i * 3 + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    if (i < 5 && text[i * 3 + 2] != ':' && text[i * 3 + 2] != '-') return std::nullopt;
    mac[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return mac;
}

std::string format_mac(const Mac& m) {
  char buf[18];
  std::snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
                m[5]);
  return buf;
}

std::string_view reason_name(uint32_t reason) {
  switch (reason) {
    case XVMQ_REASON_MISS: return "miss";
    case XVMQ_REASON_BROADCAST: return "broadcast";
    case XVMQ_REASON_MULTICAST: return "multicast";
    case XVMQ_REASON_NO_SOCKET: return "no_socket";
    case XVMQ_REASON_WRONG_QUEUE: return "wrong_queue";
    case XVMQ_REASON_REDIRECT_ERROR: return "redirect_error";
    case XVMQ_REASON_BAD_VMQ: return "bad_vmq";
    case XVMQ_REASON_BAD_QUEUE: return "bad_queue";
    case XVMQ_REASON_RUNT: return "runt";
    case XVMQ_REASON_TRUNCATED_TAG: return "truncated_tag";
    case XVMQ_REASON_STRIP_ERROR: return "strip_error";
    case XVMQ_REASON_TOO_BIG: return "too_big";
    case XVMQ_REASON_HOST: return "host";
    case XVMQ_REASON_HOST_GROUP: return "host_group";
    default: return "unknown";
  }
}

std::string_view xdp_action_name(uint32_t action) {
  switch (action) {
    case XDP_ABORTED: return "XDP_ABORTED";
    case XDP_DROP: return "XDP_DROP";
    case XDP_PASS: return "XDP_PASS";
    case XDP_TX: return "XDP_TX";
    case XDP_REDIRECT: return "XDP_REDIRECT";
  }
  return "?";
}

std::string FilterKey::to_string() const {
  if (vlan == XVMQ_VLAN_ANY) return format_mac(mac) + " any vlan";
  return format_mac(mac) + " vlan " + std::to_string(vlan);
}

uint64_t Counters::total_frames() const {
  uint64_t n = 0;
  for (size_t i = 1; i < vmq.size(); i++) n += vmq[i].frames;
  for (const auto& r : reason) n += r.frames;
  return n;
}

}  // namespace xvmq
