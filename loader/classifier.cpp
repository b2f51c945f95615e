#include "loader/classifier.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <linux/magic.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <xdp/libxdp.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <vector>

#include "loader/filter_table.h"
#include "loader/log.h"
#include "loader/netdev.h"
#include "xvmq_uplink.skel.h"

namespace xvmq {

std::string_view to_string(AttachMode mode) {
  switch (mode) {
    case AttachMode::Native:
      return "native";
    case AttachMode::Skb:
      return "skb";
    case AttachMode::Offload:
      return "offload";
    case AttachMode::Auto:
      return "auto";
  }
  return "?";
}

std::optional<AttachMode> parse_attach_mode(std::string_view text) {
  if (text == "native" || text == "drv") return AttachMode::Native;
  if (text == "skb" || text == "generic") return AttachMode::Skb;
  if (text == "offload" || text == "hw") return AttachMode::Offload;
  if (text == "auto") return AttachMode::Auto;
  return std::nullopt;
}

namespace {

xdp_attach_mode to_libxdp(AttachMode m) {
  switch (m) {
    case AttachMode::Native:
      return XDP_MODE_NATIVE;
    case AttachMode::Skb:
      return XDP_MODE_SKB;
    case AttachMode::Offload:
      return XDP_MODE_HW;
    case AttachMode::Auto:
      break;
  }
  return XDP_MODE_UNSPEC;
}

uint32_t xdp_mode_flag(AttachMode m) {
  switch (m) {
    case AttachMode::Skb:
      return XDP_FLAGS_SKB_MODE;
    case AttachMode::Offload:
      return XDP_FLAGS_HW_MODE;
    default:
      return XDP_FLAGS_DRV_MODE;
  }
}

AttachMode from_libxdp(xdp_attach_mode m) {
  switch (m) {
    case XDP_MODE_SKB:
      return AttachMode::Skb;
    case XDP_MODE_HW:
      return AttachMode::Offload;
    default:
      return AttachMode::Native;
  }
}

const char* map_type_name(uint32_t type) {
  const char* s = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(type));
  return s ? s : "unknown";
}

// dir, or its nearest existing ancestor while dir is still to be created.
Status check_bpffs(const std::string& dir) {
  std::filesystem::path p = dir;
  std::error_code ec;
  while (!std::filesystem::exists(p, ec) && p.has_relative_path()) p = p.parent_path();
  struct statfs st {};
  if (statfs(p.c_str(), &st) != 0) return make_error(errno, "pin directory " + dir);
  if (st.f_type != BPF_FS_MAGIC)
    return Error{EINVAL, "pin directory " + dir + " is not on a bpffs mount (mount -t bpf bpf /sys/fs/bpf)"};
  return {};
}

// Open the pinned object at path and check it can stand in for map.
Result<int> open_compatible_pin(const bpf_map* map, const std::string& path) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return make_error(errno, "open pinned map " + path);
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
    Error e = make_error(errno, "pinned object " + path + " is not a map");
    close(fd);
    return e;
  }
  std::string why;
  auto differs = [&](const char* what, uint64_t pinned, uint64_t want) {
    if (pinned == want) return;
    if (!why.empty()) why += ", ";
    why += std::string(what) + " " + std::to_string(pinned) + " (classifier has " + std::to_string(want) + ")";
  };
  if (info.type != bpf_map__type(map)) {
    why =
        std::string("type ") + map_type_name(info.type) + " (classifier has " + map_type_name(bpf_map__type(map)) + ")";
  }
  differs("key size", info.key_size, bpf_map__key_size(map));
  differs("value size", info.value_size, bpf_map__value_size(map));
  differs("max_entries", info.max_entries, bpf_map__max_entries(map));
  // The kernel makes DEVMAPs and CPUMAPs read-only for programs itself.
  const uint32_t implied = info.type == BPF_MAP_TYPE_DEVMAP || info.type == BPF_MAP_TYPE_CPUMAP ? BPF_F_RDONLY_PROG : 0;
  differs("flags", info.map_flags & ~implied, bpf_map__map_flags(map) & ~implied);
  if (!why.empty()) {
    close(fd);
    return Error{EEXIST, "pinned map " + path + " does not fit the classifier: " + why +
                             "; remove the pin or choose another pin directory"};
  }
  return fd;
}

}  // namespace

