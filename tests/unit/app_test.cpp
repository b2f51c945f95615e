// The switch's edge: the ops table and its argument parsers, the state
// file's store and the views' shared NIC fields; then a NIC's delivery and
// its vmq's processor through the ops, on the in-memory datapath
// (tests/lib/fake_datapath.h). No kernel.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "switchd/app/ops.h"
#include "switchd/app/state_store.h"
#include "switchd/app/switch.h"
#include "switchd/app/views.h"
#include "tests/lib/fake_datapath.h"

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
      "nic.connect",   "nic.disconnect", "nic.delete",  "vmq.allocate",  "vmq.free",    "vmq.set",
      "config.apply",  "config.export",  "show",        "vmq.show",      "stats",       "events",
      "fdb.show",      "fdb.flush",      "fdb.add",     "fdb.del"};
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
    // vmq.set writes the state file and logs its event, as vmq.allocate does.
    if (op.name == "vmq.set" || op.name == "vmq.allocate") {
      EXPECT_TRUE(op.changes) << op.name;
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

TEST(Ops, DeliveryAndCpuArguments) {
  const json nic{{"port", "vm1"}, {"mac", "02:00:00:00:00:01"}, {"backend", "vm1-host"}};
  EXPECT_EQ(parse_nic_create_args(nic).nic.delivery, Delivery::Auto);
  EXPECT_FALSE(parse_nic_create_args(nic).nic.vmq_cpu);
  json kernel = nic;
  kernel.update({{"delivery", "kernel"}, {"vmq_cpu", 3}});
  EXPECT_EQ(parse_nic_create_args(kernel).nic.delivery, Delivery::Kernel);
  EXPECT_EQ(parse_nic_create_args(kernel).nic.vmq_cpu, 3u);
  kernel["vmq_cpu"] = nullptr;  // as nic_args writes a NIC without one
  EXPECT_FALSE(parse_nic_create_args(kernel).nic.vmq_cpu);
  for (const json& bad : {json("fast"), json(1), json("XSK")}) {
    json a = nic;
    a["delivery"] = bad;
    const std::string m = usage_of([&] { parse_nic_create_args(a); });
    EXPECT_NE(m.find("delivery"), std::string::npos) << m;
    if (bad.is_string()) {
      for (const char* choice : {"auto", "kernel", "xsk"}) EXPECT_NE(m.find(choice), std::string::npos) << m;
    }
  }
  for (const json& bad : {json(-1), json(1024), json(1.5), json("2")}) {
    json a = nic;
    a["vmq_cpu"] = bad;
    EXPECT_NE(usage_of([&] { parse_nic_create_args(a); }).find("vmq_cpu must be a CPU number, an integer 0..1023"),
              std::string::npos)
        << bad;
  }

  EXPECT_EQ(parse_vmq_set_args({{"port", "vm1"}, {"cpu", 2}}).cpu, 2u);
  EXPECT_FALSE(parse_vmq_set_args({{"port", "vm1"}, {"cpu", nullptr}}).cpu);
  EXPECT_NE(usage_of([] {
              parse_vmq_set_args({{"port", "vm1"}});
            }).find("vmq.set: missing argument 'cpu'"),
            std::string::npos);
  for (const json& bad : {json(-1), json("x"), json(true), json(2.5), json(4096)})
    EXPECT_NE(usage_of([&] {
                parse_vmq_set_args({{"port", "vm1"}, {"cpu", bad}});
              }).find("vmq.set: cpu must be a CPU number"),
              std::string::npos)
        << bad;
  EXPECT_NE(usage_of([] { parse_vmq_set_args({{"port", "-x"}, {"cpu", 1}}); }).find("port '-x'"), std::string::npos);
  EXPECT_EQ(parse_vmq_args({{"port", "vm1"}, {"cpu", 1}}, VmqPolicy::Auto, "vmq.allocate").cpu, 1u);
  EXPECT_FALSE(parse_vmq_args({{"port", "vm1"}}, VmqPolicy::Auto, "vmq.allocate").cpu);
  EXPECT_NE(usage_of([] {
              parse_vmq_args({{"port", "vm1"}, {"cpu", -2}}, VmqPolicy::Auto, "vmq.allocate");
            }).find("vmq.allocate: cpu must be a CPU number"),
            std::string::npos);
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
                                                 .steering = Steering::Hardware,
                                                 .delivery = Delivery::Kernel,
                                                 .vmq_cpu = 5},
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
  EXPECT_EQ(n.desc.delivery, Delivery::Kernel);
  EXPECT_EQ(n.desc.vmq_cpu, 5u);
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
                                         "allow_mac_spoofing", "vmq_policy", "steering", "delivery", "vmq_cpu", "state",
                                         "vmq"}));
  EXPECT_EQ(nic["vmq"], 3);
  EXPECT_EQ(nic["delivery"], "kernel");
  EXPECT_EQ(nic["vmq_cpu"], 5);
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
  EXPECT_EQ(n.desc.delivery, Delivery::Auto);
  EXPECT_FALSE(n.desc.vmq_cpu);
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
  // Not connected: the delivery and the processor asked for.
  EXPECT_EQ(nic["delivery"], "auto");
  EXPECT_EQ(nic["delivery_requested"], "auto");
  EXPECT_EQ(nic["delivery_why"], "");
  EXPECT_EQ(nic["vmq_cpu"], nullptr);
  EXPECT_EQ(nic["vmq_cpu_source"], nullptr);
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

