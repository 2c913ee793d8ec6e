#include "agent.h"

#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "blockrep/base/fs.h"
#include "blockrep/crypto/keyfile.h"
#include "fingerprint_cache.h"
#include "point_request.h"
#include "tracker_choice.h"

namespace blockrep::agent {
namespace {

constexpr const char* kProg = "blockrep-agent";
constexpr size_t kReadBytes = ReadPipeline::kReadBytes;
constexpr uint64_t kWindowBytesMax = 32u << 20;  // unacknowledged record bytes
// Ciphertext queued for the socket, counting a full kReadBytes for each read in flight (its records
// are at most the read plus a few KiB of headers, tags and TLS framing: incompressible extents are
// stored raw, never expanded). Without that, 16 reads completing together pushed the queue to
// 24 MiB and the two buffers that hold it (TLS output, socket send) to 83 MiB at peak.
constexpr size_t kUnsentBytesMax = 8u << 20;
// While filesystems are frozen, the last blocks are read and queued at once, up to this much: the
// writers wait on the disk, not on the link, the staging's window or --bandwidth-limit (the
// limiter's debt is paid after the thaw). Past it (a final take this large is rare: it is what was
// written since the last poll), reads wait on the link again and the 5 s watchdog bounds the freeze.
constexpr size_t kFrozenUnsentBytesMax = 64u << 20;
static_assert(kFrozenUnsentBytesMax >= kUnsentBytesMax);
static_assert(kWindowBytesMax >= ReadPipeline::kReadBufferBytesMax, "the window holds every read in flight");
constexpr unsigned kRingEntries = 64;  // its completion queue holds twice as many
static_assert(ReadPipeline::kReadsMax + 16 <= 2 * kRingEntries, "reads in flight, with the channel's, fit the completion queue");
constexpr uint64_t kReadIdBase = 16;
static_assert(kReadIdBase > StagingLink::kChannelId);
// Fingerprints a rescan holds (8 bytes per 4 KiB: 32 GiB of volumes); larger sets read in full.

}  // namespace

Agent::Agent(Options opts) : opts_(std::move(opts)) { bucket_.SetRate(opts_.bandwidth_bps); }
Agent::~Agent() { Teardown(); }

Status Agent::Prepare() {
  BR_CHECK(opts_.checkpoint_lease_bytes >= Options::kCheckpointLeaseBytesMin && opts_.checkpoint_every_bytes > 0);
  BR_RETURN_IF_ERROR(wire::ValidateServerId(opts_.server_id));
  {
    BR_ASSIGN_OR_RETURN(std::vector<DataKey> keys, LoadDataKeys(opts_.key_file));
    keys_.current = keys.back();  // the current key seals; older ones only tell the staging the chain is ours
    for (size_t i = 0; i + 1 < keys.size(); ++i) keys_.retired_ids.push_back(keys[i].key_id);
    for (DataKey& k : keys) OPENSSL_cleanse(k.bytes.data(), k.bytes.size());
  }
  if (opts_.volumes.empty()) return InvalidArgument("no --volume given: name at least one device or image");
  BR_RETURN_IF_ERROR(StartMetrics());
  if (opts_.volumes.size() > wire::kMaxVolumes)
    return InvalidArgument("at most " + std::to_string(wire::kMaxVolumes) + " volumes per server");
  for (const std::string& path : opts_.volumes) {
    BR_ASSIGN_OR_RETURN(auto v, Volume::Open(path));
    volumes_.push_back(std::move(v));
  }
  if (!opts_.state_dir.empty()) BR_RETURN_IF_ERROR(MakeDirs(opts_.state_dir, 0700));
  BR_ASSIGN_OR_RETURN(auto fp, BlockFingerprinter::Create(keys_.current));
  seal_.fingerprinter = fp;
  BR_ASSIGN_OR_RETURN(seal_.keys, SealKeys::Create(keys_.current, opts_.server_id));
  seal_.point = std::make_unique<PointSeal>(seal_.keys.get(), SpillDir());
  base_.inbox().set_spill_dir(SpillDir());
  BR_ASSIGN_OR_RETURN(ring_, opts_.make_ring ? opts_.make_ring(kRingEntries) : Ring::Create(kRingEntries));
  std::vector<HostPort> stagings{opts_.staging};
  stagings.insert(stagings.end(), opts_.other_stagings.begin(), opts_.other_stagings.end());
  link_ = std::make_unique<StagingLink>(ring_.get(), std::move(stagings), kUnsentBytesMax + kReadBytes, opts_.connect);
  BR_RETURN_IF_ERROR(link_->Init(opts_.tls));
  reads_ = std::make_unique<ReadPipeline>(
      ReadPipeline::Deps{.ring = ring_.get(), .volumes = &volumes_, .fingerprinter = &*seal_.fingerprinter,
                         .seal = seal_.point.get(), .base = &base_.inbox(), .bucket = &bucket_, .counters = &summary_,
                         .codec = opts_.codec},
      kReadIdBase);
  // Reported with the point (one line), so that a failing run prints only its error.
  BR_ASSIGN_OR_RETURN(tracker_, ChooseTracker(opts_.tracker, opts_.server_id, volumes_));
  std::vector<std::string> paths;
  for (const auto& v : volumes_) paths.push_back(v->path);
  freeze_.Plan(tracker_.tracker != nullptr, paths, opts_.pre_hook, opts_.post_hook);
  full_ = std::make_unique<FullProgress>(opts_.state_dir, BootId());
  BR_RETURN_IF_ERROR(chain_.Load(opts_.state_dir, opts_.server_id));
  if (tracker_.tracker) chain_.RaiseTo(tracker_.tracker->synced_point());
  return Status::Ok();
}

std::vector<uint64_t> Agent::VolumeSizes() const {
  std::vector<uint64_t> sizes;
  for (const auto& v : volumes_) sizes.push_back(v->size_bytes);
  return sizes;
}

bool Agent::KeyRotated() const {
  const auto& h = link_->hello();
  return h && h->chain_key_id != 0 && h->chain_key_id != keys_.current.key_id;
}

void Agent::SetPhase(PointPhase p) {
  if (p == point_.phase) return;
  Log(kProg, "point " + std::to_string(point_.id) + ": " + PhaseName(point_.phase) + " -> " + PhaseName(p));
  point_.phase = p;
}

bool Agent::PollTracker(bool with_inflight, bool final_take, bool append) {
  if (!tracker_.tracker) return false;
  uint64_t now = MonotonicNs();
  uint64_t found = 0;
  // The end of a point must hold every completed write, reported or not.
  tracker_.tracker->MarkPendingWrites(final_take);
  std::vector<std::vector<Extent>> work(volumes_.size());
  for (size_t v = 0; v < volumes_.size(); ++v) {
    work[v] = tracker_.tracker->TakeDirty(v, with_inflight);
    if (final_take && tracker_.tracker->overflowed(v)) {
      // A gap in tracking during this point (a request too large to mark, or a run of our
      // program the kernel skipped): only reading everything makes the point whole. Zero
      // extents go as zero records, since the base may hold data there.
      Log(kProg, "tracking of " + volumes_[v]->path + " had a gap during point " + std::to_string(point_.id) +
                     "; reading the whole volume before ending the point");
      work[v] = {Extent{0, volumes_[v]->size_bytes}};
    }
    for (const Extent& e : work[v]) found += e.length;
  }
  // A tracker batch ships every block it names, in every kind of point: in a rescan, a block
  // written back to the base's content after the sweep sent it must be sent again too.
  if (append) {
    if (found != 0) reads_->AppendWork(std::move(work));
  } else {
    reads_->SetWork(std::move(work), ReadMode::kShip);
  }
  status_.NoteTake(now, found);  // lag: the batch is durable once the ACK passes its last record
  return found != 0;
}

void Agent::StartResume(uint64_t last_point) {
  // The kept records' fingerprints are known only to the process that read them; another one
  // re-reads their blocks first (PointPhase::kResealing).
  const bool reseal = !seal_.point->KnowsBase(last_point, VolumeSizes());
  // Work = what became dirty since the last take, plus what was taken but whose latest read is
  // not known to be durable. The staging keeps the durable records; later records win over them.
  std::vector<std::vector<Extent>> taken_all(volumes_.size()), undurable(volumes_.size());
  tracker_.tracker->MarkPendingWrites(false);
  for (size_t v = 0; v < volumes_.size(); ++v) {
    taken_all[v] = tracker_.tracker->TakeDirty(v, reseal);  // also marks the fresh ones undurable
    undurable[v] = tracker_.tracker->UndurableRuns(v);      // so this is their union
  }
  if (reseal) {
    point_.send_work = std::move(undurable);
    reads_->SetWork(std::move(taken_all), ReadMode::kReseal);  // every block the kept records can hold
  } else {
    point_.send_work.clear();
    reads_->SetWork(std::move(undurable), ReadMode::kShip);
  }
  status_.Restart(MonotonicNs());
  summary_.mode_reason = "resuming point " + std::to_string(point_.id) +
                         ": its durable records are kept on the staging" +
                         (reseal ? "; re-reading the blocks taken since point " + std::to_string(last_point) +
                                       " to seal the point (this process did not read them)"
                                 : "");
}

FullPointId Agent::FullId(uint64_t point_id, uint64_t time_ns, uint64_t base_point) const {
  return FullPointId{opts_.server_id, point_id, time_ns, keys_.current.key_id, base_point, VolumeSizes()};
}

bool Agent::LoadWholeCheckpoint(uint64_t last_point, PointSeal* restored) {
  const auto& hello = link_->hello();
  if (!hello || hello->pending_point_id == 0) return false;
  // Only a point that reads whole volumes keeps a checkpoint: a full point, or a rescan on the
  // chain's last point. (An interrupted incremental point resumes from the tracker's bitmaps.)
  const uint64_t base = hello->pending_base_point;
  if (base != 0 && base != last_point) return false;
  const std::string what = "the staging kept interrupted " + std::string(base == 0 ? "full " : "") + "point " +
                           std::to_string(hello->pending_point_id) +
                           (base == 0 ? "" : " (on point " + std::to_string(base) + ")");
  std::string why;
  if (hello->pending_point_id != point_.id) {
    why = "this agent's next point is " + std::to_string(point_.id);
  } else if (full_->Load(FullId(hello->pending_point_id, hello->pending_time_ns, base), &why)) {
    Status st = restored->StartEmpty(VolumeSizes());
    if (st.ok()) st = full_->Restore(restored);
    if (st.ok()) return true;
    why = st.message();
  }
  if (!why.empty()) Log(kProg, what + "; not resuming it from this agent's checkpoint: " + why);
  return false;
}

Status Agent::StartResumeWhole(uint64_t last_point, PointSeal restored) {
  const auto& hello = *link_->hello();
  point_.time_ns = hello.pending_time_ns;  // the kept BEGIN_POINT's: the seal binds it
  *seal_.point = std::move(restored);
  point_.final_with_inflight = true;
  const uint64_t cursor = full_->cursor(), limit = full_->limit();
  if (point_.mode == PointMode::kResumeRescan) {
    // From the cursor on, compared with the base as a rescan is ([cursor, limit) sent whatever the
    // base holds); the caller loads the base's fingerprints once the point is open.
    BR_RETURN_IF_ERROR(reads_->SetRescan(cursor));
    reads_->TrackSweep(limit, limit);
    const uint64_t to_read = reads_->bytes_left();
    full_saved_ns_ = MonotonicNs();
    full_saved_read_ = summary_.bytes_read;
    status_.Restart(MonotonicNs());
    summary_.base_point = last_point;
    summary_.resumed = true;
    summary_.resumed_rescan = true;
    summary_.mode_reason = "resuming rescan " + std::to_string(point_.id) + " against point " + std::to_string(last_point) +
                           " at byte " + std::to_string(cursor) + " of " + std::to_string(full_->total_bytes()) +
                           ": the staging kept its durable records, this agent's checkpoint their fingerprints; " +
                           std::to_string(to_read >> 20) + " MiB left to compare";
    SetState(AgentState::kRescan, summary_.mode_reason);
    return Status::Ok();
  }
  // [cursor, limit) in full: the earlier try may have sent records anywhere there, and one the
  // staging kept must be overwritten even where the volume now holds zeros. After it, the data.
  std::vector<std::vector<Extent>> work(volumes_.size());
  uint64_t base = 0, to_read = 0;
  for (size_t v = 0; v < volumes_.size(); ++v) {
    const uint64_t size = volumes_[v]->size_bytes, end = base + size;
    if (cursor < end && limit > base && limit > cursor) {
      uint64_t from = std::max(cursor, base) - base, to = std::min(limit, end) - base;
      if (to > from) work[v].push_back(Extent{from, to - from});
    }
    if (limit < end) {
      uint64_t from = std::max(limit, base) - base;
      BR_ASSIGN_OR_RETURN(std::vector<Extent> data, volumes_[v]->DataExtents());
      for (const Extent& e : data) {
        uint64_t s = std::max(e.offset, from), t = e.offset + e.length;
        if (t <= s) continue;
        if (!work[v].empty() && work[v].back().offset + work[v].back().length == s) work[v].back().length += t - s;
        else work[v].push_back(Extent{s, t - s});
      }
    }
    for (const Extent& e : work[v]) to_read += e.length;
    base = end;
  }
  reads_->SetWork(std::move(work), ReadMode::kSweep);
  reads_->TrackSweep(limit, limit);
  full_saved_ns_ = MonotonicNs();
  full_saved_read_ = summary_.bytes_read;
  status_.Restart(MonotonicNs());
  summary_.base_point = 0;
  summary_.resumed = true;
  summary_.mode_reason = "resuming full point " + std::to_string(point_.id) + " at byte " + std::to_string(cursor) + " of " +
                         std::to_string(full_->total_bytes()) + ": the staging kept its durable records, this agent's checkpoint their fingerprints; " +
                         std::to_string(to_read >> 20) + " MiB left to read";
  SetState(last_point == 0 ? AgentState::kInitialSync : AgentState::kRescan, summary_.mode_reason);
  return Status::Ok();
}

Status Agent::CheckpointFull() {
  if (!reads_->tracking() || !full_->active()) return Status::Ok();
  const uint64_t now = MonotonicNs(), total = full_->total_bytes();
  const uint64_t durable = reads_->DurablePosition(link_->window().acked());
  const uint64_t next = reads_->NextPosition();
  const uint64_t limit = full_->limit();
  const bool extend = next < total && next + opts_.checkpoint_lease_bytes / 2 > limit;
  // Every checkpoint_every_bytes read, not of cursor movement: a rescan's cursor crosses the holes
  // of a sparse image 64 MiB per step, and a TiB of them is not 16 K saves.
  const bool advance = durable > full_->cursor() &&
                       (summary_.bytes_read >= full_saved_read_ + opts_.checkpoint_every_bytes ||
                        now >= full_saved_ns_ + kFullSaveEveryNs);
  if (!extend && !advance) return Status::Ok();
  full_saved_ns_ = now;
  full_saved_read_ = summary_.bytes_read;
  uint64_t new_limit = limit;
  if (extend) {
    // Over a rescan's hole the lease runs to the hole's end, up to kFullHoleLeaseBytes: resending
    // a hole costs a zero record per 64 KiB, and a sparse TiB is not 32 K saves.
    const uint64_t ahead = std::max(next + opts_.checkpoint_lease_bytes,
                                    std::min(reads_->HoleEndAhead(), next + kFullHoleLeaseBytes));
    new_limit = (ahead + kBlockBytes - 1) / kBlockBytes * kBlockBytes;
  }
  Status st = full_->Save(durable, new_limit, *seal_.point);
  if (st.ok()) {
    reads_->set_issue_limit(full_->limit());
    return Status::Ok();
  }
  // Without a checkpoint an interrupted sync reads everything again; but a stale one that stays
  // must keep its lease, so reads past it wait until it is gone.
  Log(kProg, "warning: cannot save the progress of point " + std::to_string(point_.id) + " in " + opts_.state_dir +
                 ": " + st.message() + "; if it is interrupted, it is read again from the start");
  reads_->StopTracking();
  return full_->Drop().Annotate("the stale checkpoint of point " + std::to_string(point_.id) +
                                " cannot be removed either: free space in, or fix, the state directory");
}

Status Agent::StartPoint(uint64_t last_point) {
  point_.id = chain_.NextPointId(last_point);  // never an id acknowledged before
  point_.acked = false;
  SetPhase(PointPhase::kIdle);
  reads_->set_point(point_.id);
  // The link is this agent's history: the newest point it saw acknowledged, which after a
  // rollback is newer than the chain's head (the points between are lost; this one supersedes
  // them), else the chain's head (its MAC once the base's seals are loaded, BaseLoad::Finish).
  point_.chain_link = chain_.LinkFor(last_point);
  summary_.point_id = point_.id;
  base_.Cancel();
  const auto& hello = link_->hello();
  point_.final_with_inflight = false;
  PointSeal restored(seal_.keys.get(), SpillDir());
  const bool whole_checkpoint = LoadWholeCheckpoint(last_point, &restored);
  PointPlan plan = DecidePoint(CollectFacts(last_point, hello ? &*hello : nullptr, tracker_.tracker.get(), volumes_,
                                            keys_.current.key_id, chain_.rescan_due(), whole_checkpoint));
  link_->ForgetPendingPoint();  // only the first point of a session can resume
  point_.mode = plan.mode;
  if (plan.mode == PointMode::kResumeFull || plan.mode == PointMode::kResumeRescan) {
    BR_RETURN_IF_ERROR(StartResumeWhole(last_point, std::move(restored)));
    BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kResumePoint, wire::ResumePoint{point_.id}.Encode()));
    // A rescan's base fingerprints, as a new rescan in a new process gets them: the state
    // directory's cache if the base's seals vouch for it, else the staging's copy.
    if (plan.mode == PointMode::kResumeRescan)
      BR_RETURN_IF_ERROR(base_.StartRescan(last_point, VolumeSizes(), {}, opts_.state_dir, opts_.server_id, Sender()));
    SetPhase(base_.loading() ? PointPhase::kLoadingBase : PointPhase::kReading);
    Log(kProg, "server '" + opts_.server_id + "': " + summary_.mode_reason + " (tracker " + tracker_.note + ")");
    return Status::Ok();
  }
  // Any checkpoint left is of a point the staging no longer offers (a full point starts a new one).
  if (Status dropped = full_->Drop(); !dropped.ok()) Log(kProg, "warning: " + dropped.message());
  if (plan.mode == PointMode::kResume) {
    summary_.base_point = last_point;
    summary_.resumed = true;
    point_.time_ns = link_->hello()->pending_time_ns;  // the kept BEGIN_POINT's: the seal binds it
    StartResume(last_point);
    BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kResumePoint, wire::ResumePoint{point_.id}.Encode()));
    if (reads_->mode() == ReadMode::kReseal) {
      BR_RETURN_IF_ERROR(base_.Start(last_point, VolumeSizes(), opts_.state_dir, opts_.server_id, Sender()));
      SetPhase(PointPhase::kLoadingBase);
    } else {
      SetPhase(PointPhase::kReading);
    }
    Log(kProg, "server '" + opts_.server_id + "': resuming point " + std::to_string(point_.id) + " (" +
                   summary_.mode_reason + ")");
    SetState(status_.behind() ? AgentState::kBacklog : AgentState::kContinuous, "");
    return Status::Ok();
  }
  summary_.mode_reason = plan.reason;
  status_.Restart(MonotonicNs());
  const bool whole = plan.mode == PointMode::kFull || plan.mode == PointMode::kRescan;
  if (whole) {
    // Clear before read: what changes from here on is caught for the next point. Until this
    // point is acknowledged the tracker is synced to nothing, so an agent killed meanwhile reads
    // everything again rather than resuming a point whose reads no bitmap recorded.
    if (tracker_.tracker) {
      tracker_.tracker->ClearDirty();
      tracker_.tracker->MarkSynced(0);
    }
    if (plan.mode == PointMode::kFull) {
      // A full point has no base: the holes of an image file are zeros it would neither ship nor
      // seal, so only its data is read (Volume::DataExtents). A rescan reads the data and compares
      // the holes as zeros with the base, which may hold data there (ReadPipeline::SetRescan).
      std::vector<std::vector<Extent>> work;
      uint64_t data_bytes = 0, volume_bytes = 0;
      for (const auto& v : volumes_) {
        BR_ASSIGN_OR_RETURN(std::vector<Extent> extents, v->DataExtents());
        for (const Extent& e : extents) data_bytes += e.length;
        volume_bytes += v->size_bytes;
        work.push_back(std::move(extents));
      }
      if (data_bytes < volume_bytes)
        Log(kProg, "full point " + std::to_string(point_.id) + ": " + std::to_string((volume_bytes - data_bytes) >> 20) +
                       " MiB of holes in image files are not read (SEEK_HOLE), " + std::to_string(data_bytes >> 20) +
                       " MiB of data are");
      reads_->SetWork(std::move(work), ReadMode::kSweep);
    } else {
      BR_RETURN_IF_ERROR(reads_->SetRescan());
    }
  } else if (plan.adopt_last_point) {
    // The blocks in flight are all in the chain's last point, which this tracker sent: only what
    // was written since is read.
    tracker_.tracker->MarkSynced(last_point);
    PollTracker(false, false);
  } else {
    // Every block since the last acknowledged point is read again, and is undurable until its
    // new record is acknowledged (a staging restart may have dropped the point that held it).
    tracker_.tracker->MarkInflightUndurable();
    PollTracker(true, false);
  }
  wire::BeginPoint b;
  b.point_id = point_.id;
  // The staging refuses a point not later than the chain's last (its clock orders the chain):
  // after this clock stepped back, stay just past the last point instead of stalling.
  b.time_ns = std::max(NowUtcNs(), (link_->hello() ? link_->hello()->last_time_ns : 0) + 1);
  b.base_point = plan.mode == PointMode::kFull ? 0 : last_point;
  summary_.base_point = b.base_point;
  b.flags = 0;  // no filesystem freeze yet: the point is crash-consistent only if volumes are idle
  for (const auto& v : volumes_) b.volume_sizes.push_back(v->size_bytes);
  point_.time_ns = b.time_ns;
  if (tracker_.tracker) tracker_.tracker->NoteSending(b.time_ns);
  if (whole) {
    // Its progress is saved as it goes, so an interrupted sync or rescan goes on from there
    // (full_progress.h).
    if (Status st = full_->Begin(FullId(point_.id, b.time_ns, b.base_point), opts_.checkpoint_lease_bytes); !st.ok())
      Log(kProg, "warning: cannot keep the progress of point " + std::to_string(point_.id) + " in " + opts_.state_dir +
                     ": " + st.message() + "; if it is interrupted, it is read again from the start");
    if (full_->active()) {
      reads_->TrackSweep(full_->limit(), 0);
      full_saved_ns_ = MonotonicNs();
      full_saved_read_ = summary_.bytes_read;
    }
  }
  BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kBeginPoint, b.Encode()));
  SetPhase(PointPhase::kReading);
  // After an alarm (the staging's chain is not what this agent saw acknowledged) a rescan compares
  // with the staging's own fingerprints, not with what this agent remembers of the point.
  const bool remember = plan.mode == PointMode::kRescan && !chain_.rescan_due();
  std::vector<FingerprintTable> sent_base = remember ? seal_.point->TakeBase(last_point, VolumeSizes())
                                                     : std::vector<FingerprintTable>();
  if (whole) {
    BR_RETURN_IF_ERROR(seal_.point->StartEmpty(VolumeSizes()));  // every non-zero block will be read
  } else if (!seal_.point->KnowsBase(last_point, VolumeSizes())) {
    BR_RETURN_IF_ERROR(base_.Start(last_point, VolumeSizes(), opts_.state_dir, opts_.server_id, Sender()));
    SetPhase(PointPhase::kLoadingBase);
  }
  if (plan.mode == PointMode::kRescan) {
    BR_RETURN_IF_ERROR(base_.StartRescan(last_point, VolumeSizes(), std::move(sent_base),
                                         remember ? opts_.state_dir : std::string(), opts_.server_id, Sender()));
    if (base_.loading()) SetPhase(PointPhase::kLoadingBase);
  }
  Log(kProg, "server '" + opts_.server_id + "': sending point " + std::to_string(point_.id) + " (" +
                 std::to_string(volumes_.size()) + " volume(s), " +
                 (plan.mode == PointMode::kFull ? "full: " : "incremental on point " + std::to_string(b.base_point) + ": ") +
                 summary_.mode_reason + "; tracker " + tracker_.note + "; " + freeze_.note() + ")");
  if (whole) {
    SetState(last_point == 0 ? AgentState::kInitialSync : AgentState::kRescan, summary_.mode_reason);
  } else if (state_.first != AgentState::kBacklog) {
    SetState(status_.behind() ? AgentState::kBacklog : AgentState::kContinuous, "");
  }
  return Status::Ok();
}

