// The uplink classifier as a C++ object: open, load or attach, pin and adopt
// its maps, program filters and socket slots, read counters.
//
// A Classifier owns the BPF object and its map fds; it cannot be copied.
// Destroying it closes those fds but leaves an attached program and its
// pins in place: detaching is explicit (detach()), so a restarting switchd
// leaves the uplink in XDP_PASS for the frames of its closed sockets.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "loader/abi.h"
#include "common/result.h"

namespace xvmq {

class FilterTable;

enum class AttachMode { Native, Skb, Offload, Auto };

std::string_view to_string(AttachMode mode);
std::optional<AttachMode> parse_attach_mode(std::string_view text);

// The program found on a netdev.
struct AttachedProgram {
  std::string name;
  uint32_t id = 0;
  AttachMode mode = AttachMode::Native;  // never Auto
  bool dispatcher = false;               // behind libxdp's multi-program dispatcher
};

// What take_over() replaced.
struct Takeover {
  uint32_t old_id = 0;
  uint32_t new_id = 0;
  AttachMode mode = AttachMode::Native;
  // The old program's tag (a hash of its instructions) is this build's; if
  // not, it was another xvmq build's classifier, known by its maps' names.
  bool same_build = false;
};

struct ClassifierOptions {
  // bpffs directory of this uplink's maps, e.g. /sys/fs/bpf/xvmq/eth0.
  // Empty: maps are not pinned.
  std::string pin_dir;
  // The longest frame the sockets' buffers hold: longer ones are dropped
  // and counted as too_big. 0: no limit. Fixed when the program loads.
  uint32_t max_frame = 0;
  // Dynamic VMQ by load (xvmq_abi.h, "Spreading by load"): kernel-delivered
  // frames per window (about 1 ms) from which a receiving CPU is hot, and
  // below which it is cold again; spread_on 0: a vmq's frames always go to
  // its processor. spill[cpu]: where a hot CPU sends the frames of the vmqs
  // it is the processor of (missing entries: the CPU itself).
  uint32_t spread_on = 0;
  uint32_t spread_off = 0;
  std::vector<uint32_t> spill;
};

// The classifier's program name, as the kernel and `xdp-loader status` show it.
inline constexpr std::string_view kClassifierName = "xvmq_uplink";

class Classifier {
 public:
  // Open the object and adopt the maps pinned in opts.pin_dir when their
  // type, key size, value size, max_entries and flags match; refuse with the
  // mismatch otherwise. Nothing is loaded yet.
  static Result<Classifier> open(const ClassifierOptions& opts = {});

  Classifier(Classifier&&) noexcept;
  Classifier& operator=(Classifier&&) noexcept;
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;
  ~Classifier();

  // Load into the kernel without attaching (BPF_PROG_RUN), then pin.
  Status load();

  // Attach to a netdev. Auto tries native, then skb. Returns the mode in
  // use. Maps are pinned only after the attach succeeded.
  Result<AttachMode> attach(const std::string& ifname, AttachMode mode);
  // Detach the program this object attached.
  Status detach();
  // Replace in one step (XDP_FLAGS_REPLACE: the netdev is never without a
  // program) the classifier that a previous switchd left on ifname whose pins
  // are gone (pin directory removed, bpffs remounted). The program there must
  // be named kClassifierName, attached alone (libxdp's fallback mode), and be
  // xvmq's: this build's (same tag once this object is loaded) or another
  // build's that uses maps named as the classifier's filter and socket maps.
  // Anything else is refused and left attached. Loads this object, attaches it
  // in the old program's mode, then pins its maps.
  Result<Takeover> take_over(const std::string& ifname);

  // The maps this object adopted from pins (names), empty if none.
  const std::vector<std::string>& adopted_maps() const;
  // The maps it pins: all adopted means a whole earlier classifier was found.
  size_t state_maps() const;
  const std::string& pin_dir() const;
  // Remove this classifier's pins and the pin directory if it is empty.
  Status unpin();

  int prog_fd() const;
  // The CPUMAP program of kernel delivery (xvmq_cpumap), once loaded; -1 before.
  int cpumap_prog_fd() const;
  int map_fd(std::string_view name) const;

  // Become the filter table's only writer: an exclusive lock on the pin
  // directory, held while this object lives. Waits up to `wait` for another
  // writer (a short xvmq-classify command) to finish; a long-lived holder
  // (switchd) makes it fail with EBUSY, naming the directory.
  Status lock_filters(std::chrono::milliseconds wait = std::chrono::seconds(2));

  // Filters: (MAC, VLAN or any VLAN) -> vmq. This object must be the
  // table's only writer (see loader/filter_table.h and lock_filters()).
  Status set_filter(const FilterKey& key, const FilterValue& value);
  Status clear_filter(const FilterKey& key);
  // Frames to the host's own MAC (on any VLAN) go to its stack: for an
  // uplink that keeps the host's addresses, with no host port.
  Status set_host_mac(const Mac& mac);
  // Broadcast and multicast go to the host's stack too (host=stack: its
  // neighbours must resolve its addresses), counted as host_group.
  Status set_host_groups(bool on);
  Result<std::vector<std::pair<FilterKey, FilterValue>>> filters() const;

  // Socket slots: the AF_XDP socket of (vmq, receive queue).
  Status set_socket(uint32_t vmq, uint32_t queue, int xsk_fd);
  Status clear_socket(uint32_t vmq, uint32_t queue);

  Result<Counters> counters() const;

  // The XDP program on a netdev, if any.
  static Result<std::optional<AttachedProgram>> query(const std::string& ifname);
  // Why `present` on ifname is in the way of an attach, with how to remove it.
  static std::string in_the_way(const std::string& ifname, const AttachedProgram& present);
  // Detach the classifier from a netdev, whoever attached it (switchd after
  // a restart, xdp-loader). Other programs on the netdev are left alone.
  static Status detach_from(const std::string& ifname);

 private:
  struct Impl;
  explicit Classifier(std::unique_ptr<Impl> impl);
  Result<FilterTable*> filter_table() const;
  std::unique_ptr<Impl> impl_;
};

}  // namespace xvmq
