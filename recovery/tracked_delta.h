// `restore --delta --agent-state DIR`: failback onto the original host's own disks, reading only
// the blocks that can differ. The original agent's pinned eBPF tracker (it outlives the agent; only
// a reboot loses it) knows which blocks were written there since the point B its staging last
// acknowledged (`DIR/last-point`); the chain's indexes say which extents differ between B and the
// point P being restored. Only those blocks are read, compared and, where they differ, written.
//
// Proof: a seal region's digest is a sum of keyed terms over its blocks (blockrep/crypto/seal.h),
// so the target's digest after the restore is B's sealed digest minus the terms of the blocks read
// (their content before) plus the terms of what they hold now, every term computed from bytes on
// the target. A region with a block written here since B is read whole instead (its content is not
// B's). Every region must then equal P's seal. The indexes are only a hint: one that hides a
// change leaves a region that does not add up, and then the whole-target delta runs and decides.
// What this path trusts beyond the whole-target delta is this host's kernel tracker (a write that
// bypassed this host's block layer — the disk written from another machine — goes unseen: omit
// --agent-state then) and B's identity (its volume-0 seal MAC must be the one in `last-point`).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/status.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/store/store.h"
#include "blockrep/tracking/dirty_map.h"
#include "keys.h"
#include "restore.h"
#include "source.h"

namespace blockrep::recovery {

// What the tracker and the agent's state directory say about the targets.
struct TrackedBases {
  store::PointInfo point;             // B
  store::PointIndex index;            // B's index (opened: its records stay readable)
  std::map<uint16_t, std::vector<Extent>> written;  // per target volume: blocks written since B
  std::string why_not;                // non-empty: the tracker cannot be used, and why
};

// Hard errors: the state directory is missing, its last-point file is damaged, or the agent
// still runs on it. Everything else that rules the tracker out is `why_not`.
Result<TrackedBases> LoadTrackedBases(PointSource& source, const store::Manifest& manifest, const std::string& server_id,
                                      const std::string& state_dir, const std::map<uint16_t, std::string>& targets,
                                      const KeyChain& keys, const store::PointIndex& point_index);

// The delta of one volume by the tracker. False when the blocks to read are over a quarter of the
// volume (nothing written), or some region did not add up (what was written is the point's, but
// the target is not proven): then the caller runs the whole-target delta.
Result<bool> RestoreTrackedDelta(PointSource& source, const std::string& server_id, const store::PointInfo& point,
                                 const store::PointIndex& idx, uint16_t volume, const std::string& target,
                                 const TrackedBases& base, RecordOpener& opener, const SealKeys& seal_keys,
                                 const BlockFingerprinter& fingerprinter, RestoreSummary* sum);

}  // namespace blockrep::recovery
