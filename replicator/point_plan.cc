#include "point_plan.h"

#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/keyfile.h"

namespace blockrep::agent {
namespace {

// The staging's interrupted point can be continued: it follows the chain's last point, the
// tracker's bitmap covers everything since that point, and tracking had no gap.
bool CanResume(const PlanFacts& f) {
  if (f.rescan_due || f.key_rotated) return false;
  if (f.pending_point != f.last_point + 1 || f.pending_base_point == 0 || f.pending_base_point != f.last_point)
    return false;
  if (!f.has_tracker || f.tracker_synced_point == 0 || f.last_point < f.tracker_synced_point) return false;
  return f.overflowed_volume.empty();
}

// The staging's interrupted point read whole volumes (a full point, or a rescan on the chain's
// last point), and this agent's checkpoint of it lets it go on from there: everything before the
// checkpoint's cursor is on the staging as the checkpoint says, and changed since only where the
// tracker saw writes. Without a tracker (scanning) there is no such promise to keep: its points
// are never consistent, and the next one is a rescan anyway. A tracker that did not begin the
// point (a new pin: reboot, lost pin) missed writes: no resume.
bool CanResumeWhole(const PlanFacts& f) {
  if (f.rescan_due || f.key_rotated || !f.whole_checkpoint) return false;
  if (f.pending_point != f.last_point + 1) return false;
  if (f.pending_base_point != 0 && f.pending_base_point != f.last_point) return false;
  if (!f.has_tracker) return true;
  return f.tracker_sent_pending && f.overflowed_volume.empty();
}

}  // namespace

const char* PointModeName(PointMode m) {
  switch (m) {
    case PointMode::kResume: return "resume";
    case PointMode::kResumeFull: return "resume full";
    case PointMode::kResumeRescan: return "resume rescan";
    case PointMode::kIncremental: return "incremental";
    case PointMode::kRescan: return "rescan";
    case PointMode::kFull: return "full";
  }
  return "?";
}

const char* PhaseName(PointPhase p) {
  switch (p) {
    case PointPhase::kIdle: return "idle";
    case PointPhase::kLoadingBase: return "loading base";
    case PointPhase::kResealing: return "resealing";
    case PointPhase::kReading: return "reading";
    case PointPhase::kFinalTake: return "final take";
    case PointPhase::kEnded: return "ended";
  }
  return "?";
}

PointPlan DecidePoint(const PlanFacts& f) {
  if (CanResume(f)) return {PointMode::kResume, ""};
  if (CanResumeWhole(f)) return {f.pending_base_point == 0 ? PointMode::kResumeFull : PointMode::kResumeRescan, ""};
  PointPlan p;
  p.mode = PointMode::kFull;
  if (f.key_rotated) {
    p.reason = "the data key was rotated: the chain's last point is sealed under key " + f.chain_key_hex +
               ", this point under key " + f.our_key_hex + " (older points stay restorable with the same key file)";
  } else if (f.rescan_due) {
    p.reason = "ALARM: the staging's chain is not the one this agent saw acknowledged";
  } else if (!f.has_tracker) {
    p.reason = "no change tracker";
  } else if (f.tracker_synced_point == 0) {
    p.reason = f.tracker_resumed ? "no point synced since tracking began" : "tracking just started";
  } else if (f.last_point < f.tracker_synced_point) {
    p.reason = "the staging's chain (point " + std::to_string(f.last_point) + ") is behind the tracker (point " +
               std::to_string(f.tracker_synced_point) + ")";
  } else if (f.last_point > f.tracker_synced_point + 1 ||
             (f.last_point == f.tracker_synced_point + 1 && !f.tracker_sent_last_point)) {
    // Another agent of this server-id (a failover host replicating the recovered volume) moved
    // the chain on: the bitmap knows what changed here since point S, not what differs from L.
    p.reason = "the staging's chain moved on from point " + std::to_string(f.tracker_synced_point) + " to " +
               std::to_string(f.last_point) +
               " without this tracker (another agent of this server-id, after a failover?)";
  } else if (!f.overflowed_volume.empty()) {
    p.reason = "a request on " + f.overflowed_volume + " was too large to track";
  } else {
    p.mode = PointMode::kIncremental;
    p.adopt_last_point = f.last_point == f.tracker_synced_point + 1;
    p.reason = p.adopt_last_point ? "changes tracked by eBPF since point " + std::to_string(f.last_point) +
                                        " (its acknowledgement came after the last process ended)"
                                  : "changes tracked by eBPF since point " + std::to_string(f.tracker_synced_point);
    return p;
  }
  // The staging holds a chain: read everything, but ship only blocks whose keyed fingerprint
  // differs from its last point (an incremental point on it). Not after a key rotation: the
  // staging's fingerprints are keyed with the old key, so every block would differ anyway.
  // (The fingerprints of large volumes live in a file, fingerprint_table.h: no volume is too
  // large to rescan.)
  if (f.last_point != 0 && !f.key_rotated) {
    p.mode = PointMode::kRescan;
    p.reason = "rescan against point " + std::to_string(f.last_point) + " (" + p.reason + ")";
  }
  return p;
}

PlanFacts CollectFacts(uint64_t last_point, const wire::HelloOk* hello, const EbpfTracker* tracker,
                       const std::vector<std::unique_ptr<Volume>>& volumes, uint64_t our_key_id, bool rescan_due,
                       bool whole_checkpoint) {
  PlanFacts f;
  f.whole_checkpoint = whole_checkpoint;
  f.last_point = last_point;
  if (hello) {
    f.pending_point = hello->pending_point_id;
    f.pending_base_point = hello->pending_base_point;
    f.key_rotated = hello->chain_key_id != 0 && hello->chain_key_id != our_key_id;
    f.chain_key_hex = KeyIdHex(hello->chain_key_id);
  }
  f.our_key_hex = KeyIdHex(our_key_id);
  f.rescan_due = rescan_due;
  f.has_tracker = tracker != nullptr;
  if (tracker) {
    f.tracker_resumed = tracker->resumed();
    f.tracker_synced_point = tracker->synced_point();
    f.tracker_sent_last_point = hello && tracker->SentPoint(hello->last_time_ns);
    f.tracker_sent_pending = hello && hello->pending_point_id != 0 && tracker->SentPoint(hello->pending_time_ns);
    for (size_t v = 0; v < volumes.size(); ++v) {
      if (tracker->overflowed(v)) {
        f.overflowed_volume = volumes[v]->path;
        break;
      }
    }
  }
  return f;
}

}  // namespace blockrep::agent