// ---- a NIC's delivery and its vmq's processor, through the ops ----------

// A switch on the in-memory datapath, started from a state file that names
// the uplink (uplink.attach would ask rtnetlink for its addresses). switchd
// may run on CPUs 0-3 here, whatever this machine has.
class DeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("xvmq-app-delivery-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    json s{{"version", 1}, {"uplink", {{"name", "up0"}, {"mode", "auto"}, {"host", ""}}}, {"ports", json::array()}};
    std::ofstream(dir_ / "state.json") << s.dump(2) << "\n";
    start();
  }
  void TearDown() override {
    sw_.reset();
    std::filesystem::remove_all(dir_);
  }

  void start() {
    sw_.reset();
    fake_ = nullptr;
    SwitchOptions o;
    o.state_dir = dir_.string();
    o.max_vmqs = 2;  // a small pool, to run out of
    o.datapath.fdb_size = 64;
    o.allowed_cpus = [] { return std::vector<int>{0, 1, 2, 3}; };
    test::FakeOptions f;
    f.backend_exists = [](const std::string& dev) { return dev == "up0" || dev.ends_with("-host"); };
    o.open_datapath = [this, f](const std::string& up,
                                const DatapathOptions& d) -> Result<std::unique_ptr<DatapathApi>> {
      auto dp = test::FakeDatapath::factory(f)(up, d);
      if (dp) fake_ = static_cast<test::FakeDatapath*>(dp.value().get());
      return dp;
    };
    auto sw = Switch::start(o);
    ASSERT_TRUE(sw) << sw.error().message;
    sw_ = std::move(sw.value());
  }

  json ok(const std::string& op, const json& args = json::object()) {
    try {
      return sw_->handle(op, args);
    } catch (const Refused& r) {
      ADD_FAILURE() << op << " " << args.dump() << " refused: " << r.error.message;
      return nullptr;
    }
  }

  // Port vmN with a NIC (nic.create's arguments `extra` on top), connected unless told.
  json nic(int n, const json& extra = json::object(), bool connect = true) {
    const std::string port = "vm" + std::to_string(n);
    ok("port.create", {{"name", port}});
    json a{{"port", port}, {"mac", "02:00:00:00:00:0" + std::to_string(n)}, {"backend", port + "-host"}};
    a.update(extra);
    json created = ok("nic.create", a);
    return connect ? ok("nic.connect", {{"port", port}}) : created;
  }

  // What a refusal must leave as it was: the answers, the events, the state
  // file and what the datapath holds.
  json observed() {
    json held = json::object();
    for (const auto& [name, b] : fake_->connected())
      held[name] = {b.vmq_id, b.nic.vmq_cpu ? json(*b.nic.vmq_cpu) : json(nullptr)};
    std::ifstream in(dir_ / "state.json");
    return {{"show", ok("show")},     {"vmq.show", ok("vmq.show")},
            {"events", ok("events")}, {"export", ok("config.export")},
            {"held", held},           {"state", json::parse(in)}};
  }

  // Refused, of `kind`, naming each of `words`, and nothing changed.
  void refused(const std::string& op, const json& args, ErrorKind kind, const std::vector<std::string>& words) {
    const json before = observed();
    const size_t calls = fake_->calls().size();
    try {
      sw_->handle(op, args);
      ADD_FAILURE() << op << " " << args.dump() << ": not refused";
    } catch (const Refused& r) {
      EXPECT_EQ(to_string(r.error.kind), to_string(kind)) << op << " " << args.dump() << ": " << r.error.message;
      for (const auto& w : words)
        EXPECT_NE(r.error.message.find(w), std::string::npos) << op << ": '" << w << "' not in: " << r.error.message;
    }
    EXPECT_EQ(observed(), before) << op << " " << args.dump() << " was refused but changed something";
    // A refusal the datapath made is the one call it may have seen.
    EXPECT_LE(fake_->calls().size(), calls + 1) << op;
  }

  std::vector<std::string> calls_since(size_t from) {
    const auto& c = fake_->calls();
    return {c.begin() + static_cast<std::ptrdiff_t>(std::min(from, c.size())), c.end()};
  }

  json last_event() { return ok("events")["events"].back(); }

  std::filesystem::path dir_;
  test::FakeDatapath* fake_ = nullptr;
  std::unique_ptr<Switch> sw_;
};

