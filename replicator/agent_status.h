// What the agent tells its operator: lag (the age of the oldest write not yet durable on the
// staging, from the tracker's takes and the staging's ACKs), write and ship rates with the RPO
// forecast, freeze times, and <state-dir>/status.json, written atomically at most 4 times a
// second (README, status.json). Times are passed in; the class has no clock of its own.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace blockrep::agent {

// What the agent is doing, as status.json and the log show it.
enum class AgentState { kInitialSync, kRescan, kContinuous, kBacklog, kDisconnected, kStalled };
const char* StateName(AgentState s);

class AgentStatus {
 public:
  // The fields of status.json that the agent's other rooms own.
  struct Fields {
    std::string server_id, state, reason, alarm;
    uint64_t last_point = 0;
    uint64_t backlog_bytes = 0;
    uint64_t wire_bytes = 0;
    uint64_t tracker_unreported_completions = 0;
    std::vector<std::pair<std::string, uint64_t>> volumes;  // path, bytes shipped
  };

  // The tracker handed out a batch of dirty blocks at `now_ns`, holding writes made since the
  // previous take (or since `Restart`); `dirty_bytes` of them.
  void NoteTake(uint64_t now_ns, uint64_t dirty_bytes);
  // A take whose reads are not batched for lag (a new point's plan): only the take time moves.
  void Restart(uint64_t now_ns) { last_take_ns_ = now_ns; }
  // Every record of the newest batch is queued, up to sequence number `last_seq`.
  void BatchQueued(uint64_t last_seq);
  // The staging acknowledged up to `acked_seq` at `now_ns`: batches wholly durable give lag samples.
  void NoteAcked(uint64_t acked_seq, uint64_t now_ns);
  // A new connection: sequence numbers start over, batches in flight are read again.
  void ForgetBatches() { lag_pending_.clear(); }
  void NoteFreeze(uint64_t frozen_ms);
  // The age of the oldest batch taken and not yet acknowledged (0: none): the lag now.
  uint64_t LagMs(uint64_t now_ns) const {
    return lag_pending_.empty() ? 0 : (now_ns - lag_pending_.front().second) / 1000000;
  }

  // Whether status.json is due at `now_ns` (4 times a second, or at once when `force`).
  bool Due(uint64_t now_ns, bool force) const { return force || now_ns - written_ns_ >= kIntervalNs; }
  // What the rates are measured from, at one instant.
  struct Counters {
    uint64_t acked_bytes_total = 0;  // every byte the staging acknowledged so far
    // Every byte written to the volumes so far, counted where writes are marked (the eBPF
    // program); nullopt: unknown, and the bytes the tracker's takes found stand in for it.
    std::optional<uint64_t> written_bytes_total;
    uint64_t backlog_bytes = 0;  // dirty in the tracker, queued to read, or unacknowledged
  };
  // Samples the counters once a second (calls in between only write status.json), and measures
  // the write and ship rates over the last kRateWindowNs. When `forecast`, returns a line once
  // the agent is behind — writes outrun shipping (with the time left before the lag passes
  // `rpo_target_ns`), or the lag is already past it — and "" once it is neither: the caller
  // logs it and shows BACKLOG / CONTINUOUS; nullopt when nothing changed.
  std::optional<std::string> UpdateRates(uint64_t now_ns, const Counters& c, uint64_t rpo_target_ns, bool forecast);
  uint64_t write_bytes_per_s() const { return static_cast<uint64_t>(write_bps_); }
  // The last verdict: writes outrun shipping, or the lag is past the target (BACKLOG, not CONTINUOUS).
  bool behind() const { return behind_; }
  // status.json's text (UTC time `now_utc`, as FormatUtc makes it).
  std::string Json(const Fields& f, uint64_t now_ns, const std::string& now_utc) const;
  // Writes `json` to <state_dir>/status.json atomically; false (errno set) on failure.
  static bool Write(const std::string& state_dir, const std::string& json);
  // Replaces `path` with `text` (a temporary beside it, renamed; no fsync: a display that is
  // rewritten every second). False (errno set) on failure.
  static bool Replace(const std::string& path, const std::string& text, unsigned mode);

 private:
  static constexpr uint64_t kIntervalNs = 250000000;          // 4 updates a second
  static constexpr uint64_t kLagWindowNs = 60ull * 1000000000;  // lag percentiles over the last minute
  static constexpr size_t kLagSamplesMax = 4096;               // 60 s of 100 ms polls, with room
  static constexpr size_t kFreezeSamplesMax = 1024;
  static constexpr uint64_t kPendingSeq = UINT64_MAX;  // a batch whose last record is not queued yet

  // Lag: each batch of blocks taken from the tracker holds writes made since the previous take;
  // once the staging acknowledges the batch's last record, its age is one lag sample.
  std::deque<std::pair<uint64_t, uint64_t>> lag_pending_;  // (last seq of batch, previous take ns)
  std::deque<std::pair<uint64_t, uint64_t>> lag_samples_;  // (when, lag ms)
  uint64_t last_take_ns_ = 0;
  // Rates: bytes written vs bytes acknowledged, over the last kRateWindowNs of one-second samples.
  static constexpr uint64_t kSampleEveryNs = 1000000000;
  static constexpr uint64_t kRateWindowNs = 2000000000;
  static constexpr size_t kSamplesMax = 8;
  static_assert(kRateWindowNs / kSampleEveryNs < kSamplesMax, "the window's samples are kept");
  struct Sample {
    uint64_t at_ns, written, acked;
  };
  std::deque<Sample> samples_;
  uint64_t taken_bytes_total_ = 0;  // what the takes found dirty: the write count without eBPF's
  double write_bps_ = 0, ship_bps_ = 0;
  bool behind_ = false;
  std::deque<uint64_t> freeze_ms_;
  uint64_t written_ns_ = 0;
};

}  // namespace blockrep::agent
