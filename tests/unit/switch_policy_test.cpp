// The switch's policy on the in-memory datapath (tests/lib/fake_datapath.h):
// which vmq a NIC gets at nic.connect, what a failed datapath step leaves
// behind, what a restart restores, and every refusal. No privileges and no
// kernel object: the NICs' backends "exist" by a set of names.
//
// uplink.attach reads the uplink's host addresses over rtnetlink, so each
// test starts its switch from a state file that names the uplink instead:
// switchd's restart path, which opens the datapath through the factory and
// asks nothing of the kernel.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "switchd/app/switch.h"
#include "tests/lib/fake_datapath.h"

namespace xvmq::switchd {
namespace {

using nlohmann::json;

// The netdevs of this test's "host".
const std::set<std::string> kNetdevs = {"up0", "vm1-host", "vm2-host", "vm3-host", "vm4-host", "vm5-host"};

std::string mac_of(int n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "02:00:00:00:00:%02x", n);
  return buf;
}

// nic.create's arguments for NIC n on port vmN, with `extra` on top.
json nic_args(int n, json extra = json::object()) {
  json a{{"port", "vm" + std::to_string(n)}, {"mac", mac_of(n)}, {"backend", "vm" + std::to_string(n) + "-host"}};
  a.update(extra);
  return a;
}

json port_arg(int n) { return {{"port", "vm" + std::to_string(n)}}; }

class SwitchPolicy : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/xvmq-policy-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
  }

  void TearDown() override {
    sw_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // A state file with the uplink attached and `ports` (the state file's
  // entries) as they are, for start().
  void seed(uint32_t max_vmqs, json ports = json::array()) {
    max_vmqs_ = max_vmqs;
    json s{{"version", 1},
           {"uplink", {{"name", "up0"}, {"mode", "auto"}, {"host", ""}}},
           {"ports", ports},
           {"fdb_static", json::array()}};
    std::ofstream(dir_ / "state.json") << s.dump(2) << "\n";
  }

  // A switch on the state directory, its datapath the fake (fake_ points at it).
  void start() {
    sw_.reset();
    fake_ = nullptr;
    SwitchOptions o;
    o.state_dir = dir_.string();
    o.max_vmqs = max_vmqs_;
    o.datapath.fdb_size = 64;
    test::FakeOptions f;
    f.backend_exists = [this](const std::string& dev) { return netdevs_.count(dev) > 0; };
    o.open_datapath = [this, f](const std::string& uplink,
                                const DatapathOptions& d) -> Result<std::unique_ptr<DatapathApi>> {
      auto dp = test::FakeDatapath::factory(f)(uplink, d);
      if (dp) fake_ = static_cast<test::FakeDatapath*>(dp.value().get());
      return dp;
    };
    auto sw = Switch::start(o);
    ASSERT_TRUE(sw) << sw.error().message;
    sw_ = std::move(sw.value());
    ASSERT_NE(fake_, nullptr) << "the restored uplink did not open a datapath";
  }

  json ok(const std::string& op, const json& args = json::object()) {
    try {
      return sw_->handle(op, args);
    } catch (const Refused& r) {
      ADD_FAILURE() << op << " " << args.dump() << " refused (" << to_string(r.error.kind) << "): " << r.error.message;
      return nullptr;
    }
  }

  // What a refused op must leave as it was: the switch's answers, its
  // events and what the datapath holds.
  json observed() {
    json connected = json::object();
    for (const auto& [name, spec] : fake_->connected()) connected[name] = spec.vmq_id;
    json filters = json::array();
    if (auto all = fake_->filters())
      for (const auto& [k, v] : *all) filters.push_back({format_mac(k.mac), k.vlan, v.vmq, v.strip_tag});
    return {{"show", sw_->handle("show", json::object())},
            {"vmq.show", sw_->handle("vmq.show", json::object())},
            {"export", sw_->handle("config.export", json::object())},
            {"events", sw_->handle("events", json::object())},
            {"connected", connected},
            {"filters", filters}};
  }

  // The op refused, of `kind`, with each of `words` in the message, and
  // nothing changed. Returns the message.
  std::string refused(const std::string& op, const json& args, ErrorKind kind, const std::vector<std::string>& words) {
    const json before = observed();
    std::string message;
    try {
      sw_->handle(op, args);
      ADD_FAILURE() << op << " " << args.dump() << ": not refused";
    } catch (const Refused& r) {
      message = r.error.message;
      EXPECT_EQ(to_string(r.error.kind), to_string(kind)) << op << " " << args.dump() << ": " << message;
      for (const auto& w : words)
        EXPECT_NE(message.find(w), std::string::npos) << op << ": '" << w << "' not in: " << message;
    }
    EXPECT_EQ(observed(), before) << op << " " << args.dump() << " was refused but changed something";
    return message;
  }

  // port.create, nic.create and nic.connect of NIC n; its NIC as nic.connect answers.
  json connect(int n, json extra = json::object()) {
    ok("port.create", {{"name", "vm" + std::to_string(n)}});
    ok("nic.create", nic_args(n, extra));
    return ok("nic.connect", port_arg(n));
  }

  json nic(int n) {
    const json show = ok("show");
    for (const auto& p : show["ports"])
      if (p["name"] == "vm" + std::to_string(n)) return p["nic"];
    return nullptr;
  }

  std::vector<uint32_t> free_vmqs() { return ok("show")["vmqs"]["free"].get<std::vector<uint32_t>>(); }

  // The vmq the datapath was told for NIC n; -1 when it is not connected there.
  int64_t fake_vmq(int n) {
    auto it = fake_->connected().find("vm" + std::to_string(n));
    return it == fake_->connected().end() ? -1 : int64_t{it->second.vmq_id};
  }

  // The vmqs the classifier's filters for NIC n's MAC deliver to.
  std::set<uint32_t> filter_vmqs(int n) {
    std::set<uint32_t> out;
    auto all = fake_->filters();
    EXPECT_TRUE(all);
    for (const auto& [k, v] : *all)
      if (format_mac(k.mac) == mac_of(n)) out.insert(v.vmq);
    return out;
  }

  // The fake's calls since `from`.
  std::vector<std::string> calls_since(size_t from) {
    const auto& c = fake_->calls();
    return {c.begin() + static_cast<std::ptrdiff_t>(std::min(from, c.size())), c.end()};
  }

  std::filesystem::path dir_;
  uint32_t max_vmqs_ = 2;
  std::set<std::string> netdevs_ = kNetdevs;
  test::FakeDatapath* fake_ = nullptr;
  std::unique_ptr<Switch> sw_;
};

