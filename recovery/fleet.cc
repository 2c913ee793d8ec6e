#include "fleet.h"

#include <algorithm>
#include <cinttypes>
#include <iterator>
#include <cstdio>

#include "blockrep/base/cli.h"
#include "blockrep/base/json.h"
#include "blockrep/store/store.h"

namespace blockrep::recovery {
namespace {

std::string Age(uint64_t then_ns, uint64_t now_ns) {
  if (then_ns == 0) return "-";
  uint64_t s = now_ns > then_ns ? (now_ns - then_ns) / 1000000000ull : 0;
  char buf[32];
  if (s < 120) std::snprintf(buf, sizeof buf, "%" PRIu64 "s", s);
  else if (s < 7200) std::snprintf(buf, sizeof buf, "%" PRIu64 "m", s / 60);
  else if (s < 172800) std::snprintf(buf, sizeof buf, "%" PRIu64 "h", s / 3600);
  else std::snprintf(buf, sizeof buf, "%" PRIu64 "d", s / 86400);
  return buf;
}

// "time" and "age_seconds" of an instant for JSON; null for none.
std::string When(uint64_t then_ns, uint64_t now_ns) {
  if (then_ns == 0) return "null";
  uint64_t age = now_ns > then_ns ? (now_ns - then_ns) / 1000000000ull : 0;
  return "{\"time\": " + JsonString(FormatUtc(then_ns)) + ", \"age_seconds\": " + std::to_string(age) + "}";
}

// AGENT_REPORT's state codes (docs/PROTOCOL.md, AGENT_REPORT).
std::string StateName(uint8_t code) {
  static const char* const kNames[] = {"INITIAL_SYNC", "RESCAN", "CONTINUOUS", "BACKLOG", "DISCONNECTED", "STALLED"};
  if (code == wire::FleetEntry::kNoReport) return "";
  return code < std::size(kNames) ? kNames[code] : "STATE_" + std::to_string(code);
}

}  // namespace

Result<std::vector<FleetRow>> ReadFleetFromStaging(const SourceSpec& spec) {
  BR_ASSIGN_OR_RETURN(wire::Fleet fleet, FetchFleet(spec));
  std::vector<FleetRow> rows;
  for (const wire::FleetEntry& e : fleet.servers) {
    FleetRow row;
    row.server_id = e.server_id;
    row.points = e.points;
    row.last_point_ns = e.last_point_ns;
    row.last_consistent_ns = e.last_consistent_ns;
    row.stored_bytes = e.stored_bytes;
    row.pack_files = e.pack_files;
    if (e.last_drill_pass >= 0) row.last_drill = store::DrillSummary{e.last_drill_ns, e.last_drill_pass == 1};
    FleetRow::Agent a;
    a.connected = e.connected;
    a.state = StateName(e.state);
    a.lag_ms = e.lag_ms;
    a.backlog_bytes = e.backlog_bytes;
    a.rpo_target_ms = e.rpo_target_ms;
    a.report_utc_ns = e.report_utc_ns;
    a.last_heard_utc_ns = e.last_heard_utc_ns;
    row.agent = a;
    rows.push_back(std::move(row));
  }
  std::sort(rows.begin(), rows.end(), [](const FleetRow& x, const FleetRow& y) { return x.server_id < y.server_id; });
  return rows;
}

Result<std::vector<FleetRow>> ReadFleet(const std::string& store_dir, const S3Flags& s3) {
  std::string root;
  BR_ASSIGN_OR_RETURN(std::shared_ptr<Env> env, OpenStoreEnv(store_dir, s3, &root));
  BR_ASSIGN_OR_RETURN(std::vector<std::string> ids, store::ListServers(root, env.get()));
  std::vector<FleetRow> rows;
  for (const std::string& id : ids) {
    FleetRow row;
    row.server_id = id;
    auto opened = store::ServerStore::Open(root, id, false, env.get());
    if (!opened.ok()) {
      row.problem = opened.status().message();
      rows.push_back(std::move(row));
      continue;
    }
    const store::Manifest& m = (*opened)->manifest();
    row.points = m.points.size();
    row.last_point_ns = m.points.empty() ? 0 : m.points.back().time_ns;
    row.last_consistent_ns = m.last_consistent_time_ns();
    store::ServerStore::PackUsage packs = (*opened)->CountPacks();
    row.stored_bytes = packs.bytes;
    row.pack_files = packs.count;
    row.last_drill = store::LastDrill((*opened)->env(), (*opened)->dir() + "/drills.jsonl");
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string FleetTable(const std::vector<FleetRow>& rows, uint64_t now_ns) {
  const bool agents = std::any_of(rows.begin(), rows.end(), [](const FleetRow& r) { return r.agent.has_value(); });
  char line[640];
  std::string out;
  if (agents) {
    std::snprintf(line, sizeof line, "%-24s %-13s %9s %10s ", "SERVER", "STATE", "LAG", "HEARD");
    out += line;
  } else {
    std::snprintf(line, sizeof line, "%-24s ", "SERVER");
    out += line;
  }
  std::snprintf(line, sizeof line, "%7s %10s %15s %14s %12s\n", "POINTS", "LAST AGE", "CONSISTENT AGE", "STORED BYTES",
                "LAST DRILL");
  out += line;
  for (const FleetRow& r : rows) {
    if (!r.problem.empty()) {
      std::snprintf(line, sizeof line, "%-24s unreadable: %s\n", r.server_id.c_str(), r.problem.c_str());
      out += line;
      continue;
    }
    if (agents) {
      std::string state = "-", lag = "-", heard = "-";
      if (r.agent) {
        state = !r.agent->connected ? "DISCONNECTED" : r.agent->state.empty() ? "CONNECTED" : r.agent->state;
        if (r.agent->report_utc_ns != 0) {
          char l[32];
          std::snprintf(l, sizeof l, "%.1fs", static_cast<double>(r.agent->lag_ms) / 1e3);
          lag = l;
        }
        heard = Age(r.agent->last_heard_utc_ns, now_ns);
      }
      std::snprintf(line, sizeof line, "%-24s %-13s %9s %10s ", r.server_id.c_str(), state.c_str(), lag.c_str(), heard.c_str());
    } else {
      std::snprintf(line, sizeof line, "%-24s ", r.server_id.c_str());
    }
    out += line;
    std::string drill = r.last_drill ? std::string(r.last_drill->pass ? "pass " : "FAIL ") + Age(r.last_drill->started_ns, now_ns)
                                     : "never";
    std::snprintf(line, sizeof line, "%7" PRIu64 " %10s %15s %14" PRIu64 " %12s\n", r.points,
                  Age(r.last_point_ns, now_ns).c_str(), Age(r.last_consistent_ns, now_ns).c_str(), r.stored_bytes,
                  drill.c_str());
    out += line;
  }
  if (rows.empty()) out += "(no servers)\n";
  return out;
}

std::string FleetJson(const std::vector<FleetRow>& rows, uint64_t now_ns) {
  std::string out = "[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const FleetRow& r = rows[i];
    out += std::string(i ? "," : "") + "\n  {\"server\": " + JsonString(r.server_id);
    if (!r.problem.empty()) {
      out += ", \"problem\": " + JsonString(r.problem) + "}";
      continue;
    }
    if (r.agent) {
      const FleetRow::Agent& a = *r.agent;
      char lag[32];
      std::snprintf(lag, sizeof lag, "%.3f", static_cast<double>(a.lag_ms) / 1e3);
      out += std::string(", \"connected\": ") + (a.connected ? "true" : "false") +
             ", \"state\": " + (a.state.empty() ? "null" : JsonString(a.state)) +
             ", \"lag_seconds\": " + (a.report_utc_ns ? std::string(lag) : "null") +
             ", \"backlog_bytes\": " + (a.report_utc_ns ? std::to_string(a.backlog_bytes) : "null") +
             ", \"rpo_target_seconds\": " + (a.report_utc_ns ? std::to_string(a.rpo_target_ms / 1000) : "null") +
             ", \"last_report\": " + When(a.report_utc_ns, now_ns) + ", \"last_heard\": " + When(a.last_heard_utc_ns, now_ns);
    }
    out += ", \"points\": " + std::to_string(r.points) + ", \"last_point\": " + When(r.last_point_ns, now_ns) +
           ", \"last_consistent_point\": " + When(r.last_consistent_ns, now_ns) +
           ", \"stored_bytes\": " + std::to_string(r.stored_bytes) + ", \"pack_files\": " + std::to_string(r.pack_files) +
           ", \"last_drill\": ";
    if (r.last_drill) {
      uint64_t age = now_ns > r.last_drill->started_ns ? (now_ns - r.last_drill->started_ns) / 1000000000ull : 0;
      out += "{\"started\": " + JsonString(FormatUtc(r.last_drill->started_ns)) + ", \"age_seconds\": " + std::to_string(age) +
             ", \"result\": " + JsonString(r.last_drill->pass ? "pass" : "fail") + "}";
    } else {
      out += "null";
    }
    out += "}";
  }
  return out + (rows.empty() ? "]\n" : "\n]\n");
}

}  // namespace blockrep::recovery
