// The state file (--state-dir/state.json): what a restart restores. Its
// format is version 1 and stays readable by every switchd since; this is
// the only code that reads or writes it.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "switchd/core/config.h"
#include "switchd/core/model.h"

namespace xvmq::switchd {

// Hyper-V's "management OS shares this adapter": an internal port whose
// netdev on the host carries the host's addresses (host=port).
struct HostPort {
  std::string port = "host";  // the switch port and its NIC
  std::string netdev;         // the host's end of the veth pair
  std::string backend;        // the switch's end: the NIC's backend
  uint16_t vlan = 0;
  std::vector<std::string> addresses, routes;  // moved from the uplink at attach
};

// Static FDB entries: (MAC, VLAN) -> the port whose NIC has that MAC behind it.
using FdbStatics = std::map<StaticEntry, std::string>;

struct SavedState {
  std::vector<Port> ports;
  // The uplink as attached (its uplink.attach arguments; host_netdev and
  // host_vlan only with host=port), and its host port when it has one.
  std::optional<UplinkConfig> uplink;
  std::optional<HostPort> host_port;
  FdbStatics fdb_static;
};

class StateStore {
 public:
  explicit StateStore(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  // Nothing when there is no file; throws Refused(Usage) for a file that is
  // not a version 1 state.
  std::optional<SavedState> load() const;
  // Written so that a reader sees the old or the new content, never a part;
  // throws Refused(Kernel).
  void save(const std::map<std::string, Port>& ports, const std::optional<UplinkConfig>& uplink,
            const std::optional<HostPort>& host_port, const FdbStatics& fdb_static) const;

 private:
  std::string path_;
};

}  // namespace xvmq::switchd
