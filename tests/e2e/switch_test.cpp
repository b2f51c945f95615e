// The software switch with real network stacks: the built switchd between
// network namespaces (tests/lib/switchd_fixture.h), its VM NICs on access and
// trunk VLANs, with IPv4 (ping, iperf3) and with raw, sequence-numbered
// frames (xvmq-frames) captured on every port.
//
//   ext: ext0 <-> up0 (uplink, 2 queues)      vmN: eth0 (02:00:00:00:00:0N) <-> vmN-host
//
// Captures are AF_PACKET sockets of this process, opened from a thread that
// entered the port's namespace (eth0 in a VM, ext0 outside). A received
// frame's outer VLAN tag is usually no longer in its bytes: the kernel moved
// it to the skb's metadata (veth and the receive path untag), so it is read
// back from PACKET_AUXDATA (tp_vlan_tci, TP_STATUS_VLAN_VALID).
//
// The expected fate of each frame comes from an oracle written from the
// rules of docs/protocol.md and switchd/core/forwarding.h, independently of
// decide(): a VM's frame must carry its NIC's MAC (unless spoofing is
// allowed); an access NIC sends and receives untagged frames of its VLAN; a
// trunk NIC sends and receives its VLANs tagged and its native VLAN
// untagged; the uplink carries every VLAN (VLAN 0 untagged); unicast goes to
// the port with that MAC on that VLAN, else (from a VM) to the uplink, else
// (from the uplink) nowhere; broadcast and multicast go to every other port
// of the VLAN, the uplink included when a VM sent it.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "common/mac.h"
#include "tests/lib/capture.h"
#include "tests/lib/frames.h"
#include "tests/lib/switchd_fixture.h"

namespace {

using namespace std::chrono_literals;
using namespace xvmq::test;
using xvmq::control::Response;

constexpr const char* kOutsideMac = "02:00:00:00:00:fe";  // xvmq-frames' default source: the outside host
constexpr const char* kUnknownMac = "02:00:00:00:00:99";  // nobody's
constexpr const char* kBroadcast = "ff:ff:ff:ff:ff:ff";
constexpr const char* kMulticast = "01:00:5e:00:00:fb";

// The MACs here are the constants above and mac_of()'s: all well-formed.
xvmq::Mac mac(const std::string& s) { return xvmq::parse_mac(s).value(); }

// `len` bytes of the test EtherType that are not an xvmq-frames frame.
Bytes raw_frame(const std::string& dst, const std::string& src, size_t len, uint8_t fill) {
  return build_frame({.dst = dst, .src = src, .ethertype = kFramesEthertype, .payload = len - 14, .fill = fill});
}

// ---------------------------------------------------------------------------
// The oracle.

struct PortSpec {
  int vm = 0;
  bool trunk = false;
  uint16_t access = 0;
  std::vector<uint16_t> allowed;
  std::optional<uint16_t> native;
  std::string vmq = "auto";
  bool allow_spoofing = false;
  // nic.create's delivery; "": the fixture's (delivery_) when the NIC asks for a vmq.
  std::string delivery;

  bool carries(uint16_t v) const {
    if (!trunk) return v == access;
    return std::find(allowed.begin(), allowed.end(), v) != allowed.end() || native == v;
  }
  // The shape of a frame of VLAN v leaving to this port.
  int shape(uint16_t v) const { return trunk && native != v ? v : kUntagged; }
  std::string name() const { return "vm" + std::to_string(vm); }
  std::string describe() const {
    std::string s = name() + " (";
    if (!trunk) {
      s += "access VLAN " + std::to_string(access);
    } else {
      s += "trunk {";
      for (size_t i = 0; i < allowed.size(); i++) s += (i ? "," : "") + std::to_string(allowed[i]);
      s += "}" + (native ? " native " + std::to_string(*native) : std::string(" no native"));
    }
    return s + ", vmq " + vmq + ")";
  }
};

struct Outcome {
  std::map<std::string, int> to;  // port ("ext" = the uplink) -> shape there
  std::string drop;               // the switch's drop reason, or ""
  int vlan = -1;                  // the frame's VLAN inside the switch (-1: dropped before one was known)
};

bool is_group(const std::string& m) { return xvmq::is_multicast(mac(m)); }

Outcome expect(const std::vector<PortSpec>& ports, const std::string& from, int tag, const std::string& src,
               const std::string& dst) {
  Outcome o;
  const PortSpec* in = nullptr;
  for (const auto& p : ports)
    if (p.name() == from) in = &p;
  uint16_t v;
  if (!in) {
    v = tag == kUntagged ? 0 : static_cast<uint16_t>(tag);
  } else {
    if (src != vm_mac(in->vm) && !in->allow_spoofing) return o.drop = "spoofed_source", o;
    if (!in->trunk) {
      if (tag != kUntagged) return o.drop = "tagged_on_access", o;
      v = in->access;
    } else if (tag != kUntagged) {
      if (!in->carries(static_cast<uint16_t>(tag))) return o.drop = "vlan_not_allowed", o;
      v = static_cast<uint16_t>(tag);
    } else {
      if (!in->native) return o.drop = "vlan_not_allowed", o;
      v = *in->native;
    }
  }
  o.vlan = v;
  const int uplink_shape = v ? v : kUntagged;
  if (is_group(dst)) {
    for (const auto& p : ports)
      if (&p != in && p.carries(v)) o.to[p.name()] = p.shape(v);
    if (in) o.to["ext"] = uplink_shape;
    if (o.to.empty()) o.drop = "no_port";
    return o;
  }
  for (const auto& p : ports) {
    if (vm_mac(p.vm) != dst || !p.carries(v)) continue;
    if (&p == in) return o.drop = "no_port", o;
    o.to[p.name()] = p.shape(v);
    return o;
  }
  if (!in) return o.drop = "unknown_unicast", o;
  o.to["ext"] = uplink_shape;
  return o;
}

// One stream of sequence-numbered frames from one port.
struct Flow {
  uint32_t stream = 0;
  std::string from;  // "ext" or "vmN"
  int tag = kUntagged;
  std::string src, dst;
  uint64_t count = 0;
  uint32_t size = 64;  // bytes as sent, tag included
  Outcome want;
  std::string what() const {
    return "stream " + std::to_string(stream) + ": " + from + " " + src + " -> " + dst + " " + tag_str(tag) + ", " +
           std::to_string(count) + " frames of " + std::to_string(size) + " bytes";
  }
  // Its length on the wire when it leaves in `shape`.
  size_t len_as(int shape) const { return size - (tag == kUntagged ? 0 : 4) + (shape == kUntagged ? 0 : 4); }
};

// ---------------------------------------------------------------------------

class SwitchTest : public SwitchdFixture {
 protected:
  SwitchTest() {
    vm_count_ = 4;
    offloads_off_ = true;
    prefix_tag_ = "sw";
  }

  // port.create, nic.create with the spec's VLANs, nic.connect: the NIC.
  json add_port(const PortSpec& p) {
    call("port.create", {{"name", p.name()}});
    return add_nic(p);
  }

  json add_nic(const PortSpec& p) {
    json nic{{"port", p.name()}, {"mac", mac_of(p.vm)}, {"backend", p.name() + "-host"}, {"vmq", p.vmq}};
    if (p.trunk) {
      nic["vlan_mode"] = "trunk";
      nic["trunk_vlans"] = p.allowed;
      if (p.native) nic["native_vlan"] = *p.native;
    } else {
      nic["vlan_mode"] = "access";
      nic["vlan"] = p.access;
    }
    if (p.allow_spoofing) nic["allow_mac_spoofing"] = true;
    const std::string delivery = !p.delivery.empty() ? p.delivery : p.vmq == "off" ? "" : delivery_;
    if (!delivery.empty()) nic["delivery"] = delivery;
    call("nic.create", nic);
    json r = call("nic.connect", {{"port", p.name()}});
    EXPECT_EQ(r.value("state", ""), "connected") << p.describe() << ": " << r.dump();
    return r;
  }

  void add_ports(const std::vector<PortSpec>& ports) {
    attach();
    for (const auto& p : ports) add_port(p);
    json show = call("show");
    for (const auto& p : ports) {
      json n = nic_of(show, p.name());
      std::printf("[ port     ] %s: path %s, vmq %s, delivery %s %s\n", p.describe().c_str(),
                  n.value("path", "?").c_str(), n["vmq"].dump().c_str(), n.value("delivery", "?").c_str(),
                  n.value("delivery_why", "").c_str());
    }
  }

  int cpu_for(uint32_t i) const { return cpu_count() >= 2 ? static_cast<int>(i % 2) : 0; }

  Flow flow(const std::vector<PortSpec>& ports, const std::string& from, int tag, const std::string& dst,
            uint64_t count, std::string src = "", uint32_t size = 64) {
    Flow f;
    f.size = size;
    f.stream = next_stream_++;
    f.from = from;
    f.tag = tag;
    if (src.empty()) src = from == "ext" ? kOutsideMac : mac_of(std::stoi(from.substr(2)));
    f.src = src;
    f.dst = dst;
    f.count = count;
    f.want = expect(ports, from, tag, src, dst);
    return f;
  }

  // Sends a flow with xvmq-frames from its port; true when every frame left.
  bool send_flow(const Flow& f, const std::string& rate = "5000") {
    const std::string dev = f.from == "ext" ? "ext0" : "eth0";
    std::string cmd = std::string(FRAME_TOOL) + " send --dev " + dev + " --dst " + f.dst + " --src " + f.src +
                      " --count " + std::to_string(f.count) + " --size " + std::to_string(f.size) + " --rate " + rate +
                      " --cpu " + std::to_string(cpu_for(f.stream)) + " --stream " + std::to_string(f.stream) +
                      " --timeout 20";
    if (f.tag != kUntagged) cmd += " --vlan " + std::to_string(f.tag);
    std::string out;
    int rc = sh(in(f.from, cmd), &out);
    json j = last_json(out);
    EXPECT_EQ(rc, 0) << f.what() << ": " << out;
    EXPECT_EQ(u64(j, {"sent"}), f.count) << f.what() << ": " << out;
    return rc == 0 && u64(j, {"sent"}) == f.count;
  }

  // A capture on every port: ext0 in ext, eth0 in each VM named.
  std::map<std::string, std::unique_ptr<Capture>> capture(const std::vector<std::string>& where) {
    std::map<std::string, std::unique_ptr<Capture>> caps;
    for (const auto& w : where) {
      auto c = std::make_unique<Capture>(ns(w), w == "ext" ? "ext0" : "eth0");
      EXPECT_TRUE(c->start()) << "capture on " << w << ": " << c->error();
      caps[w] = std::move(c);
    }
    return caps;
  }

  static void stop_all(std::map<std::string, std::unique_ptr<Capture>>& caps) {
    std::this_thread::sleep_for(300ms);  // what is still on its way arrives by then
    for (auto& [_, c] : caps) c->stop();
  }

