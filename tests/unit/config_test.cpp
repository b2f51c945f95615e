// The configuration file and the planner alone (switchd/core/config.h): a table of
// bad files, each refused with its line and reason; planner rows from one
// state of the model to a file. No privileges needed.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "switchd/core/config.h"

namespace {

using namespace xvmq;
using namespace xvmq::switchd;

const std::string kUplink = "[uplink]\nname = \"up0\"\n";

std::string port(const std::string& name, const std::string& mac, const std::string& extra = "") {
  return "\n[[port]]\nname = \"" + name + "\"\n[port.nic]\nmac = \"" + mac + "\"\nbackend = \"" + name + "-host\"\n" +
         extra;
}

struct BadFile {
  const char* name;
  std::string text;
  int line;
  std::vector<std::string> words;
};

// Each file refused, naming its line and each of its words.
void expect_refused(const std::vector<BadFile>& rows) {
  for (const auto& row : rows) {
    SCOPED_TRACE(row.name);
    auto r = parse_config(row.text, "sw.toml");
    ASSERT_FALSE(r) << "accepted:\n" << row.text;
    const std::string& m = r.error().message;
    EXPECT_TRUE(m.starts_with("sw.toml:" + std::to_string(row.line) + ": ")) << m << "\n" << row.text;
    for (const auto& w : row.words) EXPECT_NE(m.find(w), std::string::npos) << "'" << w << "' not in: " << m;
  }
}

TEST(ConfigParse, BadFilesNameTheLineAndTheReason) {
  const std::vector<BadFile> rows = {
      {"syntax error", kUplink + "[[port]]\nname = vm1\n", 4, {"sw.toml:4:"}},
      {"unknown top-level key", "uplinks = 1\n" + kUplink, 1, {"unknown key 'uplinks'", "known: port, uplink"}},
      {"unknown uplink key", "[uplink]\nname = \"up0\"\nmdoe = \"skb\"\n", 3, {"uplink", "unknown key 'mdoe'"}},
      {"host_netdev without a host port",
       "[uplink]\nname = \"up0\"\nhost = \"stack\"\nhost_netdev = \"h0\"\n",
       4,
       {"uplink", "host_netdev goes with host = \"port\""}},
      {"host_vlan 4095", "[uplink]\nname = \"up0\"\nhost = \"port\"\nhost_vlan = 4095\n", 4, {"host_vlan", "0..4094"}},
      {"unknown NIC key", kUplink + port("vm1", "02:00:00:00:00:01", "vlna = 10\n"), 9, {"port 'vm1'", "'vlna'"}},
      {"unknown port key",
       kUplink + "\n[[port]]\nname = \"vm1\"\nmac = \"02:00:00:00:00:01\"\n",
       6,
       {"unknown key 'mac'"}},
      {"bad MAC", kUplink + port("vm1", "02:00:00:00:00"), 7, {"port 'vm1'", "'02:00:00:00:00' is not a MAC"}},
      {"multicast MAC",
       kUplink + port("vm1", "02:00:00:00:00:01") + port("vm2", "01:00:5e:00:00:01"),
       13,
       {"port 'vm2'", "01:00:5e:00:00:01", "unicast"}},
      {"MAC not a string",
       kUplink + "\n[[port]]\nname = \"vm1\"\n[port.nic]\nbackend = \"vm1-host\"\nmac = 2\n",
       8,
       {"port 'vm1'", "argument 'mac' must be a string"}},
      {"MAC missing",
       kUplink + "\n[[port]]\nname = \"vm1\"\n[port.nic]\nbackend = \"vm1-host\"\n",
       6,
       {"port 'vm1'", "missing argument 'mac'"}},
      {"VLAN 4095", kUplink + port("vm1", "02:00:00:00:00:01", "vlan = 4095\n"), 9, {"port 'vm1'", "vlan", "0..4094"}},
      {"VLAN not a number",
       kUplink + port("vm1", "02:00:00:00:00:01", "vlan = \"10\"\n"),
       9,
       {"vlan must be an integer"}},
      {"trunk without VLANs",
       kUplink + port("vm1", "02:00:00:00:00:01", "vlan_mode = \"trunk\"\n"),
       9,
       {"port 'vm1'", "trunk NIC needs at least one VLAN"}},
      {"trunk VLAN 0",
       kUplink + port("vm1", "02:00:00:00:00:01", "trunk_vlans = [10, 0]\n"),
       9,
       {"trunk_vlans", "1..4094"}},
      {"native VLAN on access",
       kUplink + port("vm1", "02:00:00:00:00:01", "vlan_mode = \"access\"\nnative_vlan = 3\n"),
       9,
       {"need vlan_mode trunk"}},
      {"duplicate port",
       kUplink + port("vm1", "02:00:00:00:00:01") + "\n[[port]]\nname = \"vm1\"\n",
       11,
       {"port vm1 already exists"}},
      {"duplicate MAC on a VLAN",
       kUplink + port("vm1", "02:00:00:00:00:01", "vlan = 10\n") +
           port("vm2", "02:00:00:00:00:01", "trunk_vlans = [10]\n"),
       14,
       {"port 'vm2'", "MAC 02:00:00:00:00:01 on VLAN 10", "nic vm1"}},
      {"duplicate backend",
       kUplink + port("vm1", "02:00:00:00:00:01") +
           "\n[[port]]\nname = \"vm2\"\n[port.nic]\nmac = \"02:00:00:00:00:02\"\n"
           "backend = \"vm1-host\"\n",
       14,
       {"port 'vm2'", "backend vm1-host is already used"}},
      {"port name too long",
       kUplink + port("a-very-long-port-name", "02:00:00:00:00:01"),
       5,
       {"a-very-long-port-name", "1 to 15 characters"}},
      {"uplink name too long", "[uplink]\nname = \"a-very-long-uplink\"\n", 2, {"uplink", "1 to 15 characters"}},
      {"uplink mode", kUplink + "mode = \"fast\"\n", 3, {"mode 'fast'", "auto, native, skb or offload"}},
      {"uplink host", kUplink + "host = \"yes\"\n", 3, {"host 'yes'", "stack", "port"}},
      {"uplink without name", "[uplink]\nmode = \"skb\"\n", 1, {"missing key 'name'"}},
      {"vmq policy", kUplink + port("vm1", "02:00:00:00:00:01", "vmq = \"on\"\n"), 9, {"vmq 'on'", "auto or off"}},
      {"steering", kUplink + port("vm1", "02:00:00:00:00:01", "steering = \"fpga\"\n"), 9, {"steering 'fpga'"}},
      {"allow_mac_spoofing not a bool",
       kUplink + port("vm1", "02:00:00:00:00:01", "allow_mac_spoofing = 1\n"),
       9,
       {"allow_mac_spoofing must be true or false"}},
      {"connected NIC without uplink", port("vm1", "02:00:00:00:00:01"), 4, {"needs an [uplink]"}},
      {"port is not an array", kUplink + "[port]\nname = \"vm1\"\n", 3, {"[[port]]"}},
  };
  expect_refused(rows);
}

TEST(ConfigParse, BadDeliveryAndVmqCpuNameTheirLine) {
  expect_refused({
      {"delivery",
       kUplink + port("vm1", "02:00:00:00:00:01", "vlan = 1\ndelivery = \"dpdk\"\n"),
       10,
       {"delivery 'dpdk'", "auto", "kernel", "xsk"}},
      {"vmq_cpu not a CPU", kUplink + port("vm1", "02:00:00:00:00:01", "vmq_cpu = -1\n"), 9, {"vmq_cpu must be"}},
      {"kernel delivery on a vhost-user backend",
       kUplink + "\n[[port]]\nname = \"vm1\"\n[port.nic]\nmac = \"02:00:00:00:00:01\"\n"
                 "backend = \"vhost-user:/run/vm1.sock\"\ndelivery = \"kernel\"\n",
       8,
       {"backend vhost-user:/run/vm1.sock takes delivery auto or xsk"}},
      {"vmq_cpu with delivery xsk",
       kUplink + port("vm1", "02:00:00:00:00:01", "delivery = \"xsk\"\nvmq_cpu = 1\n"),
       10,
       {"vmq_cpu 1 goes with delivery kernel or auto"}},
  });
}

// What a file may make switchd spend: each limit refused before toml++
// builds anything, with the line and the limit named.
TEST(ConfigParse, LimitsAreRefusedNamingThem) {
  auto nested = [](const std::string& open, const std::string& close, size_t n) {
    std::string s = "x = ";
    for (size_t i = 0; i < n; ++i) s += open;
    s += "1";
    for (size_t i = 0; i < n; ++i) s += close;
    return s + "\n";
  };
  auto ports = [](size_t n) {
    std::string text = kUplink;
    for (size_t i = 0; i < n; ++i) {
      char mac[18];
      std::snprintf(mac, sizeof(mac), "02:00:00:00:%02zx:%02zx", i >> 8, i & 0xff);
      text += port("p" + std::to_string(i), mac, "vmq = \"off\"\n");
    }
    return text;
  };
  std::string dotted = "a";
  for (int i = 0; i < 100000; ++i) dotted += ".a";
  const int port_lines = 7;  // of port() with its vmq line: the 4097th [[port]] is on line 2 + 4096 * 7 + 2
  std::string trunk = "trunk_vlans = [";
  for (int i = 0; i < 5000; ++i) trunk += (i ? "," : "") + std::to_string(1 + i % 4094);
  trunk += "]\n";
  std::string long_array = "x = [";
  for (int i = 0; i < 1000; ++i) long_array += "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]],";
  long_array += "]\n";
  const std::vector<BadFile> rows = {
      {"50,000 nested inline tables",
       kUplink + nested("{a = ", "}", 50000),
       3,
       {"nest more than 16 deep", "nesting depth limit is 16"}},
      {"100,000 nested arrays", kUplink + nested("[", "]", 100000), 3, {"nesting depth limit is 16"}},
      {"17 nested arrays", kUplink + nested("[", "]", 17), 3, {"nesting depth limit is 16"}},
      {"a long array of nested arrays", long_array, 1, {"nesting depth limit is 16"}},
      {"dotted key of 100,000 parts", kUplink + dotted + " = 1\n", 3, {"dotted key of more than 16 parts"}},
      {"table header of 100,000 parts", kUplink + "[" + dotted + "]\n", 3, {"dotted key of more than 16 parts"}},
      {"oversize file", kUplink + std::string(kMaxConfigBytes, '#'), 3, {"more than the limit of 524288", "512 KiB"}},
      {"4097 ports",
       ports(kMaxPorts + 1),
       2 + static_cast<int>(kMaxPorts) * port_lines + 2,
       {"more than 4096 ports", "the limit is 4096"}},
      {"5000 trunk VLANs",
       kUplink + port("vm1", "02:00:00:00:00:01", trunk),
       9,
       {"trunk_vlans has 5000 entries", "the limit is 4094"}},
  };
  for (const auto& row : rows) {
    SCOPED_TRACE(row.name);
    auto r = parse_config(row.text, "sw.toml");
    ASSERT_FALSE(r) << "accepted";
    const std::string& m = r.error().message;
    EXPECT_TRUE(m.starts_with("sw.toml:" + std::to_string(row.line) + ": ")) << m.substr(0, 300);
    for (const auto& w : row.words)
      EXPECT_NE(m.find(w), std::string::npos) << "'" << w << "' not in: " << m.substr(0, 300);
  }

  // At the limits, and brackets or dots inside strings and comments, are fine.
  std::string at_limit = ports(kMaxPorts);
  ASSERT_LE(at_limit.size(), kMaxConfigBytes);
  auto ok = parse_config(at_limit, "sw.toml");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->ports.size(), kMaxPorts);
  std::string strings = "# [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[ a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s\n" + kUplink +
                        port("vm1", "02:00:00:00:00:01", "trunk_vlans = [10, 20]  # ]]]]]]]]\n") +
                        "# ''' \"\"\" [[[[[[[[[[[[[[[[[[[[[[[[\n";
  auto s = parse_config(strings, "sw.toml");
  EXPECT_TRUE(s) << s.error().message;
  std::string key16 = "a";
  for (int i = 1; i < 16; ++i) key16 += ".a";
  auto k = parse_config(key16 + " = 1\n", "sw.toml");
  ASSERT_FALSE(k);  // an unknown key, but not for its parts
  EXPECT_NE(k.error().message.find("unknown key 'a'"), std::string::npos) << k.error().message;
}

