// The switch's edge alone: the ops table and its argument parsers, the state
// file's store and the views' shared NIC fields. No kernel, no datapath.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "switchd/app/ops.h"
#include "switchd/app/state_store.h"
#include "switchd/app/views.h"

namespace xvmq::switchd {
namespace {

using nlohmann::json;

template <class Fn>
std::string usage_of(Fn&& fn) {
  try {
    fn();
  } catch (const Refused& r) {
    EXPECT_EQ(r.error.kind, ErrorKind::Usage) << r.error.message;
    return r.error.message;
  }
  ADD_FAILURE() << "not refused";
  return "";
}

TEST(Ops, TableHasEveryDocumentedOpOnce) {
  const std::set<std::string> documented{
      "uplink.attach", "uplink.detach",  "port.create", "port.teardown", "port.delete", "nic.create",
      "nic.connect",   "nic.disconnect", "nic.delete",  "vmq.allocate",  "vmq.free",    "config.apply",
      "config.export", "show",           "vmq.show",    "stats",         "events",      "fdb.show",
      "fdb.flush",     "fdb.add",        "fdb.del"};
  std::set<std::string> names;
  for (const Op& op : op_table()) {
    EXPECT_TRUE(names.insert(std::string(op.name)).second) << op.name << " twice";
    EXPECT_NE(op.run, nullptr) << op.name;
  }
  EXPECT_EQ(names, documented);
  // Reads change nothing: no state file is written after them.
  for (const Op& op : op_table()) {
    if (op.name == "show" || op.name == "stats" || op.name == "vmq.show" || op.name == "events" ||
        op.name == "fdb.show") {
      EXPECT_FALSE(op.changes) << op.name;
    }
  }
}

TEST(Ops, ParsersTypeTheArguments) {
  const FdbArgs add = parse_fdb_args({{"port", "vm1"}, {"mac", "02:00:00:00:00:09"}}, "fdb.add");
  EXPECT_EQ(add.port, "vm1");
  EXPECT_EQ(add.key, (StaticEntry{Mac{2, 0, 0, 0, 0, 9}, 0}));
  EXPECT_NE(usage_of([] {
              parse_fdb_args({{"mac", "02:00:00:00:00:09"}, {"vlan", 4095}}, "fdb.del");
            }).find("fdb.del: vlan must be an integer 0..4094"),
            std::string::npos);
  EXPECT_NE(usage_of([] {
              parse_vmq_args({{"port", "vm1"}, {"policy", "off"}}, VmqPolicy::Auto, "vmq.allocate");
            }).find("policy must be \"auto\""),
            std::string::npos);
  EXPECT_EQ(parse_vmq_args({{"port", "vm1"}, {"policy", "off"}}, VmqPolicy::Off, "vmq.free").policy, VmqPolicy::Off);
  const UplinkConfig up = parse_attach_args({{"name", "eth0"}, {"host", "port"}, {"host_vlan", 7}});
  EXPECT_EQ(up.host_netdev, default_host_netdev("eth0"));
  EXPECT_EQ(up.host_vlan, 7);
  EXPECT_NE(usage_of([] {
              parse_attach_args({{"name", "eth0"}, {"host_vlan", 7}});
            }).find("go with host=port"),
            std::string::npos);
  EXPECT_NE(usage_of([] { parse_port_args({{"port", "-vm"}}); }).find("port '-vm'"), std::string::npos);
  const NicCreateArgs nic = parse_nic_create_args({{"port", "vm1"},
                                                   {"mac", "02:00:00:00:00:01"},
                                                   {"backend", "vm1-host"},
                                                   {"vlan_mode", "trunk"},
                                                   {"trunk_vlans", {20, 10}},
                                                   {"vmq", "off"}});
  EXPECT_EQ(nic.nic.name, "vm1");
  EXPECT_EQ(nic.nic.vlans.trunk_vlans, (std::vector<uint16_t>{20, 10}));
  EXPECT_TRUE(nic.nic.vlans.carries(10) && nic.nic.vlans.carries(20) && !nic.nic.vlans.carries(0));
  EXPECT_EQ(nic.nic.vmq_policy, VmqPolicy::Off);
  EXPECT_EQ(parse_events_args({{"since", 4}}).since, 4u);
}

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("xvmq-app-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path() const { return (dir_ / "state.json").string(); }
  std::filesystem::path dir_;
};

TEST_F(StateStoreTest, WhatIsSavedLoadsBackAsIt) {
  std::map<std::string, Port> ports;
  ports["vm1"] = Port{.name = "vm1",
                      .nic = Nic{.desc = NicDesc{.name = "vm1",
                                                 .mac = Mac{2, 0, 0, 0, 0, 1},
                                                 .backend = "vm1-host",
                                                 .vlans = PortVlans::trunk({20, 10}, 5),
                                                 .allow_mac_spoofing = true,
                                                 .vmq_policy = VmqPolicy::Off,
                                                 .steering = Steering::Hardware},
                                 .state = NicState::Disconnected,
                                 .vmq_id = 3}};
  ports["spare"] = Port{.name = "spare", .state = PortState::TornDown};
  const UplinkConfig up{
      .name = "up0", .mode = AttachMode::Skb, .host = "port", .host_netdev = "up0-host", .host_vlan = 4};
  const HostPort hp{
      .netdev = "up0-host", .backend = "up0-host-sw", .addresses = {"10.0.0.1/24"}, .routes = {"default"}};
  const FdbStatics statics{{{Mac{2, 0, 0, 0, 0, 9}, 10}, "vm1"}};
  StateStore store(path());
  store.save(ports, up, hp, statics);

  auto loaded = store.load();
  ASSERT_TRUE(loaded);
  ASSERT_EQ(loaded->ports.size(), 2u);
  const Port& spare = loaded->ports[0];
  EXPECT_EQ(spare.name, "spare");
  EXPECT_EQ(spare.state, PortState::TornDown);
  EXPECT_FALSE(spare.nic);
  const Nic& n = *loaded->ports[1].nic;
  EXPECT_EQ(n.desc.name, "vm1");
  EXPECT_EQ(n.desc.vlans.trunk_vlans, (std::vector<uint16_t>{20, 10}));
  EXPECT_EQ(n.desc.vlans.native, 5);
  EXPECT_TRUE(n.desc.allow_mac_spoofing);
  EXPECT_EQ(n.desc.vmq_policy, VmqPolicy::Off);
  EXPECT_EQ(n.desc.steering, Steering::Hardware);
  EXPECT_EQ(n.state, NicState::Disconnected);
  EXPECT_EQ(n.vmq_id, 3u);
  EXPECT_EQ(loaded->uplink, up);
  ASSERT_TRUE(loaded->host_port);
  EXPECT_EQ(loaded->host_port->addresses, hp.addresses);
  EXPECT_EQ(loaded->fdb_static, statics);

  // The file keeps version 1's keys: "vmq" is the allocated id there, the
  // policy is "vmq_policy".
  std::ifstream in(path());
  const json file = json::parse(in);
  EXPECT_EQ(file["version"], 1);
  const json nic = file["ports"][1]["nic"];
  std::set<std::string> keys;
  for (const auto& [k, _] : nic.items()) keys.insert(k);
  EXPECT_EQ(keys, (std::set<std::string>{"mac", "backend", "vlan", "vlan_mode", "trunk_vlans", "native_vlan",
                                         "allow_mac_spoofing", "vmq_policy", "steering", "state", "vmq"}));
  EXPECT_EQ(nic["vmq"], 3);
  EXPECT_EQ(nic["vmq_policy"], "off");
  EXPECT_EQ(file["uplink"]["host_vlan"], 4);
}

TEST_F(StateStoreTest, AnOlderFileGetsTheDefaults) {
  std::ofstream(path()) << R"({"version": 1, "uplink": null, "ports": [
      {"name": "vm1", "state": "created", "nic": {"mac": "02:00:00:00:00:01", "backend": "vm1-host", "state": "connected"}}]})";
  auto loaded = StateStore(path()).load();
  ASSERT_TRUE(loaded);
  const Nic& n = *loaded->ports.at(0).nic;
  EXPECT_EQ(n.desc.vlans.mode, VlanMode::Access);
  EXPECT_EQ(n.desc.vlans.access, 0);
  EXPECT_EQ(n.desc.vmq_policy, VmqPolicy::Auto);
  EXPECT_EQ(n.desc.steering, Steering::Software);
  EXPECT_EQ(n.state, NicState::Connected);
  EXPECT_FALSE(n.vmq_id);
  EXPECT_FALSE(loaded->uplink);
  std::ofstream(path()) << R"({"version": 2})";
  EXPECT_THROW(StateStore(path()).load(), Refused);
}

