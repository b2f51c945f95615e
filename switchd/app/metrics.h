// switchd's counters in the Prometheus text format, served by
// prometheus-cpp's Exposer (civetweb) on an address of the operator's
// choice. Nothing is copied or kept here: each scrape reads the switch
// through `Snapshot`, the typed counters that the stats op shows too.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/metric_family.h>

#include "common/result.h"
#include "switchd/app/views.h"

namespace prometheus {
class Exposer;
class Collectable;
}  // namespace prometheus

namespace xvmq::switchd {

// The switch and its counters, taken under the switch's lock; called on the
// exposer's threads.
using Snapshot = std::function<SwitchSnapshot()>;

// "9417" -> "127.0.0.1:9417"; "ADDR:PORT" and "[V6]:PORT" as given. An
// Error (EINVAL) says what is wrong.
Result<std::string> parse_listen(const std::string& text);

// The metric families of one snapshot (every name xvmq_*, see docs/protocol.md).
std::vector<prometheus::MetricFamily> metric_families(const SwitchSnapshot& snapshot);

class MetricsServer {
 public:
  // Listens on `listen` (parse_listen's form) and serves GET /metrics.
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& listen, Snapshot snapshot);
  ~MetricsServer();  // stops serving; no Snapshot call runs after it returns

  const std::string& address() const { return address_; }

 private:
  MetricsServer() = default;
  std::string address_;
  std::shared_ptr<prometheus::Collectable> collectable_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace xvmq::switchd