struct Classifier::Impl {
  xvmq_uplink* skel = nullptr;
  xdp_program* xdp = nullptr;
  std::unique_ptr<FilterTable> table;  // mapped on first use
  int lock_fd = -1;                    // the writer lock on pin_dir
  std::string pin_dir;
  std::vector<std::string> adopted;
  bool loaded = false;
  bool pinned = false;
  int ifindex = 0;
  std::string ifname;
  AttachMode mode = AttachMode::Native;

  ~Impl() {
    if (lock_fd >= 0) ::close(lock_fd);
    table.reset();
    if (xdp) xdp_program__close(xdp);
    if (skel) xvmq_uplink__destroy(skel);
  }

  bpf_map* map(std::string_view name) const {
    return bpf_object__find_map_by_name(skel->obj, std::string(name).c_str());
  }

  Status pin_all() {
    if (pin_dir.empty() || pinned) return {};
    if (auto st = check_bpffs(pin_dir); !st) return st;
    std::error_code ec;
    std::filesystem::create_directories(pin_dir, ec);
    if (ec) return Error{ec.value(), "create pin directory " + pin_dir + ": " + ec.message()};
    bpf_map* m;
    bpf_object__for_each_map(m, skel->obj) {
      std::string name = bpf_map__name(m);
      if (name.rfind(".", 0) == 0 || name.find(".rodata") != std::string::npos ||
          name.find(".bss") != std::string::npos || name.find(".data") != std::string::npos)
        continue;  // internal maps are not state
      bool was_adopted = false;
      for (const auto& a : adopted) was_adopted |= (a == name);
      if (was_adopted) continue;
      std::string path = pin_dir + "/" + name;
      log::clear_captured();
      if (bpf_obj_pin(bpf_map__fd(m), path.c_str()) != 0) return make_error(errno, "pin map " + name + " at " + path);
    }
    pinned = true;
    return {};
  }
};

Classifier::Classifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;
Classifier::~Classifier() = default;

Result<Classifier> Classifier::open(const ClassifierOptions& opts) {
  log::install();
  log::clear_captured();
  auto impl = std::make_unique<Impl>();
  impl->pin_dir = opts.pin_dir;
  while (impl->pin_dir.size() > 1 && impl->pin_dir.back() == '/') impl->pin_dir.pop_back();
  impl->skel = xvmq_uplink__open();
  if (!impl->skel) return make_error(errno, "open classifier object");
  impl->skel->rodata->xvmq_max_frame = opts.max_frame;
  impl->skel->rodata->xvmq_spread_on = opts.spread_on;
  impl->skel->rodata->xvmq_spread_off = opts.spread_off;
  for (uint32_t cpu = 0; cpu < XVMQ_MAX_CPUS; cpu++)
    impl->skel->rodata->xvmq_spill[cpu] = cpu < opts.spill.size() ? opts.spill[cpu] : cpu;

  bpf_map* m;
  bpf_object__for_each_map(m, impl->skel->obj) {
    // Pins are ours to manage: never libbpf's default /sys/fs/bpf/<name>.
    if (bpf_map__set_pin_path(m, nullptr) != 0)
      return make_error(errno, std::string("map ") + bpf_map__name(m) + ": clear pin path");
  }
  if (impl->pin_dir.empty()) return Classifier(std::move(impl));

  struct stat st {};
  if (::stat(impl->pin_dir.c_str(), &st) != 0) return Classifier(std::move(impl));  // nothing to adopt
  if (auto s = check_bpffs(impl->pin_dir); !s) return s.error();

  bpf_object__for_each_map(m, impl->skel->obj) {
    if (bpf_map__is_internal(m)) continue;
    std::string path = impl->pin_dir + "/" + bpf_map__name(m);
    if (::access(path.c_str(), F_OK) != 0) continue;
    auto fd = open_compatible_pin(m, path);
    if (!fd) return fd.error();
    int err = bpf_map__reuse_fd(m, *fd);
    close(*fd);
    if (err) return make_error(err, "adopt pinned map " + path);
    impl->adopted.emplace_back(bpf_map__name(m));
  }
  return Classifier(std::move(impl));
}

Status Classifier::load() {
  if (impl_->loaded) return impl_->pin_all();
  log::clear_captured();
  if (int err = xvmq_uplink__load(impl_->skel); err) return make_error(err, "load classifier");
  impl_->loaded = true;
  return impl_->pin_all();
}

