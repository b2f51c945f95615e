// xvmq-cni's commands (CNI 1.0.0): ADD, DEL, CHECK, VERSION.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "tools/cni/netconf.h"

namespace xvmq::cni {

// ADD: the result; CHECK and DEL: null. Or the error. `text` is the
// configuration as read (what the IPAM plugin gets on its stdin).
std::optional<nlohmann::json> cmd_add(const NetConf& conf, const RuntimeEnv& env, const std::string& text,
                                      CniError* err);
std::optional<nlohmann::json> cmd_del(const NetConf& conf, const RuntimeEnv& env, const std::string& text,
                                      CniError* err);
std::optional<nlohmann::json> cmd_check(const NetConf& conf, const RuntimeEnv& env, const std::string& text,
                                        CniError* err);
nlohmann::json version_result();

}  // namespace xvmq::cni
