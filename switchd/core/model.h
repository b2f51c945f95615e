// The switch as configuration: ports, VM NICs, the vmq pool and the
// lifecycle that moves them, in the order of Hyper-V's extensible switch:
// port create, NIC create, NIC connect, NIC disconnect, NIC delete, port
// teardown, port delete. Pure logic: no kernel object is touched here, so
// every refusal is decided before anything changes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/names.h"
#include "loader/abi.h"
#include "switchd/core/nic.h"

namespace xvmq::switchd {

// The error kinds of docs/protocol.md.
enum class ErrorKind { Usage, NotFound, WrongState, Exists, Exhausted, Kernel, Permission };
std::string_view to_string(ErrorKind kind);

struct SwitchError {
  ErrorKind kind;
  std::string message;
};

// A refused step: no state changed. Thrown by Model and Switch, caught at
// the control API, where it becomes an error response.
struct Refused : std::exception {
  SwitchError error;
  Refused(ErrorKind kind, std::string message) : error{kind, std::move(message)} {}
  const char* what() const noexcept override { return error.message.c_str(); }
};

enum class PortState { Created, TornDown };
enum class NicState { Created, Connected, Disconnected };

std::string_view to_string(PortState s);
std::string_view to_string(NicState s);

struct Nic {
  NicDesc desc;
  NicState state = NicState::Created;
  std::optional<uint32_t> vmq_id;  // the vmq it was given (the state file's "vmq")
};

// Who made a port, for an orchestrator that must find it again (a CNI
// plugin's DEL after a restart): the container, its interface, the network.
// Kept with the port, persisted, shown; switchd does nothing else with it.
struct PortOwner {
  std::string container_id;  // 1..kMaxOwnerField of [A-Za-z0-9_.-] (CNI_CONTAINERID's rule)
  std::string ifname;        // optional: the interface in the container (1..15, no '/', ':' or space)
  std::string network;       // optional: the network's name, the rule of container_id
  bool operator==(const PortOwner&) const = default;
};
inline constexpr std::size_t kMaxOwnerField = 255;
// "" when the owner keeps the rules above, else what is wrong, naming the field.
std::string check_owner(const PortOwner& owner);
// {"container_id", "ifname", "network"}, the last two only when set: the
// form show, port results and the state file use.
nlohmann::json owner_json(const PortOwner& owner);

struct Port {
  std::string name;
  PortState state = PortState::Created;
  std::optional<Nic> nic;
  std::optional<PortOwner> owner;
};

struct Event {
  uint64_t seq = 0;
  std::chrono::system_clock::time_point time;
  std::string object;  // "port vm1", "nic vm1", "vmq 2", "uplink up0"
  std::string from, to;
  std::string step;  // "port.create", ...
};

// Names: 1..15 characters of [A-Za-z0-9_.-], not starting with '-' or '.'.
using xvmq::valid_name;
inline constexpr const char* kNameRule = "use 1 to 15 characters of A-Z a-z 0-9 _ . -, not starting with - or .";

// Ports one switchd keeps at most (the host port among them): a bound on the
// memory, the state file and the time of every `show` that requests can
// make switchd spend. Far above what one host's NIC can serve.
inline constexpr std::size_t kMaxPorts = 4096;

class Model {
 public:
  explicit Model(uint32_t max_vmqs = 2);

  uint32_t max_vmqs() const { return max_vmqs_; }
  const std::map<std::string, Port>& ports() const { return ports_; }
  const Port& port(const std::string& name) const;  // throws NotFound
  const Nic& nic(const std::string& port) const;    // throws NotFound / WrongState

  // Each step checks everything first and throws Refused, or changes the
  // model and records an event. The datapath follows the model.
  void port_create(const std::string& name, std::optional<PortOwner> owner = std::nullopt);
  void port_teardown(const std::string& name);
  void port_delete(const std::string& name);
  void nic_create(const std::string& port, NicDesc nic);  // the NIC takes the port's name
  void nic_connect(const std::string& port);
  void nic_disconnect(const std::string& port);
  void nic_delete(const std::string& port);
  uint32_t vmq_allocate(const std::string& port);  // throws Exhausted when the pool is empty
  void vmq_free(const std::string& port);
  // The NIC's vmq policy (what it asks for at connect), by `step`; no event
  // when it already has that policy.
  void set_vmq_policy(const std::string& port, VmqPolicy policy, const std::string& step);
  // The NIC's vmq processor (none: spread), by `step`; no event when it
  // already has that one. Whether the CPU may be used is the switch's to check.
  void set_vmq_cpu(const std::string& port, std::optional<uint32_t> cpu, const std::string& step);

  // Check a step without doing it (the datapath may need to act first).
  void check_nic_connect(const std::string& port) const;
  void check_nic_disconnect(const std::string& port) const;
  void check_vmq_allocate(const std::string& port) const;

  // vmq ids in use and free, 1..max_vmqs.
  std::vector<uint32_t> free_vmqs() const;

  const std::deque<Event>& events() const { return events_; }
  void record(const std::string& object, std::string_view from, std::string_view to, const std::string& step);

  // Restore a saved port as it was (restart); no event.
  void restore(Port port);

 private:
  Port& mut_port(const std::string& name);
  Nic& mut_nic(const std::string& port);
  // A NIC step from one state to the next: checked, or checked and done.
  void check_nic_step(const std::string& port, NicState from, const std::string& step) const;
  void move_nic(const std::string& port, NicState from, NicState to, const std::string& step);
  [[noreturn]] void wrong_nic_state(const std::string& port, const Nic& nic, const std::string& step) const;

  uint32_t max_vmqs_;
  std::map<std::string, Port> ports_;
  std::deque<Event> events_;
  uint64_t next_seq_ = 1;
};

}  // namespace xvmq::switchd