Result<AttachMode> Classifier::attach(const std::string& ifname, AttachMode mode) {
  if (impl_->ifindex)
    return Error{EALREADY,
                 "classifier already attached to " + impl_->ifname + " in mode " + std::string(to_string(impl_->mode))};
  auto dev = netdev_info(ifname);
  if (!dev) return dev.error();

  if (mode == AttachMode::Offload && !driver_can_offload(dev->driver)) {
    return Error{EOPNOTSUPP, "attach offload on " + ifname + ": driver '" +
                                 (dev->driver.empty() ? std::string("unknown") : dev->driver) +
                                 "' cannot run XDP programs in the NIC (offload needs nfp or netdevsim); "
                                 "use mode native, skb or auto"};
  }

  auto present = query(ifname);
  if (!present) return present.error();
  // A libxdp dispatcher takes one more program; anything else is in the way.
  if (*present && (!(*present)->dispatcher || (*present)->name == kClassifierName))
    return Error{EEXIST, "attach on " + ifname + ": " + in_the_way(ifname, **present)};

  log::clear_captured();
  if (!impl_->xdp) {
    impl_->xdp = impl_->loaded ? xdp_program__from_fd(bpf_program__fd(impl_->skel->progs.xvmq_uplink))
                               : xdp_program__from_bpf_obj(impl_->skel->obj, nullptr);
    if (int err = libxdp_get_error(impl_->xdp); err) {
      impl_->xdp = nullptr;
      return make_error(err, "prepare classifier for libxdp");
    }
  }

  std::vector<AttachMode> ladder;
  if (mode == AttachMode::Auto)
    ladder = {AttachMode::Native, AttachMode::Skb};
  else
    ladder = {mode};

  std::string tried;
  for (AttachMode m : ladder) {
    log::clear_captured();
    int err = xdp_program__attach(impl_->xdp, dev->ifindex, to_libxdp(m), 0);
    if (err == 0) {
      impl_->loaded = true;
      impl_->ifindex = dev->ifindex;
      impl_->ifname = ifname;
      impl_->mode = m;
      if (auto st = impl_->pin_all(); !st) {
        (void)detach();
        return st.error();
      }
      return m;
    }
    Error e = make_error(err, std::string(to_string(m)));
    if (!tried.empty()) tried += "; ";
    tried += e.message;
    if (err == -EEXIST || err == -EBUSY) break;
  }
  std::string hint;
  if (mode == AttachMode::Native) hint = "; try mode skb";
  return Error{EOPNOTSUPP, "attach " + std::string(to_string(mode)) + " on " + ifname + " (driver " + dev->driver +
                               "): " + tried + hint};
}

Status Classifier::detach() {
  if (!impl_->ifindex) return Error{ENOENT, "classifier is not attached"};
  log::clear_captured();
  int err = impl_->xdp ? xdp_program__detach(impl_->xdp, impl_->ifindex, to_libxdp(impl_->mode), 0)
                       : (bpf_xdp_detach(impl_->ifindex, xdp_mode_flag(impl_->mode), nullptr) ? -errno : 0);
  if (err) return make_error(err, "detach " + std::string(to_string(impl_->mode)) + " from " + impl_->ifname);
  impl_->ifindex = 0;
  impl_->ifname.clear();
  return {};
}

namespace {

Result<bpf_prog_info> prog_info(int fd, std::vector<uint32_t>* map_ids = nullptr) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return make_error(errno, "read the program's info");
  if (!map_ids || info.nr_map_ids == 0) return info;
  map_ids->assign(info.nr_map_ids, 0);
  bpf_prog_info again{};
  again.nr_map_ids = info.nr_map_ids;
  again.map_ids = reinterpret_cast<uint64_t>(map_ids->data());
  len = sizeof(again);
  if (bpf_obj_get_info_by_fd(fd, &again, &len) != 0) return make_error(errno, "read the program's maps");
  map_ids->resize(std::min<size_t>(map_ids->size(), again.nr_map_ids));
  return info;
}

// The names of the maps a program uses.
std::vector<std::string> map_names(const std::vector<uint32_t>& ids) {
  std::vector<std::string> names;
  for (uint32_t id : ids) {
    int fd = bpf_map_get_fd_by_id(id);
    if (fd < 0) continue;
    bpf_map_info mi{};
    uint32_t len = sizeof(mi);
    if (bpf_obj_get_info_by_fd(fd, &mi, &len) == 0) names.emplace_back(mi.name);
    ::close(fd);
  }
  return names;
}