Status Agent::RescanUntrustedBase() {
  point_.mode = PointMode::kRescan;
  if (reads_->mode() == ReadMode::kReseal) {
    // A resumed point: the kept records may hold any block taken since the base, whatever the
    // staging's base says, so those are sent whatever their fingerprint.
    for (size_t v = 0; v < volumes_.size(); ++v)
      for (const Extent& e : reads_->work()[v]) base_.inbox().MarkUnknown(v, e.offset, e.length);
    point_.send_work.clear();
  }
  if (tracker_.tracker) {
    tracker_.tracker->ClearDirty();
    tracker_.tracker->MarkSynced(0);
  }
  BR_RETURN_IF_ERROR(reads_->SetRescan());
  BR_RETURN_IF_ERROR(seal_.point->StartEmpty(VolumeSizes()));
  summary_.mode_reason = "rescan against point " + std::to_string(point_.id - 1) + " (it does not match its seal)";
  SetState(AgentState::kRescan, summary_.mode_reason);
  return Status::Ok();
}

Status Agent::IssueReads() {
  if (point_.phase == PointPhase::kLoadingBase) {
    if (!base_.ready()) return Status::Ok();
    BR_ASSIGN_OR_RETURN(BaseLoad::Outcome outcome, base_.Finish(seal_.point.get(), &point_.chain_link, Sender()));
    switch (outcome) {
      case BaseLoad::Outcome::kRefetching: return Status::Ok();
      case BaseLoad::Outcome::kAdopted:
        SetPhase(reads_->mode() == ReadMode::kReseal ? PointPhase::kResealing : PointPhase::kReading);
        break;
      case BaseLoad::Outcome::kUntrusted:
        BR_RETURN_IF_ERROR(RescanUntrustedBase());
        SetPhase(PointPhase::kReading);
        break;
      case BaseLoad::Outcome::kCompare:
        SetPhase(PointPhase::kReading);
        break;
    }
  }
  const bool frozen = freeze_.frozen();
  return reads_->Issue([&](uint64_t inflight_bytes) {
    if (frozen) return link_->unsent_bytes() + inflight_bytes < kFrozenUnsentBytesMax;
    return bucket_.WaitNs(MonotonicNs()) == 0 && link_->window().unacked_bytes() + inflight_bytes < kWindowBytesMax &&
           link_->unsent_bytes() + inflight_bytes < kUnsentBytesMax;
  });
}