TEST(ConfigParse, GoodFileAndRoundTrip) {
  std::string text = "[uplink]\nname = \"up0\"\nmode = \"skb\"\nhost = \"stack\"\n" + port("vm1", "02:00:00:00:00:01") +
                     port("vm2", "02:00:00:00:00:02", "trunk_vlans = [20, 10]\nnative_vlan = 30\nvmq = \"off\"\n") +
                     port("vm3", "02:00:00:00:00:03", "vlan = 10\nallow_mac_spoofing = true\nconnected = false\n") +
                     port("vm4", "02:00:00:00:00:04", "delivery = \"kernel\"\nvmq_cpu = 3\n") +
                     port("vm5", "02:00:00:00:00:05", "delivery = \"xsk\"\n") + "\n[[port]]\nname = \"spare\"\n" +
                     "\n[[port]]\nname = \"vm6\"\n[port.nic]\nmac = \"02:00:00:00:00:06\"\n"
                     "backend = \"vhost-user:/run/xvmq/vm6.sock\"\n";
  auto r = parse_config(text, "sw.toml");
  ASSERT_TRUE(r) << r.error().message;
  const SwitchConfig& c = *r;
  ASSERT_TRUE(c.uplink);
  EXPECT_EQ(c.uplink->name, "up0");
  EXPECT_EQ(c.uplink->mode, AttachMode::Skb);
  EXPECT_EQ(c.uplink->host, "stack");
  ASSERT_EQ(c.ports.size(), 7u);
  EXPECT_EQ(c.ports.at("vm6").nic->backend, "vhost-user:/run/xvmq/vm6.sock");
  const NicDesc& v2 = *c.ports.at("vm2").nic;
  EXPECT_EQ(v2.vlans.mode, VlanMode::Trunk);
  EXPECT_EQ(v2.vlans.trunk_vlans, (std::vector<uint16_t>{20, 10}));
  EXPECT_EQ(v2.vlans.native, 30);
  EXPECT_EQ(v2.vmq_policy, VmqPolicy::Off);
  EXPECT_EQ(c.ports.at("vm3").nic->vlans.access, 10);
  EXPECT_TRUE(c.ports.at("vm3").nic->allow_mac_spoofing);
  EXPECT_FALSE(c.ports.at("vm3").connected);
  EXPECT_FALSE(c.ports.at("spare").nic);
  EXPECT_EQ(c.ports.at("vm1").line, 6);
  EXPECT_EQ(c.ports.at("vm1").nic->delivery, Delivery::Auto);
  EXPECT_FALSE(c.ports.at("vm1").nic->vmq_cpu);
  EXPECT_EQ(c.ports.at("vm4").nic->delivery, Delivery::Kernel);
  EXPECT_EQ(c.ports.at("vm4").nic->vmq_cpu, 3u);
  EXPECT_EQ(c.ports.at("vm5").nic->delivery, Delivery::Xsk);

  // Written back and read again: the same configuration.
  auto again = parse_config(to_toml(c), "export");
  ASSERT_TRUE(again) << again.error().message << "\n" << to_toml(c);
  EXPECT_EQ(to_toml(*again), to_toml(c));
  EXPECT_EQ(again->uplink, c.uplink);
}

