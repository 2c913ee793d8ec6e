// A deterministic, seeded simulation of replication: a workload writes a volume; an agent tracks
// it with the real DirtyMap (mark on completion, clear before read, inflight and undurable bits
// that outlive the agent as the pinned maps do), reads what it took a step later, seals records
// with the real sealer and sends them; a staging appends them with the real PackAppender on a
// FaultEnv, acknowledges what is durable, and commits points with the real ServerStore. The
// scheduler cuts the connection (the staging keeps the point's durable records and the agent
// resumes it), restarts the agent (its memory is lost, the bitmaps are not), and cuts the
// staging's power at a random I/O. The agent's side of the protocol (what to take, when the
// tracker may forget a block) follows replicator/agent.cc; the oracle then checks that every
// point the agent saw acknowledged is listed and that every listed point restores, authenticated,
// to exactly the volume as it was at the point's last take.
#include "scenarios.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "blockrep/base/checksum.h"
#include "blockrep/crypto/codec.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/crypto/record.h"
#include "blockrep/store/pack_appender.h"
#include "blockrep/store/store.h"
#include "blockrep/tracking/dirty_map.h"
#include "fault_env.h"
#include "oracle.h"

namespace blockrep::sim {
namespace {

constexpr const char* kRoot = "/store";
constexpr const char* kServer = "rep";
constexpr uint64_t kBlocks = 128;
constexpr uint64_t kVolumeBytes = kBlocks * kBlockBytes;
constexpr uint64_t kWords = kBlocks / 64;
constexpr uint64_t kRecordBlocksMax = 4;
constexpr int kStepsMax = 300;

DataKey SimKey() {
  DataKey k;
  for (size_t i = 0; i < k.bytes.size(); ++i) k.bytes[i] = static_cast<uint8_t>(i * 13 + 5);
  k.key_id = ComputeKeyId(k.bytes);
  return k;
}

// One RECORD on the wire: its sequence number and where it goes.
struct RecordMsg {
  uint64_t seq;
  uint64_t offset;
  Bytes record, fingerprints;
};

class Replication {
 public:
  Replication(uint64_t seed, bool verbose)
      : seed_(seed), rng_(seed), env_(seed ^ 0xabcdef), verbose_(verbose), dirty_(kWords), inflight_(kWords),
        undurable_(kWords), volume_(kVolumeBytes, 0) {
    map_.Attach(dirty_.data(), inflight_.data(), undurable_.data(), kWords);
  }

  SimOutcome Run() {
    SimOutcome out;
    static constexpr uint64_t kCutRates[] = {0, 2, 8, 20}, kRestartRates[] = {0, 1, 4};
    cut_per_mille_ = kCutRates[rng_() % 4];
    restart_per_mille_ = kRestartRates[rng_() % 3];
    if (rng_() % 2) env_.PowerLossAtOp(20 + rng_() % 600);
    if (rng_() % 4 == 0) {
      full_from_ = 1 + rng_() % kStepsMax;
      full_steps_ = 1 + rng_() % 100;
    }
    env_.set_tear(rng_() % 4 != 0);
    Status st = Setup();
    for (int step = 0; st.ok() && step < kStepsMax; ++step) st = Step();
    Log("stopped: " + (st.ok() ? std::string("step limit") : st.ToString()));
    out.ops = env_.ops();
    env_.Reboot();
    out.why = Check();
    out.ok = out.why.empty();
    return out;
  }

 private:
  void Log(const std::string& line) { Trace(verbose_, seed_, line); }

  // --- the staging ---------------------------------------------------------------------------

  Status Setup() {
    BR_RETURN_IF_ERROR(store::InitStoreRoot(kRoot, true, &env_));
    return StagingStart();
  }

  // (Re)starts the staging on what the store holds: its memory (open point, kept records) is gone.
  Status StagingStart() {
    pack_.Close();
    store_.reset();
    open_.reset();
    kept_.reset();
    BR_ASSIGN_OR_RETURN(store_, store::ServerStore::Open(kRoot, kServer, true, &env_));
    BR_RETURN_IF_ERROR(store_->RemoveOrphans());
    return Status::Ok();
  }

  struct OpenPoint {
    uint64_t id = 0, base = 0;
    std::vector<store::NewExtent> extents;  // arrival order; the kept ones first
    std::map<uint64_t, size_t> by_seq;      // this session's records not yet durable -> extents index
    std::optional<uint64_t> end_seq;        // END_POINT's last record
  };