// ---- which vmq a NIC gets at nic.connect --------------------------------

TEST_F(SwitchPolicy, AutoTakesTheLowestFreeVmqAndNicDeleteGivesItBack) {
  seed(3);
  start();
  json n1 = connect(1);
  EXPECT_EQ(n1["vmq"], 1);
  EXPECT_EQ(n1["path"], "vmq");
  EXPECT_EQ(fake_vmq(1), 1) << "the datapath was not given the vmq the switch chose";
  EXPECT_EQ(filter_vmqs(1), std::set<uint32_t>{1});
  EXPECT_EQ(connect(2)["vmq"], 2);
  EXPECT_EQ(free_vmqs(), std::vector<uint32_t>{3});

  // A disconnected NIC keeps its vmq (allowed from there: vmq.free or
  // nic.delete); the datapath lets go of the NIC at once.
  json d = ok("nic.disconnect", port_arg(1));
  EXPECT_EQ(d["state"], "disconnected");
  EXPECT_EQ(d["vmq"], 1);
  EXPECT_EQ(d["path"], "none");
  EXPECT_EQ(fake_vmq(1), -1);
  EXPECT_TRUE(filter_vmqs(1).empty());
  EXPECT_EQ(free_vmqs(), std::vector<uint32_t>{3});

  ok("nic.delete", port_arg(1));
  EXPECT_EQ(free_vmqs(), (std::vector<uint32_t>{1, 3}));
  // The lowest free id, not the next unused one.
  EXPECT_EQ(connect(3)["vmq"], 1);
  EXPECT_EQ(fake_vmq(3), 1);
  EXPECT_EQ(free_vmqs(), std::vector<uint32_t>{3});
}

TEST_F(SwitchPolicy, PolicyOffGetsNoVmqEvenWhenOneIsFree) {
  seed(2);
  start();
  json n = connect(1, {{"vmq", "off"}});
  EXPECT_EQ(n["vmq"], nullptr);
  EXPECT_EQ(n["path"], "default");
  EXPECT_EQ(fake_vmq(1), 0);
  EXPECT_TRUE(filter_vmqs(1).empty()) << "a NIC on the default queue has no filter";
  EXPECT_EQ(free_vmqs(), (std::vector<uint32_t>{1, 2}));
}

TEST_F(SwitchPolicy, ExhaustedPoolAutoFallsBackToTheDefaultQueueAndADemandIsRefused) {
  seed(1);
  start();
  EXPECT_EQ(connect(1)["vmq"], 1);
  EXPECT_TRUE(free_vmqs().empty());

  // Policy auto: "take one when available". None is: connected on the default path.
  json n2 = connect(2);
  EXPECT_EQ(n2["state"], "connected");
  EXPECT_EQ(n2["vmq"], nullptr);
  EXPECT_EQ(n2["path"], "default");
  EXPECT_EQ(fake_vmq(2), 0);

  // The protocol's policies are auto and off; demanding a vmq is vmq.allocate
  // without a policy, refused with the pool's limit named.
  refused("vmq.allocate", port_arg(2), ErrorKind::Exhausted, {"all 1 vmqs are in use", "vm2", "default queue"});
  // With policy auto the same step is no refusal: the NIC keeps the default queue.
  size_t calls = fake_->calls().size();
  json kept = ok("vmq.allocate", {{"port", "vm2"}, {"policy", "auto"}});
  EXPECT_EQ(kept["vmq"], nullptr);
  EXPECT_EQ(kept["path"], "default");
  EXPECT_TRUE(calls_since(calls).empty()) << "the datapath was told something for no change";

  // vm1's vmq freed: vm2 can have it, and the datapath moves vm2 onto it.
  calls = fake_->calls().size();
  json f = ok("vmq.free", port_arg(1));
  EXPECT_EQ(f["vmq"], nullptr);
  EXPECT_EQ(f["path"], "default");
  EXPECT_EQ(fake_vmq(1), 0);
  EXPECT_EQ(free_vmqs(), std::vector<uint32_t>{1});
  json a = ok("vmq.allocate", port_arg(2));
  EXPECT_EQ(a["vmq"], 1);
  EXPECT_EQ(a["path"], "vmq");
  EXPECT_EQ(fake_vmq(2), 1);
  EXPECT_EQ(filter_vmqs(2), std::set<uint32_t>{1});
  EXPECT_EQ(calls_since(calls), (std::vector<std::string>{"set_vmq vm1 0", "set_vmq vm2 1"}));
}