  // Every frame captured is a frame of these flows, where and in the shape
  // the oracle says, each sequence number exactly once, intact and of the
  // right length; nothing else. Returns, per VLAN, the frames delivered.
  std::map<int, uint64_t> check_flows(const std::vector<Flow>& flows,
                                      const std::map<std::string, std::unique_ptr<Capture>>& caps) {
    std::map<uint32_t, const Flow*> by_stream;
    for (const auto& f : flows) by_stream[f.stream] = &f;
    std::map<int, uint64_t> per_vlan;
    for (const auto& [port, cap] : caps) {
      SCOPED_TRACE("capture on " + port);
      EXPECT_EQ(cap->socket_drops(), 0u) << "the capture itself lost frames: the counts below may be short";
      // stream -> seq -> (shape, wire length) of each copy seen
      std::map<uint32_t, std::map<uint64_t, std::vector<std::pair<int, size_t>>>> got;
      uint64_t foreign = 0, corrupt = 0, stray = 0;
      std::string foreign_ex;
      for (const auto& s : cap->frames()) {
        if (!s.test_frame) {
          foreign++;
          if (foreign <= 3) {
            char type[8];
            std::snprintf(type, sizeof(type), "%04x", s.ethertype);
            foreign_ex += " [" + xvmq::format_mac(s.src) + " > " + xvmq::format_mac(s.dst) + " type 0x" + type + " " +
                          tag_str(s.tag()) + "]";
          }
          continue;
        }
        if (!s.intact) corrupt++;
        if (!by_stream.count(s.stream)) {
          stray++;
          continue;
        }
        got[s.stream][s.seq].push_back({s.tag(), s.wire_len});
      }
      EXPECT_EQ(foreign, 0u) << "frames that are not the test's:" << foreign_ex;
      EXPECT_EQ(corrupt, 0u) << "frames whose payload checksum fails";
      EXPECT_EQ(stray, 0u) << "frames of streams nobody sent";
      for (const auto& f : flows) {
        auto w = f.want.to.find(port);
        const auto& seqs = got[f.stream];
        uint64_t frames = 0, dup = 0, wrong_shape = 0, wrong_len = 0, out_of_range = 0;
        std::set<int> shapes;
        std::set<size_t> lens;
        for (const auto& [seq, copies] : seqs) {
          frames += copies.size();
          if (copies.size() > 1) dup += copies.size() - 1;
          if (seq >= f.count) out_of_range++;
          for (auto [t, len] : copies) {
            shapes.insert(t);
            lens.insert(len);
            if (w != f.want.to.end() && t != w->second) wrong_shape++;
            if (len != f.len_as(t)) wrong_len++;
          }
        }
        std::string lens_s;
        for (size_t l : lens) lens_s += " " + std::to_string(l);
        std::string shapes_s;
        for (int t : shapes) shapes_s += " " + tag_str(t);
        if (w == f.want.to.end()) {
          EXPECT_EQ(frames, 0u) << f.what() << ": must not reach " << port << " ("
                                << (f.want.drop.empty() ? "not its VLAN" : f.want.drop) << "), got" << shapes_s;
          continue;
        }
        EXPECT_EQ(seqs.size(), f.count) << f.what() << ": distinct frames at " << port;
        EXPECT_EQ(dup, 0u) << f.what() << ": duplicates at " << port;
        EXPECT_EQ(out_of_range, 0u) << f.what();
        EXPECT_EQ(wrong_shape, 0u) << f.what() << ": at " << port << " want " << tag_str(w->second) << ", got"
                                   << shapes_s;
        EXPECT_EQ(wrong_len, 0u) << f.what() << ": at " << port << " want " << f.len_as(w->second) << " bytes, got"
                                 << lens_s;
        per_vlan[f.want.vlan] += frames;
      }
    }
    return per_vlan;
  }

  // Switch drops by reason between two stats (summed over queues).
  static std::map<std::string, uint64_t> drops_between(const json& a, const json& b) {
    std::map<std::string, uint64_t> out;
    for (size_t q = 0; q < b["queues"].size(); q++)
      for (const auto& [why, n] : b["queues"][q]["drops"].items()) {
        uint64_t before = q < a["queues"].size() ? u64(a["queues"][q], {"drops", why.c_str()}) : 0;
        if (n.get<uint64_t>() > before) out[why] += n.get<uint64_t>() - before;
      }
    return out;
  }

  static uint64_t nic_drop(const json& st, const std::string& port, const std::string& why) {
    return u64(st, {"nics", port.c_str(), "drops", why.c_str()});
  }

  // The drops the oracle expects, by reason.
  static std::map<std::string, uint64_t> expected_drops(const std::vector<Flow>& flows) {
    std::map<std::string, uint64_t> out;
    for (const auto& f : flows)
      if (!f.want.drop.empty()) out[f.want.drop] += f.count;
    return out;
  }

  void expect_drops(const std::map<std::string, uint64_t>& got, const std::map<std::string, uint64_t>& want) {
    std::string g, w;
    for (const auto& [k, v] : got) g += " " + k + "=" + std::to_string(v);
    for (const auto& [k, v] : want) w += " " + k + "=" + std::to_string(v);
    std::printf("[ drops    ] switch drops:%s (expected:%s)\n", g.empty() ? " none" : g.c_str(),
                w.empty() ? " none" : w.c_str());
    EXPECT_EQ(got, want) << "switch drops by reason";
  }

  // --- IP helpers ---

  void set_ip(const std::string& where, const std::string& addr) {
    const std::string dev = where == "ext" ? "ext0" : "eth0";
    ASSERT_TRUE(sh_ok("ip -n " + ns(where) + " addr add " + addr + " dev " + dev));
  }

  struct Ping {
    int rc = -1;
    int sent = 0, received = 0;
    double avg_ms = 0, max_ms = 0;
    std::string out;
  };
  Ping ping(const std::string& from, const std::string& addr, int count = 5, int deadline_s = 10) {
    Ping p;
    // from "": this process's namespace, the switch host.
    const std::string cmd =
        "ping -n -q -c " + std::to_string(count) + " -i 0.2 -W 2 -w " + std::to_string(deadline_s) + " " + addr;
    p.rc = sh(from.empty() ? cmd : in(from, cmd), &p.out);
    std::smatch m;
    if (std::regex_search(p.out, m, std::regex(R"((\d+) packets transmitted, (\d+) received)"))) {
      p.sent = std::stoi(m[1]);
      p.received = std::stoi(m[2]);
    }
    if (std::regex_search(p.out, m, std::regex(R"(= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms)"))) {
      p.avg_ms = std::stod(m[2]);
      p.max_ms = std::stod(m[3]);
    }
    return p;
  }

  void expect_ping(const std::string& from, const std::string& to, const std::string& addr) {
    Ping p = ping(from, addr);
    std::printf("[ ping     ] %s -> %s (%s): %d/%d replies, rtt avg %.3f ms, max %.3f ms\n",
                from.empty() ? "the host" : from.c_str(), to.c_str(), addr.c_str(), p.received, p.sent, p.avg_ms,
                p.max_ms);
    EXPECT_EQ(p.rc, 0) << from << " -> " << to << ":\n" << p.out;
    EXPECT_EQ(p.received, 5) << from << " -> " << to << ":\n" << p.out;
  }

  struct Iperf {
    bool ok = false;
    double sent_bps = 0, received_bps = 0;
    uint64_t retransmits = 0;
    std::string out;
  };
  // A 2 s TCP run from `client` to a one-off server in `server` on addr.
  Iperf iperf(const std::string& client, const std::string& server, const std::string& addr, int port) {
    Iperf r;
    const std::string p = std::to_string(port);
    // "" is this process's namespace, the switch host.
    auto in = [this](const std::string& where, const std::string& cmd) {
      return where.empty() ? cmd : this->in(where, cmd);
    };
    Bg srv = background(in(server, "timeout 20 iperf3 -s -1 -B " + addr + " -p " + p));
    bool listening = false;
    for (int i = 0; i < 200 && !listening; i++) {
      std::string out;
      sh(in(server, "ss -Hltn 'sport = :" + p + "'"), &out);
      listening = out.find(":" + p) != std::string::npos;
      if (!listening) std::this_thread::sleep_for(25ms);
    }
    EXPECT_TRUE(listening) << "iperf3 server in " << server << " not listening on " << addr << ":" << p;
    int rc = sh(in(client, "timeout 20 iperf3 -c " + addr + " -p " + p + " -t 2 -J --connect-timeout 3000"), &r.out);
    std::string srv_out = srv.text(30s);
    auto a = r.out.find('{'), b = r.out.rfind('}');
    json j = a != std::string::npos && b != std::string::npos ? json::parse(r.out.substr(a, b - a + 1), nullptr, false)
                                                              : json();
    if (rc == 0 && j.is_object() && !j.contains("error") && j.contains("end")) {
      r.sent_bps = j["end"]["sum_sent"].value("bits_per_second", 0.0);
      r.received_bps = j["end"]["sum_received"].value("bits_per_second", 0.0);
      r.retransmits = j["end"]["sum_sent"].value("retransmits", uint64_t{0});
      r.ok = r.received_bps > 0;
    }
    if (!r.ok) r.out += "\n---- server:\n" + srv_out;
    return r;
  }

  void expect_iperf(const std::string& client, const std::string& server, const std::string& addr, int port,
                    const std::string& path) {
    const json before = call("stats");
    const uint64_t up_rx_drop0 = netdev_stat("", "up0", "rx_dropped");
    auto host_rx_dropped = [&] {
      uint64_t n = 0;
      for (int i = 1; i <= vm_count_; i++) n += netdev_stat("", vm(i) + "-host", "rx_dropped");
      return n;
    };
    const uint64_t host_drop0 = host_rx_dropped();
    Iperf r = iperf(client, server, addr, port);
    std::string drops;
    for (const auto& [why, n] : drops_between(before, call("stats"))) drops += " " + why + " " + std::to_string(n);
    // Where TCP's losses were: in the switch (by reason), or before it, when
    // XDP could not redirect into a full socket (the host ends' rx_dropped).
    std::printf("[ iperf3   ] TCP %s -> %s (%s), 2 s: %.1f Mbit/s received (%.1f sent, %" PRIu64
                " retransmits; switch drops:%s; rx_dropped: vmN-host %" PRIu64 ", up0 %" PRIu64 ")\n",
                client.empty() ? "the host" : client.c_str(), server.c_str(), path.c_str(), r.received_bps / 1e6,
                r.sent_bps / 1e6, r.retransmits, drops.empty() ? " none" : drops.c_str(),
                host_rx_dropped() - host_drop0, netdev_stat("", "up0", "rx_dropped") - up_rx_drop0);
    EXPECT_TRUE(r.ok) << client << " -> " << server << ":\n" << r.out;
    EXPECT_GT(r.received_bps, 1e6) << client << " -> " << server << ": less than 1 Mbit/s";
  }

  uint32_t next_stream_ = 1;
};

// ---------------------------------------------------------------------------
// Both deliveries of a vmq (docs/architecture.md): "kernel" (the classifier
// redirects through the vmq's CPUMAP entry into the backend's DEVMAP entry;
// the VM port program decides the VM's egress in XDP) and "xsk" (the vmq's
// AF_XDP sockets and switchd's workers). GRO is on at every eth0 and at ext0
// in both, so the veths take redirected frames and the delivery is all that
// differs. Every NIC with a vmq must have the delivery asked for (a silent
// fallback fails the test), and the frames must have gone its way.

// Where a VM's frame goes from its NIC's VM port program (bpf/xvmq_vmport.bpf.c).
enum class Way { Xdp, Switch, Dropped };

class SwitchDeliveryTest : public SwitchTest, public ::testing::WithParamInterface<std::string> {
 protected:
  SwitchDeliveryTest() {
    delivery_ = GetParam();
    vm_gro_ = true;
  }
  bool kernel() const { return delivery_ == "kernel"; }
  // A NIC that asks for the test's delivery: one with a vmq, no delivery of its own.
  bool asks(const PortSpec& p) const { return p.vmq != "off" && p.delivery.empty(); }
  bool kernel_nic(const PortSpec& p) const { return kernel() && asks(p); }

  void add_ports(const std::vector<PortSpec>& ports) {
    ASSERT_NO_FATAL_FAILURE(SwitchTest::add_ports(ports));
    for (const auto& p : ports) {
      if (asks(p)) {
        ASSERT_NO_FATAL_FAILURE(require_delivery(p.name(), delivery_));
      }
    }
  }