TEST(ConfigParse, HostPortBelongsToTheUplink) {
  auto r = parse_config("[uplink]\nname = \"eth1\"\nhost = \"port\"\nhost_vlan = 10\n", "sw.toml");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->uplink->host_netdev, "eth1-host") << "the default of uplink.attach";
  EXPECT_EQ(r->uplink->host_vlan, 10);
  auto steps = plan({}, std::nullopt, *r);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].command(), "switchctl uplink attach eth1 --host port --host-netdev eth1-host --host-vlan 10");
  auto again = parse_config(to_toml(*r), "export");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->uplink, r->uplink);
}

TEST(ConfigParse, TheExampleFileIsValid) {
  std::ifstream in(EXAMPLE_CONFIG);
  std::stringstream text;
  text << in.rdbuf();
  ASSERT_TRUE(in) << EXAMPLE_CONFIG;
  auto r = parse_config(text.str(), "switch.toml");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->ports.size(), 4u);
  EXPECT_FALSE(r->ports.at("vm3").connected);
}

// A model brought to a state by the ops' own steps.
struct Running {
  Model model{2};
  std::optional<UplinkConfig> uplink = UplinkConfig{"up0"};

  void nic(const std::string& name, const std::string& mac, uint16_t vlan = 0, VmqPolicy vmq = VmqPolicy::Auto,
           bool connect = true) {
    model.port_create(name);
    model.nic_create(name, NicDesc{.mac = *parse_mac(mac),
                                   .backend = name + "-host",
                                   .vlans = PortVlans::access_vlan(vlan),
                                   .vmq_policy = vmq});
    if (vmq == VmqPolicy::Auto && !model.free_vmqs().empty()) model.vmq_allocate(name);
    if (connect) model.nic_connect(name);
  }
  std::vector<std::string> plan_to(const std::string& text) {
    auto desired = parse_config(text, "sw.toml");
    EXPECT_TRUE(desired) << desired.error().message;
    std::vector<std::string> out;
    if (!desired) return out;
    for (const Step& s : plan(model.ports(), uplink, *desired)) out.push_back(s.command());
    return out;
  }
};

