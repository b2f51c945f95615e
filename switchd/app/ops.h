// The control ops as a table, as xdp-loader's cmds[]: each op's arguments
// are parsed into a typed struct in one place, a small handler calls the
// typed Switch method and presents its result (switchd/app/views.h). The
// names, arguments and answers are docs/protocol.md's.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "switchd/core/config.h"
#include "switchd/core/model.h"
#include "switchd/core/nic.h"

namespace xvmq::switchd {

class Switch;

// port.create (any string: the model names the rule), port.teardown, port.delete.
struct NameArgs {
  std::string name;
};
// port.create: its name (any string: the model names the rule) and who owns
// it (`owner`: a string, the container ID, or an object with container_id and
// optional ifname and network; nothing else).
struct PortCreateArgs {
  std::string name;
  std::optional<PortOwner> owner;
};
// nic.connect, nic.disconnect, nic.delete.
struct PortArgs {
  std::string port;
};
struct NicCreateArgs {
  std::string port;
  NicDesc nic;
};
// vmq.allocate and vmq.free may set the NIC's vmq policy too: only to the
// one that matches the step (auto for allocate, off for free). vmq.allocate
// may give the vmq's processor (`cpu`) too.
struct VmqArgs {
  std::string port;
  std::optional<VmqPolicy> policy;
  std::optional<uint32_t> cpu;
};
// vmq.set: the NIC's vmq processor, or none (`cpu` null): spread.
struct VmqSetArgs {
  std::string port;
  std::optional<uint32_t> cpu;
};
// fdb.del's key; fdb.add's with its port.
struct FdbArgs {
  std::string port;  // fdb.add only
  StaticEntry key;   // `mac`, and `vlan` 0..4094 (default 0)
};
struct EventsArgs {
  uint64_t since = 0;
  uint32_t wait_ms = 0;  // 0..kMaxEventsWaitMs
};
struct ConfigApplyArgs {
  std::string config;  // the file's TOML text
  std::string source = "config";
  bool dry_run = false;
};

// The parsers: each throws Refused(Usage) naming the argument at fault.
NameArgs parse_name_args(const nlohmann::json& args, bool checked);
PortCreateArgs parse_port_create_args(const nlohmann::json& args);
PortArgs parse_port_args(const nlohmann::json& args);
NicCreateArgs parse_nic_create_args(const nlohmann::json& args);
VmqArgs parse_vmq_args(const nlohmann::json& args, VmqPolicy fits, const std::string& step);
VmqSetArgs parse_vmq_set_args(const nlohmann::json& args);
FdbArgs parse_fdb_args(const nlohmann::json& args, const std::string& step);
EventsArgs parse_events_args(const nlohmann::json& args);
UplinkConfig parse_attach_args(const nlohmann::json& args);
ConfigApplyArgs parse_config_apply_args(const nlohmann::json& args);

struct Op {
  std::string_view name;
  // It may change the configuration: the state file is written and the
  // events logged after it (config.apply's steps do so each).
  bool changes;
  nlohmann::json (*run)(Switch& sw, const nlohmann::json& args);
};

// Every op, in docs/protocol.md's order.
std::span<const Op> op_table();

// One op on the switch, whose lock the caller holds: Refused(Usage) for an
// op not in the table.
nlohmann::json run_op(Switch& sw, const std::string& op, const nlohmann::json& args);

}  // namespace xvmq::switchd