  Status StagingOnBegin(uint64_t id, uint64_t base, bool resume) {
    if (!pack_.open()) BR_RETURN_IF_ERROR(pack_.Open(*store_));
    open_.emplace();
    open_->id = id;
    open_->base = base;
    if (resume) {
      open_->extents = std::move(kept_->extents);
      Log("staging: point " + std::to_string(id) + " resumed with " + std::to_string(open_->extents.size()) +
          " kept records");
    }
    kept_.reset();
    return Status::Ok();
  }

  Status StagingOnRecord(const RecordMsg& m) {
    store::NewExtent x;
    auto h = RecordHeader::Decode(m.record);
    if (!h.ok()) return h.status();
    x.zero = h->zero();
    x.entry = {0, h->plain_len, m.offset, pack_.pack_id(), static_cast<uint32_t>(m.record.size()), 0, 0,
               Checksum64(m.record)};
    x.entry.pack_offset = pack_.Append(m.record, m.fingerprints, ++pack_seq_);
    open_->by_seq[pack_seq_] = open_->extents.size();
    open_->extents.push_back(x);
    wire_seq_of_[pack_seq_] = m.seq;
    return Status::Ok();
  }

  // Group commit, then ACK; the point is committed once END_POINT's records are all durable.
  Status StagingStep() {
    if (!open_) return Status::Ok();
    if (pack_.batch_bytes() > 0) {
      store::PackAppender::Done d = pack_.CommitBlocking();
      if (d == store::PackAppender::Done::kFailed) {
        std::string why = "pack commit failed: " + std::string(std::strerror(pack_.error()));
        return pack_.error() == ENOSPC ? NoSpace(why) : IoError(why);
      }
      uint64_t durable = pack_.durable_seq();
      for (auto it = open_->by_seq.begin(); it != open_->by_seq.end() && it->first <= durable;)
        it = open_->by_seq.erase(it);
      to_agent_acks_.push_back(wire_seq_of_[durable]);
    }
    if (open_->end_seq && open_->by_seq.empty()) {
      std::optional<store::PointIndex> base;
      if (open_->base != 0) {
        BR_ASSIGN_OR_RETURN(store::PointIndex b, store_->LoadIndex(store_->manifest().points.back()));
        base = std::move(b);
      }
      store::PointIndex idx = store::BuildPointIndex(open_->id, {kVolumeBytes}, base ? &*base : nullptr, open_->extents);
      store::PointInfo info{open_->id, 1000 + open_->id, store::kPointConsistent, 1, 0, 0, ""};
      BR_RETURN_IF_ERROR(store_->CommitPoint(info, idx, key_.key_id));
      Log("staging: point " + std::to_string(open_->id) + " committed (" + std::to_string(open_->extents.size()) +
          " extents)");
      to_agent_point_ack_ = open_->id;
      open_.reset();
      BR_RETURN_IF_ERROR(Housekeeping());
    }
    return Status::Ok();
  }

  // Retention and compaction, as the staging runs them between points: an older point may expire
  // (never the newest: the next point's base), and packs mostly garbage are rewritten — never the
  // pack being appended, nor those a kept point's records are in.
  Status Housekeeping() {
    const auto& points = store_->manifest().points;
    if (points.size() >= 3 && rng_() % 4 == 0) {
      uint64_t victim = points[rng_() % (points.size() - 1)].id;
      expired_.insert(victim);  // from the moment its manifest commit may have happened
      BR_RETURN_IF_ERROR(store_->ExpirePoints({victim}));
      Log("staging: point " + std::to_string(victim) + " expired");
    }
    if (rng_() % 4 == 0) {
      store::ServerStore::CompactionOptions opts;
      opts.garbage_share_min = 0.05 * static_cast<double>(1 + rng_() % 10);
      if (pack_.open()) opts.pinned_packs.push_back(pack_.pack_id());
      if (kept_)
        for (const store::NewExtent& x : kept_->extents) opts.pinned_packs.push_back(x.entry.pack);
      opts.merge_small_packs = rng_() % 2 == 0;
      BR_ASSIGN_OR_RETURN(auto stats, store_->Compact(opts));
      if (stats.packs_rewritten + stats.packs_deleted > 0)
        Log("staging: compaction rewrote " + std::to_string(stats.packs_rewritten) + " pack(s), deleted " +
            std::to_string(stats.packs_deleted));
    }
    return Status::Ok();
  }

  // The connection is gone: an open point's durable records are kept for the agent to resume;
  // records not yet committed are dropped with the pack they were gathered for.
  void StagingOnCut() {
    pack_.Close();
    if (!open_) return;
    std::vector<store::NewExtent> durable;
    for (size_t i = 0; i < open_->extents.size(); ++i) {
      bool lost = false;
      for (const auto& [seq, at] : open_->by_seq) lost |= at == i;
      if (!lost) durable.push_back(open_->extents[i]);
    }
    if (!durable.empty()) kept_ = Kept{open_->id, open_->base, std::move(durable)};
    open_.reset();
  }

