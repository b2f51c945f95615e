#include "switchd/dp/steering.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

namespace xvmq {
namespace {

constexpr std::string_view kPrefix = "hardware steering on ";
constexpr std::string_view kFallback = "; vmqs use software steering";
constexpr uint16_t kVidMask = 0x0fff;  // VLAN id bits of the TCI; PCP and DEI ignored

int ethtool_ioctl(const std::string& ifname, void* cmd) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  ifr.ifr_data = static_cast<char*>(cmd);
  int err = ioctl(fd, SIOCETHTOOL, &ifr) < 0 ? errno : 0;
  close(fd);
  return err;
}

// ethtool structs that end in a flexible array, in 8-byte aligned storage.
template <class T>
struct Flex {
  explicit Flex(size_t tail_bytes) : buf((sizeof(T) + tail_bytes + 7) / 8) {}
  T* operator->() { return reinterpret_cast<T*>(buf.data()); }
  T* get() { return reinterpret_cast<T*>(buf.data()); }
  std::vector<uint64_t> buf;
};

std::string driver_of(const NetdevInfo& dev) {
  return dev.driver.empty() ? "its driver" : "driver '" + dev.driver + "'";
}

// "hardware steering on DEV: REASON (OP: kernel's words)": choose_steering
// takes REASON back out, so REASON holds neither " (" nor "; ".
Error failure(int err, const NetdevInfo& dev, const std::string& reason, const char* op = nullptr) {
  std::string msg = std::string(kPrefix) + dev.name + ": " + reason;
  if (op) msg += std::string(" (") + op + ": " + std::strerror(err) + ")";
  return Error{err, msg};
}

Error kernel_failure(int err, const NetdevInfo& dev, const std::string& what, const char* op) {
  if (err == EOPNOTSUPP) return failure(err, dev, driver_of(dev) + " has no RX flow classification", op);
  return failure(err, dev, driver_of(dev) + " " + what, op);
}

// A command on the rule at one location (remove it, read it back).
Result<ethtool_rxnfc> rule_command(const NetdevInfo& dev, uint32_t cmd, uint32_t location, const char* op,
                                   const std::string& verb) {
  ethtool_rxnfc nfc{};
  nfc.cmd = cmd;
  nfc.fs.location = location;
  if (int err = ethtool_ioctl(dev.name, &nfc))
    return kernel_failure(err, dev, "did not " + verb + " the rule at location " + std::to_string(location), op);
  return nfc;
}

struct RuleTable {
  uint32_t count = 0;
  uint32_t size = 0;  // 0: the driver does not say
  bool driver_selects = false;
};

Result<RuleTable> read_table(const NetdevInfo& dev) {
  ethtool_rxnfc nfc{};
  nfc.cmd = ETHTOOL_GRXCLSRLCNT;
  if (int err = ethtool_ioctl(dev.name, &nfc))
    return kernel_failure(err, dev, "did not count its RX flow rules", "ETHTOOL_GRXCLSRLCNT");
  // uapi: "@data ... is the size of the rule table, plus the flag %RX_CLS_LOC_SPECIAL
  // if the driver supports any special location values".
  return RuleTable{nfc.rule_cnt, static_cast<uint32_t>(nfc.data & ~uint64_t{RX_CLS_LOC_SPECIAL}),
                   (nfc.data & RX_CLS_LOC_SPECIAL) != 0};
}

// The locations in use; *size becomes the table size the driver reports.
Result<std::vector<uint32_t>> read_locations(const NetdevInfo& dev, uint32_t count, uint32_t* size) {
  Flex<ethtool_rxnfc> nfc(count * sizeof(uint32_t));
  nfc->cmd = ETHTOOL_GRXCLSRLALL;
  nfc->rule_cnt = count;
  if (int err = ethtool_ioctl(dev.name, nfc.get()))
    return kernel_failure(err, dev, "did not list its RX flow rules", "ETHTOOL_GRXCLSRLALL");
  if (size) *size = static_cast<uint32_t>(nfc->data);
  uint32_t n = std::min(nfc->rule_cnt, count);
  return std::vector<uint32_t>(nfc->rule_locs, nfc->rule_locs + n);
}

struct FeatureState {
  bool available = false;  // the driver lets it be switched
  bool active = false;
};

// A netdev feature by its ethtool name ("rx-ntuple-filter"); nullopt when
// the kernel does not say.
std::optional<FeatureState> read_feature(const std::string& ifname, std::string_view name) {
  Flex<ethtool_sset_info> info(sizeof(uint32_t));
  info->cmd = ETHTOOL_GSSET_INFO;
  info->sset_mask = 1ULL << ETH_SS_FEATURES;
  if (ethtool_ioctl(ifname, info.get()) || !(info->sset_mask & (1ULL << ETH_SS_FEATURES))) return std::nullopt;
  uint32_t count = info->data[0];

  Flex<ethtool_gstrings> strings(size_t{count} * ETH_GSTRING_LEN);
  strings->cmd = ETHTOOL_GSTRINGS;
  strings->string_set = ETH_SS_FEATURES;
  strings->len = count;
  if (ethtool_ioctl(ifname, strings.get())) return std::nullopt;
  uint32_t bit = 0;
  auto* names = reinterpret_cast<const char*>(strings->data);
  while (bit < strings->len && std::string_view(names + bit * ETH_GSTRING_LEN,
                                                strnlen(names + bit * ETH_GSTRING_LEN, ETH_GSTRING_LEN)) != name)
    bit++;
  if (bit == strings->len) return std::nullopt;

  uint32_t blocks = (count + 31) / 32;
  Flex<ethtool_gfeatures> features(blocks * sizeof(ethtool_get_features_block));
  features->cmd = ETHTOOL_GFEATURES;
  features->size = blocks;
  if (ethtool_ioctl(ifname, features.get()) || bit / 32 >= features->size) return std::nullopt;
  const auto& block = features->features[bit / 32];
  uint32_t mask = 1U << (bit % 32);
  return FeatureState{(block.available & mask) != 0, (block.active & mask) != 0};
}

std::string ntuple_off(const NetdevInfo& dev) {
  auto ntuple = read_feature(dev.name, "rx-ntuple-filter");
  return ntuple && ntuple->available && !ntuple->active ? driver_of(dev) + " has rx-ntuple-filter off" : "";
}

bool all_zero(const void* p, size_t n) {
  auto* b = static_cast<const uint8_t*>(p);
  return std::all_of(b, b + n, [](uint8_t x) { return x == 0; });
}

std::string hex32(uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof(buf), "0x%x", v);
  return buf;
}

}  // namespace

