// blockrep-recover servers: the fleet view, one row per protected server — its points, the age of
// its newest and newest consistent point, the bytes its packs hold, its last drill. From a store
// (no key needed, nothing decrypted), or from a staging as an operator (--staging, an operator
// certificate), which adds what only the staging knows: whether the agent is connected, its state,
// lag and backlog as it last reported them, and when it was last heard.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "blockrep/base/status.h"
#include "blockrep/store/drill_log.h"
#include "source.h"

namespace blockrep::recovery {

struct FleetRow {
  std::string server_id;
  uint64_t points = 0;
  uint64_t last_point_ns = 0, last_consistent_ns = 0;  // 0: none
  uint64_t stored_bytes = 0, pack_files = 0;
  std::optional<store::DrillSummary> last_drill;
  std::string problem;  // the server's store could not be read: why (the other fields are empty)
  // Over --staging only.
  struct Agent {
    bool connected = false;
    std::string state;  // its last AGENT_REPORT's ("" when none came since the staging started)
    uint64_t lag_ms = 0, backlog_bytes = 0, rpo_target_ms = 0;
    uint64_t report_utc_ns = 0, last_heard_utc_ns = 0;  // 0: none
  };
  std::optional<Agent> agent;
};

Result<std::vector<FleetRow>> ReadFleet(const std::string& store_dir, const S3Flags& s3 = {});
// From the staging `spec.staging` with the operator certificate in `spec.tls`.
Result<std::vector<FleetRow>> ReadFleetFromStaging(const SourceSpec& spec);
std::string FleetTable(const std::vector<FleetRow>& rows, uint64_t now_utc_ns);
std::string FleetJson(const std::vector<FleetRow>& rows, uint64_t now_utc_ns);

}  // namespace blockrep::recovery
