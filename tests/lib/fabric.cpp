#include "tests/lib/fabric.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/mac.h"
#include "control/control.h"
#include "tests/lib/harness.h"

namespace xvmq::test {

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kTable = "xvmq_fabric";
constexpr const char* kDropped = "dropped";

std::string counter_name(const std::string& port, int vlan) { return port + "_v" + std::to_string(vlan); }

std::string quote(const std::string& s) { return "'" + s + "'"; }

std::string slurp_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

Fabric::Fabric(std::string prefix, std::vector<int> trunk_vlans)
    : prefix_(std::move(prefix)), vlans_(std::move(trunk_vlans)) {}

bool Fabric::add_netns(const std::string& n) {
  if (!sh_ok("ip netns add " + netns(n))) return false;
  made_ns_.push_back(n);
  return sh_ok(in(n, "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")) &&
         sh_ok("ip -n " + netns(n) + " link set lo up");
}

void Fabric::signal_all(const std::string& n, int sig) {
  std::string pids;
  sh("ip netns pids " + netns(n), &pids);
  std::istringstream s(pids);
  for (pid_t p; s >> p;)
    if (p > 1 && p != getpid()) kill(p, sig);
}

void Fabric::del_netns(const std::string& n) {
  signal_all(n, SIGKILL);
  sh("ip netns del " + netns(n));
  std::erase(made_ns_, n);
}

bool Fabric::build(const std::vector<std::string>& hosts, const std::string& switchd_path) {
  char tmpl[] = "/tmp/xvmq-fabric-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    ADD_FAILURE() << "mkdtemp: " << strerror(errno);
    return false;
  }
  dir_ = tmpl;
  if (!add_netns("fab")) return false;
  if (!sh_ok("ip -n " + netns("fab") + " link add br0 type bridge") ||
      !sh_ok("ip -n " + netns("fab") + " link set br0 up"))
    return false;

  // The trunk: per port and VLAN a counter and an accept; the rest dropped.
  std::string rules = std::string("table bridge ") + kTable + " {\n  counter " + kDropped + " { }\n";
  std::string chain = "  chain trunk {\n    type filter hook forward priority 0; policy drop;\n";
  for (const auto& name : hosts) {
    for (int v : vlans_) {
      const std::string c = counter_name("p" + name, v);
      rules += "  counter " + c + " { }\n";
      chain += "    iifname \"p" + name + "\" vlan id " + std::to_string(v) + " counter name \"" + c + "\" accept\n";
    }
  }
  rules += chain + "    counter name \"" + kDropped + "\" drop\n  }\n}\n";
  const std::string rules_file = dir_ + "/fabric.nft";
  std::ofstream(rules_file) << rules;
  if (!sh_ok(in("fab", "nft -f " + rules_file))) return false;

  for (const auto& name : hosts) {
    FabricHost h{name, netns("h" + name), "p" + name, dir_ + "/switchd-" + name + ".sock",
                 dir_ + "/switchd-" + name + ".log"};
    if (!add_netns("h" + name)) return false;
    if (!sh_ok("ip -n " + h.netns + " link add up0 type veth peer name " + h.fabric_port + " netns " + netns("fab")) ||
        !sh_ok("ip -n " + netns("fab") + " link set " + h.fabric_port + " master br0"))
      return false;
    // txvlan off: the bridge's frames leave with their tag in the frame,
    // where the classifier on the host's uplink reads it. GRO on: the uplink
    // takes the frames switchd redirects into it in XDP (docs/architecture.md).
    if (!sh_ok(in("fab", "ethtool -K " + h.fabric_port + " txvlan off gro on")) ||
        !sh_ok("ip -n " + netns("fab") + " link set " + h.fabric_port + " up") ||
        !sh_ok("ip -n " + h.netns + " link set up0 up"))
      return false;
    auto [it, added] = hosts_.emplace(name, std::move(h));
    if (!start_switchd(it->second, switchd_path)) return false;
  }
  return true;
}