using Cmds = std::vector<std::string>;

TEST(ConfigPlan, EmptyToFullInHyperVOrder) {
  Running r;
  r.uplink.reset();
  std::string full = kUplink + port("vm2", "02:00:00:00:00:02", "vlan = 10\nvmq = \"off\"\n") +
                     port("vm1", "02:00:00:00:00:01", "trunk_vlans = [10, 20]\n") + "\n[[port]]\nname = \"spare\"\n";
  EXPECT_EQ(r.plan_to(full),
            (Cmds{"switchctl uplink attach up0", "switchctl port create spare", "switchctl port create vm1",
                  "switchctl port create vm2",
                  "switchctl nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host --trunk 10,20",
                  "switchctl nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --vlan 10 --vmq off",
                  "switchctl nic connect vm1", "switchctl nic connect vm2"}));
}

TEST(ConfigPlan, FullToEmptyRemovesInHyperVOrder) {
  Running r;
  r.nic("vm1", "02:00:00:00:00:01");
  r.nic("vm2", "02:00:00:00:00:02", 0, VmqPolicy::Auto, false);  // created, not connected
  r.model.port_create("spare");
  r.model.port_create("gone");
  r.model.port_teardown("gone");
  EXPECT_EQ(r.plan_to(""),
            (Cmds{"switchctl nic disconnect vm1", "switchctl nic delete vm1", "switchctl nic delete vm2",
                  "switchctl port teardown spare", "switchctl port teardown vm1", "switchctl port teardown vm2",
                  "switchctl port delete gone", "switchctl port delete spare", "switchctl port delete vm1",
                  "switchctl port delete vm2", "switchctl uplink detach"}));
}

