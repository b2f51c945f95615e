// MAC addresses as the switch, its CLI and its tests read and write them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace xvmq {

using Mac = std::array<uint8_t, 6>;

// "02:00:00:00:00:01" (also '-' separated); nullopt when malformed.
std::optional<Mac> parse_mac(std::string_view text);
std::string format_mac(const Mac& mac);
inline bool is_multicast(const Mac& mac) { return mac[0] & 1; }

}  // namespace xvmq