  // --- the agent -----------------------------------------------------------------------------

  Status AgentConnect() {
    // HELLO_OK: the chain's last point and a kept point, as the staging offers them.
    const uint64_t last = store_->manifest().last_point_id();
    const bool resume = kept_ && kept_->id == last + 1 && kept_->base == last && last != 0 && synced_ == last;
    point_ = last + 1;
    sent_.clear();
    next_seq_ = 1;
    to_agent_acks_.clear();
    to_agent_point_ack_.reset();
    final_taken_ = end_sent_ = false;
    if (resume) {
      base_ = last;
      map_.Take(0, kWords, kVolumeBytes, false);           // also marks the fresh ones undurable
      auto runs = map_.Undurable(0, kWords, kVolumeBytes);  // so this is their union
      work_.assign(runs.begin(), runs.end());
    } else if (last != 0 && (synced_ == last || synced_ + 1 == last)) {
      base_ = last;
      map_.InflightUndurable();  // read again: undurable until acknowledged again (agent.cc, StartPoint)
      auto runs = map_.Take(0, kWords, kVolumeBytes, true);  // dirty and inflight: all since synced
      work_.assign(runs.begin(), runs.end());
    } else {
      base_ = 0;  // a full point: everything is read, what changes from here on is caught
      map_.Clear();
      synced_ = 0;
      work_ = {Extent{0, kVolumeBytes}};
    }
    full_ = base_ == 0;
    sweeping_ = full_;
    Log("agent: point " + std::to_string(point_) + (resume ? " resumed" : base_ ? " incremental" : " full") +
        " on " + std::to_string(base_) + ", " + std::to_string(work_.size()) + " runs to read");
    connected_ = true;
    return StagingOnBegin(point_, base_, resume);
  }

  // Reads one run (a step after it was taken: writes may land in between) and sends it.
  Status AgentRead() {
    Extent e = work_.front();
    work_.pop_front();
    uint64_t len = std::min<uint64_t>(e.length, kRecordBlocksMax * kBlockBytes);
    if (len < e.length) work_.push_front(Extent{e.offset + len, e.length - len});
    ByteSpan plain(volume_.data() + e.offset, len);
    if (full_ && sweeping_ && IsAllZero(plain)) return Status::Ok();  // absent from a full point means zero
    RecordMsg m;
    m.seq = next_seq_++;
    m.offset = e.offset;
    BR_ASSIGN_OR_RETURN(RecordHeader h,
                        sealer_->Seal(CodecChoice{}, 0, e.offset, point_, plain, &m.record));
    if (!h.zero()) fingerprinter_.Append(e.offset, plain, &m.fingerprints);
    sent_.push_back(m.seq);
    return StagingOnRecord(m);
  }

  Status AgentStep() {
    for (uint64_t a : to_agent_acks_)
      while (!sent_.empty() && sent_.front() <= a) sent_.pop_front();
    to_agent_acks_.clear();
    if (to_agent_point_ack_ && *to_agent_point_ack_ == point_) {
      acked_points_.insert(point_);
      synced_ = point_;
      map_.Synced();
      Log("agent: point " + std::to_string(point_) + " acknowledged");
      to_agent_point_ack_.reset();
      return AgentConnect();  // the next point, on the same connection
    }
    if (end_sent_) return Status::Ok();
    if (!work_.empty()) return AgentRead();
    sweeping_ = false;
    // Caught up: nothing left to read and every record sent acknowledged durable.
    if (sent_.empty()) map_.CaughtUp();
    if (!final_taken_ && rng_() % 6 == 0) {
      final_taken_ = true;  // the filesystems are frozen from here to END_POINT: no writes
      for (const Extent& e : map_.Take(0, kWords, kVolumeBytes, false)) work_.push_back(e);
      expected_[point_] = volume_;
      return Status::Ok();
    }
    if (final_taken_) {
      open_->end_seq = next_seq_ - 1;
      end_sent_ = true;
      return Status::Ok();
    }
    if (rng_() % 3 == 0)
      for (const Extent& e : map_.Take(0, kWords, kVolumeBytes, false)) work_.push_back(e);  // a poll
    return Status::Ok();
  }

  // --- the scheduler -------------------------------------------------------------------------

