// xvmq-classify: attach the uplink classifier, program its filters, read its
// counters and watch what its sockets receive, without switchd.
#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdio>
#include <functional>

#include "loader/log.h"
#include "tools/cli/parse.h"
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
    [](std::string& s) { return parse_vlan(s) ? std::string() : "'" + s + "' is not a VLAN: 0..4094 or any"; },
    "0..4094|any", "VLAN");

// The command line's values, bound by CLI11, and the command it chose.
struct Cli {
  CLI::App app{
      "The xvmq uplink classifier alone: attach it, program its (MAC, VLAN) -> vmq filters,\n"
      "read its counters and receive on its sockets. Maps are found through the pin\n"
      "directory <pin-root>/<dev>.",
      "xvmq-classify"};
  Common c;
  bool verbose = false;
  std::string mode = "auto";
  bool unpin = false;
  std::string mac, vlan = "any";
  uint32_t vmq = 0;
  bool strip = false;
  ServeOptions serve;
  std::function<int()> run;  // set by the chosen command's callback
};

// A command on DEV that runs `run` when chosen.
CLI::App* command(Cli& cli, CLI::App* parent, const char* name, const char* help, std::function<int()> run) {
  CLI::App* sub = parent->add_subcommand(name, help);
  sub->add_option("dev", cli.c.dev, "uplink netdev")->required();
  sub->callback([&cli, run] { cli.run = run; });
  return sub;
}

void add_attach(Cli& cli) {
  auto* attach =
      command(cli, &cli.app, "attach", "attach the classifier to DEV and pin its maps; prints the mode in use",
              [&cli] { return classify::attach(cli.c, *parse_attach_mode(cli.mode)); });
  attach->add_option("--mode", cli.mode, "XDP mode: native, skb, offload, or auto (native, then skb)")
      ->capture_default_str()
      ->check(CLI::IsMember({"native", "skb", "offload", "auto"}));
}

void add_detach(Cli& cli) {
  auto* detach = command(cli, &cli.app, "detach", "detach the classifier from DEV, whoever attached it",
                         [&cli] { return classify::detach(cli.c, cli.unpin); });
  detach->add_flag("--unpin", cli.unpin, "also remove DEV's pinned maps (filters and counters are lost)");
}

void add_filter(Cli& cli) {
  auto* filter = cli.app.add_subcommand("filter", "(MAC, VLAN) -> vmq filters");
  filter->require_subcommand(1);
  filter->fallthrough();
  auto key = [&cli] { return FilterKey{*parse_mac(cli.mac), *parse_vlan(cli.vlan)}; };
  auto* fadd = command(cli, filter, "add", "add or replace the filter of (MAC, VLAN)", [&cli, key] {
    return filter_add(cli.c, key(), FilterValue{cli.vmq, cli.strip});
  });
  fadd->add_option("mac", cli.mac, "destination MAC (unicast)")->required()->check(kMac);
  fadd->add_option("--vlan", cli.vlan, "the frame's VLAN, or any: a MAC-only filter")
      ->capture_default_str()
      ->check(kVlan);
  fadd->add_option("--vmq", cli.vmq, "vmq that receives the frames")
      ->required()
      ->check(CLI::Range(1u, static_cast<unsigned>(XVMQ_MAX_VMQS - 1)));
  fadd->add_flag("--strip-tag", cli.strip, "remove the VLAN tags up to and including the VLAN's tag");
  auto* fdel =
      command(cli, filter, "del", "remove the filter of (MAC, VLAN)", [&cli, key] { return filter_del(cli.c, key()); });
  fdel->add_option("mac", cli.mac, "destination MAC")->required()->check(kMac);
  fdel->add_option("--vlan", cli.vlan, "VLAN of the filter, or any")->capture_default_str()->check(kVlan);
  auto* flist = command(cli, filter, "list", "list DEV's filters", [&cli] { return filter_list(cli.c); });
  flist->add_flag("--json", cli.c.json, "JSON output");
}

void add_stats(Cli& cli) {
  auto* stats = command(cli, &cli.app, "stats", "frames and bytes per vmq (non-zero rows) and per reason",
                        [&cli] { return classify::stats(cli.c); });
  stats->add_flag("--json", cli.c.json, "JSON output");
}

void add_serve(Cli& cli) {
  auto* serve = command(cli, &cli.app, "serve",
                        "receive on sockets for the default queue and the given vmqs on every receive queue of DEV",
                        [&cli] { return classify::serve(cli.c, cli.serve); });
  serve->add_option("--vmq", cli.serve.vmqs, "a vmq to open sockets for (repeatable: --vmq 1 --vmq 2)")
      ->required()
      ->allow_extra_args(false)
      ->check(CLI::Range(1u, static_cast<unsigned>(XVMQ_MAX_VMQS - 1)));
  serve->add_option("--seconds", cli.serve.seconds, "how long to receive (ends early on SIGINT or SIGTERM)")
      ->required()
      ->check(CLI::Range(0.001, 86400.0));
  serve->add_flag("--print", cli.serve.print, "print each frame's destination MAC, VLAN and length");
}

// The commands, in the order of --help.
constexpr void (*kCommands[])(Cli&) = {add_attach, add_detach, add_filter, add_stats, add_serve};

}  // namespace

int main(int argc, char** argv) {
  Cli cli;
  cli.app.require_subcommand(1);
  cli.app.fallthrough();
  cli.app.add_option("--pin-root", cli.c.pin_root, "bpffs directory with one pin directory per uplink")
      ->capture_default_str();
  cli.app.add_flag("-v,--verbose", cli.verbose, "also print libbpf's and libxdp's messages");
  for (auto add : kCommands) add(cli);
  if (auto rc = xvmq::cli::parse(cli.app, argc, argv, "xvmq-classify")) return *rc;
  log::install(cli.verbose);
  return cli.run ? cli.run() : fail("no command");
}