Status Agent::OnFrame(const wire::Frame& f) {
  switch (f.type) {
    case wire::MsgType::kAck: {
      BR_ASSIGN_OR_RETURN(auto a, wire::Ack::Decode(f.payload));
      BR_RETURN_IF_ERROR(link_->window().Acked(a.durable_seq));
      status_.NoteAcked(link_->window().acked(), MonotonicNs());
      return Status::Ok();
    }
    case wire::MsgType::kFingerprints: {
      BR_ASSIGN_OR_RETURN(auto fps, wire::Fingerprints::Decode(f.payload));
      if (!(point_.mode == PointMode::kRescan || point_.mode == PointMode::kResumeRescan || base_.loading()))
        return ProtocolError("staging sent fingerprints nobody asked for");
      return base_.inbox().OnFingerprints(fps);
    }
    case wire::MsgType::kBaseSeal: {
      BR_ASSIGN_OR_RETURN(auto b, wire::BaseSeal::Decode(f.payload));
      if (!base_.loading()) return ProtocolError("staging sent a seal nobody asked for");
      return base_.inbox().OnSeal(std::move(b));
    }
    case wire::MsgType::kPointAck: {
      BR_ASSIGN_OR_RETURN(auto p, wire::PointAck::Decode(f.payload));
      if (p.point_id != point_.id)
        return ProtocolError("staging acknowledged point " + std::to_string(p.point_id) + ", expected " +
                             std::to_string(point_.id));
      point_.acked = true;
      return Status::Ok();
    }
    default:
      return ProtocolError("unexpected message type " + std::to_string(static_cast<int>(f.type)) +
                           " from the staging");
  }
}