bool Fabric::start_switchd(FabricHost& h, const std::string& path) {
  // `ip netns exec` gives switchd a mount namespace of its own with a fresh
  // /sys: its bpffs is mounted there, and its pins (and libxdp's state)
  // live and die with it (DESIGN.md, facts 8 and 18).
  const std::string script = "mount -t bpf bpf /sys/fs/bpf && mkdir -p /sys/fs/bpf/xvmq && exec " + path +
                             " --socket " + h.sock + " --state-dir " + dir_ + "/state-" + h.name +
                             " --pin-root /sys/fs/bpf/xvmq --max-vmqs 4";
  std::vector<std::string> args{
      "/usr/bin/env", "LIBXDP_BPFFS=/sys/fs/bpf/xvmq", "ip", "netns", "exec", h.netns, "/bin/sh", "-c", script};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log = ::open(h.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) {
    ADD_FAILURE() << "open " << h.log << ": " << strerror(errno);
    return false;
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls here: the test may have threads.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(log, 1);
    dup2(log, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(log);
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << strerror(errno);
    return false;
  }
  h.switchd = pid;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      h.switchd = -1;
      ADD_FAILURE() << "switchd of host " << h.name << " exited (status " << status << "):\n" << slurp_file(h.log);
      return false;
    }
    if (auto c = xvmq::control::ControlClient::connect(h.sock, 10s)) {
      auto r = c.value().call("uplink.attach", {{"name", "up0"}});
      if (!r || !r.value().ok) {
        ADD_FAILURE() << "host " << h.name << ": uplink.attach up0: " << (r ? r.value().message : r.error().message);
        return false;
      }
      return true;
    }
    std::this_thread::sleep_for(20ms);
  }
  ADD_FAILURE() << "switchd of host " << h.name << ": socket " << h.sock << " not ready after 10 s";
  return false;
}

bool Fabric::switchd_alive(const std::string& host) {
  auto it = hosts_.find(host);
  return it != hosts_.end() && it->second.switchd > 0 && waitpid(it->second.switchd, nullptr, WNOHANG) == 0;
}

