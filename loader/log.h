// libbpf and libxdp print through here. Their last warnings are kept so that
// an Error can carry the kernel's and the library's own words.
#pragma once

#include <string>

namespace xvmq::log {

// Install the print hooks (idempotent). verbose: also print to stderr.
void install(bool verbose = false);
void set_verbose(bool verbose);

// Forget what was captured; call before an operation.
void clear_captured();
// The warnings captured since clear_captured(), joined by "; ".
std::string captured();

}  // namespace xvmq::log
