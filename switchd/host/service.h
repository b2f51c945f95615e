// switchd as a service: leveled logs on stderr (with sd-daemon "<N>"
// priorities when stderr is the journal) and the readiness protocol of
// systemd (sd_notify; nothing is sent when NOTIFY_SOCKET is unset).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace xvmq::switchd::service {

// syslog priorities, as sd-daemon(3) prefixes use them.
enum class Level { Error = 3, Warn = 4, Info = 6, Debug = 7 };

std::optional<Level> parse_level(std::string_view name);  // error, warn, info, debug

// Lines above `max` are not written. Reads JOURNAL_STREAM once: when it
// names this process's stderr, lines carry "<N>" instead of "switchd: ".
void init_log(Level max);

void log(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// sd_notify(3) with the given assignments ("READY=1\nSTATUS=..."). A
// failure to send is logged, never fatal.
void notify(const std::string& state);

}  // namespace xvmq::switchd::service