Status Agent::Step(bool wait, int timeout_ms) {
  BR_RETURN_IF_ERROR(link_->CheckLiveness());
  // Wake at least once a second, so silence is noticed whatever the caller waits for.
  if (timeout_ms < 0 || timeout_ms > 1000) timeout_ms = 1000;
  BR_RETURN_IF_ERROR(link_->Pump());
  Status failure;
  auto n = ring_->Reap(
      [&](uint64_t ud, int res, uint32_t) {
        uint64_t id = UserDataId(ud);
        Status st;
        if (id == StagingLink::kChannelId) {
          st = link_->OnCompletion(UserDataOp(ud), res);
        } else {
          st = reads_->OnCompletion(id, res);
        }
        if (!st.ok() && failure.ok()) failure = st;
      },
      wait, timeout_ms);
  if (!n.ok()) return n.status();
  // The reads that completed are sealed together (ReadPipeline::ProcessReady).
  while (failure.ok() && reads_->has_ready()) {
    Result<ByteSpan> frames = reads_->ProcessReady();
    if (!frames.ok()) failure = frames.status();
    else if (!frames->empty()) failure = link_->Send(*frames);
  }
  // The staging's ERROR explains a close better than the close itself.
  Status inbox = link_->HandleInbox([this](const wire::Frame& f) { return OnFrame(f); });
  if (link_->peer_error()) return *link_->peer_error();
  BR_RETURN_IF_ERROR(failure);
  return inbox;
}

