#include "read_pipeline.h"

#include <algorithm>

#include "blockrep/base/check.h"
#include "blockrep/net/wire.h"

namespace blockrep::agent {
namespace {
constexpr uint8_t kOpRead = 3;
}  // namespace

const char* ReadModeName(ReadMode m) {
  switch (m) {
    case ReadMode::kSweep: return "sweep";
    case ReadMode::kShip: return "ship";
    case ReadMode::kRescan: return "rescan";
    case ReadMode::kReseal: return "reseal";
  }
  return "?";
}

ReadPipeline::ReadPipeline(Deps deps, uint64_t id_base) : deps_(std::move(deps)), id_base_(id_base) {
  BR_CHECK(deps_.ring && deps_.volumes && deps_.fingerprinter && deps_.seal && deps_.base && deps_.bucket &&
           deps_.counters);
  for (unsigned i = 0; i < kSmallReadsMax; ++i) reads_.push_back(std::make_unique<Read>(kSmallReadBytes));
  for (unsigned i = 0; i < kLargeReadsMax; ++i) reads_.push_back(std::make_unique<Read>(kReadBytes));
  ResetShipped();
  volume_base_.push_back(0);
  for (const auto& v : *deps_.volumes) volume_base_.push_back(volume_base_.back() + v->size_bytes);
}

void ReadPipeline::TrackSweep(uint64_t issue_limit, uint64_t send_all_below) {
  tracking_ = true;
  issue_limit_ = issue_limit;
  send_all_below_ = send_all_below;
  first_ticket_ += tracked_.size();
  tracked_.clear();
}

void ReadPipeline::StopTracking() {
  tracking_ = false;
  issue_limit_ = UINT64_MAX;
  send_all_below_ = 0;
  first_ticket_ += tracked_.size();
  tracked_.clear();
}

uint64_t ReadPipeline::NextPosition() const {
  size_t v = cur_volume_, run = cur_run_;
  uint64_t off = cur_offset_;
  while (v < work_.size()) {
    const std::vector<Extent>& runs = work_[v];
    if (run < runs.size()) {
      if (off < runs[run].length) return Position(v, runs[run].offset + off);
      ++run;
      off = 0;
      continue;
    }
    ++v;
    run = 0;
    off = 0;
  }
  return volume_base_.back();
}

uint64_t ReadPipeline::DurablePosition(uint64_t acked_seq) {
  BR_CHECK(tracking_);
  while (!tracked_.empty() && tracked_.front().done && tracked_.front().last_seq <= acked_seq) {
    tracked_.pop_front();
    ++first_ticket_;
  }
  return tracked_.empty() ? NextPosition() : tracked_.front().start;
}

void ReadPipeline::StartSession(ParallelSealer* sealer, AckWindow* window, Sink sink) {
  BR_CHECK(inflight_ == 0);
  sealer_ = sealer;
  window_ = window;
  sink_ = std::move(sink);
}

void ReadPipeline::SetWork(std::vector<std::vector<Extent>> work, ReadMode mode) {
  BR_CHECK(work.size() == deps_.volumes->size());
  work_ = std::move(work);
  holes_.assign(work_.size(), {});
  hole_at_.assign(work_.size(), 0);
  queued_.clear();
  mode_ = mode;
  cur_volume_ = cur_run_ = 0;
  cur_offset_ = 0;
  bytes_left_ = 0;
  for (const auto& runs : work_)
    for (const Extent& e : runs) bytes_left_ += e.length;
}

void ReadPipeline::AppendWork(std::vector<std::vector<Extent>> work) {
  BR_CHECK(work.size() == deps_.volumes->size());
  BR_CHECK(mode_ == ReadMode::kShip);
  for (const auto& runs : work)
    for (const Extent& e : runs) bytes_left_ += e.length;
  queued_.push_back(std::move(work));
}

void ReadPipeline::StartNextBatch() {
  BR_CHECK(BatchDrained());
  work_ = std::move(queued_.front());
  queued_.pop_front();
  cur_volume_ = cur_run_ = 0;
  cur_offset_ = 0;
}

void ReadPipeline::SetWholeVolumes(ReadMode mode) {
  std::vector<std::vector<Extent>> work;
  for (const auto& v : *deps_.volumes) work.push_back({Extent{0, v->size_bytes}});
  SetWork(std::move(work), mode);
}

Status ReadPipeline::SetRescan(uint64_t from) {
  std::vector<std::vector<Extent>> work(deps_.volumes->size());
  for (size_t v = 0; v < work.size(); ++v) {
    const uint64_t size = (*deps_.volumes)[v]->size_bytes, start = from - std::min(from, volume_base_[v]);
    if (start < size) work[v].push_back(Extent{start, size - start});
  }
  SetWork(std::move(work), ReadMode::kRescan);
  for (size_t v = 0; v < deps_.volumes->size(); ++v) {
    const Volume& vol = *(*deps_.volumes)[v];
    if (work_[v].empty()) continue;
    const uint64_t start = work_[v].front().offset;
    BR_ASSIGN_OR_RETURN(std::vector<Extent> data, vol.DataExtents());
    uint64_t at = 0;
    auto hole = [&](uint64_t a, uint64_t b) {
      a = std::max(a, start);
      if (b > a) holes_[v].push_back(Extent{a, b - a});
    };
    for (const Extent& e : data) {
      hole(at, e.offset);
      at = e.offset + e.length;
    }
    hole(at, vol.size_bytes);
  }
  return Status::Ok();
}

uint64_t ReadPipeline::HoleEndAhead() const {
  const uint64_t next = NextPosition();
  for (size_t v = 0; v < holes_.size() && v < work_.size(); ++v) {
    if (next < volume_base_[v] || next >= volume_base_[v + 1]) continue;
    const uint64_t pos = next - volume_base_[v];
    for (size_t h = v == cur_volume_ ? hole_at_[v] : 0; h < holes_[v].size(); ++h) {
      const Extent& e = holes_[v][h];
      if (e.offset > pos) break;
      if (pos < e.offset + e.length) return volume_base_[v] + e.offset + e.length;
    }
    break;
  }
  return next;
}

std::vector<std::vector<Extent>> ReadPipeline::TakeWork() {
  BR_CHECK(queued_.empty());  // only a resumed point's own work, never tracker batches
  std::vector<std::vector<Extent>> w = std::move(work_);
  SetWork(std::vector<std::vector<Extent>>(deps_.volumes->size()), mode_);
  return w;
}

void ReadPipeline::SubmitRead(size_t slot, size_t len) {
  Read& r = *reads_[slot];
  io_uring_sqe* sqe = deps_.ring->Sqe();
  io_uring_prep_read(sqe, (*deps_.volumes)[r.volume]->fd.get(), r.buf.data() + r.got, static_cast<unsigned>(len),
                     r.offset + r.got);
  io_uring_sqe_set_data64(sqe, UserData(id_base_ + slot, kOpRead));
  ++inflight_;
}

size_t ReadPipeline::FreeSlot(uint64_t len) const {
  const size_t first = len <= kSmallReadBytes ? 0 : kSmallReadsMax;  // small slots come first
  for (size_t slot = first; slot < reads_.size(); ++slot)
    if (!reads_[slot]->busy) return slot;
  return reads_.size();
}

uint64_t ReadPipeline::InflightBytes() const {
  uint64_t bytes = 0;
  for (const auto& r : reads_)
    if (r->busy) bytes += r->want;
  return bytes;
}

Status ReadPipeline::Issue(const std::function<bool(uint64_t inflight_bytes)>& room) {
  while (cur_volume_ < work_.size() && inflight_ < kReadsMax && deps_.ring->HasRoom(2) && room(InflightBytes())) {
    const std::vector<Extent>& runs = work_[cur_volume_];
    if (cur_run_ >= runs.size()) {
      ++cur_volume_;
      cur_run_ = 0;
      cur_offset_ = 0;
      continue;
    }
    const Extent& run = runs[cur_run_];
    if (cur_offset_ >= run.length) {
      ++cur_run_;
      cur_offset_ = 0;
      continue;
    }
    // The next read: kReadBytes of the run, or in a rescan the hole the cursor is in (up to
    // kHoleStepBytes), or the data up to the next hole.
    const uint64_t pos = run.offset + cur_offset_, run_end = run.offset + run.length;
    uint64_t len = std::min<uint64_t>(kReadBytes, run_end - pos);
    bool hole = false;
    if (cur_volume_ < holes_.size()) {
      const std::vector<Extent>& hs = holes_[cur_volume_];
      size_t& h = hole_at_[cur_volume_];
      while (h < hs.size() && hs[h].offset + hs[h].length <= pos) ++h;
      if (h < hs.size() && hs[h].offset <= pos) {
        hole = true;
        len = std::min<uint64_t>({kHoleStepBytes, hs[h].offset + hs[h].length - pos, run_end - pos});
      } else if (h < hs.size()) {
        len = std::min<uint64_t>(len, hs[h].offset - pos);
      }
    }
    if (tracking_ && Position(cur_volume_, pos + len) > issue_limit_) {
      // The lease ends here: the read is cut at it, to whole blocks of the volume (O_DIRECT), or
      // waits until the agent extends it (FullProgress::Save).
      const uint64_t room = issue_limit_ - std::min(issue_limit_, Position(cur_volume_, pos));
      len = room / kTrackBlockBytes * kTrackBlockBytes;
      if (len == 0) break;
    }
    if (mode_ == ReadMode::kRescan && pos + len > deps_.base->known_end(cur_volume_)) break;
    // A hole reads nothing: any slot does. A read longer than a small buffer waits for a large one.
    const size_t slot = FreeSlot(hole ? 0 : (len + kTrackBlockBytes - 1) / kTrackBlockBytes * kTrackBlockBytes);
    if (slot == reads_.size()) break;
    Read& r = *reads_[slot];
    BR_CHECK(hole || r.buf.size() >= len);
    r.busy = true;
    r.volume = cur_volume_;
    r.offset = pos;
    r.want = static_cast<size_t>(len);
    r.got = 0;
    r.ticket = 0;
    r.hole = hole;
    if (tracking_) {
      r.ticket = first_ticket_ + tracked_.size();
      tracked_.push_back(Tracked{Position(r.volume, r.offset), 0, false});
    }
    cur_offset_ += r.want;
    bytes_left_ -= std::min<uint64_t>(bytes_left_, r.want);
    if (hole) {
      // Nothing to read: a no-op completes it in issue order with the reads.
      io_uring_sqe* sqe = deps_.ring->Sqe();
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, UserData(id_base_ + slot, kOpRead));
      ++inflight_;
      continue;
    }
    // O_DIRECT: whole blocks; the end of the volume shortens the read.
    SubmitRead(slot, (r.want + kTrackBlockBytes - 1) / kTrackBlockBytes * kTrackBlockBytes);
    // Reserve the read's size now (settled at what it really produces in Process), so a bucket
    // in credit lets one read through, not a burst of all the slots.
    deps_.bucket->Reserve(r.want);
  }
  return Status::Ok();
}

