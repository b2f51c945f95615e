#include "loader/log.h"

#include <bpf/libbpf.h>
#include <xdp/libxdp.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <mutex>

#include "common/result.h"

namespace xvmq::log {
namespace {

std::atomic<bool> g_verbose{false};
thread_local std::deque<std::string> t_captured;
constexpr size_t kKeep = 4;

void keep(bool warn, const char* fmt, va_list ap) {
  char buf[1024];
  va_list copy;
  va_copy(copy, ap);
  int n = std::vsnprintf(buf, sizeof(buf), fmt, copy);
  va_end(copy);
  if (n < 0) return;
  std::string line(buf);
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  if (g_verbose) std::fprintf(stderr, "%s\n", line.c_str());
  if (!warn || line.empty()) return;
  t_captured.push_back(std::move(line));
  if (t_captured.size() > kKeep) t_captured.pop_front();
}

int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
  if (level == LIBBPF_DEBUG && !g_verbose) return 0;
  keep(level == LIBBPF_WARN, fmt, ap);
  return 0;
}

int libxdp_print(enum libxdp_print_level level, const char* fmt, va_list ap) {
  if (level == LIBXDP_DEBUG && !g_verbose) return 0;
  keep(level == LIBXDP_WARN, fmt, ap);
  return 0;
}

}  // namespace

void install(bool verbose) {
  static std::once_flag once;
  std::call_once(once, [] {
    libbpf_set_print(libbpf_print);
    libxdp_set_print(libxdp_print);
    // Only these hooks capture anything: make_error has nothing to add before.
    set_error_detail(captured);
  });
  if (verbose) g_verbose = true;
}

void set_verbose(bool verbose) { g_verbose = verbose; }

void clear_captured() { t_captured.clear(); }

std::string captured() {
  std::string out;
  for (const auto& l : t_captured) {
    if (!out.empty()) out += "; ";
    out += l;
  }
  return out;
}

}  // namespace xvmq::log