TEST_F(SwitchPolicy, VmqStepsOnANicNotConnectedTouchNoDatapath) {
  seed(2);
  start();
  ok("port.create", {{"name", "vm1"}});
  ok("nic.create", nic_args(1));
  const size_t calls = fake_->calls().size();

  // Allocated before connect: nic.connect then uses that id.
  EXPECT_EQ(ok("vmq.allocate", port_arg(1))["vmq"], 1);
  refused("vmq.allocate", port_arg(1), ErrorKind::WrongState, {"already has vmq 1", "allowed from there"});
  EXPECT_EQ(ok("vmq.free", port_arg(1))["vmq"], nullptr);
  refused("vmq.free", port_arg(1), ErrorKind::WrongState, {"has no vmq", "allowed from there"});
  // With policy off a NIC without a vmq is no refusal; it connects without one.
  json off = ok("vmq.free", {{"port", "vm1"}, {"policy", "off"}});
  EXPECT_EQ(off["vmq_policy"], "off");
  refused("vmq.free", {{"port", "vm1"}, {"policy", "auto"}}, ErrorKind::Usage, {"policy must be \"off\""});
  refused("vmq.allocate", {{"port", "vm1"}, {"policy", "off"}}, ErrorKind::Usage, {"policy must be \"auto\""});
  EXPECT_TRUE(calls_since(calls).empty()) << "a NIC not connected has nothing in the datapath";

  EXPECT_EQ(ok("nic.connect", port_arg(1))["vmq"], nullptr);
  EXPECT_EQ(fake_vmq(1), 0);
  // Policy auto again on a connected NIC: it takes a free vmq at once.
  json back = ok("vmq.allocate", {{"port", "vm1"}, {"policy", "auto"}});
  EXPECT_EQ(back["vmq_policy"], "auto");
  EXPECT_EQ(back["vmq"], 1);
  EXPECT_EQ(fake_vmq(1), 1);

  ok("nic.disconnect", port_arg(1));
  ok("vmq.free", port_arg(1));
  refused("vmq.allocate", port_arg(1), ErrorKind::WrongState, {"nic vm1 is disconnected", "nic.delete"});
}

// ---- the lifecycle ------------------------------------------------------

TEST_F(SwitchPolicy, TheSevenHyperVStepsInOrder) {
  seed(2);
  start();
  struct Step {
    const char* op;
    json args;
    const char* port_state;         // after the step; nullptr: the port is gone
    const char* nic_state;          // after the step; nullptr: no NIC
    std::vector<std::string> fake;  // what the datapath was told
  };
  const std::vector<Step> steps = {
      {.op = "port.create", .args = {{"name", "vm1"}}, .port_state = "created", .nic_state = nullptr},
      {.op = "nic.create", .args = nic_args(1), .port_state = "created", .nic_state = "created"},
      {.op = "nic.connect",
       .args = port_arg(1),
       .port_state = "created",
       .nic_state = "connected",
       .fake = {"connect vm1 vmq 1"}},
      {.op = "nic.disconnect",
       .args = port_arg(1),
       .port_state = "created",
       .nic_state = "disconnected",
       .fake = {"disconnect vm1"}},
      {.op = "nic.delete", .args = port_arg(1), .port_state = "created", .nic_state = nullptr, .fake = {"forget vm1"}},
      {.op = "port.teardown", .args = {{"name", "vm1"}}, .port_state = "torn_down", .nic_state = nullptr},
      {.op = "port.delete", .args = {{"name", "vm1"}}, .port_state = nullptr, .nic_state = nullptr},
  };
  for (const auto& s : steps) {
    SCOPED_TRACE(s.op);
    const size_t calls = fake_->calls().size();
    ok(s.op, s.args);
    json ports = ok("show")["ports"];
    if (!s.port_state) {
      EXPECT_TRUE(ports.empty());
    } else {
      ASSERT_EQ(ports.size(), 1u);
      EXPECT_EQ(ports[0]["state"], s.port_state);
      if (s.nic_state)
        EXPECT_EQ(ports[0]["nic"]["state"], s.nic_state);
      else
        EXPECT_EQ(ports[0]["nic"], nullptr);
    }
    EXPECT_EQ(calls_since(calls), s.fake);
  }
  EXPECT_TRUE(fake_->connected().empty());
  EXPECT_EQ(free_vmqs(), (std::vector<uint32_t>{1, 2}));
}