// How an operator removes p from ifname.
std::string removal_hint(const std::string& ifname, const AttachedProgram& p) {
  const char* ip_mode = p.mode == AttachMode::Skb       ? "xdpgeneric"
                        : p.mode == AttachMode::Offload ? "xdpoffload"
                                                        : "xdpdrv";
  return "detach it first (xdp-loader unload " + ifname + " --id " + std::to_string(p.id) + ", or ip link set dev " +
         ifname + " " + ip_mode + " off)";
}

// A program with the classifier's name but another tag (another build) is
// taken for xvmq's only when it has the classifier's filter and socket maps.
Status check_classifier_maps(const std::string& ifname, const AttachedProgram& old,
                             const std::vector<uint32_t>& old_maps) {
  bool filters = false, xsks = false;
  std::string list;
  for (const auto& n : map_names(old_maps)) {
    filters |= n == XVMQ_MAP_FILTERS;
    xsks |= n == XVMQ_MAP_XSKS;
    list += (list.empty() ? "" : ", ") + n;
  }
  if (filters && xsks) return {};
  return Error{EEXIST, "XDP program '" + old.name + "' (id " + std::to_string(old.id) + ") in mode " +
                           std::string(to_string(old.mode)) + " has the classifier's name but is not xvmq's: " +
                           "another tag, and not the maps " XVMQ_MAP_FILTERS " and " XVMQ_MAP_XSKS " (its maps: " +
                           (list.empty() ? std::string("none") : list) + "); " + removal_hint(ifname, old)};
}

}  // namespace

std::string Classifier::in_the_way(const std::string& ifname, const AttachedProgram& p) {
  return "XDP program '" + p.name + "' (id " + std::to_string(p.id) + ") is already attached in mode " +
         std::string(to_string(p.mode)) + (p.dispatcher ? " behind libxdp's dispatcher" : "") + "; " +
         removal_hint(ifname, p);
}

Result<Takeover> Classifier::take_over(const std::string& ifname) {
  if (impl_->ifindex)
    return Error{EALREADY,
                 "classifier already attached to " + impl_->ifname + " in mode " + std::string(to_string(impl_->mode))};
  auto dev = netdev_info(ifname);
  if (!dev) return dev.error();
  auto present = query(ifname);
  if (!present) return present.error();
  if (!*present) return Error{ENOENT, "no XDP program on " + ifname + " to take over"};
  const AttachedProgram old = **present;
  const std::string what = "take over on " + ifname + ": ";
  if (old.name != kClassifierName) return Error{EEXIST, what + in_the_way(ifname, old)};
  if (old.dispatcher)
    // Its place in the dispatcher's chain cannot be swapped in one step here.
    return Error{EBUSY, what + "the classifier (id " + std::to_string(old.id) +
                            ") runs behind libxdp's dispatcher and its pins are gone; switchd replaces only a "
                            "classifier attached alone: " +
                            removal_hint(ifname, old)};
  if (old.mode == AttachMode::Offload)
    return Error{EOPNOTSUPP, what + "the classifier (id " + std::to_string(old.id) +
                                 ") runs in the NIC (offload) and its pins are gone: " + removal_hint(ifname, old)};

  log::clear_captured();
  int old_fd = bpf_prog_get_fd_by_id(old.id);
  if (old_fd < 0) return make_error(errno, what + "open the classifier (id " + std::to_string(old.id) + ")");
  struct CloseFd {
    int fd;
    ~CloseFd() { ::close(fd); }
  } old_guard{old_fd};
  std::vector<uint32_t> old_maps;
  auto oi = prog_info(old_fd, &old_maps);
  if (!oi)
    return Error{oi.error().code, what + "classifier (id " + std::to_string(old.id) + "): " + oi.error().message};

  if (!impl_->loaded) {
    log::clear_captured();
    if (int err = xvmq_uplink__load(impl_->skel); err) return make_error(err, what + "load classifier");
    impl_->loaded = true;
  }
  const int new_fd = bpf_program__fd(impl_->skel->progs.xvmq_uplink);
  auto ni = prog_info(new_fd);
  if (!ni) return Error{ni.error().code, what + "the new classifier: " + ni.error().message};

  Takeover t;
  t.old_id = old.id;
  t.new_id = ni->id;
  t.mode = old.mode;
  // The kernel's tag hashes the instructions with map references zeroed:
  // the same object on the same kernel has the same tag, whatever its maps.
  t.same_build = std::memcmp(oi->tag, ni->tag, BPF_TAG_SIZE) == 0;
  if (!t.same_build)
    if (auto st = check_classifier_maps(ifname, old, old_maps); !st)
      return Error{st.error().code, what + st.error().message};

  LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = old_fd);
  log::clear_captured();
  if (bpf_xdp_attach(dev->ifindex, new_fd, XDP_FLAGS_REPLACE | xdp_mode_flag(old.mode), &opts) != 0) {
    int err = errno;
    if (err == EEXIST)
      return Error{EEXIST, what + "the program on " + ifname + " changed while switchd replaced it (it was id " +
                               std::to_string(old.id) + "); start switchd again"};
    return make_error(err, what + "replace the classifier (id " + std::to_string(old.id) + ") in mode " +
                               std::string(to_string(old.mode)));
  }
  impl_->ifindex = dev->ifindex;
  impl_->ifname = ifname;
  impl_->mode = old.mode;
  if (!impl_->xdp) {
    impl_->xdp = xdp_program__from_fd(new_fd);
    if (libxdp_get_error(impl_->xdp)) impl_->xdp = nullptr;
  }
  if (auto st = impl_->pin_all(); !st) return st.error();
  return t;
}

