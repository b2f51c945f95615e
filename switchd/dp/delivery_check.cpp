#include "switchd/dp/delivery_check.h"

#include <net/if.h>

#include "switchd/host/netlink.h"

namespace xvmq::switchd {
namespace {

using netlink::xdp_act::kNdoXmit;

// What keeps frames redirected into a device from arriving.
struct Gap {
  std::string what;  // the device and what it lacks
  std::string err;   // what the kernel's redirect fails with
  std::string fix;   // what to do, or empty when nothing but another path helps
};

// A veth's peer in a sentence, and in a command: its name when it is in
// this namespace; elsewhere (a VM's namespace) the name is not ours to know.
std::string peer_of(const DeliveryFacts& f) { return f.peer.empty() ? "its peer" : "its peer " + f.peer; }
std::string peer_name(const DeliveryFacts& f) { return f.peer.empty() ? "the peer" : f.peer; }
std::string peer_cmd(const DeliveryFacts& f, const std::string& cmd) {
  return "`" + cmd + "` in " + (f.peer.empty() ? "the peer's namespace" : "its namespace");
}

Gap down(const std::string& desc, const DeliveryFacts& f) {
  return {desc + " is down", "ENETDOWN", "`ip link set " + f.device + " up`"};
}

std::optional<Gap> veth_gap(const DeliveryFacts& f) {
  const std::string desc = "veth " + f.device;
  const std::string peer_dev = f.peer.empty() ? "PEER" : f.peer;
  const std::string gro = "turn GRO on at " + peer_name(f) + " (" + peer_cmd(f, "ethtool -K " + peer_dev + " gro on") +
                          ") or attach an XDP program to it in native mode";
  if (f.xdp_features == 0)  // veth_set_xdp_features cleared them all
    return Gap{desc + " reports no XDP features: " + peer_of(f) + " has more transmit queues than " + f.device +
                   " has receive queues",
               "EOPNOTSUPP",
               "give " + f.device + " at least as many receive queues as " + peer_name(f) +
                   " has transmit queues (`ethtool -L`, or a pair made with equal numrxqueues and numtxqueues), then " +
                   gro};
  if (!(f.xdp_features & kNdoXmit))
    return Gap{desc + " has no XDP transmit (NDO_XMIT): " + peer_of(f) +
                   " has neither GRO on nor an XDP program in native mode (generic mode does not count)",
               "EOPNOTSUPP", gro};
  if (!f.up) return down(desc, f);
  if (!f.carrier)
    return Gap{desc + " has no carrier: " + peer_of(f) + " is down, and with it the NAPI that veth_xdp_xmit needs",
               "ENXIO",
               "bring " + peer_name(f) + " up (" +
                   peer_cmd(f, "ip link set " + (f.peer.empty() ? "PEER" : f.peer) + " up") + ")"};
  return std::nullopt;
}

std::optional<Gap> tun_gap(const DeliveryFacts& f) {
  const std::string desc = "tap " + f.device;
  if (!f.tun_tap)
    return Gap{f.device + " is a tun device (layer 3), not a tap", "EOPNOTSUPP",
               "give the VM a tap (`ip tuntap add mode tap`)"};
  if (!(f.xdp_features & kNdoXmit)) return Gap{desc + " has no XDP transmit (NDO_XMIT)", "EOPNOTSUPP", ""};
  if (!f.up) return down(desc, f);
  if (tap_attached_queues(f) == 0) {
    const std::string who =
        f.carrier ? "its reader detached every queue it had" : "no process holds it open: is its VM (QEMU) running?";
    return Gap{desc + " has no queue attached (" + who + ")", "ENXIO",
               "start the VM before connecting the NIC, so that QEMU holds the tap"};
  }
  return std::nullopt;
}

std::optional<Gap> gap(const DeliveryFacts& f) {
  if (f.driver == "veth") return veth_gap(f);
  if (f.driver == "tun") return tun_gap(f);
  const std::string desc = f.device + " (driver " + (f.driver.empty() ? "unknown" : f.driver) + ")";
  if (!(f.xdp_features & kNdoXmit))
    return Gap{desc + " has no XDP transmit (NDO_XMIT: its driver offers no ndo_xdp_xmit now; some offer it only " +
                   "while an XDP program is attached)",
               "EOPNOTSUPP", ""};
  if (!f.up) return down(desc, f);
  return std::nullopt;
}

// What the device has that lets the kernel take redirected frames.
std::string takes(const DeliveryFacts& f) {
  if (f.driver == "veth") return "veth " + f.device + " takes redirected frames (NDO_XMIT, " + peer_of(f) + " up)";
  if (f.driver == "tun") {
    const uint32_t n = tap_attached_queues(f);
    return "tap " + f.device + " takes redirected frames (" + std::to_string(n) + (n == 1 ? " queue" : " queues") +
           " attached)";
  }
  return f.device + " (driver " + (f.driver.empty() ? "unknown" : f.driver) + ") takes redirected frames (NDO_XMIT)";
}

}  // namespace

uint32_t tap_attached_queues(const DeliveryFacts& tap) {
  if (tap.tun_queues) return *tap.tun_queues;
  return tap.carrier ? 1 : 0;
}

KernelDeliveryCheck kernel_delivery_rule(const DeliveryFacts& backend) {
  auto g = gap(backend);
  if (!g) return {true, takes(backend) + ": kernel delivery."};
  std::string why = g->what + ", so frames redirected into it would be dropped (" + g->err + "): ";
  why +=
      g->fix.empty() ? "use AF_XDP delivery (--delivery xsk)." : g->fix + ", or use AF_XDP delivery (--delivery xsk).";
  return {false, why};
}

KernelDeliveryCheck uplink_xmit_rule(const DeliveryFacts& uplink) {
  auto g = gap(uplink);
  if (!g) return {true, "uplink " + takes(uplink) + ": VM egress to it is redirected in XDP."};
  std::string why = "uplink " + g->what + ", so VM egress to it cannot be redirected in XDP (" + g->err +
                    ") and goes through switchd (AF_XDP)";
  why += g->fix.empty() ? "." : "; to redirect it in XDP, " + g->fix + ".";
  return {false, why};
}

Result<DeliveryFacts> delivery_facts(const NetdevInfo& dev) {
  auto state = netlink::link_state(dev.name);
  if (!state) return state.error();
  auto features = netlink::xdp_features(dev.name);
  if (!features) return features.error();
  DeliveryFacts f;
  f.device = dev.name;
  f.driver = dev.driver.empty() ? state->kind : dev.driver;
  f.xdp_features = *features;
  f.up = state->up;
  f.carrier = state->carrier;
  f.tun_tap = state->tun_tap;
  f.tun_queues = state->tun_queues;
  char peer[IF_NAMESIZE] = {};
  if (state->kind == "veth" && state->link_ifindex > 0 && !state->link_elsewhere &&
      if_indextoname(static_cast<unsigned>(state->link_ifindex), peer))
    f.peer = peer;
  return f;
}

KernelDeliveryCheck check_kernel_delivery(const NetdevInfo& backend) {
  auto f = delivery_facts(backend);
  if (!f)
    return {false, "cannot tell whether " + backend.name + " takes redirected frames (" + f.error().message +
                       "): use AF_XDP delivery (--delivery xsk)."};
  return kernel_delivery_rule(*f);
}

KernelDeliveryCheck check_uplink_xmit(const NetdevInfo& uplink) {
  auto f = delivery_facts(uplink);
  if (!f)
    return {false, "cannot tell whether uplink " + uplink.name + " takes redirected frames (" + f.error().message +
                       "), so VM egress to it goes through switchd (AF_XDP)."};
  return uplink_xmit_rule(*f);
}

}  // namespace xvmq::switchd