TEST_F(SwitchPolicy, EveryStepOutOfOrderIsRefusedNamingTheStateAndChangesNothing) {
  seed(2);
  start();
  // Each row: from the state the steps so far made, a step that is not
  // allowed there. A NIC step on a port without a NIC is not_found (there
  // is no NIC); every other is wrong_state. Each names the state.
  struct Row {
    const char* op;
    json args;
    ErrorKind kind;
    std::vector<std::string> words;
  };
  struct Stage {
    const char* reached_by;  // the step that makes this state (nullptr: none yet)
    json args;
    std::vector<Row> refused;
  };
  const std::vector<Stage> stages = {
      {.reached_by = nullptr,
       .refused = {{.op = "nic.create",
                    .args = nic_args(1),
                    .kind = ErrorKind::NotFound,
                    .words = {"port vm1 does not exist"}},
                   {.op = "nic.connect",
                    .args = port_arg(1),
                    .kind = ErrorKind::NotFound,
                    .words = {"port vm1 does not exist"}},
                   {.op = "port.teardown",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::NotFound,
                    .words = {"does not exist"}},
                   {.op = "port.delete",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::NotFound,
                    .words = {"does not exist"}}}},
      {.reached_by = "port.create",
       .args = {{"name", "vm1"}},
       .refused = {{.op = "nic.connect",
                    .args = port_arg(1),
                    .kind = ErrorKind::NotFound,
                    .words = {"no NIC", "port is created", "nic.create"}},
                   {.op = "nic.disconnect",
                    .args = port_arg(1),
                    .kind = ErrorKind::NotFound,
                    .words = {"no NIC", "port is created"}},
                   {.op = "nic.delete",
                    .args = port_arg(1),
                    .kind = ErrorKind::NotFound,
                    .words = {"no NIC", "port is created"}},
                   {.op = "vmq.allocate",
                    .args = port_arg(1),
                    .kind = ErrorKind::NotFound,
                    .words = {"no NIC", "port is created"}},
                   {.op = "port.delete",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::WrongState,
                    .words = {"port vm1 is created", "port.teardown"}}}},
      {.reached_by = "nic.create",
       .args = nic_args(1),
       .refused = {{.op = "nic.create",
                    .args = nic_args(2, {{"port", "vm1"}}),
                    .kind = ErrorKind::WrongState,
                    .words = {"already has a NIC (created"}},
                   {.op = "nic.disconnect",
                    .args = port_arg(1),
                    .kind = ErrorKind::WrongState,
                    .words = {"nic vm1 is created", "nic.connect"}},
                   {.op = "port.teardown",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::WrongState,
                    .words = {"it has a NIC (created)"}},
                   {.op = "port.delete",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::WrongState,
                    .words = {"is created with a NIC"}}}},
      {.reached_by = "nic.connect",
       .args = port_arg(1),
       .refused =
           {{.op = "nic.connect",
             .args = port_arg(1),
             .kind = ErrorKind::WrongState,
             .words = {"nic vm1 is connected", "nic.disconnect"}},
            {.op = "nic.delete",
             .args = port_arg(1),
             .kind = ErrorKind::WrongState,
             .words = {"nic vm1 is connected", "nic.disconnect"}},
            {.op = "nic.create",
             .args = nic_args(2, {{"port", "vm1"}}),
             .kind = ErrorKind::WrongState,
             .words = {"already has a NIC (connected"}},
            {.op = "port.teardown",
             .args = {{"name", "vm1"}},
             .kind = ErrorKind::WrongState,
             .words = {"it has a NIC (connected)"}},
            {.op = "port.delete", .args = {{"name", "vm1"}}, .kind = ErrorKind::WrongState, .words = {"with a NIC"}}}},
      {.reached_by = "nic.disconnect",
       .args = port_arg(1),
       .refused =
           {{.op = "nic.connect",
             .args = port_arg(1),
             .kind = ErrorKind::WrongState,
             .words = {"nic vm1 is disconnected", "nic.delete"}},
            {.op = "nic.disconnect",
             .args = port_arg(1),
             .kind = ErrorKind::WrongState,
             .words = {"nic vm1 is disconnected"}},
            {.op = "port.teardown",
             .args = {{"name", "vm1"}},
             .kind = ErrorKind::WrongState,
             .words = {"it has a NIC (disconnected)"}},
            {.op = "port.delete", .args = {{"name", "vm1"}}, .kind = ErrorKind::WrongState, .words = {"with a NIC"}}}},
      {.reached_by = "nic.delete",
       .args = port_arg(1),
       .refused = {{.op = "nic.connect",
                    .args = port_arg(1),
                    .kind = ErrorKind::NotFound,
                    .words = {"no NIC", "port is created"}},
                   {.op = "nic.delete", .args = port_arg(1), .kind = ErrorKind::NotFound, .words = {"no NIC"}},
                   {.op = "port.delete",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::WrongState,
                    .words = {"port vm1 is created", "port.teardown"}}}},
      {.reached_by = "port.teardown",
       .args = {{"name", "vm1"}},
       .refused = {{.op = "nic.create",
                    .args = nic_args(1),
                    .kind = ErrorKind::WrongState,
                    .words = {"port vm1 is torn_down", "port.delete"}},
                   {.op = "nic.connect",
                    .args = port_arg(1),
                    .kind = ErrorKind::NotFound,
                    .words = {"port is torn_down", "port.delete"}},
                   {.op = "port.teardown",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::WrongState,
                    .words = {"it is torn_down", "port.delete"}},
                   {.op = "port.create",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::Exists,
                    .words = {"already exists (it is torn_down)"}}}},
      {.reached_by = "port.delete",
       .args = {{"name", "vm1"}},
       .refused = {{.op = "port.teardown",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::NotFound,
                    .words = {"port vm1 does not exist"}},
                   {.op = "port.delete",
                    .args = {{"name", "vm1"}},
                    .kind = ErrorKind::NotFound,
                    .words = {"port vm1 does not exist"}},
                   {.op = "nic.delete",
                    .args = port_arg(1),
                    .kind = ErrorKind::NotFound,
                    .words = {"port vm1 does not exist"}}}},
  };
  for (const auto& stage : stages) {
    if (stage.reached_by) ok(stage.reached_by, stage.args);
    for (const auto& r : stage.refused) {
      SCOPED_TRACE(std::string("after ") + (stage.reached_by ? stage.reached_by : "nothing") + ": " + r.op);
      const size_t calls = fake_->calls().size();
      refused(r.op, r.args, r.kind, r.words);
      EXPECT_TRUE(calls_since(calls).empty()) << "a refused step reached the datapath";
    }
  }
}

