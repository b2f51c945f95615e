#include "tools/classify/commands.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "loader/netdev.h"
#include "tools/classify/table.h"

namespace xvmq::classify {

int fail(const std::string& message) {
  std::fprintf(stderr, "xvmq-classify: %s\n", message.c_str());
  return 1;
}

std::string command_line(const Common& c, const std::string& command) {
  std::string pin_root = c.pin_root == Common{}.pin_root ? "" : " --pin-root " + c.pin_root;
  return "xvmq-classify" + pin_root + " " + command + " " + c.dev;
}

std::optional<Classifier> open_pinned(const Common& c) {
  if (auto dev = netdev_info(c.dev); !dev) {
    fail(dev.error().message);
    return std::nullopt;
  }
  auto cls = Classifier::open(ClassifierOptions{c.pin_dir()});
  if (!cls) {
    fail(cls.error().message);
    return std::nullopt;
  }
  const auto& adopted = cls->adopted_maps();
  std::string missing;
  for (const char* name : {XVMQ_MAP_FILTERS, XVMQ_MAP_XSKS, XVMQ_MAP_VMQ_STATS, XVMQ_MAP_REASONS}) {
    if (std::find(adopted.begin(), adopted.end(), name) != adopted.end()) continue;
    if (!missing.empty()) missing += ", ";
    missing += name;
  }
  if (adopted.empty()) {
    fail("no classifier maps pinned in " + c.pin_dir() + ": attach the classifier to " + c.dev + " first (" +
         command_line(c, "attach") + ")");
    return std::nullopt;
  }
  if (!missing.empty()) {
    fail("pin directory " + c.pin_dir() + " lacks " + missing + ": detach " + c.dev + " with --unpin and attach again");
    return std::nullopt;
  }
  return std::move(cls.value());
}

int attach(const Common& c, AttachMode mode) {
  auto cls = Classifier::open(ClassifierOptions{c.pin_dir()});
  if (!cls) return fail(cls.error().message);
  auto used = cls->attach(c.dev, mode);
  if (!used) return fail(used.error().message);
  std::string how = cls->adopted_maps().empty() ? "maps pinned in " : "reusing the maps pinned in ";
  std::printf("%s: classifier attached in %s mode (%s%s)\n", c.dev.c_str(), std::string(to_string(*used)).c_str(),
              how.c_str(), c.pin_dir().c_str());
  return 0;
}

int detach(const Common& c, bool unpin) {
  auto st = Classifier::detach_from(c.dev);
  if (st) {
    std::printf("%s: classifier detached\n", c.dev.c_str());
  } else {
    fail(st.error().message);
    // With nothing to detach (or the netdev gone), the pins can still go.
    bool nothing_attached = st.error().code == ENOENT || st.error().code == ENODEV;
    if (!unpin || !nothing_attached) return 1;
  }
  if (!unpin) return 0;

  auto cls = Classifier::open(ClassifierOptions{c.pin_dir()});
  if (!cls) return fail(cls.error().message);
  if (auto u = cls->unpin(); !u) return fail(u.error().message);
  // The pin root too, when this was its last uplink (best effort: it may
  // hold other uplinks or be a mount point).
  (void)::rmdir(c.pin_root.c_str());
  std::printf("%s: pins removed from %s\n", c.dev.c_str(), c.pin_dir().c_str());
  return st ? 0 : 1;
}

namespace {

std::string describe(const FilterKey& k, const FilterValue& v) {
  return k.to_string() + " -> vmq " + std::to_string(v.vmq) + (v.strip_tag ? ", strip tag" : "");
}

std::string vlan_text(uint16_t vlan) { return vlan == XVMQ_VLAN_ANY ? "any" : std::to_string(vlan); }

// What `read` returns from the pinned classifier, or nullopt after saying why.
template <class T>
std::optional<T> read_pinned(const Common& c, Result<T> (Classifier::*read)() const) {
  auto cls = open_pinned(c);
  if (!cls) return std::nullopt;
  auto r = ((*cls).*read)();
  if (!r) {
    fail(r.error().message);
    return std::nullopt;
  }
  return std::move(r.value());
}

}  // namespace

int filter_add(const Common& c, const FilterKey& key, const FilterValue& value) {
  auto cls = open_pinned(c);
  if (!cls) return 1;
  // The filter table has one writer at a time (loader/filter_table.h).
  if (auto st = cls->lock_filters(); !st) return fail(c.dev + ": " + st.error().message);
  if (auto st = cls->set_filter(key, value); !st) return fail(st.error().message);
  std::printf("%s: filter %s\n", c.dev.c_str(), describe(key, value).c_str());
  return 0;
}

int filter_del(const Common& c, const FilterKey& key) {
  auto cls = open_pinned(c);
  if (!cls) return 1;
  if (auto st = cls->lock_filters(); !st) return fail(c.dev + ": " + st.error().message);
  if (auto st = cls->clear_filter(key); !st) return fail(c.dev + ": " + st.error().message);
  std::printf("%s: filter %s removed\n", c.dev.c_str(), key.to_string().c_str());
  return 0;
}

int filter_list(const Common& c) {
  auto list = read_pinned(c, &Classifier::filters);
  if (!list) return 1;
  auto& rows = *list;
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    if (a.first.mac != b.first.mac) return a.first.mac < b.first.mac;
    return a.first.vlan < b.first.vlan;
  });
  if (c.json) {
    std::vector<std::string> filters;
    for (const auto& [k, v] : rows)
      filters.push_back(json_object({{"mac", json_string(format_mac(k.mac))},
                                     {"vlan", k.vlan == XVMQ_VLAN_ANY ? "\"any\"" : std::to_string(k.vlan)},
                                     {"vmq", std::to_string(v.vmq)},
                                     {"strip_tag", json_bool(v.strip_tag)}}));
    std::printf("%s\n", json_object({{"dev", json_string(c.dev)}, {"filters", json_array(filters)}}).c_str());
    return 0;
  }
  if (rows.empty()) {
    std::printf("%s: no filters\n", c.dev.c_str());
    return 0;
  }
  Table t({{"mac"}, {"vlan", Align::Right}, {"vmq", Align::Right}, {"strip_tag"}});
  for (const auto& [k, v] : rows)
    t.add({format_mac(k.mac), vlan_text(k.vlan), std::to_string(v.vmq), v.strip_tag ? "yes" : "no"});
  t.print();
  return 0;
}

