// Carrying out the software switch's decisions on a queue worker's UMEM:
// the VMQ path's descriptor passing, VLAN shapes, copies for a frame that
// leaves in two shapes, sends, drops; and frames other threads handed over.
// Per frame: no allocation, no lock, no lookup by name.
#include <algorithm>
#include <cstring>

#include "switchd/core/fdb.h"
#include "switchd/dp/queue_worker.h"
#include "switchd/dp/queue_worker_parts.h"
#include "switchd/dp/vhost_user.h"
#include "switchd/dp/vlan_tag.h"

namespace xvmq::switchd {

namespace {

Drop to_drop(SwitchDrop d) {
  switch (d) {
    case SwitchDrop::Malformed:
      return Drop::Malformed;
    case SwitchDrop::SpoofedSource:
      return Drop::SpoofedSource;
    case SwitchDrop::TaggedOnAccess:
      return Drop::TaggedOnAccess;
    case SwitchDrop::VlanNotAllowed:
      return Drop::VlanNotAllowed;
    case SwitchDrop::UnknownUnicast:
      return Drop::UnknownUnicast;
    case SwitchDrop::NoPort:
    case SwitchDrop::Count:
      break;
  }
  return Drop::NoPort;
}

}  // namespace

void QueueWorker::drop(Nic* nic, Drop why) {
  bump(counters_.drops[static_cast<size_t>(why)]);
  if (nic) bump(nic->cfg.counters->drops[static_cast<size_t>(why)]);
}

bool QueueWorker::send(Sock& to, Nic* nic, uint64_t addr, uint32_t len) {
  if (to.kind == Sock::Backend && to.outstanding >= opts_.nic_inflight) {
    drop(nic, Drop::Backpressure);
    return false;
  }
  if (!xsk::tx_one(*to.xs, addr, len)) {
    drop(nic, Drop::TxRingFull);
    return false;
  }
  pool_.hold(addr);
  to.outstanding++;
  bump(counters_.tx);
  if (!to.queued_kick) {
    to.queued_kick = true;
    to_kick_.push_back(&to);
  }
  return true;
}

void QueueWorker::forward_from_uplink(uint64_t addr, uint32_t len, Nic* vmq_nic) {
  if (vmq_nic) {  // the VMQ path: the classifier matched this NIC and shaped the frame
    bump(vmq_nic->cfg.counters->fast_frames);
    bump(vmq_nic->cfg.counters->fast_bytes, len);
    to_nic(*vmq_nic, addr, len);
    return;
  }
  execute(judge(area_ + addr, len, kUplink, ports_, &port_macs_), kUplink, nullptr, addr, len);
}

void QueueWorker::forward_from_vm(Nic& from, uint64_t addr, uint32_t len) {
  if (dedicated_) return hand_off(addr, len);  // switched by a general worker, which knows every port
  bump(from.cfg.counters->from_vm_frames);
  bump(from.cfg.counters->from_vm_bytes, len);
  if (from.port < 0) return drop(&from, Drop::NoPort);  // being removed
  execute(judge(area_ + addr, len, from.port, ports_, &port_macs_), from.port, &from, addr, len);
}

void QueueWorker::deliver(const Egress& e, uint64_t addr, uint32_t len) {
  if (e.port == kUplink) {
    send(*default_sock_, nullptr, addr, len);
    return;
  }
  Nic* n = port_nics_[static_cast<size_t>(e.port)];
  bump(n->cfg.counters->default_frames);
  bump(n->cfg.counters->default_bytes, len);
  to_nic(*n, addr, len);
}

bool QueueWorker::to_nic(Nic& n, uint64_t addr, uint32_t len) {
  if (n.backend) {
    // The backend's queue of this worker's number gone (the guest turned it
    // off): a worker that still has one delivers.
    if (n.cfg.live_queues) {
      const uint32_t live = n.cfg.live_queues->load(std::memory_order_relaxed);
      if (live && n.cfg.index >= live) {
        const auto& [owner, ring] = n.cfg.fallbacks[n.cfg.index % live];
        return hand_to_owner(n, owner, ring, addr, len);
      }
    }
    return send(*n.backend, &n, addr, len);
  }
  // The guest's pair of this worker's number when it enabled it, else the owner's.
  if (n.vhost) {
    const auto r = n.vhost->deliver(n.vhost_pair, area_ + addr, len);
    if (r != VhostUserDevice::Rx::NotReady || !n.cfg.owner) return guest_took(n, static_cast<int>(r), len);
  }
  return hand_to_owner(n, n.cfg.owner, n.cfg.deliver_ring, addr, len);
}

bool QueueWorker::hand_to_owner(Nic& n, QueueWorker* owner, HandoffRing* ring, uint64_t addr, uint32_t len) {
  if (!ring->push({area_ + addr, len}, n.cfg.delivery_id)) {
    drop(&n, Drop::Backpressure);  // the owner is a ring behind
    return false;
  }
  // One wakeup per owner and pass, not per frame.
  if (std::find(owners_to_wake_.begin(), owners_to_wake_.end(), owner) == owners_to_wake_.end())
    owners_to_wake_.push_back(owner);
  return true;
}

void QueueWorker::wake_owners() {
  for (QueueWorker* o : owners_to_wake_) o->wake();
  owners_to_wake_.clear();
}

void QueueWorker::execute(const Verdict& v, int ingress, Nic* from, uint64_t addr, uint32_t len) {
  if (v.learn && fdb_) {
    Mac src;
    std::copy(area_ + addr + 6, area_ + addr + 12, src.begin());
    switch (fdb_->learn(src, v.vlan, now_s_)) {
      case Fdb::Learned::Added:
        bump(counters_.learned);
        break;
      case Fdb::Learned::Full:
        bump(counters_.learn_refused);
        break;
      case Fdb::Learned::Known:
        break;
    }
  }
  if (v.drop) return drop(from, to_drop(*v.drop));
  bump(counters_.vlan_frames[v.vlan & 0xfff]);
  bool tagged = v.tagged;
  // Both shapes: the tagged one gets its own copy of the frame.
  uint64_t t_addr = addr, copy = xsk::UmemPool::kNone;
  uint32_t t_len = len;
  if (tagged && v.untagged) {
    copy = pool_.pop();
    if (copy == xsk::UmemPool::kNone) {
      drop(from, Drop::NoBuffer);
      tagged = false;
    } else {
      t_addr = copy + kTagHeadroom;
      std::memcpy(area_ + t_addr, area_ + addr, len);
    }
  }
  if (tagged) push_vlan_tag(area_, t_addr, t_len, v.tags, v.vlan);
  if (v.untagged) pop_vlan_tags(area_, addr, len, v.tags);
  auto out = [&](const Egress& e) {
    if (e.tagged && !tagged) return;
    deliver(e, e.tagged ? t_addr : addr, e.tagged ? t_len : len);
  };
  if (!v.flood) {
    out(v.to);
  } else {
    Egress batch[kBatch];  // the flood's egresses, a chunk at a time
    size_t cursor = 0;
    while (size_t n = flood_egress(ports_, ingress, v.vlan, cursor, batch, kBatch))
      for (size_t i = 0; i < n; i++) out(batch[i]);
  }
  if (copy != xsk::UmemPool::kNone) pool_.free_if_unheld(copy);
}

void QueueWorker::rebuild_ports() {
  ports_.clear();
  port_nics_.clear();
  for (auto& [_, n] : nics_) {
    n->port = -1;
    if (n->removing) continue;
    n->port = static_cast<int>(ports_.size());
    ports_.push_back(n->cfg.nic);
    port_nics_.push_back(n.get());
  }
  port_macs_ = index_ports(ports_);
  by_delivery_.clear();
  vhost_nics_.clear();
  for (Nic* n : port_nics_) {
    if (n->backend || (n->vhost && !n->cfg.owner)) by_delivery_[n->cfg.delivery_id] = n;
    if (n->vhost) vhost_nics_.push_back(n);
  }
  for (auto& in : inboxes_) {
    if (in->nic.empty()) continue;
    auto it = nics_.find(in->nic);
    in->from = it == nics_.end() ? nullptr : it->second.get();
  }
}

void QueueWorker::hand_off(uint64_t addr, uint32_t len) {
  if (!handoff_ring_) return;
  if (handoff_ring_->push({area_ + addr, len})) handoff_->wake();
}

void QueueWorker::inject_from_uplink(std::span<const uint8_t> frame) {
  if (inboxes_.front()->ring.push(frame)) wake();
}

bool QueueWorker::inbox_waiting() const {
  for (const auto& in : inboxes_)
    if (!in->ring.empty()) return true;
  return false;
}

void QueueWorker::drain_inboxes() {
  for (auto& in : inboxes_) {
    if (in->deliveries)
      drain_deliveries(*in);
    else
      drain_inbox(*in);
  }
}

// Frames another worker switched to NICs whose backend socket is here:
// copied into this UMEM and sent. The source counted them (and what its
// ring refused, as backpressure); a NIC gone meanwhile drops them. A NIC
// with nic_inflight frames in flight keeps the rest in the ring until its
// sends complete (reaped every pass), so a burst is delayed, not dropped.
void QueueWorker::drain_deliveries(Inbox& in) {
  (void)in.ring.take_full();
  (void)in.ring.take_too_long();
  for (uint32_t k = 0; k < in.ring.capacity() && !in.ring.empty(); k++) {
    const auto bytes = in.ring.front();
    auto it = by_delivery_.find(in.ring.front_tag());
    if (it == by_delivery_.end()) {
      drop(nullptr, Drop::NoPort);
      in.ring.pop();
      continue;
    }
    Nic& n = *it->second;
    if (n.vhost) {  // straight from the ring into the guest
      const auto len = static_cast<uint32_t>(bytes.size());
      guest_took(n, static_cast<int>(n.vhost->deliver(n.vhost_pair, bytes.data(), len)), len);
      in.ring.pop();
      continue;
    }
    if (n.backend->outstanding >= opts_.nic_inflight) break;
    const uint64_t base = pool_.pop();
    if (base == xsk::UmemPool::kNone) break;  // sends in flight give buffers back
    const uint64_t addr = base + kTagHeadroom;
    const auto len = static_cast<uint32_t>(bytes.size());
    std::memcpy(area_ + addr, bytes.data(), len);
    send(*n.backend, &n, addr, len);
    pool_.free_if_unheld(base);
    in.ring.pop();
  }
}

// Each frame into a buffer of this UMEM, then switched as if it had arrived
// here: from the uplink (the host's stack), or from the inbox's NIC.
void QueueWorker::drain_inbox(Inbox& in) {
  const bool from_uplink = in.nic.empty();
  if (uint64_t n = in.ring.take_full()) bump(counters_.drops[static_cast<size_t>(Drop::TxRingFull)], n);
  for (uint64_t n = in.ring.take_too_long(); n; n--) drop(in.from, Drop::NoBuffer);
  // At most a ring's worth: a producer that keeps up does not hold the worker here.
  for (uint32_t k = 0; k < in.ring.capacity() && !in.ring.empty(); k++, in.ring.pop()) {
    const auto bytes = in.ring.front();
    if (!from_uplink && !in.from) continue;  // disconnected meanwhile
    const uint64_t base = pool_.pop();
    if (base == xsk::UmemPool::kNone) {
      drop(in.from, Drop::NoBuffer);
      continue;
    }
    const uint64_t addr = base + kTagHeadroom;
    const auto len = static_cast<uint32_t>(bytes.size());
    std::memcpy(area_ + addr, bytes.data(), len);
    if (from_uplink) {
      bump(counters_.rx_stack);
      forward_from_uplink(addr, len, nullptr);
    } else {
      forward_from_vm(*in.from, addr, len);
    }
    pool_.free_if_unheld(base);
  }
}

// One copy, UMEM (or a delivery ring) to guest memory (VhostUserDevice::
// deliver); the buffer stays the caller's. The notification goes with the
// pass (serve_vhost). Counted here.
bool QueueWorker::guest_took(Nic& n, int result, uint32_t len) {
  switch (static_cast<VhostUserDevice::Rx>(result)) {
    case VhostUserDevice::Rx::Ok:
      bump(n.cfg.counters->vhost_rx_frames);
      bump(n.cfg.counters->vhost_rx_bytes, len);
      return true;
    case VhostUserDevice::Rx::NotReady:
      drop(&n, Drop::VhostNotReady);
      break;
    case VhostUserDevice::Rx::RingFull:
      drop(&n, Drop::VhostRxRingFull);
      break;
    case VhostUserDevice::Rx::BadRing:
      drop(&n, Drop::VhostBadRing);
      break;
  }
  return false;
}

// The device's control socket, then what the guest sent (a bounded batch
// per pass), each frame copied into a UMEM buffer and switched as any VM's,
// then the guest's notifications.
uint32_t QueueWorker::serve_vhost(Nic& n) {
  if (!n.cfg.owner) n.vhost->poll_control();
  uint64_t bad = 0;
  uint32_t taken = 0;
  for (; taken < kBatch; taken++) {
    const uint64_t base = pool_.pop();
    if (base == xsk::UmemPool::kNone) break;  // sends in flight give buffers back
    const uint64_t addr = base + kTagHeadroom;
    const uint32_t len = n.vhost->next_tx(n.vhost_pair, area_ + addr, max_frame(opts_.frame_size), &bad);
    if (len) {
      bump(counters_.rx_vm);
      forward_from_vm(n, addr, len);
    }
    pool_.free_if_unheld(base);
    if (!len) break;
  }
  for (; bad; bad--) drop(&n, Drop::VhostBadRing);
  n.vhost->flush(n.vhost_pair);
  return taken;
}

}  // namespace xvmq::switchd
