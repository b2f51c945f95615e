#include "loader/abi.h"

#include <linux/bpf.h>

namespace xvmq {

std::string_view reason_name(uint32_t reason) {
  switch (reason) {
    case XVMQ_REASON_MISS:
      return "miss";
    case XVMQ_REASON_BROADCAST:
      return "broadcast";
    case XVMQ_REASON_MULTICAST:
      return "multicast";
    case XVMQ_REASON_NO_SOCKET:
      return "no_socket";
    case XVMQ_REASON_WRONG_QUEUE:
      return "wrong_queue";
    case XVMQ_REASON_REDIRECT_ERROR:
      return "redirect_error";
    case XVMQ_REASON_BAD_VMQ:
      return "bad_vmq";
    case XVMQ_REASON_BAD_QUEUE:
      return "bad_queue";
    case XVMQ_REASON_RUNT:
      return "runt";
    case XVMQ_REASON_TRUNCATED_TAG:
      return "truncated_tag";
    case XVMQ_REASON_STRIP_ERROR:
      return "strip_error";
    case XVMQ_REASON_TOO_BIG:
      return "too_big";
    case XVMQ_REASON_HOST:
      return "host";
    case XVMQ_REASON_HOST_GROUP:
      return "host_group";
    default:
      return "unknown";
  }
}

std::string_view xdp_action_name(uint32_t action) {
  switch (action) {
    case XDP_ABORTED:
      return "XDP_ABORTED";
    case XDP_DROP:
      return "XDP_DROP";
    case XDP_PASS:
      return "XDP_PASS";
    case XDP_TX:
      return "XDP_TX";
    case XDP_REDIRECT:
      return "XDP_REDIRECT";
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
