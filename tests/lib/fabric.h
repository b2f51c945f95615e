// Two hosts and the physical switch between them, for tests of switchd
// across hosts (tests/e2e/cni_fabric_test.cpp). Each host is a network
// namespace with its own uplink and its own switchd; a third namespace is
// the fabric, a switch that trunks the hosts' VLANs; each pod is a network
// namespace whose eth0 is plugged into one host's switchd.
//
//   pod (eth0) <-> host end --- switchd A --- up0 (hA) <-> pA --+
//                                                               br0 (fab) + trunk rules
//   pod (eth0) <-> host end --- switchd B --- up0 (hB) <-> pB --+
//
// This kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING is
// off: `vlan_filtering 1` is refused with EOPNOTSUPP, docs/cni.md), so the
// fabric is a Linux bridge, which carries 802.1Q frames with their tags, and
// nftables rules in the bridge family that make its ports trunks: a frame is
// forwarded only when tagged with one of the trunk's VLANs, counted per
// ingress port and VLAN; everything else is dropped and counted.
//
// Every namespace, process and file made here goes in teardown(), on failure
// too; switchd also dies with the test process (PR_SET_PDEATHSIG).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace xvmq::test {

struct FabricHost {
  std::string name;         // "A"
  std::string netns;        // its network namespace
  std::string fabric_port;  // its uplink's peer in the fabric ("pA")
  std::string sock, log;    // switchd's control socket and output
  pid_t switchd = -1;
};

struct Pod {
  std::string name;  // its namespace is Fabric::netns(name)
  std::string id;    // the container ID of its ADD (a runtime makes a new one per ADD)
  std::string mac;   // eth0's MAC
  std::string cidr;  // eth0's address, "10.88.0.1/24"
  int vlan = 0;      // access VLAN
  // The CNI IPAM plugin that gives it `cidr`: "static", or "host-local"
  // with a range of that one address and the host's own data directory.
  std::string ipam = "static";
  std::string ip() const { return cidr.substr(0, cidr.find('/')); }
};

class Fabric {
 public:
  // Names start with `prefix` (unique per run: the pid); the files go in a
  // new directory under /tmp.
  Fabric(std::string prefix, std::vector<int> trunk_vlans);
  ~Fabric() { teardown(); }
  Fabric(const Fabric&) = delete;
  Fabric& operator=(const Fabric&) = delete;

  // The fabric, then each host with its uplink and its switchd (the uplink
  // attached). False, with the failure added, when a step failed.
  bool build(const std::vector<std::string>& hosts, const std::string& switchd_path);
  // Stops the switchds (SIGTERM, reaped; SIGKILL after 5 s), kills what
  // still runs in the namespaces made here, deletes them and the directory.
  // Idempotent; stop_switchds() alone leaves their logs to read.
  void teardown();
  void stop_switchds();
  // The lines of host's switchd log that say error, failed or warning (as
  // Open vSwitch's check_logs).
  std::vector<std::string> log_problems(const std::string& host) const;
  // What host's switchd wrote; "" for a host not built.
  std::string log_text(const std::string& host) const;

  std::string netns(const std::string& n) const { return prefix_ + n; }
  std::string in(const std::string& n, const std::string& cmd) const { return "ip netns exec " + netns(n) + " " + cmd; }
  // A namespace with lo up and IPv6 off (no router solicitations or MLD
  // untagged on the trunk), removed in teardown().
  bool add_netns(const std::string& n);
  void del_netns(const std::string& n);
  // Sends `sig` to every process in namespace n (each one this test started there).
  void signal_all(const std::string& n, int sig);

  const FabricHost& host(const std::string& name) const { return hosts_.at(name); }
  const std::string& dir() const { return dir_; }
  bool switchd_alive(const std::string& host);

  // Frames the fabric forwarded from `port` tagged `vlan`, and the frames it
  // dropped (untagged or another VLAN), from the nftables counters.
  uint64_t trunk_frames(const std::string& port, int vlan) const;
  uint64_t dropped_frames() const;
  // The fabric port behind which the bridge has learned `mac`, or "".
  std::string fdb_port(const std::string& mac) const;

 private:
  bool start_switchd(FabricHost& h, const std::string& path);
  void stop_switchd(FabricHost& h);
  uint64_t nft_counter(const std::string& name) const;

  std::string prefix_, dir_;
  std::vector<int> vlans_;
  std::map<std::string, FabricHost> hosts_;
  std::vector<std::string> made_ns_;
};

// How a pod is plugged into its host's switchd, and unplugged: two ways,
// so that the fabric can be tested without the CNI plugin, and the plugin
// against the same fabric. The pod's namespace exists before add() (the
// runtime makes it), and after del().
class PodPlumber {
 public:
  virtual ~PodPlumber() = default;
  virtual bool add(const FabricHost& h, const Pod& p) = 0;
  virtual bool del(const FabricHost& h, const Pod& p) = 0;
  // What the plumber can check of a pod it added (CNI CHECK); true when nothing.
  virtual bool check(const FabricHost&, const Pod&) { return true; }
  virtual std::string what() const = 0;
};

// By hand: a veth (eth0 in the pod, "v<pod>" in the host), the address, and
// switchctl port create, nic create, nic connect; then a gratuitous ARP, as
// the plugin sends, unless `garp` is false. del(): nic disconnect, nic
// delete, port teardown, port delete, and the veth.
class SwitchctlPlumber : public PodPlumber {
 public:
  SwitchctlPlumber(const Fabric& f, std::string switchctl) : f_(f), switchctl_(std::move(switchctl)) {}
  bool add(const FabricHost& h, const Pod& p) override;
  bool del(const FabricHost& h, const Pod& p) override;
  std::string what() const override { return "switchctl"; }
  bool garp = true;

 private:
  bool ctl(const FabricHost& h, const std::string& args);
  const Fabric& f_;
  std::string switchctl_;
};

// As a runtime does: the plugin run in the host's namespace with the CNI_*
// variables and the network configuration on stdin, IPAM by the pod's
// plugin. add() runs ADD (its result must have the pod's address; with
// host-local, the address is then reserved in the host's data directory),
// check() CHECK with ADD's result as prevResult, del() DEL (the reservation
// gone). `cni_path` holds xvmq-cni and the IPAM plugins.
class CniPlumber : public PodPlumber {
 public:
  CniPlumber(const Fabric& f, std::string cni_path) : f_(f), cni_path_(std::move(cni_path)) {}
  bool add(const FabricHost& h, const Pod& p) override;
  bool del(const FabricHost& h, const Pod& p) override;
  bool check(const FabricHost& h, const Pod& p) override;
  std::string what() const override { return "xvmq-cni"; }
  nlohmann::json config(const FabricHost& h, const Pod& p) const;
  // host-local's file that reserves the pod's address on host h.
  std::string reservation(const FabricHost& h, const Pod& p) const;

 private:
  // The plugin's exit status; its stdout in *out.
  int run(const FabricHost& h, const Pod& p, const std::string& command, const nlohmann::json& conf, std::string* out);
  const Fabric& f_;
  std::string cni_path_;
  std::map<std::string, nlohmann::json> results_;  // ADD's result by container ID
};

// A gratuitous ARP (a request for `ip` from `mac` at `ip`, broadcast) sent
// from `dev` in the network namespace /run/netns/`netns`. 0 or -errno.
int send_garp(const std::string& netns, const std::string& dev, const std::string& mac, const std::string& ip);

}  // namespace xvmq::test
