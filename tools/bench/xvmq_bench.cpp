// xvmq-bench: the uplink classifier's cost per frame, by BPF_PROG_RUN,
// against a program that only returns XDP_PASS and one that only parses.
//
// A hit must take the whole hit path, the redirect into a real AF_XDP socket
// included, so the bench moves into network and mount namespaces of its own
// and binds sockets to queue 0 of a veth there: everything it creates dies
// with it. The machine is shared and noisy: one CPU, the cases interleaved in
// rounds, medians reported.
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench.skel.h"
#include "loader/classifier.h"
#include "xsk/queue.h"

namespace {

using namespace xvmq;
using Bytes = std::vector<uint8_t>;

const std::string kDev = "xvb0", kPeer = "xvb1";
constexpr size_t kFrameBytes = 64;
constexpr uint32_t kHitVmq = 1;
constexpr uint16_t kTagVlan = 10;

Mac mac_of(uint32_t i) {
  uint32_t n = i + 1;
  return {0x02, 0x00, 0x00, uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n)};
}
const Mac kHitMac = mac_of(0);
const Mac kMissMac = {0x02, 0xff, 0x00, 0x00, 0x00, 0x01};

Bytes frame_to(const Mac& dst, std::optional<uint16_t> vlan = std::nullopt) {
  Bytes f(dst.begin(), dst.end());
  f.insert(f.end(), {0x02, 0x00, 0x00, 0x00, 0x00, 0xfe});
  auto put16 = [&](uint16_t v) { f.insert(f.end(), {uint8_t(v >> 8), uint8_t(v)}); };
  if (vlan) {
    put16(0x8100);
    put16(*vlan);
  }
  put16(0x0800);
  f.resize(kFrameBytes);
  return f;
}

Status enter_private_namespaces() {
  if (unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) return make_error(errno, "unshare(CLONE_NEWNET|CLONE_NEWNS)");
  if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return make_error(errno, "make / private");
  if (mount("sysfs", "/sys", "sysfs", 0, nullptr) != 0) return make_error(errno, "mount sysfs on /sys");
  if (mount("bpf", "/sys/fs/bpf", "bpf", 0, nullptr) != 0) return make_error(errno, "mount bpffs on /sys/fs/bpf");
  return {};
}

Result<int> make_veth() {
  std::string q = " numrxqueues 1 numtxqueues 1";
  for (const std::string& cmd : {"ip link add " + kDev + q + " type veth peer name " + kPeer + q,
                                 "ip link set " + kDev + " up", "ip link set " + kPeer + " up"})
    if (std::system(cmd.c_str()) != 0) return Error{EIO, "command failed: " + cmd};
  int ifindex = static_cast<int>(if_nametoindex(kDev.c_str()));
  if (!ifindex) return make_error(errno, "veth " + kDev);
  return ifindex;
}

Status pin_cpu(int& cpu) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return make_error(errno, "sched_getaffinity");
  if (cpu < 0)  // the last CPU allowed: CPU 0 tends to take more of the machine's interrupts
    for (int c = 0; c < CPU_SETSIZE; c++)
      if (CPU_ISSET(c, &set)) cpu = c;
  if (cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &set))
    return Error{EINVAL, "CPU " + std::to_string(cpu) + " is not one this process may run on"};
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) return make_error(errno, "pin to CPU " + std::to_string(cpu));
  return {};
}

// A loaded classifier with n filters, kHitMac's going to kHitVmq; the default
// vmq and kHitVmq have sockets on queue 0.
Result<std::unique_ptr<Classifier>> classifier_with(uint32_t n, const XskQueue& q) {
  auto c = Classifier::open();
  if (!c) return c.error();
  auto cls = std::make_unique<Classifier>(std::move(c.value()));
  if (auto st = cls->load(); !st) return st.error();
  // MAC-only filters, where an untagged hit takes both of the classifier's
  // lookups (its longest hit path), and one (MAC, VLAN) filter for tagged hits.
  for (uint32_t i = 0; i + 1 < n; i++)
    if (auto st = cls->set_filter(FilterKey{mac_of(i), XVMQ_VLAN_ANY},
                                  FilterValue{i ? 1 + i % (XVMQ_MAX_VMQS - 1) : kHitVmq, false});
        !st)
      return st.error();
  if (auto st = cls->set_filter(FilterKey{kHitMac, kTagVlan}, FilterValue{kHitVmq, false}); !st) return st.error();
  if (auto st = cls->set_socket(XVMQ_DEFAULT_VMQ, 0, q.fd(0)); !st) return st.error();
  if (auto st = cls->set_socket(kHitVmq, 0, q.fd(1)); !st) return st.error();
  return cls;
}