TEST_F(DeliveryTest, ShowVmqShowAndStatsSayTheDeliveryAndTheProcessor) {
  json vm1 = nic(1, {{"delivery", "kernel"}, {"vmq_cpu", 3}});
  EXPECT_EQ(vm1["delivery"], "kernel");
  EXPECT_EQ(vm1["delivery_requested"], "kernel");
  EXPECT_EQ(vm1["delivery_why"], "");
  EXPECT_EQ(vm1["vmq_cpu"], 3);
  EXPECT_EQ(vm1["vmq_cpu_source"], "configured");
  EXPECT_EQ(vm1["affinity"]["cpus"], json::array({3}));
  EXPECT_EQ(fake_->connected().at("vm1").nic.vmq_cpu, 3u) << "connect gives the datapath the processor";
  // auto: kernel here (the fake's backends take it); the processor spread (vmq 2 % 2).
  json vm2 = nic(2);
  EXPECT_EQ(vm2["delivery"], "kernel");
  EXPECT_EQ(vm2["delivery_requested"], "auto");
  EXPECT_EQ(vm2["vmq_cpu"], 0);
  EXPECT_EQ(vm2["vmq_cpu_source"], "spread");
  // xsk: served by its queues' workers; no processor of its own.
  json vm3 = nic(3, {{"delivery", "xsk"}});
  EXPECT_EQ(vm3["delivery"], "xsk");
  EXPECT_EQ(vm3["vmq_cpu"], nullptr);
  EXPECT_EQ(vm3["vmq_cpu_source"], nullptr);
  // Not connected: what was asked for.
  json vm4 = nic(4, {{"delivery", "kernel"}, {"vmq_cpu", 2}}, false);
  EXPECT_EQ(vm4["delivery"], "kernel");
  EXPECT_EQ(vm4["vmq_cpu"], 2);
  EXPECT_EQ(vm4["vmq_cpu_source"], "configured");

  std::map<std::string, json> vmqs;
  const json shown = ok("vmq.show");
  for (const json& v : shown["vmqs"]) vmqs[v["nic"].get<std::string>()] = v;
  ASSERT_EQ(vmqs.size(), 2u) << "the pool has 2 vmqs";
  EXPECT_EQ(vmqs["vm1"]["cpu"], 3);
  EXPECT_EQ(vmqs["vm1"]["delivery"], "kernel");
  EXPECT_EQ(vmqs["vm2"]["cpu"], 0);
  const json stats = ok("stats");
  EXPECT_EQ(stats["nics"]["vm1"]["delivery"], "kernel");
  EXPECT_EQ(stats["nics"]["vm3"]["delivery"], "xsk");
}

