// What the agent tells: its status file (status.json, for operators and `blockrep-agent point`),
// the staging (AGENT_REPORT, for the DR side's metrics), and the log; and what it keeps for the
// next process (fingerprints of the point just acknowledged).
#include <cerrno>
#include <cstring>

#include "agent.h"
#include "blockrep/metrics/exposition.h"
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
  // Backlog: what is dirty in the tracker (not taken yet), queued to read, and unacknowledged.
  // The bitmap count walks the bitmap (32 MiB at 1 TiB): once a second, with the rate sample.
  if (tracker_.tracker && now - reporting_.dirty_counted_ns >= 1000000000ull) {
    reporting_.dirty_counted_ns = now;
    reporting_.dirty_bytes = tracker_.tracker->DirtyBytes();
  }
  uint64_t backlog = link_->window().unacked_bytes() + reads_->bytes_left() + (tracker_.tracker ? reporting_.dirty_bytes : 0);
  bool forecast = state_.first == AgentState::kContinuous || state_.first == AgentState::kBacklog;
  AgentStatus::Counters c;
  c.acked_bytes_total = link_->window().acked_bytes_total();
  c.backlog_bytes = backlog;
  if (uint64_t written = 0; tracker_.tracker && tracker_.tracker->WrittenBytes(&written)) c.written_bytes_total = written;
  auto behind = status_.UpdateRates(now, c, opts_.rpo_target_ns, forecast);
  if (behind && !behind->empty()) {
    Log(kProg, "warning: " + *behind);
    SetState(AgentState::kBacklog, behind->find("outrun") != std::string::npos ? "writes outrun shipping"
                                                                                : "lag past the RPO target");
  } else if (behind) {
    SetState(AgentState::kContinuous, "caught up");
  }
  ReportToStaging(now, backlog);
  PublishMetrics(now, backlog, force);
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
  if (!link_->connected() || !link_->hello() || now_ns - reporting_.reported_ns < kReportEveryNs) return;
  reporting_.reported_ns = now_ns;
  wire::AgentReport r;
  r.state = static_cast<uint8_t>(state_.first);
  r.lag_ms = status_.LagMs(now_ns);
  r.backlog_bytes = backlog_bytes;
  r.rpo_target_ms = opts_.rpo_target_ns / 1000000;
  // A failed send shows on the connection's next step, which ends the session.
  SendFrame(wire::MsgType::kAgentReport, r.Encode()).IgnoreError();
}

Status Agent::StartMetrics() {
  if (!opts_.metrics_textfile.empty()) {
    const std::string& p = opts_.metrics_textfile;
    if (p.size() < 6 || p.compare(p.size() - 5, 5, ".prom") != 0)
      return InvalidArgument("--metrics-textfile " + p + ": node_exporter's textfile collector reads only files named *.prom");
  }
  if (!opts_.metrics) return Status::Ok();
  BR_ASSIGN_OR_RETURN(reporting_.endpoint, metrics::HttpEndpoint::Start(*opts_.metrics, "--metrics"));
  Log(kProg, "metrics at http://" + opts_.metrics->host + ":" + std::to_string(reporting_.endpoint->port()) + "/metrics");
  return Status::Ok();
}

void Agent::PublishMetrics(uint64_t now_ns, uint64_t backlog_bytes, bool force) {
  if (!reporting_.endpoint && opts_.metrics_textfile.empty()) return;
  if (!force && reporting_.published_ns != 0 && now_ns - reporting_.published_ns < kPublishEveryNs) return;
  reporting_.published_ns = now_ns;
  std::string text = RenderMetrics(now_ns, backlog_bytes);
  if (!opts_.metrics_textfile.empty() && !AgentStatus::Replace(opts_.metrics_textfile, text, 0644))
    Log(kProg, "warning: cannot write " + opts_.metrics_textfile + ": " + std::strerror(errno));
  if (reporting_.endpoint) reporting_.endpoint->Publish(std::move(text));
}

std::string Agent::RenderMetrics(uint64_t now_ns, uint64_t backlog_bytes) const {
  using metrics::Type;
  const std::string& id = opts_.server_id;
  metrics::Exposition e;
  // The names the staging uses too (staging/metrics.cc) mean the same.
  e.Family("blockrep_agent_state", Type::kGauge,
           "The agent's state: 0 initial sync, 1 rescan, 2 continuous, 3 backlog, 4 disconnected, 5 stalled (staging full).");
  e.Sample(static_cast<double>(state_.first), id);
  e.Family("blockrep_agent_connected", Type::kGauge, "1 while the agent holds a session with the staging, else 0.");
  e.Sample(link_->connected() && link_->hello() ? 1 : 0, id);
  e.Family("blockrep_agent_lag_seconds", Type::kGauge,
           "Replication lag: age of the oldest write taken and not yet durable on the staging (0: none).");
  e.Sample(static_cast<double>(status_.LagMs(now_ns)) / 1e3, id);
  e.Family("blockrep_agent_backlog_bytes", Type::kGauge, "Bytes taken or dirty and not yet acknowledged by the staging.");
  e.Sample(static_cast<double>(backlog_bytes), id);
  e.Family("blockrep_agent_rpo_target_seconds", Type::kGauge, "The agent's RPO target (--rpo-target).");
  e.Sample(static_cast<double>(opts_.rpo_target_ns) / 1e9, id);
  e.Family("blockrep_last_point_timestamp_seconds", Type::kGauge,
           "Time of the newest recovery point the staging acknowledged to this agent (0: none yet).");
  e.Sample(static_cast<double>(chain_.known().time_ns) / 1e9, id);
  e.Family("blockrep_rollback_alarm", Type::kGauge,
           "1 while the agent holds a rollback alarm: the staging's chain was behind, or forked from, the points it saw "
           "acknowledged.");
  e.Sample(chain_.alarm().empty() ? 0 : 1, id);
  e.Family("blockrep_sent_bytes_total", Type::kCounter, "Frame bytes sent to the staging by this process.");
  e.Sample(static_cast<double>(wire_bytes_total_ + summary_.bytes_wire), id);
  e.Family("blockrep_shipped_bytes_total", Type::kCounter, "Volume bytes read and shipped by this process, per volume.");
  const std::vector<uint64_t>& shipped = reads_->shipped_by_volume();
  for (size_t v = 0; v < volumes_.size(); ++v) e.Sample(static_cast<double>(shipped[v]), id, std::to_string(v));
  return e.text();
}

}  // namespace blockrep::agent