  Status Step() {
    if (full_from_ != 0 && step_ == full_from_) env_.SetCapacity(env_.used_bytes() + rng_() % (64 * kBlockBytes));
    if (full_from_ != 0 && step_ == full_from_ + full_steps_) env_.SetCapacity(UINT64_MAX);  // space freed
    ++step_;
    Status st = Schedule();
    if (!st.ok() && st.code() == Code::kNoSpace && env_.powered()) {
      // The staging refuses the session and keeps nothing it could not make durable; the agent
      // backs off (STALLED) and comes back, keeping its dirty state.
      Log("staging full: " + st.ToString());
      Cut();
      return Status::Ok();
    }
    if (st.ok() || env_.powered()) return st;
    // The staging lost power: it restarts on what its store durably holds.
    Log("staging power lost: " + st.ToString());
    Cut();
    env_.Reboot();
    return StagingStart();
  }

  Status Schedule() {
    if (!connected_) BR_RETURN_IF_ERROR(AgentConnect());
    uint64_t r = rng_() % 1000;
    if (r < 150) {
      if (!final_taken_) Write();  // writers are frozen from the final take to END_POINT
      return Status::Ok();
    }
    r -= 150;
    if (r < cut_per_mille_) {
      Log("connection cut");
      Cut();
      return Status::Ok();
    }
    r -= cut_per_mille_;
    if (r < restart_per_mille_) {
      Log("agent restart");
      Cut();  // its memory goes with the connection; the bitmaps and the synced point stay
      return Status::Ok();
    }
    BR_RETURN_IF_ERROR(AgentStep());
    return StagingStep();
  }

  void Cut() {
    connected_ = false;
    StagingOnCut();
    work_.clear();
  }

  // A write lands: the bytes change and its blocks are marked when it completes.
  void Write() {
    uint64_t blocks = 1 + rng_() % 6;
    uint64_t first = rng_() % (kBlocks - blocks + 1);
    const uint64_t kind = rng_() % 4, salt = rng_();
    for (uint64_t i = 0; i < blocks * kBlockBytes; i += 8) {
      uint64_t word = kind == 0 ? 0 : kind == 1 ? salt : rng_();
      std::memcpy(volume_.data() + first * kBlockBytes + i, &word, 8);
    }
    map_.Mark(0, first, first + blocks - 1);
  }

  // --- the oracle ----------------------------------------------------------------------------

  std::string Check() {
    std::set<uint64_t> must;
    for (uint64_t id : acked_points_)
      if (expired_.count(id) == 0) must.insert(id);
    return CheckStore(&env_, kRoot, kServer, key_, kVolumeBytes, expected_, must);
  }

  uint64_t seed_;
  std::mt19937_64 rng_;
  FaultEnv env_;
  bool verbose_;
  uint64_t cut_per_mille_ = 0, restart_per_mille_ = 0;  // per step
  uint64_t step_ = 0, full_from_ = 0, full_steps_ = 0;  // the disk is full for steps [from, from + steps)
  DataKey key_ = SimKey();
  std::unique_ptr<RecordSealer> sealer_ = std::move(RecordSealer::Create(key_, kServer)).value();
  BlockFingerprinter fingerprinter_ = std::move(BlockFingerprinter::Create(key_)).value();

  // The agent's host: the bitmaps (pinned: they outlive the agent), its synced point (the
  // tracker's meta), the volume.
  std::vector<uint64_t> dirty_, inflight_, undurable_;
  DirtyMap map_;
  uint64_t synced_ = 0;
  Bytes volume_;
  // The agent's memory (one connection).
  bool connected_ = false;
  uint64_t point_ = 0, base_ = 0;
  bool full_ = false, sweeping_ = true, final_taken_ = false, end_sent_ = false;
  std::deque<Extent> work_;
  std::deque<uint64_t> sent_;  // sequence numbers not yet acknowledged
  uint64_t next_seq_ = 1;
  std::vector<uint64_t> to_agent_acks_;
  std::optional<uint64_t> to_agent_point_ack_;

  // The staging.
  std::unique_ptr<store::ServerStore> store_;
  store::PackAppender pack_;
  uint64_t pack_seq_ = 0;
  std::map<uint64_t, uint64_t> wire_seq_of_;
  std::optional<OpenPoint> open_;
  struct Kept {
    uint64_t id, base;
    std::vector<store::NewExtent> extents;
  };
  std::optional<Kept> kept_;

  // The oracle's record.
  std::map<uint64_t, Bytes> expected_;  // point id -> the volume at its last take
  std::set<uint64_t> acked_points_;
  std::set<uint64_t> expired_;  // by retention (or being expired when a fault came)
};

}  // namespace

SimOutcome RunReplicationScenario(uint64_t seed, bool verbose) { return Replication(seed, verbose).Run(); }

}  // namespace blockrep::sim