Status ReadPipeline::OnCompletion(uint64_t id, int res) {
  BR_CHECK(Owns(id) && inflight_ > 0);
  size_t slot = id - id_base_;
  Read& r = *reads_[slot];
  BR_CHECK(r.busy);
  --inflight_;
  const Volume& v = *(*deps_.volumes)[r.volume];
  if (r.hole) {
    if (res < 0) return ErrnoStatus("io_uring no-op for a hole of volume " + v.path, -res);
    ready_.push_back(slot);
    return Status::Ok();
  }
  if (res < 0) return ErrnoStatus("read volume " + v.path, -res);
  if (res == 0 && r.got < r.want)
    return DataLoss("volume " + v.path + " ended early at byte " + std::to_string(r.offset + r.got) +
                    " (did it shrink?)");
  r.got += static_cast<size_t>(res);
  if (r.got < r.want) {
    // Short read: ask for the rest (O_DIRECT keeps block alignment: got is a multiple).
    SubmitRead(slot, ((r.want - r.got) + kTrackBlockBytes - 1) / kTrackBlockBytes * kTrackBlockBytes);
    return Status::Ok();
  }
  ready_.push_back(slot);
  return Status::Ok();
}

Result<ByteSpan> ReadPipeline::ProcessReady() {
  frames_.clear();
  if (ready_.empty()) return ByteSpan(frames_);
  BR_CHECK(seal_jobs_queued_ == 0);
  processing_.clear();
  size_t taken = 0;
  uint64_t plain_bytes = 0;
  for (; taken < ready_.size() && plain_bytes < kBatchPlainBytesMax; ++taken) {
    Read& r = *reads_[ready_[taken]];
    const size_t jobs_before = seal_jobs_queued_;
    if (r.hole) {
      QueueHole(r);
    } else {
      QueueRead(r);
      if (!r.busy) continue;  // a reseal's read: done already
    }
    for (size_t j = jobs_before; j < seal_jobs_queued_; ++j) plain_bytes += seal_jobs_[j].plain.size();
    processing_.push_back(Processing{ready_[taken], seal_jobs_queued_, r.hole ? 0 : r.want, 0, 0});
  }
  ready_.erase(ready_.begin(), ready_.begin() + static_cast<ptrdiff_t>(taken));
  // The records point into the reads' buffers: sealed before the buffers are handed back.
  const uint64_t seq_before = window_->last_sent();
  BR_RETURN_IF_ERROR(SealAndFrameQueued());
  uint64_t last_seq = seq_before;
  for (Processing& p : processing_) {
    if (p.last_seq == 0) p.last_seq = last_seq;  // no records: done with those before it
    last_seq = p.last_seq;
    Read& r = *reads_[p.slot];
    if (!r.hole && (mode_ == ReadMode::kSweep || mode_ == ReadMode::kShip))
      deps_.seal->Note(r.volume, r.offset, r.fps.data(), r.fps.size());
    FinishRead(r, p);
  }
  processing_.clear();
  return ByteSpan(frames_);
}