// The counter that every frame of a classifier case must move.
struct Check {
  const Classifier* cls;
  std::string counter;
  std::function<uint64_t(const Counters&)> frames;
};

struct Case {
  std::string id, name;
  int prog_fd;
  Bytes frame;
  uint32_t action;
  std::optional<Check> check;
};

struct Outcome {
  std::vector<uint32_t> ns;  // the kernel's mean per frame, one per round
  std::string error;         // why the case was aborted
};

// One BPF_PROG_RUN of `repeat` frames, checked for its action and counter.
// Returns the kernel's mean ns per frame.
Result<uint32_t> run(const Case& c, int ifindex, uint32_t repeat) {
  Counters before;
  if (c.check) {
    auto r = c.check->cls->counters();
    if (!r) return r.error();
    before = *r;
  }
  xdp_md ctx{};
  ctx.data_end = static_cast<uint32_t>(c.frame.size());
  ctx.ingress_ifindex = static_cast<uint32_t>(ifindex);
  ctx.rx_queue_index = 0;
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = c.frame.data(), .data_size_in = static_cast<uint32_t>(c.frame.size()),
              .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = static_cast<int>(repeat));
  if (bpf_prog_test_run_opts(c.prog_fd, &opts) != 0) return make_error(errno, "BPF_PROG_RUN");
  if (opts.retval != c.action)
    return Error{EPROTO, "returned " + std::string(xdp_action_name(opts.retval)) + " (" + std::to_string(opts.retval) +
                             "), expected " + std::string(xdp_action_name(c.action))};
  if (c.check) {
    auto after = c.check->cls->counters();
    if (!after) return after.error();
    uint64_t moved = c.check->frames(*after) - c.check->frames(before);
    if (moved != repeat)
      return Error{EPROTO,
                   c.check->counter + " counted " + std::to_string(moved) + " frames of " + std::to_string(repeat)};
  }
  return opts.duration;
}

struct Stats {
  double median, min, max;
};

Stats stats(std::vector<uint32_t> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return {n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0, double(v.front()), double(v.back())};
}

// Medians of an even count of rounds end in .5; others are whole ns.
std::string num(double v, bool sign = false) {
  char buf[32];
  bool whole = v == static_cast<long>(v);
  std::snprintf(buf, sizeof(buf), sign ? (whole ? "%+.0f" : "%+.1f") : (whole ? "%.0f" : "%.1f"), v);
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += (static_cast<unsigned char>(ch) < 0x20) ? ' ' : ch;
  }
  return out + "\"";
}

std::string json_number(std::optional<double> v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f", v.value_or(0));
  return v ? buf : "null";
}

struct Target {
  std::string text;
  std::optional<double> value;  // nullopt: a case it needs was aborted
  double limit;
  bool ratio;  // else ns over the baseline
  bool pass() const { return value && *value <= limit; }
  std::string shown() const {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.2f x", *value);
    return ratio ? buf : num(*value, true) + " ns over baseline";
  }
};

// Indices into the cases, in their order.
enum : size_t { kBaseline, kParse, kHit16, kHitFull, kMiss, kHitVlan };

struct Report {
  const std::vector<Case>& cases;
  const std::vector<Outcome>& out;
  std::vector<std::optional<Stats>> st;  // nullopt: aborted
  std::vector<Target> targets;

  Report(const std::vector<Case>& c, const std::vector<Outcome>& o) : cases(c), out(o), st(c.size()) {
    for (size_t i = 0; i < cases.size(); i++)
      if (out[i].error.empty()) st[i] = stats(out[i].ns);
    std::optional<double> full_vs_small;
    if (st[kHit16] && st[kHitFull] && st[kHit16]->median > 0) full_vs_small = st[kHitFull]->median / st[kHit16]->median;
    targets = {
        {"hit, 16 filters costs at most baseline + 25 ns", over_base(kHit16), 25, false},
        {"hit, 65,536 filters costs at most baseline + 25 ns", over_base(kHitFull), 25, false},
        {"65,536 filters cost at most 1.3 x 16 filters", full_vs_small, 1.3, true},
    };
  }
  std::optional<double> ratio(size_t i) const {
    if (!st[i] || !st[kBaseline] || st[kBaseline]->median == 0) return std::nullopt;
    return st[i]->median / st[kBaseline]->median;
  }
  std::optional<double> over_base(size_t i) const {
    if (!st[i] || !st[kBaseline]) return std::nullopt;
    return st[i]->median - st[kBaseline]->median;
  }
};