// ---- a datapath failure: refused, and undone ----------------------------

TEST_F(SwitchPolicy, ConnectFailureIsRefusedAndLeavesTheNicCreatedWithNoVmq) {
  seed(2);
  start();
  ok("port.create", {{"name", "vm1"}});
  ok("nic.create", nic_args(1));
  struct Row {
    int err;  // what the datapath answers
    ErrorKind kind;
  };
  const std::vector<Row> rows = {
      {.err = EIO, .kind = ErrorKind::Kernel},
      {.err = EPERM, .kind = ErrorKind::Kernel},
      {.err = ENOSPC, .kind = ErrorKind::Exhausted},  // out of buffers or sockets
      {.err = EMFILE, .kind = ErrorKind::Exhausted},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(std::strerror(r.err));
    const size_t calls = fake_->calls().size();
    fake_->fail_next_connect = r.err;
    refused("nic.connect", port_arg(1), r.kind, {"nic.connect vm1", std::strerror(r.err)});
    // The switch had chosen vmq 1 and told the datapath; the failure leaves it free.
    EXPECT_EQ(calls_since(calls), std::vector<std::string>{"connect vm1 vmq 1"});
    json n = nic(1);
    EXPECT_EQ(n["state"], "created");
    EXPECT_EQ(n["vmq"], nullptr);
    EXPECT_EQ(free_vmqs(), (std::vector<uint32_t>{1, 2}));
    EXPECT_TRUE(fake_->connected().empty());
  }
  // Nothing was half made: the same step now succeeds, with the same vmq.
  json n = ok("nic.connect", port_arg(1));
  EXPECT_EQ(n["state"], "connected");
  EXPECT_EQ(n["vmq"], 1);
  EXPECT_EQ(fake_vmq(1), 1);
}

TEST_F(SwitchPolicy, ConnectOfAMissingBackendIsNotFound) {
  seed(2);
  start();
  ok("port.create", {{"name", "vm1"}});
  ok("nic.create", nic_args(1));
  netdevs_.erase("vm1-host");
  refused("nic.connect", port_arg(1), ErrorKind::NotFound, {"nic.connect vm1", "vm1-host", "No such device"});
  EXPECT_EQ(nic(1)["state"], "created");
  netdevs_.insert("vm1-host");
  EXPECT_EQ(ok("nic.connect", port_arg(1))["vmq"], 1);
}

TEST_F(SwitchPolicy, SetVmqFailureIsRefusedAndLeavesTheVmqsAsTheyWere) {
  seed(1);
  start();
  connect(1);
  connect(2);  // on the default queue: the pool is empty
  ASSERT_EQ(fake_vmq(2), 0);

  // vmq.free of vm1 fails in the datapath: vm1 keeps its vmq.
  fake_->fail_next_set_vmq = EIO;
  refused("vmq.free", port_arg(1), ErrorKind::Kernel, {"vmq.free vm1", std::strerror(EIO)});
  EXPECT_EQ(nic(1)["vmq"], 1);
  EXPECT_EQ(fake_vmq(1), 1);
  EXPECT_EQ(filter_vmqs(1), std::set<uint32_t>{1});
  // The datapath busy with it (frames in flight): the state is the reason.
  fake_->fail_next_set_vmq = EBUSY;
  refused("vmq.free", port_arg(1), ErrorKind::WrongState, {"vmq.free vm1"});

  ok("vmq.free", port_arg(1));
  ASSERT_EQ(free_vmqs(), std::vector<uint32_t>{1});
  // vmq.allocate of vm2 fails in the datapath: vm2 stays on the default
  // queue and vmq 1 stays free, with or without policy auto.
  for (const json& args : std::vector<json>{port_arg(2), {{"port", "vm2"}, {"policy", "auto"}}}) {
    SCOPED_TRACE(args.dump());
    fake_->fail_next_set_vmq = EIO;
    refused("vmq.allocate", args, ErrorKind::Kernel, {"vmq.allocate vm2", std::strerror(EIO)});
    EXPECT_EQ(nic(2)["vmq"], nullptr);
    EXPECT_EQ(nic(2)["path"], "default");
    EXPECT_EQ(fake_vmq(2), 0);
    EXPECT_TRUE(filter_vmqs(2).empty());
    EXPECT_EQ(free_vmqs(), std::vector<uint32_t>{1});
  }
  EXPECT_EQ(ok("vmq.allocate", port_arg(2))["vmq"], 1);
  EXPECT_EQ(fake_vmq(2), 1);
}