void ReadPipeline::Abandon() {
  for (auto& r : reads_) r->busy = false;
  inflight_ = 0;
  ready_.clear();
  processing_.clear();
  seal_jobs_queued_ = 0;
  StopTracking();  // the next session resumes from what was saved, not from this one's reads
}

void ReadPipeline::QueueRecord(size_t volume, uint64_t offset, ByteSpan data, uint64_t* fps, bool fingerprint,
                               std::optional<bool> zero) {
  if (seal_jobs_queued_ == seal_jobs_.size()) seal_jobs_.emplace_back();
  SealJob& job = seal_jobs_[seal_jobs_queued_];
  job.volume = static_cast<uint16_t>(volume);
  job.offset = offset;
  job.plain = data;
  job.zero_known = zero.has_value();
  job.zero = zero.value_or(false);
  job.fps = fps;
  job.fingerprint = fingerprint;
  ++seal_jobs_queued_;
}

Status ReadPipeline::SealAndFrameQueued() {
  BR_CHECK(sealer_ && window_);
  size_t queued = seal_jobs_queued_;
  seal_jobs_queued_ = 0;
  ReadCounters& c = *deps_.counters;
  size_t read = 0;  // processing_[read] is the read `job` belongs to
  // Framed in order as each is sealed, while the other thread seals the next ones.
  auto frame = [&](SealJob& job) -> Status {
    BR_RETURN_IF_ERROR(job.status);
    const size_t index = static_cast<size_t>(&job - seal_jobs_.data());
    while (read < processing_.size() && index >= processing_[read].jobs_end) ++read;
    BR_CHECK(read < processing_.size());
    const RecordHeader& h = job.header;
    deps_.seal->Sent(job.volume, job.offset, job.plain.size());
    fingerprints_.clear();
    if (!h.zero()) {
      ByteWriter w(&fingerprints_);
      for (size_t b = 0; b < FingerprintCount(static_cast<uint32_t>(job.plain.size())); ++b) w.U64(job.fps[b]);
    }
    size_t before = frames_.size();
    const uint64_t seq = window_->last_sent() + 1;
    wire::RecordMsg::AppendEncoded(&frames_, seq, job.record(), fingerprints_);
    const uint64_t frame_bytes = frames_.size() - before;
    window_->Sent(frame_bytes);
    processing_[read].frame_bytes += frame_bytes;
    processing_[read].last_seq = seq;
    ++c.records;
    if (h.flags & kRecordIncompressible) ++c.records_raw;
    if (h.zero()) c.bytes_zero_sent += job.plain.size();
    c.bytes_shipped_plain += job.plain.size();
    shipped_by_volume_[job.volume] += job.plain.size();
    c.bytes_stored += job.header.total_size();
    c.bytes_wire += frame_bytes;
    if (sink_ && frames_.size() >= kSinkFlushBytes) {
      BR_RETURN_IF_ERROR(sink_(ByteSpan(frames_)));
      frames_.clear();
    }
    return Status::Ok();
  };
  return sealer_->SealAll(deps_.codec, point_id_, std::span<SealJob>(seal_jobs_.data(), queued), deps_.fingerprinter,
                          frame);
}