int stats(const Common& c) {
  auto counters = read_pinned(c, &Classifier::counters);
  if (!counters) return 1;
  const Counters& n = *counters;

  if (c.json) {
    std::vector<std::string> vmqs, reasons;
    for (uint32_t i = 0; i < XVMQ_MAX_VMQS; i++) {
      if (!n.vmq[i].frames && !n.vmq[i].bytes) continue;
      vmqs.push_back(json_object({{"vmq", std::to_string(i)},
                                  {"frames", std::to_string(n.vmq[i].frames)},
                                  {"bytes", std::to_string(n.vmq[i].bytes)}}));
    }
    for (uint32_t r = 0; r < XVMQ_REASON_COUNT; r++)
      reasons.push_back(json_object({{"reason", json_string(reason_name(r))},
                                     {"frames", std::to_string(n.reason[r].frames)},
                                     {"bytes", std::to_string(n.reason[r].bytes)},
                                     {"drop", json_bool(xvmq_reason_is_drop(r))}}));
    std::printf("%s\n", json_object({{"dev", json_string(c.dev)},
                                     {"total_frames", std::to_string(n.total_frames())},
                                     {"vmqs", json_array(vmqs)},
                                     {"reasons", json_array(reasons)}})
                            .c_str());
    return 0;
  }

  std::printf("%s: %llu frames classified\n", c.dev.c_str(), static_cast<unsigned long long>(n.total_frames()));
  Table v({{"vmq", Align::Right}, {"frames", Align::Right}, {"bytes", Align::Right}, {""}});
  for (uint32_t i = 0; i < XVMQ_MAX_VMQS; i++) {
    if (!n.vmq[i].frames && !n.vmq[i].bytes) continue;
    v.add({std::to_string(i), std::to_string(n.vmq[i].frames), std::to_string(n.vmq[i].bytes),
           i == XVMQ_DEFAULT_VMQ ? "default queue (socket)" : ""});
  }
  if (v.empty())
    std::printf("no frames delivered to any vmq\n");
  else
    v.print();
  std::printf("\n");
  Table r({{"reason"}, {"frames", Align::Right}, {"bytes", Align::Right}, {""}});
  for (uint32_t i = 0; i < XVMQ_REASON_COUNT; i++)
    r.add({std::string(reason_name(i)), std::to_string(n.reason[i].frames), std::to_string(n.reason[i].bytes),
           xvmq_reason_is_drop(i) ? "dropped" : ""});
  r.print();
  return 0;
}

}  // namespace xvmq::classify