TEST(Views, ANicShowsTheFieldsTheStateFileKeeps) {
  Model model(2);
  model.port_create("vm1");
  model.nic_create("vm1",
                   NicDesc{.mac = Mac{2, 0, 0, 0, 0, 1}, .backend = "vm1-host", .vlans = PortVlans::trunk({30}, 7)});
  model.vmq_allocate("vm1");
  const std::optional<UplinkConfig> uplink;
  const std::optional<HostPort> host_port;
  const FdbStatics statics;
  const DatapathOptions opts;
  const Views views{
      .model = model, .dp = nullptr, .uplink = uplink, .host_port = host_port, .fdb_static = statics, .dp_opts = opts};
  const json nic = views.nic("vm1");
  const json fields = nic_fields(model.nic("vm1").desc);
  for (const auto& [k, v] : fields.items()) EXPECT_EQ(nic[k], v) << k;
  EXPECT_EQ(nic["vmq"], 1);
  EXPECT_EQ(nic["state"], "created");
  EXPECT_EQ(nic["path"], "none");
  EXPECT_TRUE(nic["buffers"].is_null());
  EXPECT_FALSE(nic.contains("affinity"));
  EXPECT_EQ(views.show()["uplink"], nullptr);
  const SwitchSnapshot snap = views.snapshot();
  EXPECT_EQ(snap.ports, 1u);
  ASSERT_EQ(snap.nics.size(), 1u);
  EXPECT_EQ(snap.nics[0].vmq_id, 1u);
  EXPECT_EQ(snap.free_vmqs, 1u);
  EXPECT_FALSE(snap.uplink);
}

}  // namespace
}  // namespace xvmq::switchd