TEST(ConfigPlan, UnchangedNicGetsNoStep) {
  Running r;
  r.nic("vm1", "02:00:00:00:00:01", 10);
  r.nic("vm2", "02:00:00:00:00:02");
  std::string same = kUplink + port("vm2", "02:00:00:00:00:02") + port("vm1", "02:00:00:00:00:01", "vlan = 10\n");
  EXPECT_EQ(r.plan_to(same), Cmds{});
  // The running state written out plans to nothing, too.
  EXPECT_EQ(r.plan_to(to_toml(current_config(r.model.ports(), r.uplink))), Cmds{});
  // vm2 goes, vm1 is left alone.
  EXPECT_EQ(r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01", "vlan = 10\n")),
            (Cmds{"switchctl nic disconnect vm2", "switchctl nic delete vm2", "switchctl port teardown vm2",
                  "switchctl port delete vm2"}));
}

TEST(ConfigPlan, VlanChangeRecreatesTheNic) {
  Running r;
  r.nic("vm1", "02:00:00:00:00:01");
  r.nic("vm2", "02:00:00:00:00:02");
  EXPECT_EQ(r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01") + port("vm2", "02:00:00:00:00:02", "vlan = 20\n")),
            (Cmds{"switchctl nic disconnect vm2", "switchctl nic delete vm2",
                  "switchctl nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host --vlan 20",
                  "switchctl nic connect vm2"}));
  // Any property but the vmq policy: MAC spoofing, a trunk, the MAC.
  EXPECT_EQ(r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01") +
                      port("vm2", "02:00:00:00:00:02", "allow_mac_spoofing = true\n"))
                .size(),
            4u);
  EXPECT_EQ(r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01") + port("vm2", "02:00:00:00:00:09")).size(), 4u);
  // A NIC to be left created but not connected: deleted and created again.
  EXPECT_EQ(
      r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01") + port("vm2", "02:00:00:00:00:02", "connected = false\n")),
      (Cmds{"switchctl nic disconnect vm2", "switchctl nic delete vm2",
            "switchctl nic create vm2 --mac 02:00:00:00:00:02 --backend vm2-host"}));
}

