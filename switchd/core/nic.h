// One VM NIC, one descriptor: what the configuration, the model, the state
// file, the views, the datapath, the queue workers and the switch's decision
// all know of a NIC (Hyper-V's VM network adapter with its VLAN, port
// security and VMQ settings). Runtime facts (its state, the vmq id it was
// given, a worker's counters) live beside it, never in it.
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/abi.h"

namespace xvmq::switchd {

enum class VlanMode : uint8_t { Access, Trunk };
enum class VmqPolicy { Off, Auto };  // off: Hyper-V's emulated NIC; auto: take a vmq when one is free
enum class Steering { Software, Hardware };
// How a vmq's frames reach the VM (docs/architecture.md, "Deliveries").
// kernel: the classifier redirects through the vmq's CPUMAP entry (its
// processor) into the backend netdev's DEVMAP entry, with no user-space hop;
// xsk: into the vmq's AF_XDP socket, drained by switchd's worker (the path
// of user-space backends); auto: kernel where the backend can take
// redirected frames, else xsk, saying why.
enum class Delivery : uint8_t { Auto, Kernel, Xsk };

std::string_view to_string(VlanMode m);
std::string_view to_string(VmqPolicy p);
std::string_view to_string(Steering s);
std::string_view to_string(Delivery d);
std::optional<Delivery> delivery_from_string(std::string_view s);

// A VM NIC's VLAN settings, as Hyper-V's Set-VMNetworkAdapterVlan.
struct PortVlans {
  VlanMode mode = VlanMode::Access;
  uint16_t access = 0;                // access: its one VLAN; 0 = the untagged network
  std::vector<uint16_t> trunk_vlans;  // trunk: the VLANs it carries, as configured (order kept)
  std::bitset<4096> allowed;          // trunk: the same as a set, for the per-frame lookup
  std::optional<uint16_t> native;     // trunk: the VLAN of its untagged frames

  bool carries(uint16_t vlan) const;
  bool sends_tagged(uint16_t vlan) const;  // this port's shape of a frame on `vlan`
  // The VLANs it is on: one for access; the trunk's and its native, sorted.
  std::vector<uint16_t> carried() const;
  static PortVlans access_vlan(uint16_t vlan);
  static PortVlans trunk(const std::vector<uint16_t>& allowed, std::optional<uint16_t> native);
};

using StaticEntry = std::pair<Mac, uint16_t>;  // (MAC, VLAN) behind a NIC

struct NicDesc {
  std::string name;  // its port's name
  Mac mac{};
  std::string backend;  // host-side netdev of the VM NIC
  PortVlans vlans;
  bool allow_mac_spoofing = false;  // Hyper-V's MacAddressSpoofing
  // Static FDB entries: more MACs behind the NIC (a VM's containers or
  // nested guests), each on one of its VLANs (switchctl fdb add). The switch
  // keeps them by key and fills them in where it hands the NIC on.
  std::vector<StaticEntry> statics;
  VmqPolicy vmq_policy = VmqPolicy::Auto;  // what it asks for at connect
  Steering steering = Steering::Software;  // requested
  Delivery delivery = Delivery::Auto;      // requested
  // The vmq's processor, when one was given (vmq allocate/set --cpu);
  // otherwise the datapath spreads vmqs over the CPUs.
  std::optional<uint32_t> vmq_cpu;

  bool hardware_steering() const { return steering == Steering::Hardware; }
  bool has_static(const Mac& m, uint16_t vlan) const {
    for (const auto& [sm, sv] : statics)
      if (sm == m && sv == vlan) return true;
    return false;
  }
  bool sends_from(const Mac& m) const {
    if (m == mac || allow_mac_spoofing) return true;
    for (const auto& [sm, _] : statics)
      if (sm == m) return true;
    return false;
  }
};

// Same NIC but perhaps for its vmq policy and its vmq's processor (the order
// of trunk VLANs aside): the planner changes such a NIC with vmq steps, not
// by recreating it. A change of delivery recreates it.
bool same_but_vmq_policy(const NicDesc& a, const NicDesc& b);

// The JSON of a NIC. The state file and the views share its fields (mac,
// backend, vlan, vlan_mode, trunk_vlans, native_vlan, allow_mac_spoofing,
// vmq_policy, delivery, vmq_cpu: null when none was given; the views put
// what the datapath gave in delivery and vmq_cpu); nic.create's arguments
// are their own shape (vmq is the policy there, and only the VLAN keys of
// its mode).
nlohmann::json nic_fields(const NicDesc& nic);
// The state file's NIC, read back leniently (defaults for keys an older file lacks).
NicDesc nic_from_state(const std::string& port, const nlohmann::json& j);
// nic.create's arguments (without the port), checked: throws Refused(Usage).
NicDesc nic_from_args(const nlohmann::json& args);
// The highest CPU number an argument may name (CPU_SETSIZE - 1); whether
// switchd may run on it is the switch's to check.
inline constexpr int64_t kMaxCpu = 1023;
// A CPU number argument (vmq_cpu, cpu) named `name`: throws Refused(Usage).
uint32_t cpu_arg(const nlohmann::json& v, const std::string& name);
// ... and back: nic.create's arguments for a NIC.
nlohmann::json nic_args(const std::string& port, const NicDesc& nic);

}  // namespace xvmq::switchd