TEST_F(DeliveryTest, VmqSetMovesAConnectedNicsVmqAndIsAnEvent) {
  nic(1);
  size_t calls = fake_->calls().size();
  json n = ok("vmq.set", {{"port", "vm1"}, {"cpu", 2}});
  EXPECT_EQ(n["vmq_cpu"], 2);
  EXPECT_EQ(n["vmq_cpu_source"], "configured");
  EXPECT_EQ(calls_since(calls), std::vector<std::string>{"set_vmq_cpu vm1 2"});
  json e = last_event();
  EXPECT_EQ(e["object"], "nic vm1");
  EXPECT_EQ(e["from"], "vmq cpu spread");
  EXPECT_EQ(e["to"], "vmq cpu 2");
  EXPECT_EQ(e["step"], "vmq.set");
  // The same again: nothing to move, no event.
  const uint64_t seq = e["seq"];
  calls = fake_->calls().size();
  ok("vmq.set", {{"port", "vm1"}, {"cpu", 2}});
  EXPECT_EQ(last_event()["seq"], seq);
  EXPECT_TRUE(calls_since(calls).empty());
  // Spread again.
  n = ok("vmq.set", {{"port", "vm1"}, {"cpu", nullptr}});
  EXPECT_EQ(n["vmq_cpu"], 1);  // the fake spreads vmq 1 to CPU 1
  EXPECT_EQ(n["vmq_cpu_source"], "spread");
  EXPECT_EQ(calls_since(calls), std::vector<std::string>{"set_vmq_cpu vm1 spread"});
  EXPECT_EQ(last_event()["to"], "vmq cpu spread");
  EXPECT_FALSE(fake_->connected().at("vm1").nic.vmq_cpu);
}

TEST_F(DeliveryTest, VmqSetOnANicNotConnectedIsKeptForItsConnect) {
  nic(1, json::object(), false);
  const size_t calls = fake_->calls().size();
  EXPECT_EQ(ok("vmq.set", {{"port", "vm1"}, {"cpu", 1}})["vmq_cpu"], 1);
  EXPECT_TRUE(calls_since(calls).empty()) << "a NIC not connected has nothing in the datapath";
  ok("nic.connect", {{"port", "vm1"}});
  EXPECT_EQ(fake_->connected().at("vm1").nic.vmq_cpu, 1u);
}

TEST_F(DeliveryTest, VmqSetRefusalsNameTheFaultAndChangeNothing) {
  nic(1, {{"vmq_cpu", 1}});
  nic(2, {{"delivery", "xsk"}});
  ok("port.create", {{"name", "bare"}});
  refused("vmq.set", {{"port", "vm9"}, {"cpu", 1}}, ErrorKind::NotFound, {"port vm9 does not exist"});
  refused("vmq.set", {{"port", "bare"}, {"cpu", 1}}, ErrorKind::NotFound, {"port bare has no NIC"});
  refused("vmq.set", {{"port", "vm1"}, {"cpu", 7}}, ErrorKind::Usage,
          {"vmq.set vm1: cpu 7 is not a CPU switchd may run on", "CPUs 0-3"});
  refused("vmq.set", {{"port", "vm1"}, {"cpu", "2"}}, ErrorKind::Usage, {"cpu must be a CPU number"});
  refused("vmq.set", {{"port", "vm1"}}, ErrorKind::Usage, {"missing argument 'cpu'"});
  refused("vmq.set", {{"port", "vm2"}, {"cpu", 1}}, ErrorKind::WrongState,
          {"nic vm2 has delivery xsk", "receive queues, on CPUs 0-1", "--queue-cpus", "kernel or auto"});
  // Spreading an xsk NIC's vmq asks for nothing it cannot have.
  ok("vmq.set", {{"port", "vm2"}, {"cpu", nullptr}});
  // The datapath refuses: its message, the processor as it was.
  fake_->fail_next_set_vmq_cpu = EBUSY;
  refused("vmq.set", {{"port", "vm1"}, {"cpu", 2}}, ErrorKind::Kernel, {"vmq.set vm1", "(injected)"});
  EXPECT_EQ(fake_->connected().at("vm1").nic.vmq_cpu, 1u);
}

