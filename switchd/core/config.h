// The declarative configuration (docs/configuration.md): a TOML file
// that describes the uplink, the ports and their NICs; the planner that finds
// the lifecycle steps from the running switch to it; and the running switch
// written back as such a file. Pure logic: switchd executes the steps
// (Switch, op config.apply), one at a time, through the same code as the ops.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "control/control.h"
#include "loader/classifier.h"
#include "switchd/core/model.h"

namespace xvmq::switchd {

struct UplinkConfig {
  std::string name;
  AttachMode mode = AttachMode::Auto;
  std::string host;  // "stack", "port" or "" (the uplink carries no host addresses)
  // With host = "port": the host's netdev (default_host_netdev() when the
  // file leaves it out) and the host port's access VLAN.
  std::string host_netdev;
  uint16_t host_vlan = 0;
  bool operator==(const UplinkConfig&) const = default;
};

struct PortConfig {
  std::string name;
  std::optional<NicDesc> nic;
  bool connected = true;  // the NIC's: connected, or only created
  int line = 0;           // of its [[port]] table in the file; 0 when not from a file
};

struct SwitchConfig {
  std::optional<UplinkConfig> uplink;
  std::map<std::string, PortConfig> ports;
};

// What a configuration may make switchd spend, checked before toml++ reads
// it: the file's size (so that config.apply of the largest file fits one
// request line of 1 MiB, escaped), how deep arrays and inline tables nest,
// and how many parts a dotted key has (toml++ builds a table per part and
// recurses per level, to build and to destroy). Ports: kMaxPorts.
inline constexpr std::size_t kMaxConfigBytes = control::kMaxConfigBytes;
inline constexpr std::size_t kMaxConfigDepth = 16;
inline constexpr std::size_t kMaxKeyParts = 16;
// config.apply's `source` (a file's name, repeated in messages and logs).
inline constexpr std::size_t kMaxSourceBytes = 4096;

// Parses and validates a configuration with the rules of the ops
// (nic_from_args, Model). An error is "SOURCE:LINE: reason", the line
// of the key or table at fault. Unknown keys are errors; so is a file beyond
// the limits above (the error names the limit).
Result<SwitchConfig> parse_config(std::string_view text, const std::string& source);

// The running switch as a configuration: a Disconnected NIC is connected = false.
SwitchConfig current_config(const std::map<std::string, Port>& ports, const std::optional<UplinkConfig>& uplink);

// A configuration as TOML that parse_config reads back to the same thing.
std::string to_toml(const SwitchConfig& config);

// The host port's netdev when uplink.attach names none: the uplink's name,
// cut to 10 characters, and "-host".
std::string default_host_netdev(const std::string& uplink);

// One lifecycle step: a control op with its arguments.
struct Step {
  std::string op;
  nlohmann::json args = nlohmann::json::object();
  // The switchctl command that does the same, e.g. "switchctl nic connect vm1".
  std::string command() const;
  bool operator==(const Step&) const = default;
};

// The steps from the running switch to `desired`, in Hyper-V's order:
// removals (nic disconnect, nic delete, port teardown, port delete, uplink
// detach), then changes (vmq free, vmq set, vmq allocate, uplink attach),
// then additions (port create, nic create, nic connect); within a kind, by
// port name. A NIC whose vmq policy changed gets a vmq step (with `policy`),
// one whose vmq processor changed a vmq.set (before a vmq.allocate, so that
// a new vmq starts on its processor); any other change (its delivery among
// them) recreates it (disconnect, delete, create, connect); an unchanged NIC
// gets no step. A Disconnected NIC can only be deleted, so it
// is recreated; a changed uplink recreates every NIC.
std::vector<Step> plan(const std::map<std::string, Port>& ports, const std::optional<UplinkConfig>& uplink,
                       const SwitchConfig& desired);

}  // namespace xvmq::switchd