  // The way of a flow from a VM, as the design has it (DESIGN.md, "Data
  // paths" 3): a kernel-delivered NIC's program drops what fails port
  // security, sends known unicast to another kernel-delivered NIC on its VLAN
  // or unicast to no NIC (the uplink: ext0 has GRO on) on by DEVMAP, and
  // hands the rest to the switch; an xsk NIC's program hands all to the switch.
  Way way(const std::vector<PortSpec>& ports, const Flow& f) const {
    const PortSpec* in = nullptr;
    for (const auto& p : ports)
      if (p.name() == f.from) in = &p;
    if (!in || !kernel_nic(*in)) return Way::Switch;
    if (f.want.vlan < 0) return Way::Dropped;
    if (is_group(f.dst)) return Way::Switch;
    for (const auto& p : ports)
      if (vm_mac(p.vm) == f.dst && p.carries(static_cast<uint16_t>(f.want.vlan)))
        return &p != in && kernel_nic(p) ? Way::Xdp : Way::Switch;
    return Way::Xdp;
  }

  // The stats and every VM port program's counts.
  struct Snap {
    json st;
    std::map<std::string, std::array<uint64_t, XVMQ_PORT_COUNT>> prog;
  };
  Snap snap(const std::vector<PortSpec>& ports) {
    Snap s{call("stats"), {}};
    for (const auto& p : ports) s.prog[p.name()] = vmport_counts(p.name() + "-host");
    return s;
  }
  static uint64_t prog_delta(const Snap& a, const Snap& b, const std::string& port, uint32_t what) {
    return b.prog.at(port)[what] - a.prog.at(port)[what];
  }
  static uint64_t rx_vmq(const json& st) {
    uint64_t n = 0;
    for (const auto& q : st["queues"]) n += u64(q, {"rx_vmq"});
    return n;
  }

  // The drops of the switch (its queues) and of port security in XDP, by reason.
  std::map<std::string, uint64_t> drops_with_xdp(const Snap& a, const Snap& b) {
    auto out = drops_between(a.st, b.st);
    const std::pair<const char*, uint32_t> security[] = {{"spoofed_source", XVMQ_PORT_SPOOFED_SOURCE},
                                                         {"tagged_on_access", XVMQ_PORT_TAGGED_ON_ACCESS},
                                                         {"vlan_not_allowed", XVMQ_PORT_VLAN_NOT_ALLOWED}};
    for (const auto& [port, _] : b.prog)
      for (const auto& [why, what] : security)
        if (uint64_t n = prog_delta(a, b, port, what)) out[why] += n;
    return out;
  }

  void expect_ways(const std::vector<PortSpec>& ports, const std::vector<Flow>& flows, const Snap& a, const Snap& b);
  void expect_no_kernel_losses(const json& st, const std::vector<PortSpec>& ports);

