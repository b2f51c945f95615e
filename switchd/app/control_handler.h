// The switch behind the control socket: Switch::handle with its refusals
// (Refused, the model's error kinds) as the protocol's ControlError, and a
// request that waits (NotYet) as the server's parked request (Wait). Shared
// by switchd's server and the control fuzzer, so both answer alike.
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "control/control.h"
#include "switchd/app/switch.h"

namespace xvmq::switchd {

inline control::ErrorKind to_control(ErrorKind k) {
  switch (k) {
    case ErrorKind::Usage:
      return control::ErrorKind::Usage;
    case ErrorKind::NotFound:
      return control::ErrorKind::NotFound;
    case ErrorKind::WrongState:
      return control::ErrorKind::WrongState;
    case ErrorKind::Exists:
      return control::ErrorKind::Exists;
    case ErrorKind::Exhausted:
      return control::ErrorKind::Exhausted;
    case ErrorKind::Kernel:
      return control::ErrorKind::Kernel;
    case ErrorKind::Permission:
      return control::ErrorKind::Permission;
  }
  return control::ErrorKind::Kernel;
}

inline nlohmann::json handle_control(Switch& s, const std::string& op, const nlohmann::json& args) {
  try {
    return s.handle(op, args);
  } catch (const Refused& r) {
    throw control::ControlError(to_control(r.error.kind), r.error.message);
  } catch (const NotYet& w) {
    throw control::Wait{std::chrono::milliseconds(w.wait_ms), w.result};
  }
}

}  // namespace xvmq::switchd
