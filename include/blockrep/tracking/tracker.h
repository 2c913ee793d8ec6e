// Dirty-block tracking without a kernel module (docs/TRACKING.md).
//
// EbpfTracker: a BPF program on block:block_rq_complete sets 4 KiB bits in a bitmap that the
// agent maps into its memory. Protocol: mark on completion, clear before read. Taking a word is a
// compare-and-swap that first copies the bits into a pinned `inflight` bitmap, so bits leave
// `dirty` only once they are recorded elsewhere; `inflight` is cleared when the staging
// acknowledges the point that carried them. Program, link and maps are pinned under
// /sys/fs/bpf/blockrep/<server-id>/, so tracking survives agent restarts; only a reboot (or a
// removed pin) loses it, and then the agent falls back to a full read.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "blockrep/base/limits.h"
#include "blockrep/base/status.h"
#include "blockrep/tracking/dirty_map.h"

namespace blockrep {

inline constexpr uint64_t kTrackBlockBytes = kBlockBytes;  // one dirty bit per block

struct TrackedVolume {
  std::string path;
  uint32_t kernel_dev = 0;    // dev_t of the whole disk, kernel encoding (major << 20 | minor)
  uint64_t start_sector = 0;  // partition start on that disk
  uint64_t nr_sectors = 0;
};

// Describes a block device for tracking, or says why it cannot be tracked with eBPF.
Result<TrackedVolume> DescribeBlockDevice(const std::string& path);

class EbpfTracker {
 public:
  // Reuses the pinned tracker of `server_id` when it describes exactly `volumes`; otherwise
  // (re)loads, attaches and pins a fresh one.
  static Result<std::unique_ptr<EbpfTracker>> Open(const std::string& server_id,
                                                   const std::vector<TrackedVolume>& volumes);
  // The pinned tracker of `server_id` as it stands, for a reader on the same host (a failback's
  // `restore --delta --agent-state`): never loads, re-pins or clears anything. NotFound when
  // there is no pin (a reboot, or the agent never used eBPF).
  static Result<std::unique_ptr<EbpfTracker>> OpenPinned(const std::string& server_id);
  ~EbpfTracker();

  // The tracked volumes, in the agent's --volume order (paths empty after OpenPinned).
  const std::vector<TrackedVolume>& volumes() const;
  // The index of the tracked volume on the same disk range as `v`, or -1.
  int IndexOf(const TrackedVolume& v) const;
  // The blocks of volume v that may differ from synced_point(): dirty or inflight, taking
  // nothing (call MarkPendingWrites(true) first to count writes still in flight).
  std::vector<Extent> ChangedSinceSynced(size_t v) const;

  // True when an existing pin was found and reused (tracking was continuous).
  bool resumed() const { return resumed_; }
  // The point the bitmap is relative to (0: none yet; a full read is needed).
  uint64_t synced_point() const;
  // True when some request on volume v was too large to mark bit by bit, or the kernel skipped one
  // of our programs, since the last full read: only a full read is safe then.
  bool overflowed(size_t v) const;
  // Marks the blocks of writes issued but never reported complete: those pending for over a
  // second (the kernel missed their completion, or the disk is very slow) and, with `all`,
  // every pending one (the end of a point, which must hold every completed write). Returns how
  // many writes it marked.
  size_t MarkPendingWrites(bool all);
  // Writes whose completion the kernel never reported, recovered from their issue record.
  uint64_t UnreportedCompletions() const;

  // Clear before read: takes every dirty bit of volume v (moving it to inflight) and returns the
  // blocks as byte extents. With `with_inflight`, bits still inflight from points not yet
  // acknowledged are returned too (the start of a point); without, only the newly taken ones (a
  // poll within a point whose earlier blocks are already on their way).
  std::vector<Extent> TakeDirty(size_t v, bool with_inflight = true);
  // The blocks of volume v that were taken but whose latest read is not known to be durable on
  // the staging (survives agent crashes), without taking anything.
  std::vector<Extent> UndurableRuns(size_t v) const;
  // Everything taken so far has been read, sent and durably acknowledged.
  void MarkCaughtUp();
  // A new point reads every inflight block again (DirtyMap::InflightUndurable).
  void MarkInflightUndurable();
  // Before a full read: forgets what is dirty (the read covers it) — bits set from now on count.
  void ClearDirty();
  // The staging durably holds `point_id`: inflight bits are no longer needed.
  void MarkSynced(uint64_t point_id);
  // This tracker's agent began sending the point after synced_point() at `time_ns` (its
  // BEGIN_POINT time). A staging whose last point is synced_point() + 1 holds that point only if
  // SentPoint(its time); otherwise another agent of the server-id (a failover host) moved the
  // chain on, and the bitmap says nothing about what differs from it.
  void NoteSending(uint64_t time_ns);
  bool SentPoint(uint64_t time_ns) const;
  // Counters from the BPF program: requests that marked bits, requests seen on protected disks.
  std::pair<uint64_t, uint64_t> Stats() const;
  // Bytes of writes completed on the protected volumes since the program was loaded, counted
  // where they are marked (the write rate, whatever the agent takes); false from a pin an older
  // agent made, whose program does not count them.
  bool WrittenBytes(uint64_t* bytes) const;
  // Bytes of the blocks dirty now and not yet taken (a count of the bitmap's bits).
  uint64_t DirtyBytes() const;

  // Removes the pin of `server_id` (detaches the program). Used when protection ends, and by
  // tests to simulate a reboot.
  static Status Unpin(const std::string& server_id);
  static std::string PinDir(const std::string& server_id);

 private:
  EbpfTracker() = default;
  uint32_t SendingStamp() const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool resumed_ = false;
};

}  // namespace blockrep
