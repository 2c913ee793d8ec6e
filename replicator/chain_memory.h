// What an agent knows of its server's chain, so a rolled-back or forked staging is an alarm and
// never a quiet resync (docs/PROTOCOL.md, Rollback and forks): the newest point the staging
// acknowledged to it — id, time and volume-0 seal MAC, in <state-dir>/last-point; its id alone in
// a pinned eBPF tracker. From it come the alarm, the next point's id (never one acknowledged
// before) and the link each seal carries (blockrep/crypto/seal.h, VolumeSeal::prev).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "blockrep/crypto/seal.h"
#include "blockrep/base/env.h"
#include "blockrep/base/status.h"
#include "blockrep/net/wire.h"
#include "blockrep/tracking/acked_point.h"

namespace blockrep::agent {

class ChainMemory {
 public:
  // The state directory is reached through `env`.
  explicit ChainMemory(Env* env = Env::Default()) : env_(env) {}
  // From <state_dir>/last-point (none when `state_dir` is empty).
  Status Load(const std::string& state_dir, const std::string& server_id);
  // A pinned tracker synced up to `point`: acknowledged to this host, its time and MAC unknown.
  void RaiseTo(uint64_t point);
  // At HELLO_OK: "" when the staging's chain holds the newest point this agent saw acknowledged;
  // otherwise the alarm (also kept: alarm(), and the next point must be a rescan).
  std::string Check(const wire::HelloOk& hello);
  // The id of the next point on a chain whose head is `chain_head`.
  uint64_t NextPointId(uint64_t chain_head) const { return std::max(chain_head, known_.id) + 1; }
  // The link of the next point's seals: the newest point this agent saw acknowledged, or the
  // chain's head when that is newer (its MAC then unknown until the base's seals are loaded).
  SealLink LinkFor(uint64_t chain_head) const;
  // The point was acknowledged: remembered, and written to <state_dir>/last-point (if any).
  Status Acked(const AckedPoint& point, const std::string& state_dir, const std::string& server_id);

  const AckedPoint& known() const { return known_; }
  const std::string& alarm() const { return alarm_; }   // sticky for the process
  bool rescan_due() const { return rescan_due_; }       // an alarm's rescan is not acknowledged yet

 private:
  Env* env_;
  AckedPoint known_;
  std::string alarm_;
  bool rescan_due_ = false;
};

}  // namespace blockrep::agent