TEST_F(DeliveryTest, VmqAllocateWithACpuStartsTheVmqOnIt) {
  nic(1, {{"vmq", "off"}});
  size_t calls = fake_->calls().size();
  const uint64_t seq = last_event()["seq"];
  json n = ok("vmq.allocate", {{"port", "vm1"}, {"cpu", 3}});
  EXPECT_EQ(n["vmq"], 1);
  EXPECT_EQ(n["vmq_cpu"], 3);
  EXPECT_EQ(calls_since(calls), (std::vector<std::string>{"set_vmq_cpu vm1 3", "set_vmq vm1 1"}));
  const json evs = ok("events", {{"since", seq}})["events"];
  ASSERT_EQ(evs.size(), 2u) << evs;
  EXPECT_EQ(evs[0]["object"], "vmq 1");
  EXPECT_EQ(evs[1]["to"], "vmq cpu 3");
  EXPECT_EQ(evs[1]["step"], "vmq.allocate");

  // Refused before the datapath is asked: a vmq already there, a CPU not allowed, an xsk NIC.
  refused("vmq.allocate", {{"port", "vm1"}, {"cpu", 2}}, ErrorKind::WrongState, {"already has vmq 1"});
  refused("vmq.allocate", {{"port", "vm1"}, {"cpu", 4}}, ErrorKind::Usage, {"cpu 4 is not a CPU", "CPUs 0-3"});
  nic(2, {{"delivery", "xsk"}, {"vmq", "off"}});
  refused("vmq.allocate", {{"port", "vm2"}, {"cpu", 0}}, ErrorKind::WrongState, {"nic vm2 has delivery xsk"});
  // The vmq refused by the datapath: the processor goes back as it was.
  nic(3, {{"vmq", "off"}});
  calls = fake_->calls().size();
  fake_->fail_next_set_vmq = EIO;
  const json before = observed();
  EXPECT_THROW(sw_->handle("vmq.allocate", {{"port", "vm3"}, {"cpu", 2}}), Refused);
  EXPECT_EQ(observed(), before);
  EXPECT_EQ(calls_since(calls),
            (std::vector<std::string>{"set_vmq_cpu vm3 2", "set_vmq vm3 2", "set_vmq_cpu vm3 spread"}));
  EXPECT_FALSE(fake_->connected().at("vm3").nic.vmq_cpu);
}

TEST_F(DeliveryTest, NicCreateRefusesAProcessorItCannotHave) {
  ok("port.create", {{"name", "vm1"}});
  const json base{{"port", "vm1"}, {"mac", "02:00:00:00:00:01"}, {"backend", "vm1-host"}};
  json a = base;
  a.update({{"delivery", "xsk"}, {"vmq_cpu", 1}});
  refused("nic.create", a, ErrorKind::Usage, {"vmq_cpu 1 goes with delivery kernel or auto", "--queue-cpus"});
  a = base;
  a["vmq_cpu"] = 9;
  refused("nic.create", a, ErrorKind::Usage, {"nic.create vm1: vmq_cpu 9 is not a CPU switchd may run on", "0-3"});
  a = base;
  a["delivery"] = "dpdk";
  refused("nic.create", a, ErrorKind::Usage, {"delivery 'dpdk'", "auto", "kernel", "xsk"});
}

TEST_F(DeliveryTest, ARestartAndTheExportKeepDeliveryAndProcessor) {
  nic(1, {{"delivery", "kernel"}, {"vmq_cpu", 2}});
  nic(2, {{"delivery", "xsk"}});
  const json shown = ok("show");
  const std::string exported = ok("config.export")["config"];
  EXPECT_NE(exported.find("delivery = \"kernel\"\nvmq_cpu = 2\n"), std::string::npos) << exported;
  EXPECT_NE(exported.find("delivery = \"xsk\"\n"), std::string::npos) << exported;
  start();
  EXPECT_EQ(ok("show")["ports"], shown["ports"]);
  EXPECT_EQ(fake_->connected().at("vm1").nic.vmq_cpu, 2u);
  EXPECT_EQ(fake_->connected().at("vm2").nic.delivery, Delivery::Xsk);
  EXPECT_EQ(ok("config.export")["config"], exported);
  // The export applied back: nothing to do.
  EXPECT_EQ(ok("config.apply", {{"config", exported}, {"dry_run", true}})["steps"], json::array());
}