std::string SteeringRule::to_string() const {
  std::string s = format_mac(mac);
  if (vlan) s += " vlan " + std::to_string(*vlan);
  s += " -> queue " + std::to_string(queue);
  if (location) s += " loc " + std::to_string(*location);
  return s;
}

Result<ethtool_rxnfc> encode_rule(const SteeringRule& rule, uint32_t rx_queues) {
  if (is_multicast(rule.mac))
    return Error{EINVAL, "MAC " + format_mac(rule.mac) + " is multicast: a vmq rule steers one unicast address"};
  if (all_zero(rule.mac.data(), rule.mac.size()))
    return Error{EINVAL, "MAC 00:00:00:00:00:00 is not a station address"};
  if (rule.vlan && *rule.vlan > XVMQ_VLAN_MAX)
    return Error{EINVAL, "VLAN " + std::to_string(*rule.vlan) + " is out of range 0.." + std::to_string(XVMQ_VLAN_MAX)};
  if (rule.queue >= rx_queues)
    return Error{EINVAL, "queue " + std::to_string(rule.queue) + " is out of range: the device has " +
                             std::to_string(rx_queues) + " receive queues (0.." +
                             std::to_string(rx_queues ? rx_queues - 1 : 0) + ")"};
  if (rule.location && (*rule.location & RX_CLS_LOC_SPECIAL))
    return Error{EINVAL, "location " + hex32(*rule.location) +
                             " is a special value: leave the location out to take any free one"};

  ethtool_rxnfc nfc{};
  nfc.cmd = ETHTOOL_SRXCLSRLINS;
  ethtool_rx_flow_spec& fs = nfc.fs;
  fs.flow_type = ETHER_FLOW;
  // uapi ethtool_rx_flow_spec: "@m_u: Masks for flow field bits to be matched": 1 = compare this bit.
  std::memcpy(fs.h_u.ether_spec.h_dest, rule.mac.data(), ETH_ALEN);
  std::memset(fs.m_u.ether_spec.h_dest, 0xff, ETH_ALEN);
  if (rule.vlan) {
    // uapi: "@vlan_etype, @vlan_tci, and @data are only valid if %FLOW_EXT is set".
    fs.flow_type |= FLOW_EXT;
    fs.h_ext.vlan_tci = htons(*rule.vlan);
    fs.m_ext.vlan_tci = htons(kVidMask);
  }
  fs.ring_cookie = rule.queue;
  fs.location = rule.location.value_or(RX_CLS_LOC_ANY);
  return nfc;
}

