#include "tests/lib/fake_datapath.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "switchd/host/netlink.h"

namespace xvmq::switchd::test {

FakeDatapath::FakeDatapath(std::string uplink, const DatapathOptions& opts, FakeOptions fake)
    : uplink_(std::move(uplink)),
      opts_(opts),
      fake_(std::move(fake)),
      mode_(opts.mode == AttachMode::Auto ? AttachMode::Native : opts.mode),
      fdb_(opts.fdb_size) {
  if (!fake_.backend_exists) fake_.backend_exists = [](const std::string& dev) { return netlink::link_exists(dev); };
  const uint32_t dedicated = std::min(opts.dedicated_queues, fake_.queues);
  for (uint32_t q = 0; q < fake_.queues; q++) {
    QueueInfo info{q, static_cast<int>(q), "spread"};
    if (auto it = opts.queue_cpus.find(q); it != opts.queue_cpus.end()) info = {q, it->second, "configured"};
    if (q >= fake_.queues - dedicated) {
      reserved_.push_back(info);
    } else {
      queues_.push_back(info);
      counters_.push_back(std::make_unique<QueueCounters>());
    }
  }
  auto w = general_worker_options(opts, static_cast<uint32_t>(queues_.size()), static_cast<uint32_t>(reserved_.size()));
  worker_ = w ? *w : opts.worker;
}

FakeDatapath::~FakeDatapath() = default;

DatapathFactory FakeDatapath::factory(FakeOptions fake) {
  return [fake](const std::string& uplink, const DatapathOptions& opts) -> Result<std::unique_ptr<DatapathApi>> {
    auto exists =
        fake.backend_exists ? fake.backend_exists : [](const std::string& dev) { return netlink::link_exists(dev); };
    if (!exists(uplink)) return Error{ENODEV, "netdev " + uplink + ": No such device"};
    return std::unique_ptr<DatapathApi>(new FakeDatapath(uplink, opts, fake));
  };
}

std::optional<SteeringState> FakeDatapath::steering(const std::string& nic) const {
  auto it = connected_.find(nic);
  if (it == connected_.end()) return std::nullopt;
  SteeringState ss;
  ss.requested_hw = it->second.nic.hardware_steering();
  if (ss.requested_hw) ss.reason = "driver " + fake_.driver + " has no RX flow classification";
  return ss;
}

std::optional<DeliveryState> FakeDatapath::delivery(const std::string& nic) const {
  auto it = connected_.find(nic);
  if (it == connected_.end()) return std::nullopt;
  const NicBinding& b = it->second;
  DeliveryState d;
  d.effective = b.nic.delivery == Delivery::Xsk ? Delivery::Xsk : Delivery::Kernel;
  if (d.effective == Delivery::Kernel && b.vmq_id) {
    d.cpu = b.nic.vmq_cpu ? static_cast<int>(*b.nic.vmq_cpu) : static_cast<int>(b.vmq_id % 2);
    d.cpu_source = b.nic.vmq_cpu ? "configured" : "spread";
  }
  return d;
}

Status FakeDatapath::set_vmq_cpu(const std::string& nic, std::optional<uint32_t> cpu) {
  calls_.push_back("set_vmq_cpu " + nic + " " + (cpu ? std::to_string(*cpu) : std::string("spread")));
  if (int e = std::exchange(fail_next_set_vmq_cpu, 0))
    return Error{e, "nic " + nic + ": " + std::strerror(e) + " (injected)"};
  auto it = connected_.find(nic);
  if (it == connected_.end()) return {};  // applied at connect
  it->second.nic.vmq_cpu = cpu;
  return {};
}

Result<std::vector<std::pair<FilterKey, FilterValue>>> FakeDatapath::filters() const { return filters_; }

// As the real datapath: one filter per VLAN the NIC is on, the tag
// stripped where the NIC takes that VLAN untagged.
void FakeDatapath::install(const NicBinding& bound) {
  const NicDesc& nic = bound.nic;
  if (!bound.vmq_id) return;
  for (uint16_t v = 0; v <= XVMQ_VLAN_MAX; v++) {
    if (!nic.vlans.carries(v)) continue;
    FilterKey k{nic.mac, v};
    std::erase_if(filters_, [&](const auto& f) { return f.first == k; });
    filters_.push_back({k, {bound.vmq_id, !nic.vlans.sends_tagged(v)}});
  }
}

void FakeDatapath::clear(const NicBinding& bound) {
  const NicDesc& nic = bound.nic;
  std::erase_if(filters_, [&](const auto& f) { return f.first.mac == nic.mac && nic.vlans.carries(f.first.vlan); });
}

Status FakeDatapath::connect(const NicBinding& bound) {
  const NicDesc& nic = bound.nic;
  calls_.push_back("connect " + nic.name + " vmq " + std::to_string(bound.vmq_id));
  if (int e = std::exchange(fail_next_connect, 0))
    return Error{e, "nic " + nic.name + ": " + std::strerror(e) + " (injected)"};
  if (detached_) return Error{ENODEV, "uplink " + uplink_ + " is detached"};
  if (connected_.count(nic.name)) return Error{EEXIST, "nic " + nic.name + " is already connected"};
  if (!fake_.backend_exists(nic.backend))
    return Error{ENODEV, "backend of nic " + nic.name + ": netdev " + nic.backend + ": No such device"};
  connected_[nic.name] = bound;
  known_[nic.name] = true;
  install(bound);
  return {};
}

Status FakeDatapath::disconnect(const std::string& name) {
  calls_.push_back("disconnect " + name);
  auto it = connected_.find(name);
  if (it == connected_.end()) return Error{ENOENT, "nic " + name + " is not connected"};
  clear(it->second);
  connected_.erase(it);
  return {};
}

Status FakeDatapath::set_vmq(const NicBinding& bound, uint32_t vmq) {
  const NicDesc& nic = bound.nic;
  calls_.push_back("set_vmq " + nic.name + " " + std::to_string(vmq));
  if (int e = std::exchange(fail_next_set_vmq, 0))
    return Error{e, "nic " + nic.name + ": " + std::strerror(e) + " (injected)"};
  auto it = connected_.find(nic.name);
  if (it == connected_.end()) return Error{ENOENT, "nic " + nic.name + " is not connected"};
  clear(it->second);
  it->second.vmq_id = vmq;
  install(it->second);
  return {};
}

Status FakeDatapath::set_statics(const std::string& nic, const std::vector<std::pair<Mac, uint16_t>>& statics) {
  if (auto it = connected_.find(nic); it != connected_.end()) it->second.nic.statics = statics;
  return {};
}

void FakeDatapath::forget(const std::string& name) {
  calls_.push_back("forget " + name);
  known_.erase(name);
}

Status FakeDatapath::reconcile_filters(const std::vector<NicBinding>& keep) {
  calls_.push_back("reconcile " + std::to_string(keep.size()));
  filters_.clear();
  for (const auto& nic : keep) install(nic);
  return {};
}

Status FakeDatapath::detach() {
  calls_.push_back("detach");
  detached_ = true;
  filters_.clear();
  return {};
}

std::map<std::string, NicTotals> FakeDatapath::nic_totals() const {
  std::map<std::string, NicTotals> out;
  for (const auto& [name, _] : known_) out[name];
  return out;
}

std::vector<std::pair<QueueInfo, PoolState>> FakeDatapath::pools() const {
  std::vector<std::pair<QueueInfo, PoolState>> out;
  const uint32_t frames = worker_.frames;
  for (const auto& q : queues_) out.push_back({q, {frames, frames, 0, 0}});
  return out;
}

}  // namespace xvmq::switchd::test
