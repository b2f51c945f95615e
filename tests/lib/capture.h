// Raw frames on the ports of the switchd tests: AF_PACKET captures of every
// frame a netdev receives, with the VLAN tag the kernel moved to the skb's
// metadata read back (PACKET_AUXDATA), xvmq-frames' frames recognised
// (frames.h), and raw sends from a netdev in another namespace.
#pragma once

#include <linux/if_packet.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/mac.h"
#include "tests/lib/harness.h"

namespace xvmq::test {

constexpr int kUntagged = -1;

// "untagged" or "tag N".
std::string tag_str(int tag);

// Moves the calling thread into the named network namespace (empty: stays).
// "" when it did, else why not.
std::string enter_netns(const std::string& netns);

// One received frame, parsed.
struct Seen {
  Mac dst{}, src{};
  std::vector<uint16_t> tags;  // VLAN IDs, outermost first (from the metadata, then in the bytes)
  uint16_t ethertype = 0;      // after the tags
  bool test_frame = false;     // an xvmq-frames frame
  bool intact = false;         // its payload checksum holds
  uint32_t stream = 0;
  uint64_t seq = 0;
  size_t len = 0;       // bytes received
  size_t wire_len = 0;  // on the wire: with the tag the kernel moved to the metadata
  // The frame's one VLAN tag, kUntagged, or -2 for more than one.
  int tag() const { return tags.empty() ? kUntagged : tags.size() == 1 ? tags[0] : -2; }
};

// `len` bytes received, meta_tci the tag the kernel took off, if any.
Seen parse_seen(const uint8_t* f, size_t len, std::optional<uint16_t> meta_tci);

// An AF_PACKET socket on `dev` in the named namespace (empty: this
// process's), receiving (not sending) frames, from start() to stop().
class Capture {
 public:
  Capture(std::string netns, std::string dev) : netns_(std::move(netns)), dev_(std::move(dev)) {}
  ~Capture() { stop(); }
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  // Ready to receive when this returns true.
  bool start();
  const std::vector<Seen>& stop();

  const std::string& error() const { return error_; }
  const std::vector<Seen>& frames() const { return frames_; }
  uint32_t socket_drops() const { return drops_; }
  const std::string& name() const { return dev_; }

 private:
  void run(std::promise<std::string>& ready);
  // The bound socket, or -1 with *err set.
  int open_socket(std::string* err) const;

  std::string netns_, dev_, error_;
  std::promise<std::string> ready_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::vector<Seen> frames_;
  uint32_t drops_ = 0;
};

// Runs `body` with an AF_PACKET socket for sending on `dev` in the named
// namespace (empty: this process's), from a thread that entered it. "" when
// it ran, else why not.
std::string with_raw_socket(const std::string& netns, const std::string& dev,
                            const std::function<void(int fd, const sockaddr_ll& to)>& body);

// Sends a frame on a with_raw_socket() socket, retrying while the netdev's
// queue is full; true when it left.
bool send_retrying(int fd, const sockaddr_ll& to, const Bytes& f);

}  // namespace xvmq::test
