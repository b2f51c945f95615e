// Names of ports, uplinks and backends: netdev names, so that one name can
// stand for the object and its device.
#pragma once

#include <string_view>

namespace xvmq {

// Names: 1..15 characters of [A-Za-z0-9_.-], not starting with '-' or '.'.
bool valid_name(std::string_view name);

}  // namespace xvmq
