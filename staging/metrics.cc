// The staging's /metrics (--metrics HOST:PORT): what the loop knows of each server, its store and
// the process, rendered about once a second into the HTTP endpoint (blockrep/metrics/). Every
// family is listed with its type and meaning in README.md (Metrics); docs/alerts.yml alerts on them.
#include <sys/statvfs.h>

#include <algorithm>

#include "blockrep/base/cli.h"
#include "blockrep/store/drill_log.h"
#include "server.h"
#include "session.h"

namespace blockrep::staging {
namespace {

constexpr uint64_t kPublishEveryNs = 1000000000ull;

double Seconds(uint64_t ns) { return static_cast<double>(ns) / 1e9; }

// Counters of refused sessions, by the ERROR code the agent was sent.
struct Refusal {
  wire::ErrorCode code;
  const char* name;
  const char* help;
};
constexpr Refusal kRefusals[] = {
    {wire::ErrorCode::kProtocol, "blockrep_refused_protocol_total", "Sessions refused for breaking the protocol."},
    {wire::ErrorCode::kIdentity, "blockrep_refused_identity_total",
     "Sessions refused because the certificate did not name the server (or was revoked)."},
    {wire::ErrorCode::kKeyMismatch, "blockrep_refused_key_mismatch_total",
     "Sessions refused because the agent's data key is not the one of its chain."},
    {wire::ErrorCode::kBusy, "blockrep_refused_busy_total", "Sessions refused while another session held the server."},
    {wire::ErrorCode::kStoreFull, "blockrep_refused_store_full_total", "Sessions refused because the store was full."},
    {wire::ErrorCode::kStoreError, "blockrep_refused_store_error_total", "Sessions refused for a store failure."},
    {wire::ErrorCode::kBadPoint, "blockrep_refused_bad_point_total",
     "Sessions refused for a point that did not follow the chain."},
    {wire::ErrorCode::kBadTime, "blockrep_refused_bad_time_total",
     "Sessions refused for a point time before the chain's last or far from the staging's clock."},
    {wire::ErrorCode::kAtCapacity, "blockrep_refused_at_capacity_total",
     "Sessions refused because the staging held its maximum of sessions."},
    {wire::ErrorCode::kQuotaExceeded, "blockrep_refused_quota_total", "Sessions refused because the server was over a quota."},
};

}  // namespace

Status Server::OnAgentReport(Session& s, ByteSpan payload) {
  BR_ASSIGN_OR_RETURN(wire::AgentReport r, wire::AgentReport::Decode(payload));
  s.server->figures.report = r;
  s.server->figures.report_utc_ns = NowUtcNs();
  return Status::Ok();
}

void Server::RefreshFigures(ServerState& st) {
  if (st.jobs > 0 || st.store == nullptr) return;  // a job owns the store: the last figures stand
  ServerState::Figures& f = st.figures;
  const auto& points = st.store->manifest().points;
  f.retained_points = points.size();
  f.last_point_ns = points.empty() ? 0 : points.back().time_ns;
  f.last_consistent_ns = st.store->manifest().last_consistent_time_ns();
  // drills.jsonl is read again only when its size changed.
  Env* env = st.store->env();
  std::string path = st.store->dir() + "/drills.jsonl";
  auto size = env->FileSize(path);
  if (!size.ok() || *size == f.drills_bytes_seen) return;
  f.drills_bytes_seen = *size;
  if (std::optional<store::DrillSummary> d = store::LastDrill(env, path)) {
    f.last_drill_ns = d->started_ns;
    f.last_drill_pass = d->pass ? 1 : 0;
  }
}

void Server::PublishMetrics(bool force) {
  if (!metrics_) return;
  uint64_t now = MonotonicNs();
  if (!force && now - metrics_published_ns_ < kPublishEveryNs) return;
  metrics_published_ns_ = now;
  metrics_->Publish(RenderMetrics());
}

std::string Server::RenderMetrics() {
  using metrics::Type;
  for (auto& [id, st] : servers_) RefreshFigures(st);
  std::map<std::string, bool> connected;
  size_t authenticated = 0;
  for (const auto& [sid, s] : sessions_) {
    if (s->hello_done && !s->ch->closing()) ++authenticated;
    if (s->hello_done && !s->reader && !s->ch->closing() && !s->failed) connected[s->server_id] = true;
  }
  metrics::Exposition e;
  auto per_server = [&](const char* name, Type type, const char* help, auto value) {
    e.Family(name, type, help);
    for (auto& [id, st] : servers_) e.Sample(value(st), id);
  };
  e.Family("blockrep_agent_connected", Type::kGauge, "1 while the server's agent holds a session, else 0.");
  for (auto& [id, st] : servers_) e.Sample(connected.count(id) ? 1 : 0, id);
  per_server("blockrep_agent_last_heard_timestamp_seconds", Type::kGauge,
             "When the staging last received a frame from the server's agent (0: not since the staging started).",
             [](ServerState& st) { return Seconds(st.figures.last_heard_utc_ns); });
  auto reported = [&](const char* name, const char* help, auto value) {
    e.Family(name, Type::kGauge, help);
    for (auto& [id, st] : servers_)
      if (st.figures.report_utc_ns != 0) e.Sample(value(st.figures.report), id);
  };
  reported("blockrep_agent_state",
           "The agent's state as it last reported it: 0 initial sync, 1 rescan, 2 continuous, 3 backlog, "
           "4 disconnected, 5 stalled (staging full).",
           [](const wire::AgentReport& r) { return static_cast<double>(r.state); });
  reported("blockrep_agent_lag_seconds",
           "Replication lag as the agent last reported it: age of its oldest write not yet durable here.",
           [](const wire::AgentReport& r) { return static_cast<double>(r.lag_ms) / 1e3; });
  reported("blockrep_agent_backlog_bytes", "Bytes the agent has to ship, as it last reported them.",
           [](const wire::AgentReport& r) { return static_cast<double>(r.backlog_bytes); });
  reported("blockrep_agent_rpo_target_seconds", "The agent's RPO target (--rpo-target).",
           [](const wire::AgentReport& r) { return static_cast<double>(r.rpo_target_ms) / 1e3; });
  e.Family("blockrep_agent_report_timestamp_seconds", Type::kGauge, "When the agent's last report arrived.");
  for (auto& [id, st] : servers_)
    if (st.figures.report_utc_ns != 0) e.Sample(Seconds(st.figures.report_utc_ns), id);
  per_server("blockrep_retained_points", Type::kGauge, "Recovery points the server's chain holds.",
             [](ServerState& st) { return static_cast<double>(st.figures.retained_points); });
  per_server("blockrep_last_point_timestamp_seconds", Type::kGauge, "Time of the newest recovery point (0: none).",
             [](ServerState& st) { return Seconds(st.figures.last_point_ns); });
  per_server("blockrep_last_consistent_point_timestamp_seconds", Type::kGauge,
             "Time of the newest consistent (frozen) recovery point (0: none).",
             [](ServerState& st) { return Seconds(st.figures.last_consistent_ns); });
  per_server("blockrep_stored_bytes", Type::kGauge, "Bytes of the server's pack files (records, ciphertext).",
             [](ServerState& st) { return static_cast<double>(st.pack_bytes); });
  per_server("blockrep_pack_files", Type::kGauge, "The server's pack files.",
             [](ServerState& st) { return static_cast<double>(st.pack_count); });
  per_server("blockrep_ingested_bytes_total", Type::kCounter, "Record bytes received from the server's agent.",
             [](ServerState& st) { return static_cast<double>(st.figures.ingested_bytes_total); });
  per_server("blockrep_points_committed_total", Type::kCounter, "Recovery points committed (durable, acknowledged).",
             [](ServerState& st) { return static_cast<double>(st.figures.points_committed_total); });
  e.Family("blockrep_last_drill_timestamp_seconds", Type::kGauge,
           "When the newest drill on record (drills.jsonl) started; absent without one.");
  for (auto& [id, st] : servers_)
    if (st.figures.last_drill_pass >= 0) e.Sample(Seconds(st.figures.last_drill_ns), id);
  e.Family("blockrep_last_drill_success", Type::kGauge, "1 if the newest drill on record passed, 0 if it failed.");
  for (auto& [id, st] : servers_)
    if (st.figures.last_drill_pass >= 0) e.Sample(st.figures.last_drill_pass, id);

  if (opts_.env == Env::Default()) {
    struct statvfs fs{};
    if (statvfs(opts_.store_dir.c_str(), &fs) == 0) {
      e.Family("blockrep_store_capacity_bytes", Type::kGauge, "Size of the filesystem holding the store.");
      e.Sample(static_cast<double>(fs.f_blocks) * static_cast<double>(fs.f_frsize));
      e.Family("blockrep_store_free_bytes", Type::kGauge, "Bytes of that filesystem available to the staging.");
      e.Sample(static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize));
    }
  }
  if (opts_.bucket && opts_.bucket->cache() != nullptr) {
    const PackCache::Usage u = opts_.bucket->cache()->usage();
    e.Family("blockrep_cache_packs_bytes", Type::kGauge, "Bytes of packs the bucket holds that the --s3-cache directory keeps too.");
    e.Sample(static_cast<double>(u.local_bytes));
    e.Family("blockrep_cache_limit_bytes", Type::kGauge, "The bound on those bytes (--s3-cache-bytes).");
    e.Sample(static_cast<double>(u.bound_bytes));
    e.Family("blockrep_cache_fetches_total", Type::kCounter, "Packs fetched from the bucket into the cache to be read.");
    e.Sample(static_cast<double>(u.fetches));
    e.Family("blockrep_cache_evictions_total", Type::kCounter, "Packs dropped from the cache to keep it within its bound.");
    e.Sample(static_cast<double>(u.evictions));
  }
  e.Family("blockrep_compactions_total", Type::kCounter, "Compactions run (retention, pack quota, startup).");
  e.Sample(static_cast<double>(figures_.compactions));
  e.Family("blockrep_compaction_reclaimed_bytes_total", Type::kCounter, "Pack bytes compaction freed, net of bytes copied.");
  e.Sample(static_cast<double>(figures_.compaction_reclaimed_bytes));
  e.Family("blockrep_pack_commit_seconds", Type::kHistogram,
           "Duration of one group commit of a pack: the write and its fsync, before records are acknowledged.");
  e.Sample(figures_.commit_seconds);

  e.Family("blockrep_sessions", Type::kGauge, "Sessions past TLS and HELLO (agents and recovery readers).");
  e.Sample(static_cast<double>(authenticated));
  e.Family("blockrep_connections", Type::kGauge, "Open connections, authenticated or not.");
  e.Sample(static_cast<double>(sessions_.size()));
  for (const Refusal& r : kRefusals) {
    e.Family(r.name, Type::kCounter, r.help);
    e.Sample(static_cast<double>(figures_.refused[static_cast<size_t>(r.code)]));
  }
  e.Family("blockrep_preauth_evicted_total", Type::kCounter,
           "Connections closed before TLS and HELLO to make room (budget of unauthenticated connections).");
  e.Sample(static_cast<double>(figures_.preauth_evicted));
  return e.text();
}

}  // namespace blockrep::staging