TEST_F(DeliveryTest, ConfigApplyMovesAProcessorInPlaceAndRecreatesForADelivery) {
  nic(1, {{"vmq_cpu", 1}});
  const std::string nic1 =
      "\n[[port]]\nname = \"vm1\"\n[port.nic]\nmac = \"02:00:00:00:00:01\"\nbackend = \"vm1-host\"\n";
  const std::string head = "[uplink]\nname = \"up0\"\n";
  size_t calls = fake_->calls().size();
  json r = ok("config.apply", {{"config", head + nic1 + "vmq_cpu = 3\n"}});
  ASSERT_EQ(r["steps"].size(), 1u) << r;
  EXPECT_EQ(r["steps"][0]["command"], "switchctl vmq set vm1 --cpu 3");
  EXPECT_EQ(calls_since(calls), std::vector<std::string>{"set_vmq_cpu vm1 3"}) << "no reconnect";
  r = ok("config.apply", {{"config", head + nic1}});
  ASSERT_EQ(r["steps"].size(), 1u) << r;
  EXPECT_EQ(r["steps"][0]["command"], "switchctl vmq set vm1 --spread");
  // A delivery: the NIC is made again.
  r = ok("config.apply", {{"config", head + nic1 + "delivery = \"xsk\"\n"}});
  std::vector<std::string> ops;
  for (const json& s : r["steps"]) ops.push_back(s["op"]);
  EXPECT_EQ(ops, (std::vector<std::string>{"nic.disconnect", "nic.delete", "nic.create", "nic.connect"}));
  EXPECT_EQ(fake_->connected().at("vm1").nic.delivery, Delivery::Xsk);
  // A step refused midway is undone: CPU 8 is not switchd's.
  const json before = observed();
  EXPECT_THROW(sw_->handle("config.apply", {{"config", head + nic1 + "vmq_cpu = 8\n"}}), Refused);
  EXPECT_EQ(observed()["show"], before["show"]);
}

}  // namespace
}  // namespace xvmq::switchd

namespace xvmq::switchd {
namespace {

TEST(Ops, PortCreateTakesAnOwnerAndNamesWhatIsWrongWithOne) {
  EXPECT_FALSE(parse_port_create_args({{"name", "vm1"}}).owner);
  EXPECT_FALSE(parse_port_create_args({{"name", "vm1"}, {"owner", nullptr}}).owner);
  EXPECT_EQ(parse_port_create_args({{"name", "vm1"}, {"owner", "c0ffee"}}).owner, PortOwner{.container_id = "c0ffee"});
  const PortOwner full{.container_id = "abc-1", .ifname = "eth0", .network = "net_a.b"};
  EXPECT_EQ(parse_port_create_args(
                {{"name", "vm1"}, {"owner", {{"container_id", "abc-1"}, {"ifname", "eth0"}, {"network", "net_a.b"}}}})
                .owner,
            full);
  const std::vector<std::pair<json, std::string>> bad{
      {42, "owner must be a string (the container ID) or an object"},
      {json::array({"x"}), "owner must be a string"},
      {json::object(), "owner.container_id is missing"},
      {{{"container_id", "c"}, {"pod", "p"}}, "owner.pod is not a field of owner"},
      {{{"container_id", 7}}, "owner.container_id must be a string"},
      {{{"container_id", "c"}, {"ifname", ""}}, "owner.ifname is empty"},
      {{{"container_id", "c"}, {"network", ""}}, "owner.network is empty"},
      {"", "owner.container_id ''"},
      {"has space", "owner.container_id 'has space'"},
      {std::string(256, 'a'), "1 to 255 characters"},
      {{{"container_id", "c"}, {"ifname", "eth/0"}}, "owner.ifname 'eth/0'"},
      {{{"container_id", "c"}, {"ifname", "sixteen-chars-ab"}}, "owner.ifname"},
      {{{"container_id", "c"}, {"network", "a;b"}}, "owner.network 'a;b'"},
  };
  for (const auto& [owner, words] : bad) {
    const std::string msg = usage_of([&] { parse_port_create_args({{"name", "vm1"}, {"owner", owner}}); });
    EXPECT_NE(msg.find(words), std::string::npos) << owner.dump() << " -> " << msg;
    EXPECT_NE(msg.find("port.create"), std::string::npos) << msg;
  }
}

TEST(Model, PortCreateRefusesABadOwnerAndKeepsAGoodOne) {
  Model m;
  try {
    m.port_create("vm1", PortOwner{.container_id = "bad id"});
    ADD_FAILURE() << "not refused";
  } catch (const Refused& r) {
    EXPECT_EQ(r.error.kind, ErrorKind::Usage);
    EXPECT_NE(r.error.message.find("owner.container_id 'bad id'"), std::string::npos) << r.error.message;
  }
  EXPECT_TRUE(m.ports().empty());
  m.port_create("vm1", PortOwner{.container_id = "c1", .ifname = "net1"});
  EXPECT_EQ(m.port("vm1").owner, (PortOwner{.container_id = "c1", .ifname = "net1"}));
  m.port_create("vm2");
  EXPECT_FALSE(m.port("vm2").owner);
}

TEST_F(StateStoreTest, AnOwnerIsSavedAndLoadsBackAndABadOneIsDropped) {
  std::map<std::string, Port> ports;
  ports["xv1"] = Port{.name = "xv1", .owner = PortOwner{.container_id = "c1", .ifname = "eth0", .network = "n"}};
  ports["xv2"] = Port{.name = "xv2"};
  StateStore store(path());
  store.save(ports, std::nullopt, std::nullopt, {});
  std::ifstream in(path());
  const json file = json::parse(in);
  EXPECT_EQ(file["ports"][0]["owner"], json({{"container_id", "c1"}, {"ifname", "eth0"}, {"network", "n"}}));
  EXPECT_FALSE(file["ports"][1].contains("owner"));
  auto loaded = store.load();
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->ports.at(0).owner, ports["xv1"].owner);
  EXPECT_FALSE(loaded->ports.at(1).owner);
  std::ofstream(path()) << R"({"version": 1, "uplink": null, "ports": [
      {"name": "xv1", "state": "created", "nic": null, "owner": {"container_id": "no spaces allowed"}}]})";
  loaded = StateStore(path()).load();
  ASSERT_TRUE(loaded);
  EXPECT_FALSE(loaded->ports.at(0).owner);
}