Status Classifier::lock_filters(std::chrono::milliseconds wait) {
  if (impl_->lock_fd >= 0) return {};
  if (impl_->pin_dir.empty()) return {};  // unpinned: no one else can reach the table
  int fd = ::open(impl_->pin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return make_error(errno, "lock the filters in " + impl_->pin_dir);
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK || std::chrono::steady_clock::now() >= deadline) {
      int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK)
        return Error{EBUSY, "the filters in " + impl_->pin_dir +
                                " have another writer (switchd manages this uplink, or another command is running)"};
      return make_error(err, "lock the filters in " + impl_->pin_dir);
    }
    // Not a teardown wait: another process holds the lock, and flock(2)
    // has neither a timed wait nor a notification of its release, so the
    // bounded wait polls. switchd passes 0 and never gets here.
    ::usleep(10000);
  }
  impl_->lock_fd = fd;
  return {};
}

const std::vector<std::string>& Classifier::adopted_maps() const { return impl_->adopted; }

size_t Classifier::state_maps() const {
  size_t n = 0;
  bpf_map* m;
  bpf_object__for_each_map(m, impl_->skel->obj) n += !bpf_map__is_internal(m);
  return n;
}
const std::string& Classifier::pin_dir() const { return impl_->pin_dir; }

Status Classifier::unpin() {
  if (impl_->pin_dir.empty()) return {};
  bpf_map* m;
  bpf_object__for_each_map(m, impl_->skel->obj) {
    if (bpf_map__is_internal(m)) continue;
    std::string path = impl_->pin_dir + "/" + bpf_map__name(m);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return make_error(errno, "unpin " + path);
  }
  if (::rmdir(impl_->pin_dir.c_str()) != 0 && errno != ENOENT && errno != ENOTEMPTY)
    return make_error(errno, "remove pin directory " + impl_->pin_dir);
  impl_->pinned = false;
  return {};
}

int Classifier::cpumap_prog_fd() const { return impl_->loaded ? bpf_program__fd(impl_->skel->progs.xvmq_cpumap) : -1; }

int Classifier::prog_fd() const { return impl_->loaded ? bpf_program__fd(impl_->skel->progs.xvmq_uplink) : -1; }

int Classifier::map_fd(std::string_view name) const {
  bpf_map* m = impl_->map(name);
  return m ? bpf_map__fd(m) : -1;
}

namespace {

Status need_fd(int fd, std::string_view map) {
  if (fd < 0) return Error{EBADF, "map " + std::string(map) + " is not loaded: load or attach the classifier first"};
  return {};
}

}  // namespace

Status Classifier::set_filter(const FilterKey& key, const FilterValue& value) {
  if (is_multicast(key.mac))
    return Error{EINVAL, "filter " + key.to_string() + ": MAC is multicast; a vmq filter takes a unicast MAC"};
  if (key.mac == Mac{})
    return Error{EINVAL, "filter " + key.to_string() + ": MAC 00:00:00:00:00:00 is not a station address"};
  if (key.vlan != XVMQ_VLAN_ANY && key.vlan > XVMQ_VLAN_MAX)
    return Error{EINVAL, "filter " + key.to_string() + ": VLAN must be 0..4094 or any"};
  if (value.vmq == XVMQ_DEFAULT_VMQ || value.vmq >= XVMQ_MAX_VMQS)
    return Error{EINVAL, "filter " + key.to_string() + ": vmq " + std::to_string(value.vmq) + " is outside 1.." +
                             std::to_string(XVMQ_MAX_VMQS - 1)};
  auto table = filter_table();
  if (!table) return table.error();
  return (*table)->set(key, value);
}

