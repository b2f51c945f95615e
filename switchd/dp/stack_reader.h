// host=stack: the group frames (broadcast, multicast) that the classifier
// passed to the host's stack, read back from an AF_PACKET socket on the
// uplink so that the software switch floods them to the VMs too.
//
// The socket takes group destinations only (a classic BPF filter on the I/G
// bit), ignores what the host sends itself (PACKET_IGNORE_OUTGOING) and
// gets the VLAN tag the stack took off back from PACKET_AUXDATA.
#pragma once

#include <linux/if_packet.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"

namespace xvmq::switchd {

// A frame as received, with the tag the stack took into `aux` put back
// after the MAC addresses (unchanged when aux says no VLAN).
void restore_vlan_tag(std::vector<uint8_t>& frame, const tpacket_auxdata& aux);

class StackReader {
 public:
  using Deliver = std::function<void(std::vector<uint8_t> frame)>;

  // Opens the socket on `ifindex` and starts the thread, which hands each
  // frame to `deliver` in the order received. `uplink` names it in errors.
  static Result<std::unique_ptr<StackReader>> start(const std::string& uplink, int ifindex, Deliver deliver);
  // Stops the thread; `deliver` is not called once it has returned.
  ~StackReader();
  StackReader(const StackReader&) = delete;
  StackReader& operator=(const StackReader&) = delete;

 private:
  StackReader() = default;
  void run();

  int fd_ = -1;
  int stop_fd_ = -1;  // an eventfd: written once to stop the thread
  Deliver deliver_;
  std::thread thread_;
};

}  // namespace xvmq::switchd
