// How far an interrupted point that reads whole volumes — a full point, or a rescan — got, so that
// the next try resumes it instead of reading every volume again (docs/TRACKING.md, Resumable full
// points and rescans). Kept in the state directory:
//
//   <state-dir>/full-point       the point it is (server, id, BEGIN_POINT time, data key, base
//                                point: 0 for a full point, volume sizes, boot id) and two positions over the volumes laid end to
//                                end: `cursor` — every block before it was read and its records
//                                acknowledged durable (zero extents, and in a rescan blocks equal
//                                to the base's, were not sent); `limit` — no
//                                record of the point was sent past it; and how many bytes of the
//                                log below are valid. Replaced by rename.
//   <state-dir>/full-point.fps   a log of the keyed fingerprints of the blocks before `cursor`
//                                (runs of non-zero ones; absent means zero), which the point's
//                                seal is computed from: chunks of (volume, first block, count,
//                                fingerprints, XXH3-64 of the chunk).
//
// Neither file is synced: a process killed -9 leaves them in the page cache, where the next
// process finds them. A reboot may lose or tear them, so a checkpoint of another boot is never
// used (the pinned eBPF tracker a resume relies on is gone then anyway); nor is one that does not
// match the staging's interrupted point exactly, or whose checksums fail. Losing them costs
// reading everything again, never correctness.
//
// The limit is a lease: the agent extends it (a save) before it reads past it, so a resume knows
// where records of the earlier try may lie, and sends [cursor, limit) again in full, with zero
// records where the volume now holds zeros (a kept record there must not outlive the block), and
// in a rescan whatever the base holds there.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "blockrep/base/env.h"
#include "blockrep/base/status.h"
#include "point_seal.h"

namespace blockrep::agent {

struct FullPointId {
  std::string server_id;
  uint64_t point_id = 0;
  uint64_t time_ns = 0;  // its BEGIN_POINT time
  uint64_t key_id = 0;
  uint64_t base_point = 0;  // a rescan's base (the chain's last point); 0: a full point
  std::vector<uint64_t> volume_bytes;
  bool operator==(const FullPointId&) const = default;
};

// This boot's id (/proc/sys/kernel/random/boot_id); empty if it cannot be read, and then no
// checkpoint is ever trusted.
std::string BootId();

class FullProgress {
 public:
  // Chunks of at most this many fingerprints; a zero gap this long ends a run.
  static constexpr uint32_t kChunkBlocksMax = 64u << 10;
  static constexpr uint32_t kZeroGapBlocks = 16;
  static constexpr size_t kHeaderBytesMax = 64u << 10;

  // `state_dir` empty: no checkpoints (every call is a no-op, Load finds nothing).
  FullProgress(std::string state_dir, std::string boot_id, Env* env = Env::Default());

  // A new full point: any earlier checkpoint is gone; cursor 0, limit `limit`.
  Status Begin(const FullPointId& id, uint64_t limit);
  // The checkpoint of `id`, if the files hold one of this boot; `why` says why not otherwise
  // (empty when there is none). On success the object continues it (Save appends to its log).
  bool Load(const FullPointId& id, std::string* why);
  // Adds the fingerprints of the blocks in [cursor(), cursor) — as `seal` holds them — to the log,
  // then records the new cursor and limit. `cursor` is rounded down to a 4 KiB block unless it is
  // the end of a volume. Neither position moves back.
  Status Save(uint64_t cursor, uint64_t limit, const PointSeal& seal);
  // Replays the log into `seal` (which must be empty, StartEmpty): the point's state before cursor().
  Status Restore(PointSeal* seal) const;
  // The point is acknowledged, or another began: both files are removed.
  Status Drop();

  bool active() const { return active_; }
  uint64_t cursor() const { return cursor_; }
  uint64_t limit() const { return limit_; }
  const FullPointId& id() const { return id_; }
  uint64_t total_bytes() const;

 private:
  std::string HeaderPath() const { return dir_ + "/full-point"; }
  std::string LogPath() const { return dir_ + "/full-point.fps"; }
  Status WriteHeader();
  Status AppendRun(size_t volume, uint64_t first_block, const uint64_t* fps, uint32_t n, Bytes* out);

  std::string dir_, boot_id_;
  Env* env_;
  bool active_ = false;
  FullPointId id_;
  uint64_t cursor_ = 0, limit_ = 0, log_bytes_ = 0;
  std::unique_ptr<File> log_;
};

}  // namespace blockrep::agent
