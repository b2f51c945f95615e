// xvmq-classify: the uplink classifier alone, driven from the shell. Every
// command finds the classifier's maps through the uplink's pin directory
// (<pin root>/<dev>); nothing stays running between commands except serve.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "loader/abi.h"
#include "loader/classifier.h"

namespace xvmq::classify {

struct Common {
  std::string pin_root = "/sys/fs/bpf/xvmq";
  std::string dev;
  bool json = false;

  std::string pin_dir() const { return pin_root + "/" + dev; }
};

// Each returns the process exit status; errors are one line on stderr.
int attach(const Common& c, AttachMode mode);
int detach(const Common& c, bool unpin);
int filter_add(const Common& c, const FilterKey& key, const FilterValue& value);
int filter_del(const Common& c, const FilterKey& key);
int filter_list(const Common& c);
int stats(const Common& c);

struct ServeOptions {
  std::vector<uint32_t> vmqs;  // besides the default queue, vmq 0
  double seconds = 0;
  bool print = false;
};
int serve(const Common& c, const ServeOptions& o);

// Shared by the commands.
int fail(const std::string& message);
// "xvmq-classify [--pin-root R] <command> <dev>", for hints.
std::string command_line(const Common& c, const std::string& command);
// The classifier with its maps adopted from the pin directory; nullopt
// (after printing why) when the pins are missing or do not fit.
std::optional<Classifier> open_pinned(const Common& c);

}  // namespace xvmq::classify