TEST(ConfigPlan, VmqPolicyChangeTakesVmqStepsOnly) {
  Running r;
  r.nic("vm1", "02:00:00:00:00:01");
  r.nic("vm2", "02:00:00:00:00:02", 0, VmqPolicy::Off);
  EXPECT_EQ(r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01", "vmq = \"off\"\n") + port("vm2", "02:00:00:00:00:02")),
            (Cmds{"switchctl vmq free vm1 --policy off", "switchctl vmq allocate vm2 --policy auto"}));
}

// A NIC's vmq processor is moved in place (vmq.set), under traffic; with a
// new vmq policy the processor is set first, so that the vmq starts on it.
TEST(ConfigPlan, VmqCpuChangeTakesAVmqSetStep) {
  Running r;
  r.nic("vm1", "02:00:00:00:00:01");
  r.nic("vm2", "02:00:00:00:00:02");
  r.model.set_vmq_cpu("vm2", 1, "vmq.set");
  EXPECT_EQ(r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01", "vmq_cpu = 2\n") + port("vm2", "02:00:00:00:00:02")),
            (Cmds{"switchctl vmq set vm1 --cpu 2", "switchctl vmq set vm2 --spread"}));
  auto desired = parse_config(
      kUplink + port("vm1", "02:00:00:00:00:01", "vmq_cpu = 0\n") + port("vm2", "02:00:00:00:00:02", "vmq_cpu = 1\n"),
      "x");
  ASSERT_TRUE(desired) << desired.error().message;
  const auto steps = plan(r.model.ports(), r.uplink, *desired);
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0], (Step{"vmq.set", {{"port", "vm1"}, {"cpu", 0}}}));
  EXPECT_EQ(r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01") + port("vm2", "02:00:00:00:00:02", "vmq_cpu = 1\n")),
            Cmds{});

  Running p;
  p.nic("vm1", "02:00:00:00:00:01", 0, VmqPolicy::Off);
  p.nic("vm2", "02:00:00:00:00:02");
  EXPECT_EQ(p.plan_to(kUplink + port("vm1", "02:00:00:00:00:01", "vmq_cpu = 3\n") +
                      port("vm2", "02:00:00:00:00:02", "vmq = \"off\"\nvmq_cpu = 1\n")),
            (Cmds{"switchctl vmq free vm2 --policy off", "switchctl vmq set vm1 --cpu 3",
                  "switchctl vmq set vm2 --cpu 1", "switchctl vmq allocate vm1 --policy auto"}));
}

// Another delivery is another NIC: disconnected, deleted, created, connected.
TEST(ConfigPlan, DeliveryChangeRecreatesTheNic) {
  Running r;
  r.nic("vm1", "02:00:00:00:00:01");
  EXPECT_EQ(r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01", "delivery = \"auto\"\n")), Cmds{});
  EXPECT_EQ(r.plan_to(kUplink + port("vm1", "02:00:00:00:00:01", "delivery = \"kernel\"\nvmq_cpu = 2\n")),
            (Cmds{"switchctl nic disconnect vm1", "switchctl nic delete vm1",
                  "switchctl nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host --delivery kernel --vmq-cpu 2",
                  "switchctl nic connect vm1"}));
  auto desired = parse_config(kUplink + port("vm1", "02:00:00:00:00:01", "delivery = \"xsk\"\n"), "x");
  ASSERT_TRUE(desired) << desired.error().message;
  const auto steps = plan(r.model.ports(), r.uplink, *desired);
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(steps[2].args["delivery"], "xsk");
  EXPECT_EQ(steps[2].args["vmq_cpu"], nullptr);
  EXPECT_EQ(nic_from_args(steps[2].args).delivery, Delivery::Xsk);
  // What runs, written out, plans to nothing.
  r.model.set_vmq_cpu("vm1", 3, "vmq.set");
  EXPECT_EQ(r.plan_to(to_toml(current_config(r.model.ports(), r.uplink))), Cmds{});
}