void Fabric::stop_switchd(FabricHost& h) {
  if (h.switchd <= 0) return;
  kill(h.switchd, SIGTERM);
  for (int i = 0; i < 500; i++) {
    if (waitpid(h.switchd, nullptr, WNOHANG) == h.switchd) {
      h.switchd = -1;
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  ADD_FAILURE() << "switchd of host " << h.name << " did not stop on SIGTERM within 5 s";
  kill(h.switchd, SIGKILL);
  waitpid(h.switchd, nullptr, 0);
  h.switchd = -1;
}

void Fabric::stop_switchds() {
  for (auto& [name, h] : hosts_) stop_switchd(h);
}

std::vector<std::string> Fabric::log_problems(const std::string& host) const {
  std::vector<std::string> out;
  std::istringstream in(log_text(host));
  for (std::string line; std::getline(in, line);) {
    std::string low = line;
    for (auto& c : low) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (low.find("error") != std::string::npos || low.find("failed") != std::string::npos ||
        low.find("warning") != std::string::npos)
      out.push_back(line);
  }
  return out;
}

std::string Fabric::log_text(const std::string& host) const {
  auto it = hosts_.find(host);
  return it == hosts_.end() ? "" : slurp_file(it->second.log);
}

void Fabric::teardown() {
  stop_switchds();
  // Pods first, hosts and fabric last: deleting a namespace deletes its
  // veths, and their peers with them.
  while (!made_ns_.empty()) del_netns(made_ns_.back());
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    dir_.clear();
  }
}

uint64_t Fabric::nft_counter(const std::string& name) const {
  std::string out;
  if (sh(in("fab", std::string("nft -j list counter bridge ") + kTable + " " + name), &out) != 0) {
    ADD_FAILURE() << "nft counter " << name << ": " << out;
    return 0;
  }
  const json j = json::parse(out, nullptr, false);
  if (j.is_object() && j["nftables"].is_array())
    for (const auto& e : j["nftables"])
      if (e.contains("counter")) return e["counter"].value("packets", uint64_t{0});
  ADD_FAILURE() << "nft counter " << name << ": no counter in " << out;
  return 0;
}

uint64_t Fabric::trunk_frames(const std::string& port, int vlan) const { return nft_counter(counter_name(port, vlan)); }

uint64_t Fabric::dropped_frames() const { return nft_counter(kDropped); }

std::string Fabric::fdb_port(const std::string& mac) const {
  std::string out;
  sh("bridge -n " + netns("fab") + " -j fdb show br br0", &out);
  const json j = json::parse(out, nullptr, false);
  if (!j.is_array()) return "";
  for (const auto& e : j)
    if (e.value("mac", "") == mac && e.value("state", "") != "permanent" && e.value("master", "") == "br0")
      return e.value("ifname", "");
  return "";
}

// switchctl

bool SwitchctlPlumber::ctl(const FabricHost& h, const std::string& args) {
  return sh_ok(switchctl_ + " --socket " + h.sock + " " + args);
}

bool SwitchctlPlumber::add(const FabricHost& h, const Pod& p) {
  const std::string pod = f_.netns(p.name), host_end = "v" + p.name;
  const bool plumbed = sh_ok("ip -n " + pod + " link add eth0 address " + p.mac + " type veth peer name " + host_end +
                             " netns " + h.netns) &&
                       sh_ok("ip -n " + pod + " addr add " + p.cidr + " dev eth0") &&
                       // GRO on: eth0 takes the frames the classifier redirects into the host
                       // end (kernel delivery).
                       sh_ok(f_.in(p.name, "ethtool -K eth0 gro on")) && sh_ok("ip -n " + pod + " link set eth0 up") &&
                       sh_ok("ip -n " + h.netns + " link set " + host_end + " up") && ctl(h, "port create " + p.name) &&
                       ctl(h, "nic create " + p.name + " --mac " + p.mac + " --backend " + host_end + " --vlan " +
                                  std::to_string(p.vlan)) &&
                       ctl(h, "nic connect " + p.name);
  if (!plumbed || !garp) return plumbed;
  const int rc = send_garp(pod, "eth0", p.mac, p.ip());
  if (rc != 0) ADD_FAILURE() << "gratuitous ARP from " << p.name << ": " << strerror(-rc);
  return rc == 0;
}

bool SwitchctlPlumber::del(const FabricHost& h, const Pod& p) {
  return ctl(h, "nic disconnect " + p.name) && ctl(h, "nic delete " + p.name) && ctl(h, "port teardown " + p.name) &&
         ctl(h, "port delete " + p.name) && sh_ok("ip -n " + f_.netns(p.name) + " link del eth0");
}

// CNI

json CniPlumber::config(const FabricHost& h, const Pod& p) const {
  json ipam{{"type", "static"}, {"addresses", json::array({{{"address", p.cidr}}})}};
  if (p.ipam == "host-local") {
    const std::string subnet = "10.88.0.0/24";  // the pods' one subnet, on every VLAN
    ipam = {
        {"type", "host-local"},
        {"dataDir", f_.dir() + "/ipam-" + h.name},
        {"ranges", json::array({json::array({{{"subnet", subnet}, {"rangeStart", p.ip()}, {"rangeEnd", p.ip()}}})})}};
  }
  return {{"cniVersion", "1.0.0"}, {"name", "xvmq-fabric"}, {"type", "xvmq-cni"}, {"socket", h.sock}, {"uplink", "up0"},
          {"vlan", p.vlan},        {"vmq", "auto"},         {"mac", p.mac},       {"ipam", ipam}};
}

std::string CniPlumber::reservation(const FabricHost& h, const Pod& p) const {
  return f_.dir() + "/ipam-" + h.name + "/xvmq-fabric/" + p.ip();
}

int CniPlumber::run(const FabricHost& h, const Pod& p, const std::string& command, const json& conf, std::string* out) {
  const std::string conf_file = f_.dir() + "/cni-" + p.id + "-" + command + ".json";
  std::ofstream(conf_file) << conf.dump();
  const std::string err_file = conf_file + ".err";
  const std::string cmd = "ip netns exec " + h.netns + " env CNI_COMMAND=" + command + " CNI_CONTAINERID=" + p.id +
                          " CNI_NETNS=/run/netns/" + f_.netns(p.name) + " CNI_IFNAME=eth0 CNI_PATH=" + cni_path_ + " " +
                          cni_path_ + "/xvmq-cni < " + quote(conf_file) + " 2>" + quote(err_file);
  const int rc = sh(cmd, out);
  if (rc != 0)
    ADD_FAILURE() << "CNI " << command << " of " << p.name << " on host " << h.name << " exited " << rc << ":\n"
                  << *out << slurp_file(err_file) << "\nconfig: " << conf.dump();
  return rc;
}

bool CniPlumber::add(const FabricHost& h, const Pod& p) {
  std::string out;
  if (run(h, p, "ADD", config(h, p), &out) != 0) return false;
  const json result = json::parse(out, nullptr, false);
  bool has_address = false;
  if (result.is_object() && result["ips"].is_array())
    for (const auto& ip : result["ips"]) has_address |= ip.value("address", "") == p.cidr;
  if (!has_address) {
    ADD_FAILURE() << "CNI ADD of " << p.name << ": " << p.cidr << " not in its result: " << out;
    return false;
  }
  if (p.ipam == "host-local" && !fs::exists(reservation(h, p))) {
    ADD_FAILURE() << "CNI ADD of " << p.name << ": host-local did not reserve " << reservation(h, p);
    return false;
  }
  results_[p.id] = result;
  return true;
}

bool CniPlumber::check(const FabricHost& h, const Pod& p) {
  auto it = results_.find(p.id);
  if (it == results_.end()) {
    ADD_FAILURE() << "CNI CHECK of " << p.name << ": no ADD result for " << p.id;
    return false;
  }
  json conf = config(h, p);
  conf["prevResult"] = it->second;
  std::string out;
  return run(h, p, "CHECK", conf, &out) == 0;
}

bool CniPlumber::del(const FabricHost& h, const Pod& p) {
  json conf = config(h, p);
  if (auto it = results_.find(p.id); it != results_.end()) {
    conf["prevResult"] = it->second;
    results_.erase(it);
  }
  std::string out;
  if (run(h, p, "DEL", conf, &out) != 0) return false;
  if (p.ipam == "host-local" && fs::exists(reservation(h, p))) {
    ADD_FAILURE() << "CNI DEL of " << p.name << ": host-local still reserves " << reservation(h, p);
    return false;
  }
  return true;
}

// A gratuitous ARP

int send_garp(const std::string& netns, const std::string& dev, const std::string& mac_text, const std::string& ip) {
  auto mac = parse_mac(mac_text);
  in_addr addr{};
  if (!mac || inet_pton(AF_INET, ip.c_str(), &addr) != 1) return -EINVAL;
  std::vector<uint8_t> f(6, 0xff);  // to everyone
  f.insert(f.end(), mac->begin(), mac->end());
  const uint8_t arp_head[] = {0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01};  // ARP, Ethernet/IPv4, request
  f.insert(f.end(), std::begin(arp_head), std::end(arp_head));
  const auto* ip_bytes = reinterpret_cast<const uint8_t*>(&addr.s_addr);
  f.insert(f.end(), mac->begin(), mac->end());  // sender: this MAC at this address
  f.insert(f.end(), ip_bytes, ip_bytes + 4);
  f.insert(f.end(), 6, 0);  // target: unknown MAC, the same address
  f.insert(f.end(), ip_bytes, ip_bytes + 4);
  f.resize(60, 0);
  int result = 0;
  // setns() moves only this thread into the pod's network namespace.
  std::thread([&] {
    const int ns = ::open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
      result = -errno;
      if (ns >= 0) ::close(ns);
      return;
    }
    ::close(ns);
    const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      result = -errno;
      return;
    }
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
    sll.sll_halen = 6;
    if (sll.sll_ifindex == 0 || sendto(fd, f.data(), f.size(), 0, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) < 0)
      result = -errno;
    ::close(fd);
  }).join();
  return result;
}

}  // namespace xvmq::test
