// The lifecycle model alone: every step in and out of order, the vmq pool,
// and that a refused step changes nothing. No privileges needed.
#include <gtest/gtest.h>

#include "switchd/core/model.h"

namespace xvmq::switchd {
namespace {

NicDesc nic(uint8_t n, uint16_t vlan = 0) {
  return NicDesc{.mac = Mac{0x02, 0, 0, 0, 0, n},
                 .backend = "vm" + std::to_string(n) + "-host",
                 .vlans = PortVlans::access_vlan(vlan)};
}

// A refusal of the expected kind whose message has every one of `words`,
// and a model left as it was.
template <class Fn>
void refused(Model& m, ErrorKind kind, std::vector<std::string> words, Fn&& fn) {
  auto ports_before = m.ports().size();
  auto events_before = m.events().size();
  std::string state_before;
  for (const auto& [n, p] : m.ports())
    state_before += n + ":" + std::string(to_string(p.state)) + ":" +
                    (p.nic ? std::string(to_string(p.nic->state)) + std::to_string(p.nic->vmq_id.value_or(0)) : "-") +
                    ";";
  try {
    fn();
    ADD_FAILURE() << "not refused";
  } catch (const Refused& r) {
    EXPECT_EQ(r.error.kind, kind) << r.error.message;
    for (const auto& w : words)
      EXPECT_NE(r.error.message.find(w), std::string::npos) << "'" << w << "' not in: " << r.error.message;
  }
  std::string state_after;
  for (const auto& [n, p] : m.ports())
    state_after += n + ":" + std::string(to_string(p.state)) + ":" +
                   (p.nic ? std::string(to_string(p.nic->state)) + std::to_string(p.nic->vmq_id.value_or(0)) : "-") +
                   ";";
  EXPECT_EQ(m.ports().size(), ports_before);
  EXPECT_EQ(m.events().size(), events_before) << "a refused step recorded an event";
  EXPECT_EQ(state_after, state_before);
}

TEST(Model, TheSevenStepsInOrder) {
  Model m(2);
  m.port_create("vm1");
  m.nic_create("vm1", nic(1));
  m.nic_connect("vm1");
  m.nic_disconnect("vm1");
  m.nic_delete("vm1");
  m.port_teardown("vm1");
  m.port_delete("vm1");
  EXPECT_TRUE(m.ports().empty());
  std::vector<std::string> steps;
  uint64_t seq = 0;
  for (const auto& e : m.events()) {
    steps.push_back(e.step);
    EXPECT_GT(e.seq, seq);
    seq = e.seq;
  }
  EXPECT_EQ(steps, (std::vector<std::string>{"port.create", "nic.create", "nic.connect", "nic.disconnect", "nic.delete",
                                             "port.teardown", "port.delete"}));
}

TEST(Model, OutOfOrderStepsAreRefused) {
  Model m(2);
  refused(m, ErrorKind::NotFound, {"port vm1"}, [&] { m.nic_connect("vm1"); });
  m.port_create("vm1");
  refused(m, ErrorKind::NotFound, {"port vm1", "no NIC", "nic.create"}, [&] { m.nic_connect("vm1"); });
  refused(m, ErrorKind::Exists, {"port vm1", "already exists"}, [&] { m.port_create("vm1"); });
  refused(m, ErrorKind::WrongState, {"port.delete", "created", "port.teardown"}, [&] { m.port_delete("vm1"); });
  m.nic_create("vm1", nic(1));
  refused(m, ErrorKind::WrongState, {"already has a NIC", "one NIC"}, [&] { m.nic_create("vm1", nic(2)); });
  refused(m, ErrorKind::WrongState, {"has a NIC"}, [&] { m.port_teardown("vm1"); });
  refused(m, ErrorKind::WrongState, {"nic.disconnect", "created", "nic.connect"}, [&] { m.nic_disconnect("vm1"); });
  m.nic_connect("vm1");
  refused(m, ErrorKind::WrongState, {"nic.delete", "connected", "allowed from there: nic.disconnect"},
          [&] { m.nic_delete("vm1"); });
  refused(m, ErrorKind::WrongState, {"nic.connect", "connected"}, [&] { m.nic_connect("vm1"); });
  m.nic_disconnect("vm1");
  refused(m, ErrorKind::WrongState, {"nic.connect", "disconnected", "nic.delete"}, [&] { m.nic_connect("vm1"); });
}

TEST(Model, NamesMacsAndVlans) {
  Model m(2);
  refused(m, ErrorKind::Usage, {"port name"}, [&] { m.port_create(""); });
  refused(m, ErrorKind::Usage, {"port name"}, [&] { m.port_create("-vm"); });
  refused(m, ErrorKind::Usage, {"port name"}, [&] { m.port_create("a-name-that-is-too-long"); });
  refused(m, ErrorKind::Usage, {"port name"}, [&] { m.port_create("vm 1"); });
  m.port_create("vm1");
  m.port_create("vm2");
  NicDesc mc = nic(1);
  mc.mac[0] = 0x01;
  refused(m, ErrorKind::Usage, {"unicast"}, [&] { m.nic_create("vm1", mc); });
  NicDesc zero = nic(1);
  zero.mac = Mac{};
  refused(m, ErrorKind::Usage, {"unicast"}, [&] { m.nic_create("vm1", zero); });
  refused(m, ErrorKind::Usage, {"VLAN 4095"}, [&] { m.nic_create("vm1", nic(1, 4095)); });
  m.nic_create("vm1", nic(1, 10));
  NicDesc same = nic(1, 10);
  same.backend = "other";
  refused(m, ErrorKind::Exists, {"02:00:00:00:00:01", "VLAN 10", "nic vm1"}, [&] { m.nic_create("vm2", same); });
  NicDesc same_backend = nic(2);
  same_backend.backend = "vm1-host";
  refused(m, ErrorKind::Exists, {"backend vm1-host"}, [&] { m.nic_create("vm2", same_backend); });
  NicDesc other_vlan = nic(1, 20);  // the same MAC on another VLAN is another station
  other_vlan.backend = "vm2-host";
  m.nic_create("vm2", other_vlan);
}

TEST(Model, VhostUserBackends) {
  Model m(2);
  m.port_create("vm1");
  m.port_create("vm2");
  NicDesc relative = nic(1);
  relative.backend = "vhost-user:vm1.sock";
  refused(m, ErrorKind::Usage, {"vhost-user:PATH", "absolute"}, [&] { m.nic_create("vm1", relative); });
  NicDesc kernel = nic(1);
  kernel.backend = "vhost-user:/run/xvmq/vm1.sock";
  kernel.delivery = Delivery::Kernel;
  refused(m, ErrorKind::Usage, {"kernel", "vhost-user"}, [&] { m.nic_create("vm1", kernel); });
  NicDesc ok = kernel;
  ok.delivery = Delivery::Auto;
  m.nic_create("vm1", ok);
  NicDesc same_socket = nic(2);
  same_socket.backend = ok.backend;
  refused(m, ErrorKind::Exists, {"backend vhost-user:/run/xvmq/vm1.sock"}, [&] { m.nic_create("vm2", same_socket); });
}

TEST(Model, VmqPool) {
  Model m(2);
  for (uint8_t i = 1; i <= 3; i++) {
    m.port_create("vm" + std::to_string(i));
    m.nic_create("vm" + std::to_string(i), nic(i));
  }
  EXPECT_EQ(m.vmq_allocate("vm1"), 1u);
  EXPECT_EQ(m.vmq_allocate("vm2"), 2u);
  refused(m, ErrorKind::Exhausted, {"all 2 vmqs", "vm3", "default queue"}, [&] { m.vmq_allocate("vm3"); });
  refused(m, ErrorKind::WrongState, {"already has vmq 1"}, [&] { m.vmq_allocate("vm1"); });
  m.vmq_free("vm1");
  refused(m, ErrorKind::WrongState, {"has no vmq"}, [&] { m.vmq_free("vm1"); });
  EXPECT_EQ(m.vmq_allocate("vm3"), 1u);
  EXPECT_EQ(m.free_vmqs(), std::vector<uint32_t>{});
  // Deleting a NIC gives its vmq back.
  m.nic_delete("vm2");
  EXPECT_EQ(m.free_vmqs(), std::vector<uint32_t>{2});
}

// Ports are bounded: one more is refused as exhausted, naming the limit.
TEST(Model, PortsAreBounded) {
  Model m(2);
  for (size_t i = 0; i < kMaxPorts; i++) m.port_create("p" + std::to_string(i));
  refused(m, ErrorKind::Exhausted, {"port.create extra", "switchd has 4096 ports", "limit 4096"},
          [&] { m.port_create("extra"); });
  m.port_teardown("p0");
  m.port_delete("p0");
  m.port_create("extra");
  EXPECT_EQ(m.ports().size(), kMaxPorts);
}

}  // namespace
}  // namespace xvmq::switchd