  // Flows sent with a capture on every port, checked frame for frame
  // against the oracle, with the drops by reason, the ways and no kernel
  // loss; what the captures delivered per VLAN.
  struct Run {
    Snap before, after;
    std::map<int, uint64_t> per_vlan;
    double secs = 0;
  };
  Run run_flows(const std::vector<PortSpec>& ports, const std::vector<Flow>& flows, const std::string& rate);
  std::vector<Flow> sweep_flows(const std::vector<PortSpec>& ports);
  void expect_per_vlan(const std::vector<Flow>& flows, const Run& r);
  void expect_nic_create_refusals();
};

// The frames went the way of the test's delivery: from the outside to a NIC
// with a vmq by its vmq (kernel: no vmq socket read any), from each VM as
// way() says, counted by its VM port program.
void SwitchDeliveryTest::expect_ways(const std::vector<PortSpec>& ports, const std::vector<Flow>& flows, const Snap& a,
                                     const Snap& b) {
  uint64_t vmq_frames = 0;
  for (const auto& p : ports) {
    SCOPED_TRACE(p.describe());
    uint64_t fast = 0, xdp = 0, to_switch = 0, dropped = 0;
    for (const auto& f : flows) {
      if (f.from == "ext" && p.vmq != "off" && !is_group(f.dst) && f.dst == vm_mac(p.vm) && f.want.to.count(p.name()))
        fast += f.count;
      if (f.from != p.name()) continue;
      const Way w = way(ports, f);
      (w == Way::Xdp ? xdp : w == Way::Switch ? to_switch : dropped) += f.count;
    }
    const std::string name = p.name();
    const char* n = name.c_str();
    EXPECT_EQ(u64(b.st, {"nics", n, "fast_frames"}) - u64(a.st, {"nics", n, "fast_frames"}), fast);
    EXPECT_EQ(prog_delta(a, b, p.name(), XVMQ_PORT_FORWARDED), xdp) << "sent on by its VM port program, in XDP";
    EXPECT_EQ(prog_delta(a, b, p.name(), XVMQ_PORT_TO_SWITCH), to_switch) << "handed to the switch";
    EXPECT_EQ(prog_delta(a, b, p.name(), XVMQ_PORT_SPOOFED_SOURCE) +
                  prog_delta(a, b, p.name(), XVMQ_PORT_TAGGED_ON_ACCESS) +
                  prog_delta(a, b, p.name(), XVMQ_PORT_VLAN_NOT_ALLOWED),
              dropped)
        << "dropped by port security in XDP";
    if (!kernel_nic(p) && p.vmq != "off") vmq_frames += fast;
    std::printf("[ way      ] %s: %" PRIu64 " in by its vmq; from the VM %" PRIu64 " by XDP, %" PRIu64
                " to the switch, %" PRIu64 " dropped in XDP\n",
                n, fast, xdp, to_switch, dropped);
  }
  EXPECT_EQ(rx_vmq(b.st) - rx_vmq(a.st), vmq_frames) << "frames the workers read from vmq sockets";
}

// Kernel delivery lost nothing: every kernel_* and backend_* drop of the NICs is 0.
void SwitchDeliveryTest::expect_no_kernel_losses(const json& st, const std::vector<PortSpec>& ports) {
  for (const auto& p : ports) {
    const json drops = st["nics"].value(p.name(), json::object()).value("drops", json::object());
    for (const auto& [why, n] : drops.items())
      if (why.starts_with("kernel_") || why.starts_with("backend_")) {
        EXPECT_EQ(n.get<uint64_t>(), 0u) << p.name() << " drops." << why;
      }
  }
}

SwitchDeliveryTest::Run SwitchDeliveryTest::run_flows(const std::vector<PortSpec>& ports,
                                                      const std::vector<Flow>& flows, const std::string& rate) {
  std::vector<std::string> where{"ext"};
  for (const auto& p : ports) where.push_back(p.name());
  auto caps = capture(where);
  Run r;
  r.before = snap(ports);
  const uint64_t t0 = mono_ns();
  for (const auto& f : flows)
    if (!send_flow(f, rate)) break;
  r.secs = static_cast<double>(mono_ns() - t0) / 1e9;
  stop_all(caps);
  r.after = snap(ports);
  r.per_vlan = check_flows(flows, caps);
  expect_drops(drops_with_xdp(r.before, r.after), expected_drops(flows));
  expect_ways(ports, flows, r.before, r.after);
  expect_no_kernel_losses(r.after.st, ports);
  return r;
}

// The IP tests want one vmq only: one NIC on the VMQ path, one on the default path.
class SwitchIpDeliveryTest : public SwitchDeliveryTest {
 protected:
  SwitchIpDeliveryTest() { max_vmqs_ = 1; }
};

std::string delivery_name(const ::testing::TestParamInfo<std::string>& i) { return i.param; }
INSTANTIATE_TEST_SUITE_P(Delivery, SwitchDeliveryTest, ::testing::Values("kernel", "xsk"), delivery_name);
INSTANTIATE_TEST_SUITE_P(Delivery, SwitchIpDeliveryTest, ::testing::Values("kernel", "xsk"), delivery_name);

// ---------------------------------------------------------------------------

TEST_P(SwitchIpDeliveryTest, IpBetweenVmsAndOutside) {
  // vm2 asks for a vmq but the pool has one: auto delivery, the software switch serves it.
  const std::vector<PortSpec> ports{{.vm = 1}, {.vm = 2, .delivery = "auto"}};
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  const Snap start = snap(ports);
  json show = call("show");
  EXPECT_EQ(nic_of(show, "vm1")["path"], "vmq") << show.dump();
  EXPECT_EQ(nic_of(show, "vm2")["path"], "default") << "--max-vmqs 1: the second NIC has no vmq: " << show.dump();
  ASSERT_NO_FATAL_FAILURE(set_ip("vm1", "10.77.0.1/24"));
  ASSERT_NO_FATAL_FAILURE(set_ip("vm2", "10.77.0.2/24"));
  ASSERT_NO_FATAL_FAILURE(set_ip("ext", "10.77.0.254/24"));
  const std::string ext_mac = [&] {
    std::string out;
    sh(in("ext", "cat /sys/class/net/ext0/address"), &out);
    return out.substr(0, 17);
  }();

  // ARP through the switch: vm1's broadcast request reaches vm2 and the outside, untagged.
  {
    auto caps = capture({"vm2", "ext"});
    expect_ping("vm1", "vm2", "10.77.0.2");
    stop_all(caps);
    for (const char* port : {"vm2", "ext"}) {
      SCOPED_TRACE(std::string("capture on ") + port);
      uint64_t requests = 0, tagged = 0;
      for (const auto& s : caps[port]->frames()) {
        if (s.ethertype != ETH_P_ARP || xvmq::format_mac(s.src) != mac_of(1) || xvmq::format_mac(s.dst) != kBroadcast)
          continue;
        requests++;
        tagged += s.tag() != kUntagged;
      }
      EXPECT_GE(requests, 1u) << "vm1's ARP broadcast did not reach " << port;
      EXPECT_EQ(tagged, 0u) << "VLAN 0 is untagged everywhere";
    }
  }
  expect_ping("vm2", "vm1", "10.77.0.1");
  expect_ping("vm1", "ext", "10.77.0.254");
  expect_ping("vm2", "ext", "10.77.0.254");
  expect_ping("ext", "vm1", "10.77.0.1");
  expect_ping("ext", "vm2", "10.77.0.2");
  // Neighbours resolved through the switch.
  std::string neigh;
  sh("ip -n " + ns("vm1") + " neigh show dev eth0", &neigh);
  EXPECT_NE(neigh.find(mac_of(2)), std::string::npos) << neigh;
  EXPECT_NE(neigh.find(ext_mac), std::string::npos) << neigh;
  sh("ip -n " + ns("ext") + " neigh show dev ext0", &neigh);
  EXPECT_NE(neigh.find(mac_of(1)), std::string::npos) << neigh;
  EXPECT_NE(neigh.find(mac_of(2)), std::string::npos) << neigh;

  expect_iperf("vm1", "vm2", "10.77.0.2", 5201, "vmq NIC to default-path NIC, both through the software switch");
  expect_iperf("vm2", "vm1", "10.77.0.1", 5202, "default-path NIC to vmq NIC");
  expect_iperf("vm1", "ext", "10.77.0.254", 5203, "vmq NIC to the outside; replies on the VMQ path");
  expect_iperf("vm2", "ext", "10.77.0.254", 5204, "default-path NIC to the outside; replies via the default queue");
  expect_iperf("ext", "vm1", "10.77.0.1", 5205, "the outside to the vmq NIC: the VMQ path");

  const Snap end = snap(ports);
  const json& st = end.st;
  EXPECT_GT(u64(st, {"nics", "vm1", "fast_frames"}), 1000u) << "vm1's traffic from outside took its vmq";
  EXPECT_GT(u64(st, {"nics", "vm2", "default_frames"}), 1000u);
  for (const char* p : {"vm1", "vm2"})
    for (const char* why : {"spoofed_source", "tagged_on_access", "vlan_not_allowed"})
      EXPECT_EQ(nic_drop(st, p, why), 0u) << p << " " << why;
  // The kernel way: vm1's vmq never reaches a socket, and what it sends to
  // the outside (TCP to ext, the replies to ext's pings) leaves in XDP.
  const uint64_t vmq_rx = rx_vmq(end.st) - rx_vmq(start.st);
  const uint64_t xdp = prog_delta(start, end, "vm1", XVMQ_PORT_FORWARDED);
  std::printf("[ way      ] vm1: %" PRIu64 " frames read from vmq sockets, %" PRIu64 " sent on in XDP\n", vmq_rx, xdp);
  if (kernel()) {
    EXPECT_EQ(vmq_rx, 0u);
    EXPECT_GT(xdp, 1000u);
  } else {
    EXPECT_GT(vmq_rx, 1000u);
    EXPECT_EQ(xdp, 0u);
  }
  EXPECT_EQ(prog_delta(start, end, "vm2", XVMQ_PORT_FORWARDED), 0u) << "vm2 has no vmq: the switch serves it";
  expect_no_kernel_losses(st, ports);
  EXPECT_TRUE(switchd_alive());
  expect_pools_idle();
}

TEST_P(SwitchDeliveryTest, IpOnAccessVlan) {
  const std::vector<PortSpec> ports{
      {.vm = 1, .access = 10}, {.vm = 2, .access = 10, .vmq = "off"}, {.vm = 3, .access = 20}};
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  const Snap start = snap(ports);
  ASSERT_NO_FATAL_FAILURE(set_ip("vm1", "10.77.10.1/24"));
  ASSERT_NO_FATAL_FAILURE(set_ip("vm2", "10.77.10.2/24"));
  // Same subnet, other VLAN: only the switch keeps it apart.
  ASSERT_NO_FATAL_FAILURE(set_ip("vm3", "10.77.10.3/24"));

  auto outside = capture({"vm3", "ext"});
  {
    auto inside = capture({"vm1", "vm2"});
    expect_ping("vm1", "vm2", "10.77.10.2");
    expect_ping("vm2", "vm1", "10.77.10.1");
    stop_all(inside);
    for (const char* port : {"vm1", "vm2"}) {
      SCOPED_TRACE(std::string("capture on ") + port);
      uint64_t frames = 0, tagged = 0, from_vm3 = 0;
      for (const auto& s : inside[port]->frames()) {
        frames++;
        tagged += s.tag() != kUntagged;
        from_vm3 += xvmq::format_mac(s.src) == mac_of(3);
      }
      EXPECT_GT(frames, 5u);
      EXPECT_EQ(tagged, 0u) << "an access NIC receives its VLAN untagged";
      EXPECT_EQ(from_vm3, 0u) << "vm3 is on VLAN 20";
    }
  }
  expect_iperf("vm1", "vm2", "10.77.10.2", 5201, "VLAN 10, vmq NIC to default-path NIC");

  // vm3 (VLAN 20) reaches neither.
  for (const char* addr : {"10.77.10.1", "10.77.10.2"}) {
    Ping p = ping("vm3", addr, 2, 3);
    std::printf("[ ping     ] vm3 (VLAN 20) -> %s (VLAN 10): %d/%d replies (none expected)\n", addr, p.received,
                p.sent);
    EXPECT_NE(p.rc, 0) << p.out;
    EXPECT_EQ(p.received, 0) << p.out;
  }
  std::string neigh;
  sh("ip -n " + ns("vm3") + " neigh show dev eth0", &neigh);
  EXPECT_EQ(neigh.find(mac_of(1)), std::string::npos) << neigh;
  EXPECT_EQ(neigh.find(mac_of(2)), std::string::npos) << neigh;
  stop_all(outside);

  uint64_t vm3_total = 0;
  for (const auto& s : outside["vm3"]->frames()) {
    vm3_total++;
    EXPECT_NE(xvmq::format_mac(s.src), mac_of(1)) << "vm3 received a frame of vm1's";
    EXPECT_NE(xvmq::format_mac(s.src), mac_of(2)) << "vm3 received a frame of vm2's";
  }
  EXPECT_EQ(vm3_total, 0u) << "nothing else is on VLAN 20";
  // The uplink carries VLAN 10's and 20's broadcasts (ARP requests), tagged; never their unicast.
  uint64_t arp10 = 0, arp20 = 0;
  for (const auto& s : outside["ext"]->frames()) {
    const std::string src = xvmq::format_mac(s.src);
    if (src == mac_of(1) || src == mac_of(2)) {
      EXPECT_EQ(xvmq::format_mac(s.dst), kBroadcast)
          << "vm1/vm2 unicast left the host: " << src << " > " << xvmq::format_mac(s.dst);
      EXPECT_EQ(s.tag(), 10) << "VLAN 10 leaves the uplink tagged 10";
      arp10 += s.ethertype == ETH_P_ARP;
    } else if (src == mac_of(3)) {
      EXPECT_EQ(xvmq::format_mac(s.dst), kBroadcast);
      EXPECT_EQ(s.tag(), 20) << "VLAN 20 leaves the uplink tagged 20";
      arp20 += s.ethertype == ETH_P_ARP;
    }
  }
  EXPECT_GE(arp10, 1u) << "vm1's or vm2's ARP broadcast reached the uplink";
  EXPECT_GE(arp20, 1u) << "vm3's ARP broadcast reached the uplink";
  const Snap end = snap(ports);
  EXPECT_EQ(u64(end.st, {"nics", "vm3", "default_frames"}) + u64(end.st, {"nics", "vm3", "fast_frames"}), 0u);
  // vm2 has no vmq: vm1's unicast to it is the switch's, never the uplink's
  // (checked above), and nothing went on in XDP.
  for (const char* p : {"vm1", "vm3"}) {
    EXPECT_EQ(prog_delta(start, end, p, XVMQ_PORT_FORWARDED), 0u) << p;
    EXPECT_GT(prog_delta(start, end, p, XVMQ_PORT_TO_SWITCH), 0u) << p;
  }
  expect_no_kernel_losses(end.st, ports);
  expect_pools_idle();
}

// The sweep's flows: from the outside every VLAN to each VM, to nobody,
// broadcast and multicast; from the VMs in the shapes their NICs send;
// full-sized frames reshaped on the way.
std::vector<Flow> SwitchDeliveryTest::sweep_flows(const std::vector<PortSpec>& ports) {
  constexpr uint64_t kPerExtFlow = 300, kPerVmFlow = 200;
  std::vector<Flow> flows;
  for (int vlan : {0, 10, 20, 30, 40}) {
    const int tag = vlan ? vlan : kUntagged;
    for (int v = 1; v <= 4; v++) flows.push_back(flow(ports, "ext", tag, mac_of(v), kPerExtFlow));
    for (const char* dst : {kUnknownMac, kBroadcast, kMulticast})
      flows.push_back(flow(ports, "ext", tag, dst, kPerExtFlow));
  }
  for (const auto& [from, tag, dst] : std::vector<std::tuple<std::string, int, std::string>>{
           {"vm1", kUntagged, kBroadcast},  {"vm1", kUntagged, kMulticast}, {"vm1", kUntagged, mac_of(3)},
           {"vm1", kUntagged, kOutsideMac}, {"vm1", kUntagged, mac_of(2)},  // vm2 is not on VLAN 10: to the uplink
           {"vm2", kUntagged, kBroadcast},  {"vm2", kUntagged, mac_of(3)},  {"vm2", kUntagged, kOutsideMac},
           {"vm3", 10, kBroadcast},         {"vm3", 20, kBroadcast},        {"vm3", kUntagged, kBroadcast},
           {"vm3", 10, mac_of(1)},          {"vm3", 20, mac_of(2)},         {"vm3", 20, kOutsideMac},
           {"vm3", kUntagged, kOutsideMac}, {"vm3", 10, kMulticast},        {"vm4", kUntagged, kBroadcast},
           {"vm4", kUntagged, kOutsideMac}, {"vm4", kUntagged, mac_of(1)},
       })
    flows.push_back(flow(ports, from, tag, dst, kPerVmFlow));
  // Full-sized frames: a tag pushed makes them 1518 bytes on the wire, one popped 1510.
  flows.push_back(flow(ports, "vm1", kUntagged, kBroadcast, kPerVmFlow, "", 1514));
  flows.push_back(flow(ports, "vm4", kUntagged, kOutsideMac, kPerVmFlow, "", 1514));
  flows.push_back(flow(ports, "vm3", 20, kBroadcast, kPerVmFlow, "", 1514));
  flows.push_back(flow(ports, "ext", 10, mac_of(1), kPerVmFlow, "", 1514));
  flows.push_back(flow(ports, "ext", 20, mac_of(3), kPerVmFlow, "", 1514));
  flows.push_back(flow(ports, "ext", 30, kBroadcast, kPerVmFlow, "", 1514));
  // ... and full-sized unicast that kernel delivery shapes in XDP: a tag
  // pushed towards the uplink (an access VLAN, a native one), one popped
  // towards an access NIC.
  flows.push_back(flow(ports, "vm1", kUntagged, kOutsideMac, kPerVmFlow, "", 1514));
  flows.push_back(flow(ports, "vm3", kUntagged, kOutsideMac, kPerVmFlow, "", 1514));
  flows.push_back(flow(ports, "vm3", 10, mac_of(1), kPerVmFlow, "", 1514));
  return flows;
}

// Per VLAN: sent, delivered (copies), dropped, as the oracle has them.
void SwitchDeliveryTest::expect_per_vlan(const std::vector<Flow>& flows, const Run& r) {
  std::map<int, uint64_t> sent, want, dropped, got = r.per_vlan;
  uint64_t ext_frames = 0, vm_frames = 0;
  for (const auto& f : flows) {
    const int v = f.want.vlan >= 0 ? f.want.vlan : (f.tag == kUntagged ? 0 : f.tag);
    sent[v] += f.count;
    want[f.want.vlan] += f.count * f.want.to.size();
    if (!f.want.drop.empty()) dropped[v] += f.count;
    (f.from == "ext" ? ext_frames : vm_frames) += f.count;
  }
  std::printf("[ sweep    ] %zu streams, %" PRIu64 " frames from the outside and %" PRIu64 " from the VMs in %.1f s\n",
              flows.size(), ext_frames, vm_frames, r.secs);
  for (const auto& [v, n] : sent) {
    std::printf("[ sweep    ] VLAN %2d: %5" PRIu64 " frames sent, %5" PRIu64 " copies delivered (expected %5" PRIu64
                "), %5" PRIu64 " dropped by the switch (expected)\n",
                v, n, got[v], want[v], dropped[v]);
    EXPECT_EQ(got[v], want[v]) << "VLAN " << v;
  }
}

TEST_P(SwitchDeliveryTest, VlanIsolationSweep) {
  const std::vector<PortSpec> ports{
      {.vm = 1, .access = 10},
      {.vm = 2, .access = 20, .vmq = "off"},
      {.vm = 3, .trunk = true, .allowed = {10, 20}, .native = 30},
      {.vm = 4, .access = 0, .vmq = "off"},
  };
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  const std::vector<Flow> flows = sweep_flows(ports);
  uint64_t ext_frames = 0;
  for (const auto& f : flows)
    if (f.from == "ext") ext_frames += f.count;
  ASSERT_GE(ext_frames, 10000u);

  const Run r = run_flows(ports, flows, "5000");
  expect_per_vlan(flows, r);
  const json &before = r.before.st, &after = r.after.st;
  for (const auto& p : ports)
    for (const char* why : {"spoofed_source", "tagged_on_access", "vlan_not_allowed"})
      EXPECT_EQ(nic_drop(after, p.name(), why), 0u) << p.name() << " " << why;
  // The VMs' frames were switched (nics.<vm>.from_vm_frames).
  for (const auto& p : ports) {
    uint64_t n = 0;
    for (const auto& f : flows) n += f.from == p.name() ? f.count : 0;
    EXPECT_EQ(u64(after, {"nics", p.name().c_str(), "from_vm_frames"}) -
                  u64(before, {"nics", p.name().c_str(), "from_vm_frames"}),
              n)
        << p.name();
  }
  expect_pools_idle();
}

// What nic.create refuses: a MAC that is not unicast, a VLAN that is not one.
void SwitchDeliveryTest::expect_nic_create_refusals() {
  call("port.create", {{"name", "vm5"}});
  for (const char* mac : {"01:00:5e:00:00:01", "33:33:00:00:00:01", kBroadcast, "03:00:00:00:00:01"})
    expect_refused("nic.create", {{"port", "vm5"}, {"mac", mac}, {"backend", "vm4-host"}}, "usage", {mac, "unicast"});
  expect_refused("nic.create", {{"port", "vm5"}, {"mac", "02:00:00:00:00:05"}, {"backend", "vm4-host"}, {"vlan", 4095}},
                 "usage", {});
  expect_refused("nic.create",
                 {{"port", "vm5"},
                  {"mac", "02:00:00:00:00:05"},
                  {"backend", "vm4-host"},
                  {"vlan_mode", "trunk"},
                  {"trunk_vlans", json::array({0})}},
                 "usage", {"trunk_vlans"});
  expect_refused("nic.create",
                 {{"port", "vm5"}, {"mac", "02:00:00:00:00:05"}, {"backend", "vm4-host"}, {"vlan_mode", "hybrid"}},
                 "usage", {"hybrid"});
  expect_refused(
      "nic.create",
      {{"port", "vm5"}, {"mac", "02:00:00:00:00:05"}, {"backend", "vm4-host"}, {"allow_mac_spoofing", "yes"}}, "usage",
      {"allow_mac_spoofing"});
  call("port.teardown", {{"name", "vm5"}});
  call("port.delete", {{"name", "vm5"}});
}

TEST_P(SwitchDeliveryTest, PortSecurity) {
  std::vector<PortSpec> ports{
      {.vm = 1, .access = 0},
      {.vm = 2, .access = 0, .vmq = "off"},
      {.vm = 3, .trunk = true, .allowed = {10}},  // no native VLAN
      {.vm = 4, .access = 10, .vmq = "off"},
  };
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  constexpr uint64_t N = 100;
  const std::string spoofed = kUnknownMac;

  std::vector<Flow> flows{
      flow(ports, "vm1", kUntagged, kBroadcast, N, spoofed),
      flow(ports, "vm1", kUntagged, mac_of(2), N, spoofed),
      flow(ports, "vm1", kUntagged, kOutsideMac, N, spoofed),
      flow(ports, "vm1", kUntagged, mac_of(2), N),  // its own MAC: delivered
      flow(ports, "vm2", 10, kBroadcast, N),        // tagged from an access NIC: VLAN hopping
      flow(ports, "vm2", 10, mac_of(4), N),
      flow(ports, "vm2", kUntagged, mac_of(1), N),  // untagged: delivered
      flow(ports, "vm3", 20, kBroadcast, N),        // a VLAN the trunk does not carry
      flow(ports, "vm3", 20, kOutsideMac, N),
      flow(ports, "vm3", kUntagged, kBroadcast, N),  // untagged, and no native VLAN
      flow(ports, "vm3", 10, kBroadcast, N),         // its VLAN: delivered
  };
  EXPECT_EQ(flows[0].want.drop, "spoofed_source");
  EXPECT_EQ(flows[4].want.drop, "tagged_on_access");
  EXPECT_EQ(flows[7].want.drop, "vlan_not_allowed");
  EXPECT_EQ(flows[9].want.drop, "vlan_not_allowed");
  {
    const Run r = run_flows(ports, flows, "2000");
    auto delta = [&](const char* port, const char* why) {
      return nic_drop(r.after.st, port, why) - nic_drop(r.before.st, port, why);
    };
    EXPECT_EQ(delta("vm1", "spoofed_source"), 3 * N);
    EXPECT_EQ(delta("vm2", "tagged_on_access"), 2 * N);
    EXPECT_EQ(delta("vm3", "vlan_not_allowed"), 3 * N);
    std::printf("[ security ] nics.vm1.drops.spoofed_source %" PRIu64 ", nics.vm2.drops.tagged_on_access %" PRIu64
                ", nics.vm3.drops.vlan_not_allowed %" PRIu64 "\n",
                delta("vm1", "spoofed_source"), delta("vm2", "tagged_on_access"), delta("vm3", "vlan_not_allowed"));
  }

  // vm1 again, allowed to spoof: the same frames are delivered.
  EXPECT_EQ(call("nic.disconnect", {{"port", "vm1"}})["state"], "disconnected");
  call("nic.delete", {{"port", "vm1"}});
  ports[0].allow_spoofing = true;
  add_nic(ports[0]);
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", delivery_));
  EXPECT_EQ(nic_of(call("show"), "vm1").value("allow_mac_spoofing", false), true) << call("show").dump();
  std::vector<Flow> again{
      flow(ports, "vm1", kUntagged, kBroadcast, N, spoofed),
      flow(ports, "vm1", kUntagged, mac_of(2), N, spoofed),
      flow(ports, "vm1", kUntagged, kOutsideMac, N, spoofed),
  };
  for (const auto& f : again) EXPECT_TRUE(f.want.drop.empty()) << f.what();
  const Run r = run_flows(ports, again, "2000");
  EXPECT_EQ(nic_drop(r.after.st, "vm1", "spoofed_source"), nic_drop(r.before.st, "vm1", "spoofed_source"));

  expect_nic_create_refusals();
  EXPECT_TRUE(switchd_alive());
  expect_pools_idle();
}

TEST_P(SwitchDeliveryTest, BroadcastExactlyOnce) {
  const std::vector<PortSpec> ports{
      {.vm = 1, .access = 10},
      {.vm = 2, .access = 10, .vmq = "off"},
      {.vm = 3, .trunk = true, .allowed = {10, 20}},
      {.vm = 4, .access = 20, .vmq = "off"},
  };
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  constexpr uint64_t N = 500;
  const std::vector<Flow> flows{
      flow(ports, "vm1", kUntagged, kBroadcast, N),  // vmq NIC
      flow(ports, "vm2", kUntagged, kBroadcast, N),  // default-path NIC
      flow(ports, "vm3", 10, kBroadcast, N),         // trunk, tagged
      flow(ports, "ext", 10, kBroadcast, N),         // the outside on VLAN 10
      flow(ports, "vm3", 20, kBroadcast, N),        flow(ports, "ext", 20, kBroadcast, N),
  };
  // The oracle's view, spelled out for the first and the outside's.
  EXPECT_EQ(flows[0].want.to, (std::map<std::string, int>{{"vm2", kUntagged}, {"vm3", 10}, {"ext", 10}}));
  EXPECT_EQ(flows[3].want.to, (std::map<std::string, int>{{"vm1", kUntagged}, {"vm2", kUntagged}, {"vm3", 10}}));
  // Group frames are the switch's on both deliveries: the VM port programs hand them over (run_flows checks).
  run_flows(ports, flows, "5000");
  for (const auto& f : flows) {
    std::string to;
    for (const auto& [p, t] : f.want.to) to += " " + p + " (" + tag_str(t) + ")";
    std::printf("[ flood    ] %s: each frame once at%s\n", f.what().c_str(), to.c_str());
  }
  expect_pools_idle();
}

// ---------------------------------------------------------------------------
// The FDB under a MAC flood, the host's own addresses, a trunk's native VLAN
// carrying IP, and frames too big for the switch's buffers.

class SwitchFdbTest : public SwitchTest {
 protected:
  SwitchFdbTest() { switchd_extra_ = {"--fdb-size", "1024"}; }
};

static uint64_t learned_entries(const json& show) {
  uint64_t n = 0;
  for (const auto& e : show["entries"]) n += e.value("port", "") == "uplink";
  return n;
}

TEST_F(SwitchFdbTest, MacFloodKeepsTheTableBoundedAndTrafficFlowing) {
  const std::vector<PortSpec> ports{{.vm = 1}, {.vm = 2, .vmq = "off"}};
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  ASSERT_NO_FATAL_FAILURE(set_ip("vm1", "10.77.0.1/24"));
  ASSERT_NO_FATAL_FAILURE(set_ip("vm2", "10.77.0.2/24"));
  expect_ping("vm1", "vm2", "10.77.0.2");  // ARP resolved before the flood
  const json before = call("stats");
  EXPECT_EQ(u64(before, {"fdb", "capacity"}), 1024u) << before["fdb"].dump();

  // 100,000 frames from the outside, each from a random unicast MAC, to a MAC nobody has
  // (learned, then dropped as unknown unicast), at about 25,000 frames/s while vm1 pings vm2.
  constexpr uint64_t kFrames = 100000, kPerMs = 25;
  Bg pinger = background(in("vm1", "ping -n -q -c 20 -i 0.2 -W 2 -w 15 10.77.0.2"));
  uint64_t sent = 0;
  const uint64_t t0 = mono_ns();
  const std::string err = with_raw_socket(ns("ext"), "ext0", [&](int fd, const sockaddr_ll& to) {
    std::mt19937_64 rng(20240501);
    auto f = raw_frame(kUnknownMac, "00:00:00:00:00:00", 64, 0);
    for (uint64_t i = 0; i < kFrames; i++) {
      uint64_t r = rng();
      for (int b = 0; b < 6; b++) f[6 + b] = static_cast<uint8_t>(r >> (8 * b));
      f[6] = static_cast<uint8_t>((f[6] & 0xfc) | 0x02);  // unicast, locally administered
      if (!send_retrying(fd, to, f)) break;
      sent++;
      if (i % 500 == 499) {
        const uint64_t due = t0 + (i + 1) / kPerMs * 1000000ull;
        const uint64_t now = mono_ns();
        if (due > now) std::this_thread::sleep_for(std::chrono::nanoseconds(due - now));
      }
    }
  });
  const double secs = static_cast<double>(mono_ns() - t0) / 1e9;
  ASSERT_EQ(err, "");
  EXPECT_EQ(sent, kFrames) << strerror(errno);
  EXPECT_LT(secs, 20.0);
  const std::string pout = pinger.text(30s);
  std::smatch m;
  int psent = 0, precv = 0;
  if (std::regex_search(pout, m, std::regex(R"((\d+) packets transmitted, (\d+) received)"))) {
    psent = std::stoi(m[1]);
    precv = std::stoi(m[2]);
  }
  std::this_thread::sleep_for(300ms);
  const json after = call("stats");
  const json fdb = after["fdb"];
  const json show = call("fdb.show");
  std::printf("[ flood    ] %" PRIu64
              " frames from random MACs in %.1f s; vm1 -> vm2 ping meanwhile: %d/%d replies; "
              "fdb %s; fdb.show: %" PRIu64 " learned entries\n",
              sent, secs, precv, psent, fdb.dump().c_str(), learned_entries(show));
  EXPECT_EQ(psent, 20) << pout;
  EXPECT_GE(precv, 19) << "the flood must not stop the VMs' traffic:\n" << pout;
  EXPECT_LE(u64(fdb, {"size"}), 1024u);
  EXPECT_EQ(u64(fdb, {"size"}), u64(fdb, {"capacity"})) << "the flood fills the table";
  EXPECT_GT(u64(fdb, {"learn_refused"}), 0u);
  EXPECT_LE(learned_entries(show), 1024u);
  EXPECT_EQ(learned_entries(show), u64(fdb, {"size"}));
  EXPECT_EQ(u64(show, {"size"}), u64(fdb, {"size"}));

  json flushed = call("fdb.flush");
  EXPECT_EQ(u64(flushed, {"flushed"}), u64(fdb, {"size"})) << flushed.dump();
  const json empty = call("fdb.show");
  EXPECT_EQ(learned_entries(empty), 0u) << empty.dump();
  EXPECT_EQ(u64(call("stats"), {"fdb", "size"}), 0u);
  // The VMs' own (static) entries are still there, and traffic still flows.
  EXPECT_EQ(empty["entries"].size(), 2u) << empty.dump();
  expect_ping("vm2", "vm1", "10.77.0.1");
  EXPECT_TRUE(switchd_alive());
  expect_pools_idle();
}

// The host's own netdevs: the uplink with an address, and a host port.
class SwitchHostTest : public SwitchTest {
 protected:
  void TearDown() override {
    SwitchTest::TearDown();  // switchd stops without --detach-on-exit: the host port stays
    sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1");
    for (const char* dev : {"up0-host", "hostp", "hp0"})
      if (link_exists(dev)) sh(std::string("ip link del ") + dev);
  }
  std::string mac_of_dev(const std::string& dev) { return slurp("/sys/class/net/" + dev + "/address").substr(0, 17); }
  // `ip -o` lines of the host's addresses / routes on a device ("" when it has none).
  std::string addrs_on(const std::string& dev) {
    std::string out;
    sh("ip -o addr show dev " + dev + " scope global 2>&1", &out);
    return out;
  }
  std::string routes_on(const std::string& dev) {
    std::string out;
    sh("ip route show dev " + dev + " 2>&1", &out);
    return out;
  }
  bool link_exists(const std::string& dev) { return ::access(("/sys/class/net/" + dev).c_str(), F_OK) == 0; }
  // The host's address and a route through the outside host, on the uplink.
  void host_on_uplink() {
    ASSERT_TRUE(sh_ok("ip addr add 10.77.0.100/24 dev up0"));
    // IPv6 for the host's netdevs (the test's namespace has it off by default).
    ASSERT_TRUE(sh_ok("sysctl -qw net.ipv6.conf.default.disable_ipv6=0 net.ipv6.conf.up0.disable_ipv6=0"));
    ASSERT_TRUE(sh_ok("ip addr add fd77::100/64 dev up0 nodad"));
    ASSERT_TRUE(sh_ok("ip route add 10.88.0.0/16 via 10.77.0.254 dev up0"));
    ASSERT_NO_FATAL_FAILURE(set_ip("ext", "10.77.0.254/24"));
    ASSERT_TRUE(sh_ok(in("ext", "ip addr add 10.88.0.1/32 dev lo && sysctl -qw net.ipv4.ip_forward=1")));
  }
  void expect_host_on_uplink() {
    EXPECT_NE(addrs_on("up0").find("10.77.0.100/24"), std::string::npos) << addrs_on("up0");
    EXPECT_NE(addrs_on("up0").find("fd77::100/64"), std::string::npos) << addrs_on("up0");
    EXPECT_NE(routes_on("up0").find("10.88.0.0/16 via 10.77.0.254"), std::string::npos) << routes_on("up0");
  }
  void expect_host_on_port() {
    EXPECT_EQ(addrs_on("up0").find("10.77.0.100"), std::string::npos) << "moved off the uplink:\n" << addrs_on("up0");
    EXPECT_EQ(routes_on("up0").find("10.88.0.0/16"), std::string::npos) << routes_on("up0");
    EXPECT_NE(addrs_on("up0-host").find("10.77.0.100/24"), std::string::npos) << addrs_on("up0-host");
    EXPECT_NE(addrs_on("up0-host").find("fd77::100/64"), std::string::npos) << addrs_on("up0-host");
    EXPECT_EQ(addrs_on("up0").find("fd77::100"), std::string::npos) << addrs_on("up0");
    EXPECT_NE(routes_on("up0-host").find("10.88.0.0/16 via 10.77.0.254"), std::string::npos) << routes_on("up0-host");
  }
};

TEST_F(SwitchHostTest, HostStackKeepsTheHostReachable) {
  ASSERT_TRUE(sh_ok("ip addr add 10.77.5.1/24 dev up0"));
  expect_refused("uplink.attach", {{"name", "up0"}}, "wrong_state", {"10.77.5.1", "stack", "port"});
  json up = call("uplink.attach", {{"name", "up0"}, {"host", "stack"}});
  EXPECT_EQ(up["host"].value("mode", ""), "stack") << up.dump();

  const std::string up_mac = mac_of_dev("up0");
  constexpr uint64_t N = 50;
  const json before = call("stats");
  const uint64_t rx0 = netdev_stat("", "up0", "rx_packets");
  std::string out;
  EXPECT_TRUE(sh_ok(in("ext", std::string(FRAME_TOOL) + " send --dev ext0 --dst " + up_mac + " --count " +
                                  std::to_string(N) + " --rate 1000 --timeout 20")));
  std::this_thread::sleep_for(300ms);
  const json after = call("stats");
  const uint64_t host = u64(after, {"classifier", "reasons", "host", "frames"}) -
                        u64(before, {"classifier", "reasons", "host", "frames"});
  const uint64_t rx = netdev_stat("", "up0", "rx_packets") - rx0;
  std::printf("[ host     ] %" PRIu64 " frames to up0's MAC %s: classifier.reasons.host +%" PRIu64
              ", up0 rx_packets +%" PRIu64 "\n",
              N, up_mac.c_str(), host, rx);
  EXPECT_GE(host, N);
  EXPECT_GE(rx, N) << "the frames reached the host stack";

  // And IP, with no static neighbour anywhere: the outside resolves the host's address
  // (its ARP request, a broadcast, reaches the host's stack) and a VM's on VLAN 0 (the
  // same broadcasts reach the VM through the software switch).
  add_port({.vm = 1});
  ASSERT_NO_FATAL_FAILURE(set_ip("vm1", "10.77.5.2/24"));
  ASSERT_NO_FATAL_FAILURE(set_ip("ext", "10.77.5.254/24"));
  const json before_ip = call("stats");
  expect_ping("ext", "the host", "10.77.5.1");
  expect_ping("ext", "vm1", "10.77.5.2");
  expect_ping("vm1", "the outside", "10.77.5.254");
  const json after_ip = call("stats");
  std::string neigh;
  sh(in("ext", "ip neigh show dev ext0"), &neigh);
  std::printf("[ host     ] ext's neighbours, learned by ARP:\n%s", neigh.c_str());
  EXPECT_TRUE(std::regex_search(neigh, std::regex("10\\.77\\.5\\.1 lladdr " + up_mac + " (REACHABLE|STALE|DELAY)")))
      << neigh;
  EXPECT_TRUE(std::regex_search(neigh, std::regex("10\\.77\\.5\\.2 lladdr " + mac_of(1) + " (REACHABLE|STALE|DELAY)")))
      << neigh;
  EXPECT_EQ(neigh.find("PERMANENT"), std::string::npos) << neigh;
  const uint64_t groups = u64(after_ip, {"classifier", "reasons", "host_group", "frames"}) -
                          u64(before_ip, {"classifier", "reasons", "host_group", "frames"});
  uint64_t rx_stack = 0;
  for (const auto& q : after_ip["queues"]) rx_stack += q.value("rx_stack", uint64_t{0});
  for (const auto& q : before_ip["queues"]) rx_stack -= q.value("rx_stack", uint64_t{0});
  std::printf("[ host     ] group frames from the outside: classifier.reasons.host_group +%" PRIu64
              ", flooded by switchd from the host's stack (queues[].rx_stack) +%" PRIu64 "\n",
              groups, rx_stack);
  EXPECT_GE(groups, 2u) << "at least the two ARP requests";
  EXPECT_EQ(rx_stack, groups) << "every group frame the classifier passed is flooded once";
  EXPECT_EQ(u64(after_ip, {"classifier", "reasons", "broadcast", "frames"}),
            u64(before_ip, {"classifier", "reasons", "broadcast", "frames"}));
  EXPECT_TRUE(switchd_alive());
  expect_pools_idle();
}

TEST_F(SwitchHostTest, HostPort) {
  ASSERT_NO_FATAL_FAILURE(host_on_uplink());
  const std::string up_mac = mac_of_dev("up0");
  json up = call("uplink.attach", {{"name", "up0"}, {"host", "port"}});
  EXPECT_EQ(up["host"].value("mode", ""), "port") << up.dump();
  EXPECT_EQ(up["host"].value("netdev", ""), "up0-host") << up.dump();
  EXPECT_EQ(up["host"]["moved"]["addresses"], json::array({"10.77.0.100/24", "fd77::100/64"})) << up.dump();
  EXPECT_EQ(up["host"]["moved"]["routes"], json::array({"10.88.0.0/16 via 10.77.0.254"})) << up.dump();
  ASSERT_TRUE(link_exists("up0-host") && link_exists("up0-host-sw"));
  EXPECT_EQ(mac_of_dev("up0-host"), up_mac) << "the host's vNIC takes the uplink's MAC";
  expect_host_on_port();
  // The host port is a port like the others, and only uplink.detach removes it.
  const json show = call("show");
  const json hn = nic_of(show, "host");
  EXPECT_EQ(hn.value("state", ""), "connected") << show.dump();
  EXPECT_EQ(hn.value("mac", ""), up_mac);
  EXPECT_EQ(hn.value("backend", ""), "up0-host-sw");
  expect_refused("nic.disconnect", {{"port", "host"}}, "wrong_state", {"host port", "up0-host", "uplink.detach"});
  expect_refused("port.delete", {{"name", "host"}}, "wrong_state", {"host port", "uplink.detach"});
  // The configuration file describes the host port by its [uplink]: the
  // running switch, exported and applied back, has nothing to do.
  const std::string exported = call("config.export")["config"].get<std::string>();
  EXPECT_NE(exported.find("host_netdev = \"up0-host\""), std::string::npos) << exported;
  EXPECT_EQ(exported.find("name = \"host\""), std::string::npos) << "the host port is the uplink's, not a [[port]]";
  EXPECT_EQ(call("config.apply", {{"config", exported}, {"dry_run", true}})["steps"].size(), 0u) << exported;

  add_port({.vm = 1});
  ASSERT_NO_FATAL_FAILURE(set_ip("vm1", "10.77.0.1/24"));
  expect_ping("", "vm1", "10.77.0.1");
  expect_ping("", "ext", "10.77.0.254");
  expect_ping("", "ext (through the moved route)", "10.88.0.1");
  expect_ping("vm1", "the host", "10.77.0.100");
  expect_ping("ext", "the host", "10.77.0.100");
  expect_iperf("", "vm1", "10.77.0.1", 5221, "host port to a VM");
  expect_iperf("", "ext", "10.77.0.254", 5222, "host port to the outside");
  const json st = call("stats");
  EXPECT_GT(u64(st, {"nics", "host", "from_vm_frames"}), 10u) << st["nics"].dump();
  EXPECT_GT(u64(st, {"nics", "host", "fast_frames"}), 10u) << "frames to the host's MAC take the host port's vmq";
  const json hs = call("show")["uplink"]["host"]["netdev_stats"];
  EXPECT_GT(u64(hs, {"rx_packets"}), 10u) << hs.dump();
  EXPECT_GT(u64(hs, {"tx_packets"}), 10u) << hs.dump();
  expect_pools_idle();

  // Detach: everything back on the uplink, the veth pair gone.
  call("nic.disconnect", {{"port", "vm1"}});
  call("uplink.detach");
  expect_host_on_uplink();
  EXPECT_FALSE(link_exists("up0-host"));
  EXPECT_FALSE(link_exists("up0-host-sw"));
  EXPECT_EQ(call("show")["ports"].size(), 1u) << "the host port is gone, vm1 stays";
  expect_ping("ext", "the host (on the uplink again)", "10.77.0.100");
  EXPECT_TRUE(switchd_alive());
}

TEST_F(SwitchHostTest, HostPortSurvivesARestart) {
  ASSERT_NO_FATAL_FAILURE(host_on_uplink());
  call("uplink.attach", {{"name", "up0"}, {"host", "port"}, {"host_vlan", 0}});
  const json show0 = call("show");
  stop_switchd(SIGTERM);
  expect_host_on_port();  // switchd is down: the host keeps its port
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  const json show1 = call("show");
  auto config = [](json host) {
    host.erase("netdev_stats");
    return host;
  };
  EXPECT_EQ(config(show1["uplink"]["host"]), config(show0["uplink"]["host"])) << show1.dump();
  EXPECT_EQ(show1["ports"], show0["ports"]) << show1.dump();
  EXPECT_TRUE(show1["uplink"].value("adopted", false));
  expect_host_on_port();
  const std::string log = slurp(log_);
  size_t moves = 0;
  for (size_t at = 0; (at = log.find("moved from up0", at)) != std::string::npos; at++) moves++;
  EXPECT_EQ(moves, 1u) << "a restart adopts the host port without moving anything again:\n" << log;
  expect_ping("", "ext", "10.77.0.254");
  expect_ping("ext", "the host", "10.77.0.100");
  call("uplink.detach");
  expect_host_on_uplink();
  EXPECT_FALSE(link_exists("up0-host"));
}

TEST_F(SwitchHostTest, HostPortRefusedAttachChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(host_on_uplink());
  // A netdev of that name already: the attach gets as far as the veth pair, then undoes all.
  ASSERT_TRUE(sh_ok("ip link add hostp type veth peer name hostp-peer"));
  expect_refused("uplink.attach", {{"name", "up0"}, {"host", "port"}, {"host_netdev", "hostp"}}, "exists",
                 {"host_netdev 'hostp'", "already exists", "nothing changed"});
  expect_host_on_uplink();
  EXPECT_FALSE(link_exists("hostp-sw"));
  std::string xdp;
  sh("ip -d link show up0", &xdp);
  EXPECT_EQ(xdp.find("prog/xdp"), std::string::npos) << "the classifier is detached again:\n" << xdp;
  EXPECT_TRUE(call("show")["uplink"].is_null());
  EXPECT_TRUE(call("show")["ports"].empty());
  std::string pins;
  sh("ls -A /sys/fs/bpf/xvmq", &pins);
  EXPECT_EQ(pins, "") << "no pins left";
  expect_refused("uplink.attach", {{"name", "up0"}, {"host", "port"}, {"host_vlan", 4095}}, "usage", {"host_vlan"});
  expect_refused("uplink.attach", {{"name", "up0"}, {"host", "stack"}, {"host_netdev", "x"}}, "usage", {"host=port"});
  // And with a free name it works.
  json up = call("uplink.attach", {{"name", "up0"}, {"host", "port"}, {"host_netdev", "hp0"}, {"host_vlan", 0}});
  EXPECT_EQ(up["host"].value("netdev", ""), "hp0") << up.dump();
  EXPECT_EQ(up["host"].value("backend", ""), "hp0-sw") << up.dump();
  expect_ping("ext", "the host", "10.77.0.100");
  call("uplink.detach");
  expect_host_on_uplink();
  EXPECT_FALSE(link_exists("hp0"));
}

// Frames the kernel drops at switchd's AF_XDP sockets (XDP_STATISTICS) are
// counted: with switchd stopped nothing drains its rings, so a burst from a
// VM and from the outside overflows them, and every frame is accounted for.
TEST_F(SwitchTest, KernelDropsAtTheSocketsAreCounted) {
  const std::vector<PortSpec> ports{{.vm = 1}, {.vm = 2, .vmq = "off"}};
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  ASSERT_EQ(nic_of(call("show"), "vm1").value("path", ""), "vmq");
  constexpr uint64_t N = 6000;  // each burst: more than the rings and fill rings hold
  const json before = call("stats");
  const uint64_t veth_drop0 = netdev_stat(vm(1), "eth0", "tx_dropped");
  uint64_t sent_vm = 0, sent_fast = 0, sent_default = 0;
  {
    ASSERT_EQ(::kill(pid_, SIGSTOP), 0);
    struct Resume {
      pid_t pid;
      ~Resume() { ::kill(pid, SIGCONT); }
    } resume{pid_};
    auto burst = [&](const std::string& where, const std::string& dev, const std::string& dst, const std::string& src,
                     uint64_t* sent) {
      const std::string err = with_raw_socket(ns(where), dev, [&](int fd, const sockaddr_ll& to) {
        auto f = raw_frame(dst, src, 64, 0x5a);
        for (uint64_t i = 0; i < N && send_retrying(fd, to, f); i++) ++*sent;
      });
      EXPECT_EQ(err, "");
      EXPECT_EQ(*sent, N) << where << ": " << strerror(errno);
    };
    burst(vm(1), "eth0", kUnknownMac, mac_of(1), &sent_vm);         // VM -> its backend socket
    burst("ext", "ext0", mac_of(1), kOutsideMac, &sent_fast);       // outside -> vm1's vmq socket
    burst("ext", "ext0", kUnknownMac, kOutsideMac, &sent_default);  // outside -> the default sockets
  }
  // switchd drains what its rings hold and reads the kernel's counters (every 100 ms).
  json after;
  for (int i = 0; i < 20; i++) {
    std::this_thread::sleep_for(250ms);
    json again = call("stats");
    if (again == after) break;
    after = again;
  }
  auto d = [&](std::initializer_list<const char*> path) { return u64(after, path) - u64(before, path); };
  auto sum_queues = [&](const json& st, const char* a, const char* b) {
    uint64_t n = 0;
    for (const auto& q : st["queues"]) n += q.contains(a) ? q[a].value(b, uint64_t{0}) : 0;
    return n;
  };
  auto dq = [&](const char* a, const char* b) { return sum_queues(after, a, b) - sum_queues(before, a, b); };
  const uint64_t veth_drops = netdev_stat(vm(1), "eth0", "tx_dropped") - veth_drop0;  // the veth's ring, before XDP

  // From the VM: what switchd read from vm1's backend sockets + what the kernel dropped there.
  const uint64_t from_vm = d({"nics", "vm1", "from_vm_frames"});
  const uint64_t vm_xsk =
      d({"nics", "vm1", "drops", "xsk_rx_dropped"}) + d({"nics", "vm1", "drops", "xsk_rx_ring_full"});
  // To vm1's vmq: what the classifier sent there = what switchd read + the kernel's drops.
  const uint64_t classified_fast = d({"classifier", "vmqs", "1", "frames"});
  const uint64_t fast = d({"nics", "vm1", "fast_frames"});
  const uint64_t fast_xsk =
      d({"nics", "vm1", "drops", "xsk_vmq_rx_dropped"}) + d({"nics", "vm1", "drops", "xsk_vmq_rx_ring_full"});
  // The default sockets: the queues' kernel drops less the NICs' are theirs.
  const uint64_t classified_default = d({"classifier", "vmqs", "0", "frames"});
  const uint64_t rx_default = [&] {
    uint64_t n = 0;
    for (const auto& q : after["queues"]) n += q.value("rx_default", uint64_t{0});
    for (const auto& q : before["queues"]) n -= q.value("rx_default", uint64_t{0});
    return n;
  }();
  const uint64_t queue_xsk = dq("drops", "xsk_rx_dropped") + dq("drops", "xsk_rx_ring_full");
  const uint64_t nic_xsk = vm_xsk + fast_xsk + d({"nics", "vm2", "drops", "xsk_rx_dropped"}) +
                           d({"nics", "vm2", "drops", "xsk_rx_ring_full"});
  const uint64_t default_xsk = queue_xsk - nic_xsk;
  std::printf("[ xsk      ] switchd stopped, %" PRIu64
              " frames per burst:\n"
              "             vm1 -> out: %" PRIu64 " read by switchd + %" PRIu64
              " dropped at its backend sockets + %" PRIu64 " at the veth = %" PRIu64
              "\n"
              "             out -> vm1 (vmq): classifier %" PRIu64 " = %" PRIu64 " read + %" PRIu64
              " dropped at the vmq sockets\n"
              "             out -> unknown (default): classifier %" PRIu64 " = %" PRIu64 " read + %" PRIu64
              " dropped at the default sockets\n"
              "             queues[].xsk: %s\n",
              N, from_vm, vm_xsk, veth_drops, from_vm + vm_xsk + veth_drops, classified_fast, fast, fast_xsk,
              classified_default, rx_default, default_xsk,
              [&] {
                std::string x;
                for (const auto& q : after["queues"]) x += q["xsk"].dump() + " ";
                return x;
              }()
                  .c_str());
  EXPECT_EQ(from_vm + vm_xsk + veth_drops, sent_vm) << after["nics"]["vm1"].dump();
  EXPECT_GT(vm_xsk, 0u) << "the burst overflowed the backend's rings";
  EXPECT_EQ(classified_fast, sent_fast) << after["classifier"]["vmqs"].dump();
  EXPECT_EQ(fast + fast_xsk, classified_fast) << after["nics"]["vm1"].dump();
  EXPECT_GT(fast_xsk, 0u);
  EXPECT_GE(classified_default, sent_default);
  EXPECT_EQ(rx_default + default_xsk, classified_default) << after["queues"].dump();
  EXPECT_GT(default_xsk, 0u);
  EXPECT_GT(u64(after, {"nics", "vm1", "xsk", "backend", "rx_fill_ring_empty_descs"}), 0u)
      << after["nics"]["vm1"].dump();
  EXPECT_EQ(dq("xsk", "rx_invalid_descs") + dq("xsk", "tx_invalid_descs"), 0u)
      << "switchd never posts a bad descriptor";
  EXPECT_TRUE(switchd_alive());
  expect_pools_idle();
}

TEST_F(SwitchHostTest, HostPortFailureHalfWayIsUndone) {
  ASSERT_NO_FATAL_FAILURE(host_on_uplink());
  // New netdevs get no IPv6: the attach makes the veth pair, connects the host port, moves
  // the IPv4 address, then fails on the IPv6 one, and must undo all of it.
  ASSERT_TRUE(sh_ok("sysctl -qw net.ipv6.conf.default.disable_ipv6=1"));
  const std::string routes0 = routes_on("up0");
  expect_refused("uplink.attach", {{"name", "up0"}, {"host", "port"}}, "kernel",
                 {"add address fd77::100/64 to up0-host", "undone, nothing changed"});
  expect_host_on_uplink();
  EXPECT_EQ(routes_on("up0"), routes0);
  EXPECT_FALSE(link_exists("up0-host"));
  EXPECT_FALSE(link_exists("up0-host-sw"));
  std::string xdp;
  sh("ip -d link show up0", &xdp);
  EXPECT_EQ(xdp.find("prog/xdp"), std::string::npos) << "the classifier is detached again:\n" << xdp;
  EXPECT_TRUE(call("events")["events"].empty()) << call("events").dump();
  expected_log_.push_back("undone, nothing changed");
  expect_ping("ext", "the host, still on its uplink", "10.77.0.100");
}

class SwitchHostDetachOnExitTest : public SwitchHostTest {
 protected:
  SwitchHostDetachOnExitTest() { switchd_extra_ = {"--detach-on-exit"}; }
};

TEST_F(SwitchHostDetachOnExitTest, ShutdownGivesTheHostItsUplinkBackAndARestartTakesItAgain) {
  ASSERT_NO_FATAL_FAILURE(host_on_uplink());
  call("uplink.attach", {{"name", "up0"}, {"host", "port"}, {"host_netdev", "hp0"}});
  EXPECT_NE(addrs_on("hp0").find("10.77.0.100/24"), std::string::npos) << addrs_on("hp0");
  stop_switchd(SIGTERM);
  expect_host_on_uplink();
  EXPECT_FALSE(link_exists("hp0"));
  EXPECT_FALSE(link_exists("hp0-sw"));
  expect_ping("ext", "the host, switchd stopped", "10.77.0.100");
  // The configuration is not lost: the uplink is attached again, with its host port.
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  const json up = call("show")["uplink"];
  EXPECT_EQ(up["host"].value("netdev", ""), "hp0") << up.dump();
  EXPECT_EQ(up["host"]["moved"]["addresses"], json::array({"10.77.0.100/24", "fd77::100/64"})) << up.dump();
  EXPECT_NE(addrs_on("hp0").find("10.77.0.100/24"), std::string::npos) << addrs_on("hp0");
  EXPECT_NE(routes_on("hp0").find("10.88.0.0/16 via 10.77.0.254"), std::string::npos) << routes_on("hp0");
  expect_ping("ext", "the host through its port again", "10.77.0.100");
  call("uplink.detach");
  expect_host_on_uplink();
  EXPECT_FALSE(link_exists("hp0"));
}

TEST_P(SwitchDeliveryTest, TrunkNativeCarriesIp) {
  const std::vector<PortSpec> ports{{.vm = 1, .trunk = true, .allowed = {20}, .native = 0},
                                    {.vm = 2, .access = 0, .vmq = "off"}};
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  ASSERT_NO_FATAL_FAILURE(set_ip("vm1", "10.77.4.1/24"));
  ASSERT_NO_FATAL_FAILURE(set_ip("vm2", "10.77.4.2/24"));
  ASSERT_NO_FATAL_FAILURE(set_ip("ext", "10.77.4.254/24"));
  expect_ping("vm1", "vm2", "10.77.4.2");
  expect_ping("vm2", "vm1", "10.77.4.1");
  expect_iperf("vm1", "vm2", "10.77.4.2", 5211, "trunk's native VLAN 0 (untagged) to an access VLAN 0 NIC");
  expect_iperf("vm2", "vm1", "10.77.4.1", 5212, "access VLAN 0 to the trunk's native VLAN");
  // The outside and the trunk's native VLAN: by vm1's vmq (its filter on
  // VLAN 0 untagged), and back from vm1 to the uplink (in XDP with kernel
  // delivery), untagged both ways.
  const Snap start = snap(ports);
  expect_ping("ext", "vm1", "10.77.4.1");
  expect_iperf("ext", "vm1", "10.77.4.1", 5213, "the outside to the trunk's native VLAN");
  const Snap end = snap(ports);
  const json& st = end.st;
  for (const char* p : {"vm1", "vm2"})
    for (const char* why : {"spoofed_source", "tagged_on_access", "vlan_not_allowed"})
      EXPECT_EQ(nic_drop(st, p, why), 0u) << p << " " << why;
  const uint64_t fast = u64(end.st, {"nics", "vm1", "fast_frames"}) - u64(start.st, {"nics", "vm1", "fast_frames"});
  const uint64_t vmq_rx = rx_vmq(end.st) - rx_vmq(start.st);
  const uint64_t xdp = prog_delta(start, end, "vm1", XVMQ_PORT_FORWARDED);
  std::printf("[ way      ] vm1: %" PRIu64 " frames in by its vmq, %" PRIu64 " read from vmq sockets, %" PRIu64
              " sent on in XDP\n",
              fast, vmq_rx, xdp);
  EXPECT_GT(fast, 1000u);
  EXPECT_EQ(vmq_rx, kernel() ? 0u : fast);
  if (kernel()) {
    EXPECT_GT(xdp, 100u);
  } else {
    EXPECT_EQ(xdp, 0u);
  }
  expect_no_kernel_losses(st, ports);
  expect_pools_idle();
}

class SwitchSmallFrameTest : public SwitchTest {
 protected:
  SwitchSmallFrameTest() { switchd_extra_ = {"--frame-size", "2048"}; }
};

TEST_F(SwitchSmallFrameTest, TooBigFromAVmIsCountedPerNic) {
  // Jumbo-capable VMs: 3000 bytes on both ends of their NICs.
  for (int v : {1, 2}) {
    ASSERT_TRUE(sh_ok("ip -n " + ns(vm(v)) + " link set eth0 mtu 3000"));
    ASSERT_TRUE(sh_ok("ip link set " + vm(v) + "-host mtu 3000"));
  }
  const std::vector<PortSpec> ports{{.vm = 1}, {.vm = 2, .vmq = "off"}};
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  const json show = call("show");
  EXPECT_EQ(u64(show, {"uplink", "max_frame"}), 1728u) << show["uplink"].dump();

  constexpr int N = 5;
  auto caps = capture({"ext", "vm2"});
  const json before = call("stats");
  const std::string err = with_raw_socket(ns("vm1"), "eth0", [&](int fd, const sockaddr_ll& to) {
    const std::string src = mac_of(1);
    for (int i = 0; i < N; i++) {
      EXPECT_TRUE(send_retrying(fd, to, raw_frame(mac_of(2), src, 2500, 0xb1))) << strerror(errno);
      EXPECT_TRUE(send_retrying(fd, to, raw_frame(kBroadcast, src, 2500, 0xb2))) << strerror(errno);
      EXPECT_TRUE(send_retrying(fd, to, raw_frame(mac_of(2), src, 1700, 0xa1))) << strerror(errno);
    }
  });
  ASSERT_EQ(err, "");
  stop_all(caps);
  const json after = call("stats");
  std::map<std::string, std::map<size_t, uint64_t>> got{{"ext", {}}, {"vm2", {}}};  // port -> length -> frames from vm1
  for (const auto& [port, cap] : caps)
    for (const auto& s : cap->frames())
      if (xvmq::format_mac(s.src) == mac_of(1)) got[port][s.len]++;
  const size_t vm2_lengths = got["vm2"].size(), ext_lengths = got["ext"].size();
  const uint64_t too_big = nic_drop(after, "vm1", "too_big") - nic_drop(before, "vm1", "too_big");
  std::printf(
      "[ too big  ] vm1 sent %d x 2500 bytes to vm2, %d x 2500 broadcast, %d x 1700 to vm2: "
      "nics.vm1.drops.too_big +%" PRIu64 ", vm2 got %" PRIu64 " of 1700 and %" PRIu64 " of 2500\n",
      N, N, N, too_big, got["vm2"][1700], got["vm2"][2500]);
  EXPECT_EQ(too_big, 2u * N);
  EXPECT_EQ(got["vm2"][1700], static_cast<uint64_t>(N)) << "1700 bytes fit a 2048-byte buffer";
  EXPECT_EQ(got["vm2"][2500], 0u);
  EXPECT_EQ(ext_lengths, 0u) << "nothing of vm1's reaches the outside";
  EXPECT_EQ(vm2_lengths, 1u) << "vm2 got only the 1700-byte frames";
  EXPECT_EQ(u64(after, {"nics", "vm1", "from_vm_frames"}) - u64(before, {"nics", "vm1", "from_vm_frames"}),
            static_cast<uint64_t>(N));
  EXPECT_EQ(nic_drop(after, "vm2", "too_big"), 0u);
  EXPECT_TRUE(switchd_alive());
  expect_pools_idle();
}

}  // namespace

