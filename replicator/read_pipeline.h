// The agent's read pipeline: the extents a point must read, walked in order by up to kReadsMax
// io_uring reads (kLargeReadsMax of up to kReadBytes, the rest of up to kSmallReadBytes, for
// scattered blocks); each whole read is fingerprinted (for the point's seal), cut into records of
// at most kRecordBytes, sealed on two threads (the reads that completed together as one batch)
// and framed as numbered RECORDs, ready to send. What a read ships depends on the point's
// ReadMode. The pipeline owns its buffers and its cursor; the agent owns the ring, the connection
// and the decision of what to read (point_plan.h).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "blockrep/crypto/codec.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/base/fs.h"
#include "blockrep/tracking/tracker.h"
#include "blockrep/net/uring.h"
#include "ack_window.h"
#include "base_inbox.h"
#include "parallel_sealer.h"
#include "point_seal.h"
#include "token_bucket.h"
#include "volume.h"

namespace blockrep::agent {

enum class ReadMode {
  kSweep,   // a full point's first pass: all-zero extents are absent from it, so not sent
  kShip,    // tracker batches: every extent is sent, an all-zero one as a zero record
  kRescan,  // only runs of blocks whose fingerprint differs from the staging's base are sent
  kReseal,  // blocks are read again for the seal only (a resumed point's kept records): nothing sent
};
const char* ReadModeName(ReadMode m);

// What the reads of a point did (SyncSummary).
struct ReadCounters {
  uint64_t bytes_read = 0;
  uint64_t bytes_reread_to_seal = 0;  // kReseal: kept records' blocks read, not sent
  uint64_t bytes_zero = 0;            // all-zero extents read
  uint64_t bytes_zero_sent = 0;       // extents sent as zero records (a rescan's holes included)
  uint64_t bytes_holes = 0;           // kRescan: holes of image files, compared without reading
  uint64_t bytes_shipped_plain = 0;
  uint64_t bytes_stored = 0;  // sealed record bytes
  uint64_t bytes_wire = 0;    // frame bytes before TLS
  uint64_t records = 0;
  uint64_t records_raw = 0;  // incompressible, stored raw
};

class ReadPipeline {
 public:
  static constexpr size_t kReadBytes = 1u << 20;     // one io_uring read
  static constexpr size_t kRecordBytes = 64u << 10;  // one record's plaintext extent
  // A full point's sweep reads long runs of data: neighbouring non-zero extents of one read go out
  // as one record of up to this much (larger records compress better; docs/PERFORMANCE.md, P4).
  static constexpr size_t kSweepRecordBytes = 512u << 10;
  // Reads in flight: kLargeReadsMax of up to kReadBytes (a sweep's), and as many again and more
  // of up to kSmallReadBytes (a tracker batch's scattered 4 KiB blocks): small reads wait on the
  // disk's latency, so their throughput is their queue depth (P5: 8 in flight kept up with
  // 4 KiB random writes to ~40 MB/s). 8 MiB + 2.5 MiB of buffers.
  static constexpr unsigned kLargeReadsMax = 8;
  static constexpr unsigned kSmallReadsMax = 40;
  static constexpr size_t kSmallReadBytes = 64u << 10;
  static constexpr unsigned kReadsMax = kLargeReadsMax + kSmallReadsMax;
  static constexpr uint64_t kReadBufferBytesMax = kLargeReadsMax * kReadBytes + kSmallReadsMax * kSmallReadBytes;
  static constexpr uint64_t kHoleStepBytes = 64u << 20;  // of a hole, compared in one step
  static_assert(kReadBytes % kRecordBytes == 0 && kRecordBytes % kFingerprintBlockBytes == 0);
  static_assert(kSweepRecordBytes % kRecordBytes == 0 && kSweepRecordBytes <= kReadBytes &&
                kSweepRecordBytes <= kMaxRecordPlainBytes);
  static_assert(kSmallReadBytes % kRecordBytes == 0 && kSmallReadBytes % kTrackBlockBytes == 0 && kSmallReadBytes < kReadBytes);
  static_assert(kReadBytes % kTrackBlockBytes == 0, "O_DIRECT reads stay block-aligned");

  struct Deps {
    Ring* ring = nullptr;
    const std::vector<std::unique_ptr<Volume>>* volumes = nullptr;
    const BlockFingerprinter* fingerprinter = nullptr;
    PointSeal* seal = nullptr;
    const BaseInbox* base = nullptr;  // kRescan: the last point's fingerprints (base_load.h)
    TokenBucket* bucket = nullptr;
    ReadCounters* counters = nullptr;
    CodecChoice codec;
  };
  // Reads use io_uring user-data ids [id_base, id_base + kReadsMax).
  ReadPipeline(Deps deps, uint64_t id_base);

