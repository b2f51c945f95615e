// xvmq-classify: attach the uplink classifier, program its filters, read its
// counters and watch what its sockets receive, without switchd.
#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdio>

#include "loader/log.h"
#include "tools/classify/commands.h"

namespace {

using namespace xvmq;
using namespace xvmq::classify;

std::optional<uint16_t> parse_vlan(const std::string& text) {
  if (text == "any") return XVMQ_VLAN_ANY;
  unsigned v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v > XVMQ_VLAN_MAX) return std::nullopt;
  return static_cast<uint16_t>(v);
}

const CLI::Validator kMac(
    [](std::string& s) {
      return parse_mac(s) ? std::string() : "'" + s + "' is not a MAC address like 02:00:00:00:00:01";
    },
    "MAC", "MAC");

const CLI::Validator kVlan(
    [](std::string& s) {
      return parse_vlan(s) ? std::string() : "'" + s + "' is not a VLAN: 0..4094 or any";
    },
    "0..4094|any", "VLAN");

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"The xvmq uplink classifier alone: attach it, program its (MAC, VLAN) -> vmq filters,\n"
               "read its counters and receive on its sockets. Maps are found through the pin\n"
               "directory <pin-root>/<dev>.",
               "xvmq-classify"};
  app.require_subcommand(1);
  app.fallthrough();
  Common c;
  bool verbose = false;
  app.add_option("--pin-root", c.pin_root, "bpffs directory with one pin directory per uplink")
      ->capture_default_str();
  app.add_flag("-v,--verbose", verbose, "also print libbpf's and libxdp's messages");

  auto add_dev = [&](CLI::App* sub) { sub->add_option("dev", c.dev, "uplink netdev")->required(); };

  auto* attach = app.add_subcommand("attach", "attach the classifier to DEV and pin its maps; prints the mode in use");
  add_dev(attach);
  std::string mode = "auto";
  attach->add_option("--mode", mode, "XDP mode: native, skb, offload, or auto (native, then skb)")
      ->capture_default_str()
      ->check(CLI::IsMember({"native", "skb", "offload", "auto"}));

  auto* detach = app.add_subcommand("detach", "detach the classifier from DEV, whoever attached it");
  add_dev(detach);
  bool unpin = false;
  detach->add_flag("--unpin", unpin, "also remove DEV's pinned maps (filters and counters are lost)");

  auto* filter = app.add_subcommand("filter", "(MAC, VLAN) -> vmq filters");
  filter->require_subcommand(1);
  filter->fallthrough();
  std::string mac, vlan = "any";
  uint32_t vmq = 0;
  bool strip = false;
  auto* fadd = filter->add_subcommand("add", "add or replace the filter of (MAC, VLAN)");
  add_dev(fadd);
  fadd->add_option("mac", mac, "destination MAC (unicast)")->required()->check(kMac);
  fadd->add_option("--vlan", vlan, "the frame's VLAN, or any: a MAC-only filter")
      ->capture_default_str()
      ->check(kVlan);
  fadd->add_option("--vmq", vmq, "vmq that receives the frames")
      ->required()
      ->check(CLI::Range(1u, static_cast<unsigned>(XVMQ_MAX_VMQS - 1)));
  fadd->add_flag("--strip-tag", strip, "remove the VLAN tags up to and including the VLAN's tag");
  auto* fdel = filter->add_subcommand("del", "remove the filter of (MAC, VLAN)");
  add_dev(fdel);
  fdel->add_option("mac", mac, "destination MAC")->required()->check(kMac);
  fdel->add_option("--vlan", vlan, "VLAN of the filter, or any")->capture_default_str()->check(kVlan);
  auto* flist = filter->add_subcommand("list", "list DEV's filters");
  add_dev(flist);
  flist->add_flag("--json", c.json, "JSON output");

  auto* stats = app.add_subcommand("stats", "frames and bytes per vmq (non-zero rows) and per reason");
  add_dev(stats);
  stats->add_flag("--json", c.json, "JSON output");

  auto* serve = app.add_subcommand(
      "serve", "receive on sockets for the default queue and the given vmqs on every receive queue of DEV");
  add_dev(serve);
  ServeOptions so;
  serve->add_option("--vmq", so.vmqs, "a vmq to open sockets for (repeatable: --vmq 1 --vmq 2)")
      ->required()
      ->allow_extra_args(false)
      ->check(CLI::Range(1u, static_cast<unsigned>(XVMQ_MAX_VMQS - 1)));
  serve->add_option("--seconds", so.seconds, "how long to receive (ends early on SIGINT or SIGTERM)")
      ->required()
      ->check(CLI::Range(0.001, 86400.0));
  serve->add_flag("--print", so.print, "print each frame's destination MAC, VLAN and length");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "xvmq-classify: %s (see xvmq-classify --help)\n", e.what());
    return 2;
  }

  log::install(verbose);
  if (*attach) return classify::attach(c, *parse_attach_mode(mode));
  if (*detach) return classify::detach(c, unpin);
  if (*fadd) {
    FilterKey key{*parse_mac(mac), *parse_vlan(vlan)};
    return filter_add(c, key, FilterValue{vmq, strip});
  }
  if (*fdel) return filter_del(c, FilterKey{*parse_mac(mac), *parse_vlan(vlan)});
  if (*flist) return filter_list(c);
  if (*stats) return classify::stats(c);
  if (*serve) return classify::serve(c, so);
  return fail("no command");
}