Status Agent::EndPoint(bool consistent) {
  uint32_t flags = (consistent ? kSealFlagConsistent : 0u) | (point_.label.empty() ? 0u : kSealFlagLabelled);
  point_.consistent = consistent;
  std::vector<VolumeSeal> seals = seal_.point->Seals(point_.id, point_.time_ns, flags, point_.chain_link, point_.label);
  point_.sent_seal_mac = seals.front().mac;  // a server has at least one volume
  for (const VolumeSeal& seal : seals)
    BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kSeal, wire::SealMsg{seal}.Encode()));
  wire::EndPoint e{point_.id, link_->window().last_sent(), summary_.records, flags};
  BR_RETURN_IF_ERROR(SendFrame(wire::MsgType::kEndPoint, e.Encode()));
  SetPhase(PointPhase::kEnded);
  return Status::Ok();
}

Status Agent::SendPoint(const Signals& sig, bool once, bool* term_taken) {
  uint64_t now = MonotonicNs();
  uint64_t point_due = now + opts_.point_interval_ns;
  uint64_t next_poll = now + opts_.poll_interval_ns;
  uint64_t next_take = now + kBatchEveryNs;
  // The point ends after one last take: with --once, on SIGTERM, and for an initial sync or a
  // rescan after tracking was lost, whose copy is a recovery point the moment its read is done
  // (not at the next interval). With the scan tracker every point is a rescan: they keep it.
  // With the scan tracker every point is such a read: Session waits for it to be due
  // (AwaitScanPoint), so that it holds what the volumes hold then, not at the last interval.
  const bool whole = point_.mode == PointMode::kFull || point_.mode == PointMode::kResumeFull ||
                     point_.mode == PointMode::kRescan || point_.mode == PointMode::kResumeRescan || !tracker_.tracker;
  bool closing = once || *sig.term || whole;
  // *term_taken: whether this point's last take came after SIGTERM: only then does it hold every
  // write made before the signal. A SIGTERM (or SIGUSR1) that arrives after the last take is
  // served by the next point, or writes made just before it would be in no point.
  *term_taken = false;
  while (!point_.acked) {
    now = MonotonicNs();
    const bool taking = point_.phase < PointPhase::kFinalTake;
    if (*sig.point_now && taking) {
      *sig.point_now = 0;
      TakePointRequest();
      Log(kProg, "SIGUSR1: taking a recovery point now" + (point_.label.empty() ? "" : " labelled '" + point_.label + "'"));
    }
    if (point_.requested && taking) closing = true;
    if (*sig.term && !closing) {
      Log(kProg, "SIGTERM: finishing point " + std::to_string(point_.id) + ", then exiting");
      closing = true;
    }
    if (now >= point_due) closing = true;
    if (reads_->BatchDrained()) {
      status_.BatchQueued(link_->window().last_sent());  // the batch read ends here
      reads_->StartNextBatch();
    }
    if (!closing && point_.phase == PointPhase::kReading && !reads_->idle() && reads_->mode() == ReadMode::kShip &&
        now >= next_take && reads_->bytes_left() < kQueuedWorkBytesMax) {
      // Behind (reads still going): a batch a second, read after the ones before it, so the lag
      // of a write is known to within a second, not to one ever-growing batch. Past the bound
      // the rest waits in the bitmap (bounded memory whatever the backlog). A closing point takes
      // no more: its queued batches drain, then its final take ends it.
      next_take = now + kBatchEveryNs;
      PollTracker(false, false, true);
    }
    BR_RETURN_IF_ERROR(CheckpointFull());
    BR_RETURN_IF_ERROR(IssueReads());
    const bool idle = point_.phase != PointPhase::kLoadingBase && reads_->idle();
    if (idle) status_.BatchQueued(link_->window().last_sent());  // the newest batch is queued up to here
    if (idle && point_.phase == PointPhase::kResealing) {
      // The kept records are accounted for: now the point's own work.
      reads_->SetWork(std::move(point_.send_work), ReadMode::kShip);
      point_.send_work.clear();
      SetPhase(PointPhase::kReading);
      continue;
    }
    if (idle && point_.phase == PointPhase::kReading) {
      if (closing) {
        *term_taken = *sig.term != 0;
        // The sweep is read; what the final take reads may lie anywhere, and is the tracker's
        // to remember (inflight) until the point is acknowledged.
        reads_->StopTracking();
        SetPhase(PointPhase::kFinalTake);
        freeze_.Begin(point_.id);  // pre-hook, then writers stop until the take is read
        if (PollTracker(point_.final_with_inflight, true)) continue;
      } else if (now >= next_poll) {
        next_poll = now + opts_.poll_interval_ns;
        next_take = now + kBatchEveryNs;
        if (PollTracker(false, false)) continue;
      }
    } else if (idle && point_.phase == PointPhase::kFinalTake) {
      PointFreeze::Result fz = freeze_.Finish(point_.id);
      if (fz.frozen_ms) status_.NoteFreeze(*fz.frozen_ms);
      BR_RETURN_IF_ERROR(EndPoint(fz.consistent));
    }
    if (sig.reload != nullptr && *sig.reload) {
      *sig.reload = 0;
      ReloadSettings();
    }
    int timeout_ms = idle && !closing ? static_cast<int>((next_poll - std::min(next_poll, now)) / 1000000) + 1 : 100;
    if (!idle) {
      uint64_t throttle_ns = bucket_.WaitNs(MonotonicNs());
      if (throttle_ns > 0) timeout_ms = std::min<int>(timeout_ms, static_cast<int>(throttle_ns / 1000000) + 1);
    }
    BR_RETURN_IF_ERROR(Step(true, timeout_ms));
    if (reporting_.bar) reporting_.bar->Update(summary_.bytes_read, summary_.bytes_read + reads_->bytes_left());
    // Caught up: nothing left to read, every record sent is acknowledged, so the latest read of
    // every taken block is durable on the staging.
    if (tracker_.tracker && point_.phase >= PointPhase::kReading && reads_->idle() && link_->window().empty())
      tracker_.tracker->MarkCaughtUp();
    WriteStatus(false);
  }
  return Status::Ok();
}