void ReadPipeline::QueueHole(Read& r) {
  BR_CHECK(mode_ == ReadMode::kRescan);
  ReadCounters& c = *deps_.counters;
  c.bytes_holes += r.want;
  // Zeros: their fingerprints are 0, as the seal (StartEmpty) already has them. Where the
  // staging's are not, zero records, at most kRecordBytes each.
  if (zeros_.empty()) {
    zeros_.assign(kRecordBytes, 0);
    zero_fps_.assign(kRecordBytes / kFingerprintBlockBytes, 0);
  }
  const uint64_t end = r.offset + r.want;
  uint64_t run_start = UINT64_MAX;
  auto queue = [&](uint64_t from, uint64_t to) {
    QueueRecord(r.volume, from, ByteSpan(zeros_.data(), to - from), zero_fps_.data(), false, true);
  };
  const uint64_t end_block = (end + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes;
  uint64_t from = r.offset;
  if (tracking_ && Position(r.volume, from) < send_all_below_) {
    // A resumed rescan's [cursor, limit): zeros all along, whatever the base holds.
    const uint64_t all_end = std::min(end, send_all_below_ - volume_base_[r.volume]);
    for (; from < all_end; from += std::min<uint64_t>(kRecordBytes, all_end - from))
      queue(from, std::min<uint64_t>(from + kRecordBytes, all_end));
  }
  for (uint64_t at = from; at < end; at += kFingerprintBlockBytes) {
    if (run_start == UINT64_MAX) {
      // Nothing to send up to the base's next non-zero block: the holes of a spilled table (a
      // sparse volume's; 268 M blocks per TiB) are skipped without looking at each block.
      const uint64_t next = deps_.base->NextNonZero(r.volume, at / kFingerprintBlockBytes, end_block);
      if (next * kFingerprintBlockBytes >= end) break;
      at = std::max(at, next * kFingerprintBlockBytes);
    }
    const bool same = deps_.base->Fingerprint(r.volume, at / kFingerprintBlockBytes) == 0;
    if (!same && run_start == UINT64_MAX) run_start = at;
    if (run_start != UINT64_MAX && (same || at - run_start == kRecordBytes)) {
      queue(run_start, at);
      run_start = same ? UINT64_MAX : at;
    }
  }
  if (run_start != UINT64_MAX) queue(run_start, end);
}

void ReadPipeline::QueueRead(Read& r) {
  ReadCounters& c = *deps_.counters;
  // Each block's fingerprint, once: the seal needs every block read, records carry theirs. A
  // sweep or a tracker batch sends every non-zero extent, so each record's blocks are
  // fingerprinted by the sealing threads with the record; the blocks of an all-zero extent left
  // out have fingerprint 0 (BlockFingerprinter::Block). A rescan compares fingerprints before it
  // knows what to send, and a reseal sends nothing: they fingerprint the whole read here first.
  const size_t blocks = (r.want + kFingerprintBlockBytes - 1) / kFingerprintBlockBytes;
  const bool fps_with_records = mode_ == ReadMode::kSweep || mode_ == ReadMode::kShip;
  std::vector<uint64_t>& fps = r.fps;
  if (fps_with_records) {
    fps.assign(blocks, 0);
  } else {
    fps.resize(blocks);
    for (size_t b = 0; b < blocks; ++b) {
      size_t at = b * kFingerprintBlockBytes;
      fps[b] = deps_.fingerprinter->Block(r.offset + at,
                                          ByteSpan(r.buf.data() + at, std::min(kFingerprintBlockBytes, r.want - at)));
    }
    deps_.seal->Note(r.volume, r.offset, fps.data(), blocks);
  }
  if (mode_ == ReadMode::kReseal) {
    c.bytes_reread_to_seal += r.want;
    r.busy = false;
    deps_.bucket->Settle(r.want, 0);  // nothing was produced
    return;
  }
  c.bytes_read += r.want;
  size_t run_start = 0, run_len = 0;  // a sweep's non-zero extents not yet queued
  auto flush_run = [&] {
    if (run_len == 0) return;
    QueueRecord(r.volume, r.offset + run_start, ByteSpan(r.buf.data() + run_start, run_len),
                &fps[run_start / kFingerprintBlockBytes], true, false);
    run_len = 0;
  };
  for (size_t pos = 0; pos < r.want; pos += kRecordBytes) {
    size_t len = std::min(kRecordBytes, r.want - pos);
    ByteSpan extent(r.buf.data() + pos, len);
    bool zero = IsAllZero(extent);
    if (zero) c.bytes_zero += len;
    if (mode_ == ReadMode::kRescan) {
      // Ship only the runs of blocks whose fingerprint differs from the staging's last point.
      size_t run_start = SIZE_MAX;
      for (size_t b = 0; b * kFingerprintBlockBytes < len; ++b) {
        size_t at = b * kFingerprintBlockBytes;
        uint64_t block_index = (r.offset + pos + at) / kFingerprintBlockBytes;
        uint64_t ours = fps[(pos + at) / kFingerprintBlockBytes];
        bool same = deps_.base->Fingerprint(r.volume, block_index) == ours &&
                    !(tracking_ && Position(r.volume, block_index * kFingerprintBlockBytes) < send_all_below_);
        if (!same && run_start == SIZE_MAX) run_start = at;
        if (same && run_start != SIZE_MAX) {
          QueueRecord(r.volume, r.offset + pos + run_start, extent.subspan(run_start, at - run_start),
                      &fps[(pos + run_start) / kFingerprintBlockBytes], false);
          run_start = SIZE_MAX;
        }
      }
      if (run_start != SIZE_MAX)
        QueueRecord(r.volume, r.offset + pos + run_start, extent.subspan(run_start),
                    &fps[(pos + run_start) / kFingerprintBlockBytes], false);
      continue;
    }
    // Absent from a full point means zero, but only during its first sweep: a tracker batch
    // (incremental point, or a block re-read later in a full one) may be zeroing a range that
    // holds data, so it is sent as a zero record.
    const bool sweep = mode_ == ReadMode::kSweep && !(tracking_ && Position(r.volume, r.offset + pos) < send_all_below_);
    if (sweep) {
      // A sweep's neighbouring non-zero extents go out as one record of up to kSweepRecordBytes.
      if (zero || run_len + len > kSweepRecordBytes) flush_run();
      if (zero) continue;
      if (run_len == 0) run_start = pos;
      run_len += len;
      continue;
    }
    flush_run();
    QueueRecord(r.volume, r.offset + pos, extent, &fps[pos / kFingerprintBlockBytes], !zero, zero);
  }
  flush_run();
}

void ReadPipeline::FinishRead(Read& r, const Processing& p) {
  if (tracking_ && r.ticket >= first_ticket_) {
    BR_CHECK(r.ticket - first_ticket_ < tracked_.size());
    Tracked& t = tracked_[r.ticket - first_ticket_];
    t.last_seq = p.last_seq;
    t.done = true;
  }
  r.busy = false;
  deps_.bucket->Settle(p.reserved, p.frame_bytes);
}

}  // namespace blockrep::agent