Result<SteeringRule> decode_rule(const ethtool_rx_flow_spec& fs) {
  auto other = [&](const std::string& why) {
    return Error{EINVAL, "rule at location " + std::to_string(fs.location) + " is not a vmq's: " + why};
  };
  if ((fs.flow_type & ~uint32_t{FLOW_EXT}) != ETHER_FLOW)
    return other("flow type " + hex32(fs.flow_type) + ", not ether (with at most FLOW_EXT)");

  ethtool_flow_union m = fs.m_u;
  if (!std::all_of(std::begin(m.ether_spec.h_dest), std::end(m.ether_spec.h_dest), [](uint8_t b) { return b == 0xff; }))
    return other("it matches part of the destination MAC");
  std::memset(m.ether_spec.h_dest, 0, ETH_ALEN);
  if (!all_zero(&m, sizeof(m))) return other("it matches the source MAC or the EtherType");

  SteeringRule rule;
  std::memcpy(rule.mac.data(), fs.h_u.ether_spec.h_dest, ETH_ALEN);
  if (fs.flow_type & FLOW_EXT) {
    ethtool_flow_ext ext = fs.m_ext;
    uint16_t tci_mask = ntohs(ext.vlan_tci);
    ext.vlan_tci = 0;
    if (!all_zero(&ext, sizeof(ext))) return other("it matches the VLAN EtherType or user data");
    if (tci_mask == kVidMask)
      rule.vlan = ntohs(fs.h_ext.vlan_tci) & kVidMask;
    else if (tci_mask != 0)
      return other("VLAN TCI mask " + hex32(tci_mask) + ", not the VLAN id 0xfff");
  }
  if (fs.ring_cookie == RX_CLS_FLOW_DISC || fs.ring_cookie == RX_CLS_FLOW_WAKE)
    return other("it drops frames or wakes the host");
  if (ethtool_get_flow_spec_ring_vf(fs.ring_cookie)) return other("it steers to a virtual function");
  rule.queue = static_cast<uint32_t>(ethtool_get_flow_spec_ring(fs.ring_cookie));
  rule.location = fs.location;
  return rule;
}

std::optional<uint32_t> free_location(uint32_t table_size, const std::vector<uint32_t>& used) {
  std::set<uint32_t> taken(used.begin(), used.end());
  for (uint32_t loc = table_size; loc-- > 0;)
    if (!taken.count(loc)) return loc;
  return std::nullopt;
}

Result<HardwareSteering> HardwareSteering::open(const std::string& ifname) {
  auto info = netdev_info(ifname);
  if (!info) return info.error();
  HardwareSteering hw(std::move(*info));
  if (auto table = read_table(hw.dev_)) hw.table_size_ = table->size;
  return hw;
}

Result<HardwareSteering> HardwareSteering::probe(const std::string& ifname) {
  auto hw = open(ifname);
  if (!hw) return hw.error();
  if (auto table = read_table(hw->dev_); !table)
    return Error{table.error().code, table.error().message + std::string(kFallback)};
  if (auto off = ntuple_off(hw->dev_); !off.empty()) {
    Error e = failure(EOPNOTSUPP, hw->dev_, off);
    e.message += " (turn it on: ethtool -K " + ifname + " ntuple on)" + std::string(kFallback);
    return e;
  }
  return hw;
}

Result<uint32_t> HardwareSteering::add_rule(const Mac& mac, std::optional<uint16_t> vlan, uint32_t queue,
                                            std::optional<uint32_t> location) {
  // Queue counts change with ethtool -L; check against the current one.
  if (auto now = netdev_info(dev_.name)) dev_.rx_queues = now->rx_queues;
  SteeringRule rule{mac, vlan, queue, location};
  auto nfc = encode_rule(rule, dev_.rx_queues);
  if (!nfc) return failure(nfc.error().code, dev_, nfc.error().message);

  if (!location) {
    auto table = read_table(dev_);
    if (!table) return table.error();
    // uapi: "If that flag is not set in @data then special location values should not be used."
    if (!table->driver_selects) {
      uint32_t size = table->size;
      auto used = read_locations(dev_, table->count, &size);
      if (!used) return used.error();
      auto loc = free_location(size, *used);
      if (!loc)
        return failure(ENOSPC, dev_,
                       "the RX flow rule table of " + driver_of(dev_) + " is full with " +
                           std::to_string(used->size()) + " rules");
      nfc->fs.location = *loc;
    }
  }
  if (int err = ethtool_ioctl(dev_.name, &*nfc)) {
    // Some drivers refuse every rule while the feature is off (ixgbe, i40e, ice, bnxt).
    std::string off = ntuple_off(dev_);
    std::string why = (off.empty() ? driver_of(dev_) : off + ": it") + " refused rule " + rule.to_string();
    return failure(err, dev_, why, "ETHTOOL_SRXCLSRLINS");
  }
  // uapi: "On return, @fs.@location is the actual rule location."
  return nfc->fs.location;
}