TEST_F(DeliveryTest, AnOwnerIsShownAndSurvivesARestart) {
  const json owner{{"container_id", "c0ffee"}, {"ifname", "eth0"}, {"network", "xvmq"}};
  EXPECT_EQ(ok("port.create", {{"name", "xv1"}, {"owner", owner}})["owner"], owner);
  EXPECT_EQ(ok("port.create", {{"name", "xv2"}, {"owner", "c2"}})["owner"], json({{"container_id", "c2"}}));
  ok("port.create", {{"name", "plain"}});
  refused("port.create", {{"name", "xv3"}, {"owner", {{"container_id", "c3"}, {"uid", 0}}}}, ErrorKind::Usage,
          {"owner.uid is not a field of owner"});
  ok("nic.create", {{"port", "xv1"}, {"mac", "02:00:00:00:00:01"}, {"backend", "xv1-host"}});
  const json shown = ok("show");
  start();
  EXPECT_EQ(ok("show")["ports"], shown["ports"]);
  const json again = ok("show");  // one object: the range below must not outlive it
  for (const auto& p : again["ports"]) {
    if (p["name"] == "xv1") {
      EXPECT_EQ(p["owner"], owner);
    }
    if (p["name"] == "plain") {
      EXPECT_FALSE(p.contains("owner"));
    }
  }
}

// A port with an owner is its orchestrator's: a configuration file does not
// export it, does not remove it, cannot name it, and cannot change the uplink
// under it.
TEST_F(DeliveryTest, AConfigurationFileLeavesOwnedPortsAlone) {
  ok("port.create", {{"name", "xv1"}, {"owner", {{"container_id", "c0ffee"}, {"network", "podnet"}}}});
  ok("nic.create", {{"port", "xv1"}, {"mac", "02:00:00:00:00:01"}, {"backend", "xv1-host"}});
  ok("nic.connect", {{"port", "xv1"}});
  nic(2);
  const std::string exported = ok("config.export")["config"];
  EXPECT_EQ(exported.find("xv1"), std::string::npos) << exported;
  EXPECT_NE(exported.find("vm2"), std::string::npos) << exported;
  // A file without vm2 removes vm2, not xv1.
  const std::string head = "[uplink]\nname = \"up0\"\n";
  json r = ok("config.apply", {{"config", head}});
  for (const json& st : r["steps"]) EXPECT_EQ(st["args"].dump().find("xv1"), std::string::npos) << st;
  EXPECT_FALSE(r["steps"].empty());
  json shown = ok("show");
  ASSERT_EQ(shown["ports"].size(), 1u) << shown;
  EXPECT_EQ(shown["ports"][0]["name"], "xv1");
  EXPECT_EQ(ok("config.apply", {{"config", exported}, {"dry_run", true}})["steps"].size(), 3u)
      << "vm2 made again (port, NIC, connect); xv1 untouched";
  // Naming it, or moving the uplink from under it: refused up front.
  refused("config.apply", {{"config", head + "\n[[port]]\nname = \"xv1\"\n"}}, ErrorKind::Exists,
          {"port xv1 belongs to container c0ffee, network podnet", "cannot manage it"});
  refused("config.apply", {{"config", ""}}, ErrorKind::WrongState,
          {"changes uplink up0 to no uplink", "1 port(s) with an owner (xv1)"});
}

}  // namespace
}  // namespace xvmq::switchd
