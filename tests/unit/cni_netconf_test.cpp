// xvmq-cni's strict parser: the network configuration and the CNI_*
// variables, every fault named; the host end's name; where the MAC comes
// from. No kernel, no switchd (cni_test runs the plugin itself).
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "tools/cni/netconf.h"

namespace xvmq::cni {
namespace {

using nlohmann::json;

json base() {
  return {{"cniVersion", "1.0.0"},
          {"name", "xvmq"},
          {"type", "xvmq-cni"},
          {"uplink", "eth1"},
          {"ipam", {{"type", "host-local"}}}};
}

CniError refused(const json& j) {
  CniError err;
  EXPECT_FALSE(parse_netconf(j.is_string() ? j.get<std::string>() : j.dump(), &err)) << j.dump();
  return err;
}

TEST(CniNetconf, AGoodConfigurationAndItsDefaults) {
  CniError err;
  auto c = parse_netconf(base().dump(), &err);
  ASSERT_TRUE(c) << err.msg;
  EXPECT_EQ(c->socket, "/run/xvmq/switchd.sock");
  EXPECT_EQ(c->vlan, 0);
  EXPECT_FALSE(c->trunk);
  EXPECT_EQ(c->vmq, "auto");
  EXPECT_EQ(c->delivery, "");
  EXPECT_EQ(c->ipam_type, "host-local");
  json j = base();
  j.update({{"socket", "/tmp/s.sock"},
            {"trunk", {{"vlans", {10, 20}}, {"native_vlan", 0}}},
            {"vmq", "off"},
            {"delivery", "xsk"},
            {"mac", "02:00:00:00:00:01"},
            {"runtimeConfig", {{"mac", "02:00:00:00:00:02"}, {"portMappings", json::array()}}},
            {"prevResult", {{"cniVersion", "1.0.0"}}},
            {"dns", json::object()},
            {"args", json::object()}});
  c = parse_netconf(j.dump(), &err);
  ASSERT_TRUE(c) << err.msg;
  EXPECT_EQ(c->trunk->vlans, (std::vector<uint16_t>{10, 20}));
  EXPECT_EQ(c->trunk->native_vlan, 0);
  EXPECT_EQ(format_mac(*c->mac), "02:00:00:00:00:01");
  EXPECT_EQ(format_mac(*c->runtime_mac), "02:00:00:00:00:02");
  EXPECT_TRUE(c->prev_result.is_object());
}

TEST(CniNetconf, EveryFaultIsNamedWithItsCode) {
  EXPECT_EQ(refused("[1]").code, kDecodeFailure);
  EXPECT_EQ(refused("").code, kDecodeFailure);
  json v = base();
  v["cniVersion"] = "0.4.0";
  EXPECT_EQ(refused(v).code, kIncompatibleVersion);
  json j = base();
  j.erase("uplink");
  j.update({{"vlan", 4095},
            {"vmq", "on"},
            {"delivery", 3},
            {"mac", "ff:ff:ff:ff:ff:ff"},
            {"socket", "x"},
            {"type", "bridge"},
            {"name", "a b"},
            {"extra", 1},
            {"ipam", {{"type", "a/b"}}}});
  const CniError err = refused(j);
  EXPECT_EQ(err.code, kInvalidConfig);
  for (const char* w : {"uplink: missing", "vlan 4095", "vmq \"on\"", "delivery 3", "mac \"ff:ff:ff:ff:ff:ff\"",
                        "socket \"x\"", "type \"bridge\"", "name \"a b\"", "extra: not a field", "ipam.type \"a/b\""})
    EXPECT_NE(err.msg.find(w), std::string::npos) << "'" << w << "' not in: " << err.msg;
  json t = base();
  t.update({{"vlan", 1}, {"trunk", {{"vlans", {1, 4095, "x"}}, {"native_vlan", -1}, {"tags", 1}}}});
  const CniError terr = refused(t);
  for (const char* w :
       {"vlan and trunk", "trunk.vlans: 4095", "trunk.vlans: \"x\"", "trunk.native_vlan -1", "trunk.tags: not a field"})
    EXPECT_NE(terr.msg.find(w), std::string::npos) << "'" << w << "' not in: " << terr.msg;
  json r = base();
  r["runtimeConfig"] = {{"mac", "01:00:00:00:00:00"}};
  EXPECT_NE(refused(r).msg.find("runtimeConfig.mac"), std::string::npos);
  json n = base();
  n["ipam"] = "host-local";
  EXPECT_NE(refused(n).msg.find("ipam \"host-local\": must be an object"), std::string::npos);
}

TEST(CniNetconf, TheEnvironmentIsCheckedForTheCommand) {
  ::setenv("CNI_COMMAND", "VERSION", 1);
  ::unsetenv("CNI_CONTAINERID");
  ::unsetenv("CNI_NETNS");
  ::unsetenv("CNI_IFNAME");
  ::unsetenv("CNI_PATH");
  ::unsetenv("CNI_ARGS");
  CniError err;
  EXPECT_TRUE(parse_env(&err)) << "VERSION needs nothing else";
  ::setenv("CNI_COMMAND", "ADD", 1);
  ::setenv("CNI_CONTAINERID", "bad id", 1);
  ::setenv("CNI_IFNAME", "0123456789abcdef", 1);
  ::setenv("CNI_ARGS", "IgnoreUnknown=1;MAC=zz", 1);
  EXPECT_FALSE(parse_env(&err));
  EXPECT_EQ(err.code, kInvalidEnv);
  for (const char* w :
       {"CNI_CONTAINERID 'bad id'", "CNI_IFNAME '0123456789abcdef'", "CNI_NETNS ''", "CNI_PATH", "CNI_ARGS MAC='zz'"})
    EXPECT_NE(err.msg.find(w), std::string::npos) << "'" << w << "' not in: " << err.msg;
  ::setenv("CNI_CONTAINERID", "c1", 1);
  ::setenv("CNI_IFNAME", "eth0", 1);
  ::setenv("CNI_PATH", "/opt/cni/bin", 1);
  ::setenv("CNI_ARGS", "IgnoreUnknown=1;MAC=02:00:00:00:00:03", 1);
  ::setenv("CNI_COMMAND", "DEL", 1);
  auto e = parse_env(&err);
  ASSERT_TRUE(e) << "DEL needs no CNI_NETNS: " << err.msg;
  EXPECT_EQ(format_mac(*e->args_mac), "02:00:00:00:00:03");
  ::setenv("CNI_COMMAND", "GC", 1);
  EXPECT_FALSE(parse_env(&err));
  EXPECT_NE(err.msg.find("CNI_COMMAND 'GC'"), std::string::npos);
}

TEST(CniNetconf, TheMacComesFromRuntimeConfigThenArgsThenTheConfiguration) {
  NetConf c;
  RuntimeEnv e;
  EXPECT_FALSE(wanted_mac(c, e));
  c.mac = Mac{2, 0, 0, 0, 0, 1};
  EXPECT_EQ(wanted_mac(c, e), c.mac);
  e.args_mac = Mac{2, 0, 0, 0, 0, 2};
  EXPECT_EQ(wanted_mac(c, e), e.args_mac);
  c.runtime_mac = Mac{2, 0, 0, 0, 0, 3};
  EXPECT_EQ(wanted_mac(c, e), c.runtime_mac);
}

TEST(CniNetconf, TheHostEndsNameIsStableShortAndPerInterface) {
  const std::string a = host_name("0123456789abcdef", "eth0");
  EXPECT_EQ(a, host_name("0123456789abcdef", "eth0"));
  EXPECT_EQ(a.size(), 14u);
  EXPECT_EQ(a.rfind("xv", 0), 0u);
  EXPECT_NE(a, host_name("0123456789abcdef", "net1"));
  std::set<std::string> names;
  for (int i = 0; i < 10000; i++) names.insert(host_name("c" + std::to_string(i), "eth0"));
  EXPECT_EQ(names.size(), 10000u);
}

}  // namespace
}  // namespace xvmq::cni
