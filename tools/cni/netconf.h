// What xvmq-cni is asked to do: the network configuration on stdin and the
// runtime's CNI_* variables (CNI specification 1.0.0), parsed strictly: a
// field or variable at fault is named, and every one of them, not the first.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/mac.h"

namespace xvmq::cni {

inline constexpr const char* kCniVersion = "1.0.0";

// The spec's error codes (CNI 1.0.0, "Error"), and ours from 100 on.
enum Code : int {
  kIncompatibleVersion = 1,
  kUnsupportedField = 2,
  kUnknownContainer = 3,
  kInvalidEnv = 4,
  kIoFailure = 5,
  kDecodeFailure = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  kSwitchdRefused = 100,  // switchd said no (its kind and words in msg)
  kWrongUplink = 101,     // switchd has no uplink, or another one
  kAlreadyExists = 102,   // the interface, veth or port is there already
  kKernel = 103,          // rtnetlink or a socket refused
  kIpamFailed = 104,      // the IPAM plugin is missing or answered nothing usable
  kCheckFailed = 105,     // CHECK found something other than prevResult says
};

// What the plugin prints on stdout: `j` as one line of JSON, never an
// exception. A message may quote the input's own bytes (a parse error's
// "last read"), which need not be UTF-8: those are replaced (U+FFFD).
std::string print_json(const nlohmann::json& j);

// The spec's error result: {"cniVersion", "code", "msg", "details"}.
struct CniError {
  int code = kIoFailure;
  std::string msg;
  std::string details;
  nlohmann::json to_json() const;
};

struct Trunk {
  std::vector<uint16_t> vlans;  // 1..4094, sent tagged
  std::optional<uint16_t> native_vlan;
};

struct NetConf {
  std::string cni_version, name, type;
  std::string socket = "/run/xvmq/switchd.sock";
  std::string uplink;
  uint16_t vlan = 0;
  std::optional<Trunk> trunk;
  std::string vmq = "auto";
  std::string delivery;  // "" when not given: switchd's default
  std::optional<Mac> mac;
  std::optional<Mac> runtime_mac;  // runtimeConfig.mac (the "mac" capability)
  nlohmann::json ipam;             // the ipam object as given
  std::string ipam_type;
  nlohmann::json prev_result;  // null when not given
};

// The configuration's text -> NetConf, or the error (code 6 for text that is
// not a JSON object, 1 for another cniVersion, else 7) naming every field at fault.
std::optional<NetConf> parse_netconf(const std::string& text, CniError* err);

struct RuntimeEnv {
  std::string command;  // ADD, DEL, CHECK, VERSION
  std::string container_id, netns, ifname, path;
  std::optional<Mac> args_mac;  // CNI_ARGS MAC=
};

// The CNI_* variables, checked for the command (code 4 naming each one at fault).
std::optional<RuntimeEnv> parse_env(CniError* err);

// The MAC the container's interface gets: runtimeConfig.mac, else CNI_ARGS
// MAC=, else the configuration's mac; none: the kernel's random one (locally
// administered, unicast).
std::optional<Mac> wanted_mac(const NetConf& conf, const RuntimeEnv& env);

// The host end's name, also the switchd port's: "xv" and 12 hex digits of a
// hash of the container ID and the interface name. Stable, 14 characters.
std::string host_name(const std::string& container_id, const std::string& ifname);

}  // namespace xvmq::cni
