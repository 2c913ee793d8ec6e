#include "agent_status.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "blockrep/base/fs.h"
#include "blockrep/base/json.h"

namespace blockrep::agent {
namespace {

// The q-quantile of `v` (sorted here), 0 when empty.
uint64_t Quantile(std::vector<uint64_t> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

}  // namespace

const char* StateName(AgentState s) {
  switch (s) {
    case AgentState::kInitialSync: return "INITIAL_SYNC";
    case AgentState::kRescan: return "RESCAN";
    case AgentState::kContinuous: return "CONTINUOUS";
    case AgentState::kBacklog: return "BACKLOG";
    case AgentState::kDisconnected: return "DISCONNECTED";
    case AgentState::kStalled: return "STALLED";
  }
  return "?";
}

void AgentStatus::NoteTake(uint64_t now_ns, uint64_t dirty_bytes) {
  taken_bytes_total_ += dirty_bytes;
  if (dirty_bytes == 0) {
    // Nothing was dirty: every write not yet taken is younger than this take.
    last_take_ns_ = now_ns;
    return;
  }
  // The reads of this batch end with sequence numbers not known yet: the batch is durable when
  // the ACK passes the last of them, which BatchQueued tells.
  lag_pending_.emplace_back(kPendingSeq, last_take_ns_);
  last_take_ns_ = now_ns;
}

void AgentStatus::BatchQueued(uint64_t last_seq) {
  // Batches are read in take order: the oldest one still open is the one that ended.
  for (auto& [seq, taken_ns] : lag_pending_)
    if (seq == kPendingSeq) {
      seq = last_seq;
      return;
    }
}

void AgentStatus::NoteAcked(uint64_t acked_seq, uint64_t now_ns) {
  while (!lag_pending_.empty() && lag_pending_.front().first <= acked_seq) {
    lag_samples_.emplace_back(now_ns, (now_ns - lag_pending_.front().second) / 1000000);
    lag_pending_.pop_front();
  }
  while (!lag_samples_.empty() &&
         (now_ns - lag_samples_.front().first > kLagWindowNs || lag_samples_.size() > kLagSamplesMax))
    lag_samples_.pop_front();
}

void AgentStatus::NoteFreeze(uint64_t frozen_ms) {
  freeze_ms_.push_back(frozen_ms);
  if (freeze_ms_.size() > kFreezeSamplesMax) freeze_ms_.pop_front();
}

std::optional<std::string> AgentStatus::UpdateRates(uint64_t now_ns, const Counters& c, uint64_t rpo_target_ns,
                                                    bool forecast) {
  written_ns_ = now_ns;
  if (!samples_.empty() && now_ns - samples_.back().at_ns < kSampleEveryNs) return std::nullopt;
  // One sample a second: a status written at once (a state change, an ACK) moves no rate, so a
  // rate is never a few bytes over a few microseconds.
  samples_.push_back({now_ns, c.written_bytes_total.value_or(taken_bytes_total_), c.acked_bytes_total});
  while (samples_.size() > kSamplesMax ||
         (samples_.size() > 1 && now_ns - samples_[1].at_ns >= kRateWindowNs))
    samples_.pop_front();
  const Sample& from = samples_.front();
  const Sample& to = samples_.back();
  if (to.at_ns > from.at_ns) {
    double secs = static_cast<double>(to.at_ns - from.at_ns) / 1e9;
    write_bps_ = static_cast<double>(to.written - from.written) / secs;
    ship_bps_ = static_cast<double>(to.acked - from.acked) / secs;
  }
  if (!forecast) return std::nullopt;
  const double lag_s = static_cast<double>(LagMs(now_ns)) / 1e3;
  const double target_s = static_cast<double>(rpo_target_ns) / 1e9;
  const bool outrun = write_bps_ > ship_bps_ * 1.05 && c.backlog_bytes > (4u << 20);
  const bool late = lag_s > target_s;
  if ((outrun || late) && !behind_) {
    behind_ = true;
    auto mbps = [](double v) { return std::to_string(static_cast<uint64_t>(v / 1e6)); };
    if (late)
      return "lag " + std::to_string(static_cast<uint64_t>(lag_s)) + " s is past the RPO target of " +
             std::to_string(rpo_target_ns / 1000000000ull) + " s (writes " + mbps(write_bps_) + " MB/s, shipping " +
             mbps(ship_bps_) + " MB/s, backlog " + std::to_string(c.backlog_bytes >> 20) + " MiB)";
    // Lag grows by (1 - ship/write) a second while writes outrun shipping (each second of
    // writes takes write/ship seconds to ship), so it reaches the target in
    // (target - lag) * write / (write - ship) seconds.
    double secs_to_breach = (target_s - lag_s) * write_bps_ / (write_bps_ - ship_bps_);
    return "writes (" + mbps(write_bps_) + " MB/s) outrun shipping (" + mbps(ship_bps_) + " MB/s); backlog " +
           std::to_string(c.backlog_bytes >> 20) + " MiB grows by " + mbps(write_bps_ - ship_bps_) +
           " MB/s and lag will pass the RPO target of " + std::to_string(rpo_target_ns / 1000000000ull) +
           " s in about " + std::to_string(static_cast<int64_t>(std::max(0.0, secs_to_breach))) + " s";
  }
  if (!outrun && !late && behind_) {
    behind_ = false;
    return std::string();
  }
  return std::nullopt;
}

std::string AgentStatus::Json(const Fields& f, uint64_t now_ns, const std::string& now_utc) const {
  uint64_t lag_ms = LagMs(now_ns);
  std::vector<uint64_t> lags;
  for (const auto& [when, ms] : lag_samples_) lags.push_back(ms);
  std::vector<uint64_t> freezes(freeze_ms_.begin(), freeze_ms_.end());
  std::string j = "{\n";
  j += "  \"server_id\": " + JsonString(f.server_id) + ",\n";
  j += "  \"state\": \"" + f.state + "\",\n";
  j += "  \"reason\": " + JsonString(f.reason) + ",\n";
  j += "  \"alarm\": " + JsonString(f.alarm) + ",\n";  // "" or why the staging's chain cannot be trusted
  j += "  \"updated\": \"" + now_utc + "\",\n";
  j += "  \"last_point\": " + std::to_string(f.last_point) + ",\n";
  j += "  \"lag_ms\": " + std::to_string(lag_ms) + ",\n";
  j += "  \"lag_ms_p50\": " + std::to_string(Quantile(lags, 0.50)) + ",\n";
  j += "  \"lag_ms_p99\": " + std::to_string(Quantile(lags, 0.99)) + ",\n";
  j += "  \"backlog_bytes\": " + std::to_string(f.backlog_bytes) + ",\n";
  j += "  \"wire_bytes\": " + std::to_string(f.wire_bytes) + ",\n";
  j += "  \"write_bytes_per_s\": " + std::to_string(static_cast<uint64_t>(write_bps_)) + ",\n";
  j += "  \"ship_bytes_per_s\": " + std::to_string(static_cast<uint64_t>(ship_bps_)) + ",\n";
  j += "  \"freeze_ms_p50\": " + std::to_string(Quantile(freezes, 0.50)) + ",\n";
  j += "  \"freeze_ms_p99\": " + std::to_string(Quantile(freezes, 0.99)) + ",\n";
  j += "  \"freezes\": " + std::to_string(freezes.size()) + ",\n";
  // Writes the kernel never reported complete, caught from their issue record (TRACKING.md).
  j += "  \"tracker_unreported_completions\": " + std::to_string(f.tracker_unreported_completions) + ",\n";
  j += "  \"volumes\": [";
  for (size_t v = 0; v < f.volumes.size(); ++v)
    j += std::string(v ? ", " : "") + "{\"index\": " + std::to_string(v) + ", \"path\": " + JsonString(f.volumes[v].first) +
         ", \"shipped_bytes\": " + std::to_string(f.volumes[v].second) + "}";
  j += "]\n}\n";
  return j;
}

bool AgentStatus::Write(const std::string& state_dir, const std::string& json) {
  return Replace(state_dir + "/status.json", json, 0600);
}

bool AgentStatus::Replace(const std::string& path, const std::string& text, unsigned mode) {
  std::string tmp = path + ".tmp";
  UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  return fd.valid() && WriteAll(fd.get(), ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size())).ok() &&
         rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace blockrep::agent
