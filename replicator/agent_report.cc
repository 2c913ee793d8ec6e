// What the agent tells: its status file (status.json, for operators and `blockrep-agent point`),
// the staging (AGENT_REPORT, for the DR side's metrics), and the log; and what it keeps for the
// next process (fingerprints of the point just acknowledged).
#include <cerrno>
#include <cstring>

#include "agent.h"
#include "fingerprint_cache.h"

namespace blockrep::agent {
namespace {
constexpr const char* kProg = "blockrep-agent";
}  // namespace

void Agent::SaveFingerprints() {
  if (opts_.state_dir.empty() || seal_.point->base_point() != point_.id) return;
  Status st = SaveFingerprintCache(opts_.state_dir, opts_.server_id, point_.id, seal_.point->volume_bytes(),
                                   seal_.point->fingerprints());
  if (!st.ok())
    Log(kProg, "warning: cannot keep point " + std::to_string(point_.id) + "'s fingerprints in " + opts_.state_dir +
                   ": " + st.message() + " (the next run fetches them from the staging)");
}

void Agent::ReloadSettings() {
  if (std::optional<uint64_t> rate = ReadRateFile(opts_.state_dir)) {
    opts_.bandwidth_bps = *rate;
    bucket_.SetRate(*rate);
  }
}

void Agent::SetState(AgentState st, const std::string& reason) {
  if (st == state_.first && reason == state_.second) return;
  Log(kProg, std::string("state ") + StateName(state_.first) + " -> " + StateName(st) +
                 (reason.empty() ? "" : ": " + reason));
  state_ = {st, reason};
  WriteStatus(true);
}

void Agent::WriteStatus(bool force) {
  uint64_t now = MonotonicNs();
  if (!status_.Due(now, force)) return;
  uint64_t backlog = link_->window().unacked_bytes() + reads_->bytes_left();
  bool forecast = state_.first == AgentState::kContinuous || state_.first == AgentState::kBacklog;
  auto outrun = status_.UpdateRates(now, link_->window().acked_bytes_total(), backlog, opts_.rpo_target_ns, forecast);
  if (outrun && !outrun->empty()) {
    Log(kProg, "warning: " + *outrun);
    SetState(AgentState::kBacklog, "writes outrun shipping");
  } else if (outrun) {
    SetState(AgentState::kContinuous, "caught up");
  }
  ReportToStaging(now, backlog);
  if (opts_.state_dir.empty()) return;
  AgentStatus::Fields f;
  f.server_id = opts_.server_id;
  f.state = StateName(state_.first);
  f.reason = state_.second;
  f.alarm = chain_.alarm();
  f.last_point = point_.last_acked;
  f.backlog_bytes = backlog;
  f.wire_bytes = wire_bytes_total_ + summary_.bytes_wire;
  f.tracker_unreported_completions = tracker_.tracker ? tracker_.tracker->UnreportedCompletions() : 0;
  const std::vector<uint64_t>& shipped = reads_->shipped_by_volume();
  for (size_t v = 0; v < volumes_.size(); ++v) f.volumes.emplace_back(volumes_[v]->path, shipped[v]);
  if (!AgentStatus::Write(opts_.state_dir, status_.Json(f, now, FormatUtc(NowUtcNs()))))
    Log(kProg, "warning: cannot write " + opts_.state_dir + "/status.json: " + std::strerror(errno));
}

void Agent::ReportToStaging(uint64_t now_ns, uint64_t backlog_bytes) {
  if (!link_->connected() || !link_->hello() || now_ns - reported_ns_ < kReportEveryNs) return;
  reported_ns_ = now_ns;
  wire::AgentReport r;
  r.state = static_cast<uint8_t>(state_.first);
  r.lag_ms = status_.LagMs(now_ns);
  r.backlog_bytes = backlog_bytes;
  r.rpo_target_ms = opts_.rpo_target_ns / 1000000;
  // A failed send shows on the connection's next step, which ends the session.
  SendFrame(wire::MsgType::kAgentReport, r.Encode()).IgnoreError();
}

}  // namespace blockrep::agent