Status HardwareSteering::remove_rule(uint32_t location) {
  if (auto nfc = rule_command(dev_, ETHTOOL_SRXCLSRLDEL, location, "ETHTOOL_SRXCLSRLDEL", "remove"); !nfc)
    return nfc.error();
  return {};
}

Result<std::vector<InstalledRule>> HardwareSteering::rules() const {
  auto table = read_table(dev_);
  if (!table) return table.error();
  auto locations = read_locations(dev_, table->count, nullptr);
  if (!locations) return locations.error();
  std::vector<InstalledRule> out;
  for (uint32_t loc : *locations) {
    auto nfc = rule_command(dev_, ETHTOOL_GRXCLSRULE, loc, "ETHTOOL_GRXCLSRULE", "show");
    if (!nfc) return nfc.error();
    InstalledRule installed{loc, std::nullopt, ""};
    auto rule = decode_rule(nfc->fs);
    if (rule)
      installed.rule = *rule;
    else
      installed.other = rule.error().message;
    out.push_back(std::move(installed));
  }
  return out;
}

std::string_view steering_mode_name(SteeringMode mode) {
  return mode == SteeringMode::hardware ? "hardware" : "software";
}

std::optional<SteeringMode> parse_steering_mode(std::string_view name) {
  if (name == "software") return SteeringMode::software;
  if (name == "hardware") return SteeringMode::hardware;
  return std::nullopt;
}

std::string SteeringChoice::describe() const {
  std::string s(steering_mode_name(mode));
  return reason.empty() ? s : s + " (hardware requested; " + reason + ")";
}

SteeringChoice choose_steering(SteeringMode requested, const Error* hardware_failure) {
  if (requested == SteeringMode::software) return {SteeringMode::software, ""};
  if (!hardware_failure) return {SteeringMode::hardware, ""};
  // The REASON part of failure(): without the device and the kernel's words.
  std::string_view why = hardware_failure->message;
  if (why.starts_with(kPrefix)) {
    if (auto colon = why.find(": ", kPrefix.size()); colon != std::string_view::npos) why.remove_prefix(colon + 2);
  }
  why = why.substr(0, std::min(why.find(" ("), why.find("; ")));
  return {SteeringMode::software, std::string(why)};
}

namespace {

const DedicatedQueue* first_free(const HardwareSteeringAsk& ask) {
  for (const auto& r : ask.reserved)
    if (std::find(ask.taken.begin(), ask.taken.end(), r.queue) == ask.taken.end()) return &r;
  return nullptr;
}

}  // namespace

SteeringDecision decide_hardware_steering(const HardwareSteeringAsk& ask) {
  SteeringDecision d;
  const DedicatedQueue* free = first_free(ask);
  if (!ask.vmq)
    d.reason = "the NIC has no vmq";
  else if (ask.reserved.empty())
    d.reason = "no receive queue is reserved for dedication (--dedicated-queues)";
  else if (!free)
    d.reason = "no dedicated queue is free (" + std::to_string(ask.reserved.size()) + " reserved, all taken)";
  else if (ask.program_rule) {
    auto hw = HardwareSteering::probe(ask.uplink);
    if (!hw) {
      d.reason = choose_steering(SteeringMode::hardware, hw).reason;
    } else {
      std::optional<uint16_t> vlan;
      if (ask.vlan) vlan = ask.vlan;
      auto loc = hw->add_rule(ask.mac, vlan, free->queue);
      if (!loc)
        d.reason = loc.error().message;
      else
        d.rule_location = *loc;
    }
  }
  if (d.reason.empty()) {
    d.hardware = true;
    d.queue = static_cast<int>(free->queue);
    d.cpu = free->cpu;
  }
  return d;
}

}  // namespace xvmq