void print(const Report& r) {
  std::printf("  %-30s %8s   %10s   %s\n", "case", "ns/frame", "x baseline", "(min..max over rounds)");
  for (size_t i = 0; i < r.cases.size(); i++) {
    const char* name = r.cases[i].name.c_str();
    if (!r.st[i]) {
      std::printf("  %-30s aborted: %s\n", name, r.out[i].error.c_str());
      continue;
    }
    char x[16] = "-";
    if (auto q = r.ratio(i)) std::snprintf(x, sizeof(x), "%.2f", *q);
    std::printf("  %-30s %8s   %10s   (%s..%s)\n", name, num(r.st[i]->median).c_str(), x, num(r.st[i]->min).c_str(),
                num(r.st[i]->max).c_str());
  }
  std::printf("\n  over baseline:");
  const char* sep = " ";
  for (size_t i : {kHit16, kHitFull, kHitVlan}) {
    if (!r.over_base(i)) continue;
    std::printf("%s%s %s ns", sep, r.cases[i].name.c_str(), num(*r.over_base(i), true).c_str());
    sep = "; ";
  }
  std::printf("\n\n");
  for (const auto& t : r.targets) {
    if (!t.value)
      std::printf("  ----  %s: not measured\n", t.text.c_str());
    else
      std::printf("  %s  %s: %s\n", t.pass() ? "PASS" : "MISS", t.text.c_str(), t.shown().c_str());
  }
}

Status write_json(const std::string& path, const Report& r, uint32_t repeat, uint32_t rounds, int cpu) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return make_error(errno, "open " + path);
  std::fprintf(f, "{\n  \"frame_bytes\": %zu, \"repeat\": %u, \"rounds\": %u, \"cpu\": %d,\n  \"cases\": [",
               kFrameBytes, repeat, rounds, cpu);
  for (size_t i = 0; i < r.cases.size(); i++) {
    std::fprintf(f, "%s\n    {\"id\": %s, \"name\": %s", i ? "," : "", json_string(r.cases[i].id).c_str(),
                 json_string(r.cases[i].name).c_str());
    if (!r.st[i]) {
      std::fprintf(f, ", \"error\": %s}", json_string(r.out[i].error).c_str());
      continue;
    }
    std::fprintf(f, ", \"median_ns\": %.1f, \"x_baseline\": %s, \"over_baseline_ns\": %s", r.st[i]->median,
                 json_number(r.ratio(i)).c_str(), json_number(r.over_base(i)).c_str());
    std::fprintf(f, ", \"min_ns\": %.0f, \"max_ns\": %.0f, \"rounds_ns\": [", r.st[i]->min, r.st[i]->max);
    for (size_t k = 0; k < r.out[i].ns.size(); k++) std::fprintf(f, "%s%u", k ? ", " : "", r.out[i].ns[k]);
    std::fprintf(f, "]}");
  }
  std::fprintf(f, "\n  ],\n  \"targets\": [");
  for (size_t i = 0; i < r.targets.size(); i++) {
    const auto& t = r.targets[i];
    std::fprintf(f, "%s\n    {\"target\": %s, \"limit\": %.2f, \"value\": %s, \"pass\": %s}", i ? "," : "",
                 json_string(t.text).c_str(), t.limit, json_number(t.value).c_str(),
                 t.value ? (t.pass() ? "true" : "false") : "null");
  }
  std::fprintf(f, "\n  ]\n}\n");
  if (std::fclose(f) != 0) return make_error(errno, "write " + path);
  return {};
}

// Every case `rounds` times, interleaved, `repeat` frames a run; a case that
// fails stops there with its error.
std::vector<Outcome> measure(const std::vector<Case>& cases, int ifindex, uint32_t repeat, uint32_t rounds) {
  std::vector<Outcome> out(cases.size());
  // One frame first: every case must take its path before any is timed.
  for (size_t i = 0; i < cases.size(); i++)
    if (auto r = run(cases[i], ifindex, 1); !r) out[i].error = r.error().message;
  for (uint32_t round = 0; round < rounds; round++)
    for (size_t i = 0; i < cases.size(); i++) {
      if (!out[i].error.empty()) continue;
      auto r = run(cases[i], ifindex, repeat);
      if (r)
        out[i].ns.push_back(*r);
      else
        out[i].error = r.error().message;
    }
  return out;
}

