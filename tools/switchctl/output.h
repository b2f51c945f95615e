// Human output of switchctl: read the result JSON generically, so that a
// field switchd adds later shows up (stats) or is ignored (tables), never breaks it.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace xvmq::switchctl {

// "nic vm1: connected (vmq 2)": the result's state, else `done`, and a few
// telling fields when present. say_done: `done` first, the state among the
// fields, for a step that does not change the state ("vmq allocated").
std::string summary(const std::string& object, const std::string& done, const nlohmann::json& result,
                    bool say_done = false);

void print_show(const nlohmann::json& result);
// Tables per reason, vmq, port, receive queue, CPU and drop reason; a
// rates() result prints the same way, per second.
void print_stats(const nlohmann::json& result);
// `after` with every counter replaced by its increase since `before`, per
// second; gauges (buffers, fdb size) and identifiers (queue, cpu, nic) as in
// `after`. The schema of stats, for stats --watch.
nlohmann::json rates(const nlohmann::json& before, const nlohmann::json& after, double seconds,
                     const std::string& key = "");
// Events as rows of fixed width (events --follow), the header when asked.
void print_event_rows(const nlohmann::json& events, bool header);
void print_events(const nlohmann::json& result);
void print_fdb(const nlohmann::json& result);
void print_vmqs(const nlohmann::json& result);

}  // namespace xvmq::switchctl
