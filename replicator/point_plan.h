// What the next recovery point must read (docs/TRACKING.md): a pure decision from what the agent
// knows — the staging's HELLO_OK, the chain memory's alarm, the tracker's state — with the reason
// the agent logs. DecidePoint has no I/O and no clock: PointPlanTest covers every branch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/tracking/tracker.h"
#include "blockrep/net/wire.h"
#include "volume.h"

namespace blockrep::agent {

enum class PointMode {
  kResume,       // continue the staging's interrupted point: its durable records are kept
  kResumeFull,   // continue the staging's interrupted full point from the agent's checkpoint
  kResumeRescan, // continue the staging's interrupted rescan from the agent's checkpoint
  kIncremental,  // the tracker's dirty blocks since the chain's last point
  kRescan,       // read everything, ship blocks whose fingerprint differs from the last point's
  kFull,         // read everything, ship every non-zero extent
};
const char* PointModeName(PointMode m);

// What the decision rests on. The tracker fields mean nothing when !has_tracker.
struct PlanFacts {
  uint64_t last_point = 0;  // the chain's last point on the staging (0: empty chain)
  // The staging's interrupted point, if any (HELLO_OK pending_*; 0: none, or already resumed).
  uint64_t pending_point = 0;
  uint64_t pending_base_point = 0;
  // The chain's last point is sealed under another key (key_hex: the chain's, ours_hex: ours).
  bool key_rotated = false;
  std::string chain_key_hex, our_key_hex;
  bool rescan_due = false;  // the chain memory raised an alarm (rollback or fork)
  bool has_tracker = false;
  bool tracker_resumed = false;          // the pinned tracker outlived an earlier process
  uint64_t tracker_synced_point = 0;     // the point the tracker's bitmap is relative to (0: none)
  bool tracker_sent_last_point = false;  // this tracker began the chain's last point (by its time)
  std::string overflowed_volume;         // path of the first volume whose tracking had a gap; "" if none
  // A checkpoint of this boot (full_progress.h) matches the staging's interrupted point — a full
  // point, or a rescan on pending_base_point — exactly.
  bool whole_checkpoint = false;
  // The tracker began that point (its stamp), so it saw every write since.
  bool tracker_sent_pending = false;
};

struct PointPlan {
  PointMode mode = PointMode::kFull;
  std::string reason;  // empty for kResume: the caller words it (it knows whether it re-reads)
  // kIncremental only: the chain's last point is the one this tracker sent last, acknowledged
  // after its process died. Every block in flight is in that point (nothing is taken between a
  // point's END_POINT and its acknowledgement), so the tracker adopts it as synced and only the
  // blocks dirtied since are read, not the whole of that point again.
  bool adopt_last_point = false;
};

PointPlan DecidePoint(const PlanFacts& f);

// The facts from what the agent holds: the staging's HELLO_OK (null before one), the tracker
// (null: scanning), the volumes, our key's id, whether the chain memory wants a rescan.
PlanFacts CollectFacts(uint64_t last_point, const wire::HelloOk* hello, const EbpfTracker* tracker,
                       const std::vector<std::unique_ptr<Volume>>& volumes, uint64_t our_key_id, bool rescan_due,
                       bool whole_checkpoint = false);

// The life of one recovery point, in order; every change is logged (Agent::SetPhase).
enum class PointPhase {
  kIdle,         // no point begun on this connection
  kLoadingBase,  // waiting for the base's seals and fingerprints (base_load.h): no reads
  kResealing,    // a resumed point: re-reading the blocks its kept records may hold (nothing sent)
  kReading,      // reading and sending the point's work, and the tracker's batches
  kFinalTake,    // filesystems frozen: reading the last dirty blocks
  kEnded,        // seals and END_POINT sent: waiting for POINT_ACK
};
const char* PhaseName(PointPhase p);

}  // namespace blockrep::agent