// ---- restart ------------------------------------------------------------

TEST_F(SwitchPolicy, RestartRestoresNicsVmqsAndTheConfiguration) {
  seed(4);
  start();
  connect(1);                    // connected, vmq 1
  connect(2, {{"vmq", "off"}});  // connected, default queue
  ok("port.create", {{"name", "vm3"}});
  ok("nic.create", nic_args(3, {{"vlan_mode", "trunk"}, {"trunk_vlans", {10, 20}}, {"native_vlan", 5}}));
  ok("vmq.allocate", port_arg(3));  // created, vmq 2 held
  connect(4);                       // vmq 3, then disconnected (keeps it)
  ok("nic.disconnect", port_arg(4));
  ok("port.create", {{"name", "spare"}});
  ok("port.teardown", {{"name", "spare"}});
  ok("fdb.add", {{"mac", "02:00:00:00:01:01"}, {"port", "vm1"}});

  const json show = ok("show");
  const json exported = ok("config.export");
  const json fdb = ok("fdb.show");
  const auto before = fake_->connected();

  start();  // a new switch on the same state directory, a new datapath
  // The connected NICs, and only they, were connected again with their vmq.
  EXPECT_EQ(fake_->calls(), (std::vector<std::string>{"connect vm1 vmq 1", "connect vm2 vmq 0", "reconcile 2"}));
  ASSERT_EQ(fake_->connected().size(), before.size());
  for (const auto& [name, spec] : before) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(fake_->connected().count(name));
    const NicBinding& again = fake_->connected().at(name);
    EXPECT_EQ(again.vmq_id, spec.vmq_id);
    EXPECT_EQ(again.nic.mac, spec.nic.mac);
    EXPECT_EQ(again.nic.backend, spec.nic.backend);
    EXPECT_EQ(again.nic.statics, spec.nic.statics);
  }
  EXPECT_EQ(filter_vmqs(1), std::set<uint32_t>{1});
  EXPECT_EQ(ok("show"), show);
  EXPECT_EQ(ok("config.export"), exported);
  EXPECT_EQ(ok("fdb.show"), fdb);
  EXPECT_EQ(free_vmqs(), std::vector<uint32_t>{4});
  // The restored vmqs are taken: a new NIC gets the one left.
  ok("nic.delete", port_arg(4));
  EXPECT_EQ(connect(5)["vmq"], 3);
}

// A state file that says a NIC is connected while no uplink is (written by
// hand, or by an older switchd): the NIC can still be disconnected and
// deleted, with no datapath to tell.
TEST_F(SwitchPolicy, AConnectedNicWithoutAnUplinkCanBeDisconnected) {
  json nic = {{"mac", mac_of(1)}, {"backend", "vm1-host"}, {"state", "connected"}, {"vmq", 1}};
  json s{{"version", 1},
         {"uplink", nullptr},
         {"ports", {{{"name", "vm1"}, {"state", "created"}, {"nic", nic}}}},
         {"fdb_static", json::array()}};
  std::ofstream(dir_ / "state.json") << s.dump(2) << "\n";
  SwitchOptions o;
  o.state_dir = dir_.string();
  o.max_vmqs = max_vmqs_;
  o.open_datapath = [](const std::string&, const DatapathOptions&) -> Result<std::unique_ptr<DatapathApi>> {
    ADD_FAILURE() << "no uplink in the state: no datapath to open";
    return Error{ENODEV, "no datapath"};
  };
  auto sw = Switch::start(o);
  ASSERT_TRUE(sw) << sw.error().message;
  sw_ = std::move(sw.value());
  EXPECT_EQ(ok("nic.disconnect", port_arg(1))["state"], "disconnected");
  ok("nic.delete", port_arg(1));
  EXPECT_EQ(ok("show")["vmqs"]["free"], json({1, 2}));
}

// ---- refusals -----------------------------------------------------------