Status Agent::AwaitScanPoint(const Signals& sig, bool* stop) {
  const uint64_t due = MonotonicNs() + opts_.point_interval_ns;
  for (;;) {
    if (*sig.term) {
      Log(kProg, "SIGTERM between points (scan tracker: no point open): exiting");
      *stop = true;
      return Status::Ok();
    }
    uint64_t now = MonotonicNs();
    if (*sig.point_now || now >= due) return Status::Ok();  // SendPoint takes the request
    if (sig.reload != nullptr && *sig.reload) {
      *sig.reload = 0;
      ReloadSettings();
    }
    BR_RETURN_IF_ERROR(Step(true, static_cast<int>(std::min<uint64_t>(due - now, 1000000000ull) / 1000000) + 1));
    WriteStatus(false);
  }
}

void Agent::TakePointRequest() {
  point_.requested = true;
  auto taken = agent::TakePointRequest(opts_.state_dir);
  if (!taken.ok()) {
    Log(kProg, "warning: " + taken.status().message() + "; taking an unlabelled point");
    return;
  }
  if (!taken->has_value()) return;  // a plain SIGUSR1
  if (!point_.request.empty()) {
    // An earlier request still waits for its point, but its command let go of point.lock (it
    // timed out or was killed), or this one could not have been written: the newest wins.
    PointReply r;
    r.request = point_.request;
    r.error = "superseded by a later request before its point was acknowledged";
    if (Status st = WritePointReply(opts_.state_dir, r); !st.ok()) Log(kProg, "warning: " + st.message());
  }
  point_.request = (*taken)->id;
  point_.label = (*taken)->label;
}