Status Classifier::set_host_mac(const Mac& mac) {
  if (is_multicast(mac) || mac == Mac{})
    return Error{EINVAL, "host MAC " + format_mac(mac) + " is not a unicast station address"};
  auto table = filter_table();
  if (!table) return table.error();
  return (*table)->set({mac, XVMQ_VLAN_ANY}, {XVMQ_HOST_VMQ, false});
}

Status Classifier::set_host_groups(bool on) {
  auto table = filter_table();
  if (!table) return table.error();
  const FilterKey key{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, XVMQ_HOST_GROUPS_VLAN};
  return on ? (*table)->set(key, {XVMQ_HOST_VMQ, false}) : (*table)->clear(key);
}

Status Classifier::clear_filter(const FilterKey& key) {
  auto table = filter_table();
  if (!table) return table.error();
  return (*table)->clear(key);
}

Result<std::vector<std::pair<FilterKey, FilterValue>>> Classifier::filters() const {
  auto table = filter_table();
  if (!table) return table.error();
  return (*table)->list();
}

Result<FilterTable*> Classifier::filter_table() const {
  if (!impl_->table) {
    int fd = map_fd(XVMQ_MAP_FILTERS);
    if (auto st = need_fd(fd, XVMQ_MAP_FILTERS); !st) return st.error();
    auto t = FilterTable::map(fd);
    if (!t) return t.error();
    impl_->table = std::move(t.value());
  }
  return impl_->table.get();
}

namespace {

Status check_slot(uint32_t vmq, uint32_t queue) {
  if (vmq >= XVMQ_MAX_VMQS)
    return Error{EINVAL,
                 "socket slot: vmq " + std::to_string(vmq) + " is outside 0.." + std::to_string(XVMQ_MAX_VMQS - 1)};
  if (queue >= XVMQ_MAX_QUEUES)
    return Error{EINVAL, "socket slot: receive queue " + std::to_string(queue) + " is outside 0.." +
                             std::to_string(XVMQ_MAX_QUEUES - 1)};
  return {};
}

std::string slot_name(uint32_t vmq, uint32_t queue) {
  return "vmq " + std::to_string(vmq) + " queue " + std::to_string(queue);
}

}  // namespace

Status Classifier::set_socket(uint32_t vmq, uint32_t queue, int xsk_fd) {
  if (auto st = check_slot(vmq, queue); !st) return st;
  int fd = map_fd(XVMQ_MAP_XSKS);
  if (auto st = need_fd(fd, XVMQ_MAP_XSKS); !st) return st;
  uint32_t slot = XVMQ_XSK_SLOT(vmq, queue);
  log::clear_captured();
  if (bpf_map_update_elem(fd, &slot, &xsk_fd, BPF_ANY) != 0)
    return make_error(errno, "set socket of " + slot_name(vmq, queue));
  return {};
}

Status Classifier::clear_socket(uint32_t vmq, uint32_t queue) {
  if (auto st = check_slot(vmq, queue); !st) return st;
  int fd = map_fd(XVMQ_MAP_XSKS);
  if (auto st = need_fd(fd, XVMQ_MAP_XSKS); !st) return st;
  uint32_t slot = XVMQ_XSK_SLOT(vmq, queue);
  if (bpf_map_delete_elem(fd, &slot) != 0 && errno != ENOENT)
    return make_error(errno, "clear socket of " + slot_name(vmq, queue));
  return {};
}

namespace {

Status read_percpu(int fd, std::string_view map, uint32_t entries, Counter* out) {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return make_error(ncpu, "count possible CPUs");
  std::vector<xvmq_counter> values(static_cast<size_t>(ncpu));
  for (uint32_t i = 0; i < entries; i++) {
    if (bpf_map_lookup_elem(fd, &i, values.data()) != 0)
      return make_error(errno, "read " + std::string(map) + "[" + std::to_string(i) + "]");
    Counter sum;
    for (const auto& v : values) {
      sum.frames += v.frames;
      sum.bytes += v.bytes;
    }
    out[i] = sum;
  }
  return {};
}

}  // namespace