TEST_F(SwitchPolicy, RefusalsNameWhatIsWrong) {
  seed(2);
  start();
  connect(1);
  ok("port.create", {{"name", "vm2"}});
  std::vector<int> too_many(4095);
  for (size_t i = 0; i < too_many.size(); i++) too_many[i] = static_cast<int>(i % 4094) + 1;
  struct Row {
    const char* what;
    const char* op;
    json args;
    ErrorKind kind;
    std::vector<std::string> words;
  };
  const std::vector<Row> rows = {
      {.what = "unknown port",
       .op = "nic.create",
       .args = nic_args(3),
       .kind = ErrorKind::NotFound,
       .words = {"port vm3 does not exist"}},
      {.what = "unknown port",
       .op = "nic.connect",
       .args = port_arg(9),
       .kind = ErrorKind::NotFound,
       .words = {"port vm9 does not exist"}},
      {.what = "unknown port",
       .op = "vmq.free",
       .args = port_arg(9),
       .kind = ErrorKind::NotFound,
       .words = {"port vm9 does not exist"}},
      {.what = "unknown port",
       .op = "fdb.add",
       .args = {{"mac", "02:00:00:00:01:01"}, {"port", "vm9"}},
       .kind = ErrorKind::NotFound,
       .words = {"port vm9 does not exist"}},
      {.what = "duplicate port",
       .op = "port.create",
       .args = {{"name", "vm1"}},
       .kind = ErrorKind::Exists,
       .words = {"port vm1 already exists"}},
      {.what = "duplicate MAC on the VLAN",
       .op = "nic.create",
       .args = nic_args(2, {{"mac", mac_of(1)}}),
       .kind = ErrorKind::Exists,
       .words = {mac_of(1), "VLAN 0", "in use by nic vm1"}},
      {.what = "duplicate backend",
       .op = "nic.create",
       .args = nic_args(2, {{"backend", "vm1-host"}}),
       .kind = ErrorKind::Exists,
       .words = {"backend vm1-host is already used by nic vm1"}},
      {.what = "multicast MAC",
       .op = "nic.create",
       .args = nic_args(2, {{"mac", "03:00:00:00:00:02"}}),
       .kind = ErrorKind::Usage,
       .words = {"03:00:00:00:00:02", "not a unicast"}},
      {.what = "broadcast MAC",
       .op = "nic.create",
       .args = nic_args(2, {{"mac", "ff:ff:ff:ff:ff:ff"}}),
       .kind = ErrorKind::Usage,
       .words = {"not a unicast"}},
      {.what = "zero MAC",
       .op = "nic.create",
       .args = nic_args(2, {{"mac", "00:00:00:00:00:00"}}),
       .kind = ErrorKind::Usage,
       .words = {"00:00:00:00:00:00", "not a unicast"}},
      {.what = "malformed MAC",
       .op = "nic.create",
       .args = nic_args(2, {{"mac", "02:00:00:00:00"}}),
       .kind = ErrorKind::Usage,
       .words = {"not a MAC address"}},
      {.what = "VLAN above 4094",
       .op = "nic.create",
       .args = nic_args(2, {{"vlan", 4095}}),
       .kind = ErrorKind::Usage,
       .words = {"vlan must be an integer 0..4094"}},
      {.what = "negative VLAN",
       .op = "nic.create",
       .args = nic_args(2, {{"vlan", -1}}),
       .kind = ErrorKind::Usage,
       .words = {"0..4094"}},
      {.what = "trunk VLAN 0",
       .op = "nic.create",
       .args = nic_args(2, {{"vlan_mode", "trunk"}, {"trunk_vlans", {0}}}),
       .kind = ErrorKind::Usage,
       .words = {"1..4094"}},
      {.what = "native VLAN above 4094",
       .op = "nic.create",
       .args = nic_args(2, {{"vlan_mode", "trunk"}, {"trunk_vlans", {10}}, {"native_vlan", 4095}}),
       .kind = ErrorKind::Usage,
       .words = {"native_vlan", "0..4094"}},
      {.what = "trunk list over the limit",
       .op = "nic.create",
       .args = nic_args(2, {{"vlan_mode", "trunk"}, {"trunk_vlans", too_many}}),
       .kind = ErrorKind::Usage,
       .words = {"4095 entries", "the limit is 4094"}},
      {.what = "no such vmq policy",
       .op = "nic.create",
       .args = nic_args(2, {{"vmq", "required"}}),
       .kind = ErrorKind::Usage,
       .words = {"use auto or off"}},
      {.what = "port name too long",
       .op = "port.create",
       .args = {{"name", "a-name-that-is-too-long"}},
       .kind = ErrorKind::Usage,
       .words = {"1 to 15 characters"}},
      {.what = "unknown op",
       .op = "nic.reboot",
       .args = port_arg(1),
       .kind = ErrorKind::Usage,
       .words = {"unknown op 'nic.reboot'"}},
      {.what = "multicast static entry",
       .op = "fdb.add",
       .args = {{"mac", "01:00:5e:00:00:01"}, {"port", "vm1"}},
       .kind = ErrorKind::Usage,
       .words = {"not a unicast MAC"}},
      {.what = "a NIC's own MAC as a static entry",
       .op = "fdb.add",
       .args = {{"mac", mac_of(1)}, {"port", "vm1"}},
       .kind = ErrorKind::Exists,
       .words = {"nic vm1's own MAC"}},
      {.what = "events wait over the limit",
       .op = "events",
       .args = {{"wait_ms", 60001}},
       .kind = ErrorKind::Usage,
       .words = {"0..60000"}},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(r.what);
    const size_t calls = fake_->calls().size();
    refused(r.op, r.args, r.kind, r.words);
    EXPECT_TRUE(calls_since(calls).empty()) << "a refused step reached the datapath";
  }
  // The same MAC on another VLAN is another station: no refusal.
  EXPECT_EQ(ok("nic.create", nic_args(2, {{"mac", mac_of(1)}, {"vlan", 7}}))["vlan"], 7);
}

