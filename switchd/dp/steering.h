// Hardware steering of a vmq: an RX flow classification rule in the NIC
// (ethtool's "flow-type ether dst MAC [vlan VID m 0xf000] action Q") sends
// the vmq's frames to its own receive queue, where XDP still classifies
// them. Everything goes through the SIOCETHTOOL ioctl. When the NIC cannot,
// the vmq is steered in software (XDP on whatever queue RSS picks).
#pragma once

#include <linux/ethtool.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loader/abi.h"
#include "loader/netdev.h"
#include "common/result.h"

namespace xvmq {

// One vmq's rule: frames to `mac` (on VLAN `vlan`, or on any VLAN and
// untagged when nullopt) go to receive queue `queue`. VID 0 matches
// priority-tagged frames only: untagged frames need vlan = nullopt.
struct SteeringRule {
  Mac mac{};
  std::optional<uint16_t> vlan;
  uint32_t queue = 0;
  std::optional<uint32_t> location;  // nullopt: any free location

  std::string to_string() const;  // "02:00:00:00:00:01 vlan 10 -> queue 3 loc 1023"
  bool operator==(const SteeringRule&) const = default;
};

// The ETHTOOL_SRXCLSRLINS command for a rule; refuses a multicast or zero
// MAC, a VLAN above 4094, a queue not below rx_queues and a special
// location value.
Result<ethtool_rxnfc> encode_rule(const SteeringRule& rule, uint32_t rx_queues);

// A rule read back with ETHTOOL_GRXCLSRULE; refuses rules of another shape
// (another flow type, other fields matched, RSS, a VF or a drop action).
Result<SteeringRule> decode_rule(const ethtool_rx_flow_spec& fs);

// Where to insert when the driver cannot choose (no RX_CLS_LOC_SPECIAL in
// ETHTOOL_GRXCLSRLCNT's data): the highest free location, as ethtool does,
// so that rules placed by hand at low locations keep priority.
std::optional<uint32_t> free_location(uint32_t table_size, const std::vector<uint32_t>& used);

// A rule in the NIC's table; rule is nullopt for rules that are not a
// vmq's (placed by someone else), with `other` saying why.
struct InstalledRule {
  uint32_t location = 0;
  std::optional<SteeringRule> rule;
  std::string other;
};

class HardwareSteering {
 public:
  // The device, if its driver can classify RX flows (ETHTOOL_GRXCLSRLCNT)
  // and rx-ntuple-filter is not switched off; otherwise an error naming the
  // device, its driver and the kernel's words.
  static Result<HardwareSteering> probe(const std::string& ifname);
  // The device without the capability check: each call then reports the
  // kernel's own refusal.
  static Result<HardwareSteering> open(const std::string& ifname);

  const NetdevInfo& netdev() const { return dev_; }
  uint32_t table_size() const { return table_size_; }  // 0 when unknown

  // Inserts the rule at `location`, or at a free one; returns where.
  Result<uint32_t> add_rule(const Mac& mac, std::optional<uint16_t> vlan, uint32_t queue,
                            std::optional<uint32_t> location = std::nullopt);
  Status remove_rule(uint32_t location);
  Result<std::vector<InstalledRule>> rules() const;

 private:
  explicit HardwareSteering(NetdevInfo dev) : dev_(std::move(dev)) {}

  NetdevInfo dev_;
  uint32_t table_size_ = 0;
};

enum class SteeringMode { software, hardware };

std::string_view steering_mode_name(SteeringMode mode);
std::optional<SteeringMode> parse_steering_mode(std::string_view name);

struct SteeringChoice {
  SteeringMode mode = SteeringMode::software;
  std::string reason;  // why not hardware, when it was requested: "driver 'veth' has no RX flow classification"

  // For status: "software (hardware requested; driver 'veth' has no RX flow classification)".
  std::string describe() const;
};

// The mode in use given the mode requested and what hardware steering
// answered (nullptr: it works).
SteeringChoice choose_steering(SteeringMode requested, const Error* hardware_failure);

template <class T>
SteeringChoice choose_steering(SteeringMode requested, const Result<T>& hardware) {
  return choose_steering(requested, hardware.ok() ? nullptr : &hardware.error());
}

// A receive queue reserved for hardware-steered vmqs, and its CPU.
struct DedicatedQueue {
  uint32_t queue = 0;
  int cpu = -1;
};

// A NIC that asked for hardware steering of its vmq.
struct HardwareSteeringAsk {
  std::string uplink;
  Mac mac{};
  uint16_t vlan = 0;                     // 0: untagged, the rule matches any VLAN
  uint32_t vmq = 0;                      // 0: none, nothing to steer
  std::vector<DedicatedQueue> reserved;  // in the order they are handed out
  std::vector<uint32_t> taken;           // reserved queues other vmqs hold
  // true: program the NIC's RX flow rule (ethtool); false: the NIC already
  // steers, by rules other tooling made.
  bool program_rule = true;
};

struct SteeringDecision {
  bool hardware = false;
  std::string reason;  // why software
  int queue = -1;      // the dedicated queue
  int cpu = -1;
  std::optional<uint32_t> rule_location;  // the rule programmed, to remove at disconnect
};

// Hardware steering for one vmq: the first free reserved queue and, with
// program_rule, the NIC's rule for it. Software, with the reason, when
// there is no vmq, no reserved queue, none free, or the NIC cannot or
// refuses the rule.
SteeringDecision decide_hardware_steering(const HardwareSteeringAsk& ask);

}  // namespace xvmq
