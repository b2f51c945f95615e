#include <atomic>
#include <cstring>

#include "common/result.h"

namespace xvmq {
namespace {

std::atomic<ErrorDetail> g_detail{nullptr};

}  // namespace

Error make_error(int err, const std::string& context) {
  if (err < 0) err = -err;
  if (err == 0) err = EIO;
  std::string msg = context + ": " + std::strerror(err);
  if (ErrorDetail detail = g_detail.load()) {
    std::string lib = detail();
    if (!lib.empty()) msg += " (" + lib + ")";
  }
  return Error{err, msg};
}

Error sys_error(int err, const std::string& context) { return Error{err, context + ": " + std::strerror(err)}; }

void set_error_detail(ErrorDetail detail) { g_detail = detail; }

}  // namespace xvmq
