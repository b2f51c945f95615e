#include "switchd/host/service.h"

#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace xvmq::switchd::service {
namespace {

Level g_max = Level::Info;
bool g_journal = false;
std::mutex g_mu;  // one line at a time from every thread

// JOURNAL_STREAM is "DEV:INODE" of the journal's stream; it is inherited by
// children whose stderr went elsewhere, so it counts only when it matches.
bool stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

const char* word(Level l) {
  switch (l) {
    case Level::Error:
      return "error: ";
    case Level::Warn:
      return "warning: ";
    case Level::Info:
      return "";
    case Level::Debug:
      return "debug: ";
  }
  return "";
}

}  // namespace

std::optional<Level> parse_level(std::string_view name) {
  if (name == "error") return Level::Error;
  if (name == "warn") return Level::Warn;
  if (name == "info") return Level::Info;
  if (name == "debug") return Level::Debug;
  return std::nullopt;
}

void init_log(Level max) {
  g_max = max;
  g_journal = stderr_is_journal();
}

void log(Level level, const char* fmt, ...) {
  if (static_cast<int>(level) > static_cast<int>(g_max)) return;
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  std::lock_guard lock(g_mu);
  if (g_journal)
    std::fprintf(stderr, "<%d>%s%s\n", static_cast<int>(level), word(level), buf);
  else
    std::fprintf(stderr, "switchd: %s%s\n", word(level), buf);
}

void notify(const std::string& state) {
  int rc = sd_notify(0, state.c_str());
  if (rc < 0) log(Level::Warn, "sd_notify to $NOTIFY_SOCKET: %s", std::strerror(-rc));
}

}  // namespace xvmq::switchd::service