void Agent::AnswerPointRequest() {
  if (!point_.request.empty()) {
    PointReply r;
    r.request = point_.request;
    r.point_id = point_.id;
    r.consistent = point_.consistent;
    r.time_ns = point_.time_ns;
    r.label = point_.label;
    if (Status st = WritePointReply(opts_.state_dir, r); !st.ok())
      Log(kProg, "warning: cannot answer `blockrep-agent point`: " + st.message());
  }
  point_.requested = false;
  point_.request.clear();
  point_.label.clear();
}

Status Agent::Session(const Signals& sig, bool once) {
  status_.ForgetBatches();
  point_.acked = false;
  SetPhase(PointPhase::kIdle);
  BR_RETURN_IF_ERROR(link_->Connect());
  wire::Hello h;
  h.server_id = opts_.server_id;
  h.key_id = keys_.current.key_id;
  h.retired_key_ids = keys_.retired_ids;
  BR_RETURN_IF_ERROR(link_->Handshake(sig.term, h, [this] { return Step(true); }));
  BR_ASSIGN_OR_RETURN(sealer_, ParallelSealer::Create(keys_.current, opts_.server_id));
  reads_->StartSession(sealer_.get(), &link_->window(), [this](ByteSpan frames) { return link_->Send(frames); });
  uint64_t last = link_->hello()->last_point_id;
  if (std::string alarm = chain_.Check(*link_->hello()); !alarm.empty()) {
    // Never a quiet resync: say so, keep saying so (status.json), and protect the volumes again
    // with a rescan under an id the staging never acknowledged before.
    Log(kProg, "ALARM: server '" + opts_.server_id + "': " + alarm + "; sending a rescan as point " +
                   std::to_string(chain_.NextPointId(last)) + " (an acknowledged point id is never reused)");
  }
  for (;;) {
    BR_RETURN_IF_ERROR(StartPoint(last));
    bool term_taken = false;
    BR_RETURN_IF_ERROR(SendPoint(sig, once, &term_taken));
    last = point_.id;
    point_.last_acked = point_.id;
    SetPhase(PointPhase::kIdle);
    summary_.alarm = chain_.alarm();
    seal_.point->Committed(point_.id);
    if (Status dropped = full_->Drop(); !dropped.ok()) Log(kProg, "warning: " + dropped.message());
    if (point_.mode == PointMode::kRescan || point_.mode == PointMode::kResumeRescan) base_.inbox().ReleaseFingerprints();
    if (tracker_.tracker) tracker_.tracker->MarkSynced(point_.id);
    BR_RETURN_IF_ERROR(chain_.Acked({point_.id, point_.time_ns, point_.sent_seal_mac}, opts_.state_dir, opts_.server_id));
    Log(kProg, "point " + std::to_string(point_.id) + (point_.label.empty() ? "" : " '" + point_.label + "'") +
                   " acknowledged (durable on staging)");
    summary_.label = point_.label;
    AnswerPointRequest();
    WriteStatus(true);
    if (once || term_taken) {
      SaveFingerprints();  // the last point of this process: the next one starts from it
      break;
    }
    if (*sig.term) Log(kProg, "SIGTERM came after point " + std::to_string(point_.id) + "'s last take: one more point, then exiting");
    summary_.records = 0;  // END_POINT counts the records of its own point
    if (!tracker_.tracker) {
      bool stop = false;
      BR_RETURN_IF_ERROR(AwaitScanPoint(sig, &stop));
      if (stop) {
        SaveFingerprints();  // stopped between points: the next process starts from the last one
        break;
      }
    }
  }
  Teardown();
  return Status::Ok();
}