TEST_F(SwitchPolicy, PortBoundIsRefusedNamingTheLimit) {
  // kMaxPorts - 1 ports restored (creating them one by one writes the
  // state file each time), then the last one fits and the next does not.
  json ports = json::array();
  for (size_t i = 0; i + 1 < kMaxPorts; i++)
    ports.push_back({{"name", "p" + std::to_string(i)}, {"state", "created"}, {"nic", nullptr}});
  seed(2, ports);
  start();
  ok("port.create", {{"name", "last"}});
  EXPECT_EQ(ok("show")["ports"].size(), kMaxPorts);
  refused("port.create", {{"name", "one-more"}}, ErrorKind::Exhausted,
          {"port.create one-more", "limit " + std::to_string(kMaxPorts), "delete one first"});
  ok("port.teardown", {{"name", "p0"}});
  ok("port.delete", {{"name", "p0"}});
  ok("port.create", {{"name", "one-more"}});
}

TEST_F(SwitchPolicy, StaticFdbBoundIsRefusedNamingTheLimit) {
  seed(2);
  start();
  connect(1);
  // Restored rather than added one by one, as for the ports.
  std::ifstream in(dir_ / "state.json");
  json s = json::parse(in);
  for (size_t i = 0; i < kMaxStaticFdb; i++) {
    char mac[32];
    std::snprintf(mac, sizeof(mac), "02:00:00:01:%02zx:%02zx", i >> 8, i & 0xff);
    s["fdb_static"].push_back({{"mac", mac}, {"vlan", 0}, {"port", "vm1"}});
  }
  std::ofstream(dir_ / "state.json") << s.dump();
  start();
  ASSERT_EQ(fake_->connected().at("vm1").nic.statics.size(), kMaxStaticFdb);
  refused("fdb.add", {{"mac", "02:00:00:02:00:01"}, {"port", "vm1"}}, ErrorKind::Exhausted,
          {"limit " + std::to_string(kMaxStaticFdb), "fdb.del one first"});
}

// ---- events -------------------------------------------------------------

TEST_F(SwitchPolicy, EventsOfALifecycleAreNumberedInOrder) {
  seed(2);
  start();
  connect(1);
  refused("nic.connect", port_arg(1), ErrorKind::WrongState, {"connected"});  // no event
  ok("nic.disconnect", port_arg(1));
  ok("nic.delete", port_arg(1));
  ok("port.teardown", {{"name", "vm1"}});
  ok("port.delete", {{"name", "vm1"}});

  struct Want {
    const char* object;
    const char* from;
    const char* to;
    const char* step;
  };
  const std::vector<Want> want = {
      {.object = "port vm1", .from = "none", .to = "created", .step = "port.create"},
      {.object = "nic vm1", .from = "none", .to = "created", .step = "nic.create"},
      {.object = "vmq 1", .from = "free", .to = "allocated to nic vm1", .step = "vmq.allocate"},
      {.object = "nic vm1", .from = "created", .to = "connected", .step = "nic.connect"},
      {.object = "nic vm1", .from = "connected", .to = "disconnected", .step = "nic.disconnect"},
      {.object = "vmq 1", .from = "allocated", .to = "free", .step = "nic.delete"},
      {.object = "nic vm1", .from = "disconnected", .to = "none", .step = "nic.delete"},
      {.object = "port vm1", .from = "created", .to = "torn_down", .step = "port.teardown"},
      {.object = "port vm1", .from = "torn_down", .to = "none", .step = "port.delete"},
  };
  json events = ok("events")["events"];
  ASSERT_EQ(events.size(), want.size()) << events.dump(1);
  const uint64_t first = events[0]["seq"];
  for (size_t i = 0; i < want.size(); i++) {
    SCOPED_TRACE(events[i].dump());
    EXPECT_EQ(events[i]["seq"], first + i) << "sequence numbers grow by one per transition";
    EXPECT_EQ(events[i]["object"], want[i].object);
    EXPECT_EQ(events[i]["from"], want[i].from);
    EXPECT_EQ(events[i]["to"], want[i].to);
    EXPECT_EQ(events[i]["step"], want[i].step);
    EXPECT_TRUE(events[i]["time"].get<std::string>().ends_with("Z"));
  }
  // `since`: only what came after.
  json after = ok("events", {{"since", first + 5}})["events"];
  ASSERT_EQ(after.size(), 3u);
  EXPECT_EQ(after[0]["object"], "nic vm1");
  EXPECT_EQ(after[0]["step"], "nic.delete");
  // Nothing newer and a wait: parked (switchd answers it later).
  try {
    sw_->handle("events", {{"since", first + 8}, {"wait_ms", 100}});
    ADD_FAILURE() << "events with nothing newer and wait_ms was answered at once";
  } catch (const NotYet& w) {
    EXPECT_EQ(w.wait_ms, 100u);
    EXPECT_TRUE(w.result["events"].empty());
  }
}

}  // namespace
}  // namespace xvmq::switchd