// Static FDB entries: a MAC behind a VM's NIC (a container or nested guest
// of that VM). Frames from outside to it reach that VM; the VM may send from
// it; a restart keeps the entry; without it, it is unknown unicast again.
TEST_P(SwitchDeliveryTest, StaticFdbEntryPutsAMacBehindANic) {
  std::vector<PortSpec> ports{{.vm = 1, .access = 0}, {.vm = 2, .access = 0, .vmq = "off"}};
  ASSERT_NO_FATAL_FAILURE(add_ports(ports));
  const std::string behind = "02:00:00:00:10:01";
  constexpr uint64_t N = 200;
  auto frames = [](const json& r) {
    uint64_t n = 0;
    for (const auto& [_, s] : r["streams"].items()) n += u64(s, {"frames"});
    return n;
  };
  // N frames from `from` (a namespace and its netdev) to dst, counted in vm `to`.
  auto deliver = [&](const std::string& from, const std::string& dev, const std::string& src, const std::string& dst,
                     int to) {
    Bg rx = receive(to, 4, "--idle-ms 1500");
    EXPECT_TRUE(sh_ok(in(from, std::string(FRAME_TOOL) + " send --dev " + dev + " --dst " + dst + " --src " + src +
                                   " --count " + std::to_string(N) + " --rate 2000 --timeout 10")));
    return frames(rx.wait());
  };

  json before = call("stats");
  EXPECT_EQ(deliver("ext", "ext0", kOutsideMac, behind, 1), 0u) << "no entry: nobody's MAC";
  EXPECT_EQ(drops_between(before, call("stats"))["unknown_unicast"], N);

  json added = call("fdb.add", {{"mac", behind}, {"vlan", 0}, {"port", "vm1"}});
  EXPECT_EQ(added.value("port", ""), "vm1");
  EXPECT_EQ(deliver("ext", "ext0", kOutsideMac, behind, 1), N) << "the entry sends them to vm1";
  const Snap from0 = snap(ports);
  before = from0.st;
  EXPECT_EQ(deliver(vm(1), "eth0", behind, mac_of(2), 2), N) << "vm1 sends from the MAC behind it";
  const Snap from1 = snap(ports);
  EXPECT_EQ(nic_drop(from1.st, "vm1", "spoofed_source"), nic_drop(before, "vm1", "spoofed_source"));
  // Its VM port program let them pass (the entry is one of its source MACs)
  // and handed them to the switch: vm2 has no vmq.
  EXPECT_EQ(prog_delta(from0, from1, "vm1", XVMQ_PORT_TO_SWITCH), N);
  EXPECT_EQ(prog_delta(from0, from1, "vm1", XVMQ_PORT_SPOOFED_SOURCE), 0u);

  bool listed = false;
  const json fdb = call("fdb.show");
  for (const auto& e : fdb["entries"])
    listed |= e.value("mac", "") == behind && e.value("port", "") == "vm1" && e.value("added", false);
  EXPECT_TRUE(listed) << fdb.dump();

  expect_refused("fdb.add", {{"mac", behind}, {"vlan", 0}, {"port", "vm2"}}, "exists", {"already behind port vm1"});
  expect_refused("fdb.add", {{"mac", "01:00:5e:00:00:01"}, {"port", "vm1"}}, "usage", {"not a unicast MAC"});
  expect_refused("fdb.add", {{"mac", "02:00:00:00:10:02"}, {"vlan", 10}, {"port", "vm1"}}, "usage",
                 {"not on VLAN 10", "carries 0"});
  expect_refused("fdb.add", {{"mac", mac_of(2)}, {"vlan", 0}, {"port", "vm1"}}, "exists", {"nic vm2's own MAC"});
  expect_refused("fdb.add", {{"mac", "02:00:00:00:10:02"}, {"port", "nosuch"}}, "not_found", {"nosuch"});
  expect_refused("fdb.del", {{"mac", "02:00:00:00:10:02"}}, "not_found", {"no static entry"});

  // A restart keeps the entry.
  stop_switchd(SIGTERM);
  ASSERT_NO_FATAL_FAILURE(start_switchd());
  ASSERT_NO_FATAL_FAILURE(require_delivery("vm1", delivery_));
  EXPECT_EQ(deliver("ext", "ext0", kOutsideMac, behind, 1), N) << "after a restart";
  EXPECT_EQ(deliver(vm(1), "eth0", behind, mac_of(2), 2), N) << "vm1 sends from the MAC behind it, after a restart";

  call("fdb.del", {{"mac", behind}, {"vlan", 0}});
  EXPECT_EQ(deliver("ext", "ext0", kOutsideMac, behind, 1), 0u) << "the entry is gone";
  expect_no_kernel_losses(call("stats"), ports);
  expect_pools_idle();
}