  // A new connection: records are sealed by `sealer` and numbered in `window`. With a `sink`,
  // frames are handed to it while a read's records are still being sealed (every kSinkFlushBytes:
  // the agent encrypts them for the wire meanwhile); ProcessReady returns the rest.
  using Sink = std::function<Status(ByteSpan frames)>;
  static constexpr size_t kSinkFlushBytes = 256u << 10;
  void StartSession(ParallelSealer* sealer, AckWindow* window, Sink sink = nullptr);
  void set_point(uint64_t point_id) { point_id_ = point_id; }

  // The extents to read next, per volume, replacing what was left (and any queued batch); the
  // cursor starts over.
  void SetWork(std::vector<std::vector<Extent>> work, ReadMode mode);
  // kShip: a newer tracker batch, read once the current work and every batch queued before it
  // are read (batches stay in take order, so each one's records end at a known sequence number:
  // the lag of its writes).
  void AppendWork(std::vector<std::vector<Extent>> work);
  // The current batch is read and processed, and another is queued: the caller notes where the
  // batch ended (its last sequence number), then StartNextBatch.
  bool BatchDrained() const {
    return cur_volume_ >= work_.size() && inflight_ == 0 && ready_.empty() && !queued_.empty();
  }
  void StartNextBatch();
  size_t queued_batches() const { return queued_.size(); }
  // Every block of every volume.
  void SetWholeVolumes(ReadMode mode);
  // kRescan of every volume from position `from` on (over the volumes laid end to end; 0: all of
  // them): the holes of image files (SEEK_HOLE) are not read but compared as zeros with the last
  // point's fingerprints, and sent as zero records where those are not zero.
  [[nodiscard]] Status SetRescan(uint64_t from = 0);
  // Hands the work over (a resumed point keeps its own work aside while it re-reads).
  std::vector<std::vector<Extent>> TakeWork();
  const std::vector<std::vector<Extent>>& work() const { return work_; }
  ReadMode mode() const { return mode_; }

  // Starts reads while slots are free and `room(bytes)` allows `bytes` more in flight (the
  // caller's window, send queue and bandwidth limit). kRescan: a range is read only once the
  // last point's fingerprints for it are known.
  Status Issue(const std::function<bool(uint64_t inflight_bytes)>& room);
  bool Owns(uint64_t id) const { return id >= id_base_ && id < id_base_ + kReadsMax; }
  // A read's completion: a short read is resubmitted; a whole one waits for ProcessReady.
  [[nodiscard]] Status OnCompletion(uint64_t id, int res);
  // Processes the reads completed since the last call, in completion order: their records are
  // sealed as one batch on both threads (so neither waits for the other at each read's end) and
  // framed in that order. A batch takes reads until it holds kBatchPlainBytesMax; the caller
  // calls again while has_ready(), after each reap of completions. Returns the frames not yet
  // given to the sink (possibly none), valid until the next call.
  static constexpr uint64_t kBatchPlainBytesMax = 4u << 20;
  Result<ByteSpan> ProcessReady();
  bool has_ready() const { return !ready_.empty(); }
  // The connection died: reads still in flight are reaped by the caller (OnAbandoned), and
  // every slot is free again. Their blocks stay in the tracker's in-flight bits.
  void OnAbandoned() { if (inflight_ > 0) --inflight_; }
  void Abandon();

  // Nothing left to read (no batch queued either), nothing in flight, nothing waiting to be processed.
  bool idle() const { return cur_volume_ >= work_.size() && inflight_ == 0 && ready_.empty() && queued_.empty(); }
  unsigned inflight() const { return inflight_; }
  uint64_t bytes_left() const { return bytes_left_; }
  const std::vector<uint64_t>& shipped_by_volume() const { return shipped_by_volume_; }

  // A full point's sweep or a rescan (full_progress.h). Positions are over the volumes laid end
  // to end. Reads are remembered in issue order, so that DurablePosition says how far every read
  // was processed and its records acknowledged; no read ends past the issue limit (one that
  // would is cut there, to whole blocks); and every block before `send_all_below` is sent (a resumed point's [cursor,
  // limit), where a record the staging kept must not outlive the block): a sweep's zero extents
  // as zero records, a rescan's blocks whatever the base holds. Abandon and StopTracking end it.
  void TrackSweep(uint64_t issue_limit, uint64_t send_all_below);
  void StopTracking();
  bool tracking() const { return tracking_; }
  void set_issue_limit(uint64_t limit) { issue_limit_ = limit; }
  // The position of the next byte the work reads; the end of all volumes when none is left.
  uint64_t NextPosition() const;
  // kRescan: where the hole that the next read falls in ends (a position); NextPosition() when
  // it falls in data. A lease may stretch over a hole at little cost: resending it sends one
  // 80-byte zero record per kRecordBytes.
  uint64_t HoleEndAhead() const;
  // Every byte of the work before it was read, processed, and its records' sequence numbers are
  // at most `acked_seq`.
  uint64_t DurablePosition(uint64_t acked_seq);
  void ResetShipped() { shipped_by_volume_.assign(deps_.volumes->size(), 0); }