Result<SyncSummary> Agent::SyncOnce(const Signals& sig) {
  uint64_t start = MonotonicNs();
  summary_ = SyncSummary{};
  summary_.tracker = tracker_.note;
  point_.label = opts_.label;  // --once --label
  if (opts_.progress) reporting_.bar = std::make_unique<ProgressBar>("reading", true);
  reads_->ResetShipped();
  Backoff backoff(NowUtcNs());
  Status st = Session(sig, true);
  // A full staging heals when its operator frees space: wait for it (STALLED) as the continuous
  // agent does, keeping the point's dirty state. While waiting, "busy" (the staging is still
  // closing our last session) is waited out too. A staging at capacity, or one that cut our
  // handshake (its budget for unauthenticated connections evicts the oldest), is tried again a
  // few times. Every other failure ends --once at once.
  bool stalled = st.code() == Code::kNoSpace;
  int refusals = 0, failovers = 0;
  auto again = [&] {
    if (st.ok() || *sig.term) return false;
    if (st.code() == Code::kNoSpace) stalled = true;
    if (stalled) return st.code() == Code::kNoSpace || st.code() == Code::kUnavailable;
    // With several stagings (frontends of one bucket), one that is down or does not hold the
    // server's lease is a reason to try the next.
    if (link_->staging_count() > 1 && st.code() == Code::kUnavailable && ++failovers <= kOnceFailoversMax) return true;
    return st.code() == Code::kUnavailable && link_->refused_retryable() && ++refusals <= kOnceRefusalsMax;
  };
  while (again()) {
    Teardown();
    WaitBeforeReconnect(sig, st, &backoff);
    if (*sig.term) break;
    summary_ = SyncSummary{};  // END_POINT counts this session's records only
    summary_.tracker = tracker_.note;
    reads_->ResetShipped();
    st = Session(sig, true);
  }
  if (reporting_.bar) reporting_.bar->Finish();
  if (!st.ok() && point_.id == 0)  // failed before a point began (connect, TLS, HELLO)
    return st.Annotate("nothing was sent");
  if (!st.ok())
    return st.Annotate("point " + std::to_string(point_.id) +
                       " was not acknowledged, so it may be missing on the staging; run again");
  summary_.seconds = static_cast<double>(MonotonicNs() - start) / 1e9;
  return summary_;
}

Status Agent::RunContinuous(const Signals& sig) {
  reads_->ResetShipped();
  Backoff backoff(NowUtcNs());
  while (!*sig.term) {
    wire_bytes_total_ += summary_.bytes_wire;  // the previous session's, before its summary goes
    summary_ = SyncSummary{};
    summary_.tracker = tracker_.note;
    uint64_t acked_before = point_.last_acked;
    Status st = Session(sig, false);
    if (st.ok()) return Status::Ok();
    Teardown();
    // Operator errors and damage do not heal by retrying: report and exit.
    if (!Retryable(st.code())) return st;
    if (point_.last_acked != acked_before) backoff.Reset();  // progress was made: start over
    WaitBeforeReconnect(sig, st, &backoff);
  }
  return Status::Ok();
}

void Agent::WaitBeforeReconnect(const Signals& sig, const Status& why, Backoff* backoff) {
  uint64_t wait_ms = 0;
  if (link_->staging_count() > 1) {
    // A frontend that failed: the next one at once (nearly), and the exponential wait only after
    // a round over all of them (a killed frontend must cost seconds, not a backoff that grew
    // while the others were tried).
    link_->NextStaging();
    Log(kProg, "next staging: " + link_->staging_name());
    if (++tried_in_round_ < link_->staging_count()) {
      wait_ms = backoff->NextStagingWaitMs();
    } else {
      tried_in_round_ = 0;
      wait_ms = backoff->NextWaitMs();
    }
  } else {
    wait_ms = backoff->NextWaitMs();
  }
  SetState(why.code() == Code::kNoSpace ? AgentState::kStalled : AgentState::kDisconnected,
           why.code() == Code::kNoSpace && why.message().find("quota exceeded") == std::string::npos
               ? "staging full: " + why.message()
               : why.message());
  Log(kProg, "reconnecting in " + std::to_string(wait_ms) + " ms");
  for (uint64_t waited = 0; waited < wait_ms && !*sig.term; waited += 50) SleepNs(50000000);
}

void Agent::Teardown() {
  freeze_.ThawIfFrozen();
  if (!link_ || !link_->connected()) return;
  // Shut the socket, then reap every request still in flight before buffers go away.
  link_->Close();
  while (ring_->inflight() > 0) {
    auto n = ring_->Reap(
        [&](uint64_t ud, int res, uint32_t) {
          // The session already failed or ended; late completions only drain.
          if (UserDataId(ud) == StagingLink::kChannelId) link_->OnCompletion(UserDataOp(ud), res).IgnoreError();
          else reads_->OnAbandoned();
        },
        true, 1000);
    if (!n.ok()) break;
  }
  // Reads that were in flight, or completed but never processed, belong to the dead session;
  // their blocks are still in the tracker's inflight bits and are read again by the next one.
  reads_->Abandon();
  link_->Drop();
}

}  // namespace blockrep::agent