int fail(const std::string& what, const Error& e) {
  std::fprintf(stderr, "xvmq-bench: %s: %s\n", what.c_str(), e.message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xvmq-bench: the uplink classifier's cost per frame (BPF_PROG_RUN), against an XDP_PASS baseline"};
  uint32_t repeat = 1'000'000;
  uint32_t rounds = 7;
  int cpu = -1;
  std::string json;
  app.add_option("--repeat", repeat, "frames per BPF_PROG_RUN")
      ->check(CLI::Range(1'000'000, INT_MAX))
      ->capture_default_str();
  app.add_option("--rounds", rounds, "rounds; each runs every case once")
      ->check(CLI::Range(5, 1000))
      ->capture_default_str();
  app.add_option("--cpu", cpu, "CPU to run on (default: the last one allowed)")->check(CLI::NonNegativeNumber);
  app.add_option("--json", json, "also write the figures to this file as JSON");
  CLI11_PARSE(app, argc, argv);

  if (geteuid() != 0) {
    std::fprintf(stderr, "xvmq-bench: needs root (BPF, AF_XDP, network namespaces)\n");
    return 1;
  }
  if (auto st = pin_cpu(cpu); !st) return fail("pin", st.error());
  if (auto st = enter_private_namespaces(); !st) return fail("namespaces", st.error());
  auto ifindex = make_veth();
  if (!ifindex) return fail("veth", ifindex.error());

  auto xq = XskQueue::create(kDev, 0, XskOptions{.frames = 256, .frame_size = 4096, .ring_size = 128});
  if (!xq) return fail("AF_XDP", xq.error());
  for (int i = 0; i < 2; i++)  // 0: the default vmq's, 1: the hit vmq's
    if (auto s = (*xq)->add_socket(); !s) return fail("AF_XDP", s.error());
  auto small = classifier_with(16, **xq);
  if (!small) return fail("classifier, 16 filters", small.error());
  auto full = classifier_with(XVMQ_MAX_FILTERS, **xq);
  if (!full) return fail("classifier, 65,536 filters", full.error());
  std::unique_ptr<bench, decltype(&bench__destroy)> refs(bench__open_and_load(), bench__destroy);
  if (!refs) return fail("load bench.bpf.o", make_error(errno, "bench__open_and_load"));

  auto hits = [](const Counters& c) { return c.vmq[kHitVmq].frames; };
  auto misses = [](const Counters& c) { return c.reason[XVMQ_REASON_MISS].frames; };
  std::string hit_vmq = "vmq " + std::to_string(kHitVmq);
  // In the order of kBaseline .. kHitVlan.
  const std::vector<Case> cases = {
      {"baseline", "baseline (XDP_PASS)", bpf_program__fd(refs->progs.bench_pass), frame_to(kHitMac), XDP_PASS,
       std::nullopt},
      {"parse", "parse only", bpf_program__fd(refs->progs.bench_parse), frame_to(kHitMac), XDP_PASS, std::nullopt},
      {"hit_16", "hit, 16 filters", (*small)->prog_fd(), frame_to(kHitMac), XDP_REDIRECT,
       Check{small->get(), hit_vmq, hits}},
      {"hit_65536", "hit, 65,536 filters", (*full)->prog_fd(), frame_to(kHitMac), XDP_REDIRECT,
       Check{full->get(), hit_vmq, hits}},
      {"miss", "miss (to default)", (*small)->prog_fd(), frame_to(kMissMac), XDP_REDIRECT,
       Check{small->get(), "reason miss", misses}},
      {"hit_16_vlan", "hit, VLAN filter, 16 filters", (*small)->prog_fd(), frame_to(kHitMac, kTagVlan), XDP_REDIRECT,
       Check{small->get(), hit_vmq, hits}},
  };
  std::vector<Outcome> out = measure(cases, *ifindex, repeat, rounds);

  Report report(cases, out);
  std::printf("xvmq-bench: %zu-byte frames, %u frames per run, %u rounds, CPU %d\n", kFrameBytes, repeat, rounds, cpu);
  std::printf("hit: untagged, MAC-only filter (two lookups); VLAN filter: tagged, (MAC, VLAN) filter (one)\n\n");
  print(report);
  if (!json.empty())
    if (auto st = write_json(json, report, repeat, rounds, cpu); !st) return fail("json", st.error());
  bool aborted = std::any_of(out.begin(), out.end(), [](auto& o) { return !o.error.empty(); });
  return aborted ? 1 : 0;
}