 private:
  struct Read {
    explicit Read(size_t capacity) : buf(capacity) {}
    AlignedBuffer buf;
    bool busy = false;
    size_t volume = 0;
    uint64_t offset = 0;
    size_t want = 0;  // bytes of the volume this read covers
    size_t got = 0;
    uint64_t ticket = 0;  // TrackSweep: its place in issue order (0: untracked)
    bool hole = false;    // kRescan: a hole, not read (a no-op completes it)
    std::vector<uint64_t> fps;  // per 4 KiB block read, once processed
  };
  // A read of the batch ProcessReady seals: its records are seal_jobs_[.., jobs_end).
  struct Processing {
    size_t slot = 0;
    size_t jobs_end = 0;
    uint64_t reserved = 0;     // what Issue reserved in the bucket for it
    uint64_t frame_bytes = 0;  // framed for it, the sink's share included
    uint64_t last_seq = 0;     // of its last record (0: none)
  };
  uint64_t Position(size_t volume, uint64_t offset) const { return volume_base_[volume] + offset; }
  void SubmitRead(size_t slot, size_t len);
  // A free slot whose buffer holds `len` bytes, small ones first; reads_.size() if none.
  size_t FreeSlot(uint64_t len) const;
  uint64_t InflightBytes() const;
  // Queue a completed read's records (a reseal's read is done at once: it sends nothing).
  void QueueRead(Read& r);
  void QueueHole(Read& r);
  // A read's records are framed: its slot is free, its tracked place done (its records end at
  // `last_seq`), and the bucket settled.
  void FinishRead(Read& r, const Processing& p);
  // `fps`: the record's blocks' fingerprints, computed by the sealing threads if `fingerprint`
  // (else already there); `zero`: whether `data` is all zeros, when known.
  void QueueRecord(size_t volume, uint64_t offset, ByteSpan data, uint64_t* fps, bool fingerprint,
                   std::optional<bool> zero = std::nullopt);
  // Seals the queued records on two threads, framing them in order into `frames_` as they are
  // sealed (and passing those to the sink); each frame is counted to its read in `processing_`.
  Status SealAndFrameQueued();

  Deps deps_;
  uint64_t id_base_;
  ParallelSealer* sealer_ = nullptr;
  AckWindow* window_ = nullptr;
  uint64_t point_id_ = 0;
  ReadMode mode_ = ReadMode::kSweep;
  std::vector<std::vector<Extent>> work_;
  std::deque<std::vector<std::vector<Extent>>> queued_;  // AppendWork's batches, oldest first
  std::vector<std::vector<Extent>> holes_;  // SetRescan: per volume, in order
  std::vector<size_t> hole_at_;             // per volume: the first hole not behind the cursor
  std::vector<uint8_t> zeros_;              // kRecordBytes of zeros, for holes' zero records
  std::vector<uint64_t> zero_fps_;          // their fingerprints
  size_t cur_volume_ = 0, cur_run_ = 0;
  uint64_t cur_offset_ = 0;  // within the current run
  uint64_t bytes_left_ = 0;
  std::vector<std::unique_ptr<Read>> reads_;
  unsigned inflight_ = 0;
  std::vector<size_t> ready_;            // completed reads' slots, in completion order
  std::vector<Processing> processing_;  // the reads ProcessReady seals now, in that order
  std::vector<SealJob> seal_jobs_;      // their records; [0, seal_jobs_queued_) in use
  size_t seal_jobs_queued_ = 0;
  Bytes fingerprints_;
  Bytes frames_;
  Sink sink_;
  std::vector<uint64_t> shipped_by_volume_;
  std::vector<uint64_t> volume_base_;  // each volume's first position; back(): the end of all
  // TrackSweep: reads in issue order, from ticket first_ticket_.
  struct Tracked {
    uint64_t start = 0;     // position of its first byte
    uint64_t last_seq = 0;  // of its last record (once done)
    bool done = false;
  };
  bool tracking_ = false;
  uint64_t issue_limit_ = UINT64_MAX, send_all_below_ = 0;
  std::deque<Tracked> tracked_;
  uint64_t first_ticket_ = 1;
};

}  // namespace blockrep::agent
