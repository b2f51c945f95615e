// The IPAM plugin, run as the CNI specification says a plugin delegates:
// $CNI_PATH/<ipam.type>, with this process's environment (CNI_COMMAND as
// asked) and the same network configuration on stdin.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "tools/cni/netconf.h"

namespace xvmq::cni {

// The plugin's result (ADD: its IPs, routes, DNS; DEL and CHECK: null), or
// the error: the plugin's own (its code, "ipam <type>: " before its msg),
// or kIpamFailed when it is missing or said nothing usable.
std::optional<nlohmann::json> run_ipam(const std::string& type, const std::string& cni_path, const std::string& command,
                                       const std::string& conf, CniError* err);

// The file the plugin would run, "" when no directory of CNI_PATH has it.
std::string find_plugin(const std::string& type, const std::string& cni_path);

}  // namespace xvmq::cni