TEST(ConfigPlan, StepOrderAcrossKinds) {
  Running r;
  r.nic("vm1", "02:00:00:00:00:01");                            // stays
  r.nic("vm2", "02:00:00:00:00:02");                            // goes
  r.nic("vm3", "02:00:00:00:00:03", 0, VmqPolicy::Off);         // vmq policy auto
  r.nic("vm4", "02:00:00:00:00:04", 5);                         // VLAN 6
  r.nic("vm5", "02:00:00:00:00:05", 0, VmqPolicy::Off, false);  // connect
  // vm2's MAC moves to the new vm6: only after vm2's NIC is gone.
  std::string want = kUplink + port("vm1", "02:00:00:00:00:01") + port("vm3", "02:00:00:00:00:03") +
                     port("vm4", "02:00:00:00:00:04", "vlan = 6\n") +
                     port("vm5", "02:00:00:00:00:05", "vmq = \"off\"\n") + port("vm6", "02:00:00:00:00:02");
  EXPECT_EQ(r.plan_to(want),
            (Cmds{"switchctl nic disconnect vm2", "switchctl nic disconnect vm4", "switchctl nic delete vm2",
                  "switchctl nic delete vm4", "switchctl port teardown vm2", "switchctl port delete vm2",
                  "switchctl vmq allocate vm3 --policy auto", "switchctl port create vm6",
                  "switchctl nic create vm4 --mac 02:00:00:00:00:04 --backend vm4-host --vlan 6",
                  "switchctl nic create vm6 --mac 02:00:00:00:00:02 --backend vm6-host", "switchctl nic connect vm4",
                  "switchctl nic connect vm5", "switchctl nic connect vm6"}));
}

TEST(ConfigPlan, UplinkChangeRecreatesEveryNic) {
  Running r;
  r.nic("vm1", "02:00:00:00:00:01");
  EXPECT_EQ(r.plan_to("[uplink]\nname = \"up0\"\nmode = \"skb\"\n" + port("vm1", "02:00:00:00:00:01")),
            (Cmds{"switchctl nic disconnect vm1", "switchctl nic delete vm1", "switchctl uplink detach",
                  "switchctl uplink attach up0 --mode skb",
                  "switchctl nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host", "switchctl nic connect vm1"}));
}

TEST(ConfigPlan, StepsCarryTheOpsArguments) {
  Running r;
  r.uplink.reset();
  auto desired = parse_config(kUplink + port("vm1", "02:00:00:00:00:01", "trunk_vlans = [10]\nnative_vlan = 0\n"), "x");
  ASSERT_TRUE(desired);
  auto steps = plan(r.model.ports(), r.uplink, *desired);
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(steps[0], (Step{"uplink.attach", {{"name", "up0"}, {"mode", "auto"}}}));
  EXPECT_EQ(steps[2].op, "nic.create");
  EXPECT_EQ(steps[2].args["trunk_vlans"], nlohmann::json::array({10}));
  EXPECT_EQ(steps[2].args["native_vlan"], 0);
  EXPECT_EQ(steps[2].command(),
            "switchctl nic create vm1 --mac 02:00:00:00:00:01 --backend vm1-host --trunk 10 --native-vlan 0");
  // The arguments go back through the op's own parsing to the same NIC.
  NicDesc c = nic_from_args(steps[2].args);
  EXPECT_EQ(c.vlans.trunk_vlans, desired->ports.at("vm1").nic->vlans.trunk_vlans);
  EXPECT_EQ(c.vlans.native, 0);
}

}  // namespace