Result<Counters> Classifier::counters() const {
  Counters c;
  int vfd = map_fd(XVMQ_MAP_VMQ_STATS), rfd = map_fd(XVMQ_MAP_REASONS);
  if (auto st = need_fd(vfd, XVMQ_MAP_VMQ_STATS); !st) return st.error();
  if (auto st = need_fd(rfd, XVMQ_MAP_REASONS); !st) return st.error();
  if (auto st = read_percpu(vfd, XVMQ_MAP_VMQ_STATS, XVMQ_MAX_VMQS, c.vmq.data()); !st) return st.error();
  if (auto st = read_percpu(rfd, XVMQ_MAP_REASONS, XVMQ_REASON_COUNT, c.reason.data()); !st) return st.error();
  return c;
}

namespace {

// The XDP programs on a netdev, as libxdp sees them; mp is null when there
// are none. The caller closes mp.
struct Multiprog {
  xdp_multiprog* mp = nullptr;
  int ifindex = 0;
};

Result<Multiprog> open_multiprog(const std::string& ifname) {
  auto dev = netdev_info(ifname);
  if (!dev) return dev.error();
  log::install();
  log::clear_captured();
  xdp_multiprog* mp = xdp_multiprog__get_from_ifindex(dev->ifindex);
  int err = libxdp_get_error(mp);
  if (err == -ENOENT || (!err && !mp)) return Multiprog{nullptr, dev->ifindex};
  if (err) return make_error(err, "query XDP programs on " + ifname);
  return Multiprog{mp, dev->ifindex};
}

}  // namespace

Result<std::optional<AttachedProgram>> Classifier::query(const std::string& ifname) {
  auto m = open_multiprog(ifname);
  if (!m) return m.error();
  if (!m->mp) return std::optional<AttachedProgram>{};
  xdp_multiprog* mp = m->mp;
  AttachedProgram p;
  p.mode = from_libxdp(xdp_multiprog__attach_mode(mp));
  p.dispatcher = !xdp_multiprog__is_legacy(mp);
  xdp_program* prog = p.dispatcher ? xdp_multiprog__next_prog(nullptr, mp) : xdp_multiprog__main_prog(mp);
  if (!prog) prog = xdp_multiprog__hw_prog(mp);
  if (p.dispatcher) {
    // Report the classifier if it is among the dispatcher's programs.
    for (xdp_program* q = prog; q; q = xdp_multiprog__next_prog(q, mp))
      if (kClassifierName == xdp_program__name(q)) prog = q;
  }
  if (!prog) {
    xdp_multiprog__close(mp);
    return std::optional<AttachedProgram>{};
  }
  p.name = xdp_program__name(prog);
  p.id = xdp_program__id(prog);
  xdp_multiprog__close(mp);
  return std::optional<AttachedProgram>{p};
}

Status Classifier::detach_from(const std::string& ifname) {
  auto m = open_multiprog(ifname);
  if (!m) return m.error();
  if (!m->mp) return Error{ENOENT, "no XDP program on " + ifname};
  xdp_multiprog* mp = m->mp;
  int err = 0;

  Status st;
  if (xdp_multiprog__is_legacy(mp)) {
    xdp_program* main = xdp_multiprog__main_prog(mp);
    if (!main || kClassifierName != xdp_program__name(main)) {
      st = Error{EPERM, "the XDP program on " + ifname + " is '" + std::string(main ? xdp_program__name(main) : "?") +
                            "', not the classifier; left alone"};
    } else if ((err = xdp_multiprog__detach(mp)) != 0) {
      st = make_error(err, "detach classifier from " + ifname);
    }
  } else {
    xdp_program* found = nullptr;
    for (xdp_program* q = xdp_multiprog__next_prog(nullptr, mp); q; q = xdp_multiprog__next_prog(q, mp))
      if (kClassifierName == xdp_program__name(q)) found = q;
    if (!found)
      st = Error{ENOENT, "the classifier is not among the XDP programs on " + ifname};
    else if ((err = xdp_program__detach(found, m->ifindex, xdp_multiprog__attach_mode(mp), 0)) != 0)
      st = make_error(err, "detach classifier from " + ifname);
  }
  xdp_multiprog__close(mp);
  return st;
}

}  // namespace xvmq
