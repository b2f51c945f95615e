// Names of ports, uplinks and backends: netdev names, so that one name can
// stand for the object and its device.
#pragma once

#include <string_view>

namespace xvmq {

// Names: 1..15 characters of [A-Za-z0-9_.-], not starting with '-' or '.'.
bool valid_name(std::string_view name);

// A VM NIC's backend: a host netdev (a valid_name), or `vhost-user:PATH`,
// the Unix socket switchd serves as a vhost-user backend for a QEMU guest.
// PATH is absolute, fits sockaddr_un (at most 107 bytes) and has no NUL.
inline constexpr std::string_view kVhostUserPrefix = "vhost-user:";
bool is_vhost_user(std::string_view backend);
std::string_view vhost_user_path(std::string_view backend);  // empty unless is_vhost_user
bool valid_backend(std::string_view backend);
inline constexpr std::string_view kBackendRule =
    "a netdev name (1 to 15 of A-Z a-z 0-9 _ . -, not starting with - or .) or vhost-user:PATH with an absolute "
    "PATH of at most 107 bytes";

}  // namespace xvmq
