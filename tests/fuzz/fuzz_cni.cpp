// Fuzz target: xvmq-cni's network configuration (tools/cni/netconf.h), the
// JSON a container runtime hands the plugin on stdin, and what the plugin
// derives from it.
//
// For every input, exactly one of a configuration and an error: the error
// has a code the parser may give (1, 6, 7) and a message. A configuration
// keeps the rules it was checked against: VLANs in range, a trunk with at
// least one VLAN (a VLAN given twice is one, as switchd takes it), vmq auto or off, unicast MACs, an ipam
// type, and the MAC the plugin would give the container, if any, unicast.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tools/cni/netconf.h"

using namespace xvmq;
using namespace xvmq::cni;

namespace {

[[noreturn]] void broken(const std::string& what, const std::string& input) {
  std::fprintf(stderr, "fuzz_cni: invariant broken: %s\ninput: %s\n", what.c_str(), input.c_str());
  std::abort();
}

bool unicast(const Mac& m) { return (m[0] & 1) == 0; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  CniError err;
  err.code = 0;
  const std::optional<NetConf> conf = parse_netconf(text, &err);
  if (!conf) {
    if (err.code != kIncompatibleVersion && err.code != kDecodeFailure && err.code != kInvalidConfig)
      broken("error code " + std::to_string(err.code), text);
    if (err.msg.empty()) broken("an error without a message", text);
    // What the plugin prints: one line of JSON that reads back, whatever
    // bytes the message quotes.
    const std::string printed = print_json(err.to_json());
    if (!nlohmann::json::accept(printed) || printed.find('\n') != std::string::npos)
      broken("the printed error is not one line of JSON: " + printed, text);
    return 0;
  }
  if (conf->vlan > 4094) broken("vlan " + std::to_string(conf->vlan), text);
  if (conf->trunk) {
    if (conf->trunk->vlans.empty()) broken("a trunk without VLANs", text);
    for (uint16_t v : conf->trunk->vlans)
      if (v < 1 || v > 4094) broken("trunk vlan " + std::to_string(v), text);
    if (conf->trunk->native_vlan && *conf->trunk->native_vlan > 4094) broken("native vlan", text);
  }
  if (conf->vmq != "auto" && conf->vmq != "off") broken("vmq " + conf->vmq, text);
  if ((conf->mac && !unicast(*conf->mac)) || (conf->runtime_mac && !unicast(*conf->runtime_mac)))
    broken("a multicast MAC", text);
  if (conf->ipam_type.empty()) broken("no ipam type", text);
  const RuntimeEnv env;
  if (auto m = wanted_mac(*conf, env); m && !unicast(*m)) broken("the container's MAC is multicast", text);
  return 0;
}
