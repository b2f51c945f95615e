// host=stack: the VLAN tag the host's stack took off a group frame, put
// back from PACKET_AUXDATA before the frame is flooded to the VMs.
#include <gtest/gtest.h>

#include <linux/if_ether.h>

#include "switchd/dp/stack_reader.h"

namespace xvmq::switchd {
namespace {

std::vector<uint8_t> frame() {
  std::vector<uint8_t> f(12, 0xee);             // destination and source MAC
  f.insert(f.end(), {0x08, 0x06, 0x00, 0x01});  // ARP
  return f;
}

TEST(RestoreVlanTag, AfterTheMacs) {
  tpacket_auxdata aux{};
  aux.tp_status = TP_STATUS_VLAN_VALID;
  aux.tp_vlan_tci = 0x2064;  // PCP 1, VID 100
  auto f = frame();
  restore_vlan_tag(f, aux);
  ASSERT_EQ(f.size(), 20u);
  EXPECT_EQ(std::vector<uint8_t>(f.begin() + 12, f.begin() + 18),
            (std::vector<uint8_t>{0x81, 0x00, 0x20, 0x64, 0x08, 0x06}));
}

TEST(RestoreVlanTag, TheTpidGivenKept) {
  tpacket_auxdata aux{};
  aux.tp_status = TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID;
  aux.tp_vlan_tpid = ETH_P_8021AD;
  aux.tp_vlan_tci = 7;
  auto f = frame();
  restore_vlan_tag(f, aux);
  EXPECT_EQ(std::vector<uint8_t>(f.begin() + 12, f.begin() + 16), (std::vector<uint8_t>{0x88, 0xa8, 0x00, 0x07}));
}

TEST(RestoreVlanTag, UntaggedUnchanged) {
  tpacket_auxdata aux{};
  aux.tp_vlan_tci = 5;  // not valid without TP_STATUS_VLAN_VALID
  auto f = frame();
  restore_vlan_tag(f, aux);
  EXPECT_EQ(f, frame());
}

}  // namespace
}  // namespace xvmq::switchd
