// blockrep-recover servers: the fleet view of a store, one row per protected server — its points,
// the age of its newest and newest consistent point, the bytes its packs hold, its last drill.
// Read from the store alone (no key needed, nothing decrypted). What only the staging knows —
// whether an agent is connected, its state and lag — is on the staging's /metrics (README.md,
// Metrics).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "blockrep/base/status.h"
#include "blockrep/store/drill_log.h"

namespace blockrep::recovery {

struct FleetRow {
  std::string server_id;
  uint64_t points = 0;
  uint64_t last_point_ns = 0, last_consistent_ns = 0;  // 0: none
  uint64_t stored_bytes = 0, pack_files = 0;
  std::optional<store::DrillSummary> last_drill;
  std::string problem;  // the server's store could not be read: why (the other fields are empty)
};

Result<std::vector<FleetRow>> ReadFleet(const std::string& store_dir);
std::string FleetTable(const std::vector<FleetRow>& rows, uint64_t now_utc_ns);
std::string FleetJson(const std::vector<FleetRow>& rows, uint64_t now_utc_ns);

}  // namespace blockrep::recovery
