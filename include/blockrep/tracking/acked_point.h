// The agent's record of the last point the staging acknowledged to it, `<state-dir>/last-point`
// (text: server-id, last-acked-point, last-acked-time, last-acked-time-ns, last-acked-seal-mac).
// The agent keeps it to tell a rolled-back or forked staging (replicator/chain_memory.h); a
// failback on the same host reads it to know which point the agent's pinned tracker is relative
// to (recovery/tracked_delta.h).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "blockrep/base/env.h"
#include "blockrep/base/status.h"
#include "blockrep/crypto/seal.h"

namespace blockrep {

// The last point the staging acknowledged to this agent (all zero: none known).
struct AckedPoint {
  uint64_t id = 0;
  uint64_t time_ns = 0;
  std::array<uint8_t, kSealMacBytes> seal_mac{};  // all zero: not known
};
// <state_dir>/last-point, written atomically.
Status RecordAckedPoint(const std::string& state_dir, const std::string& server_id, const AckedPoint& point,
                        Env* env = Env::Default());
// Reads it back; all zero when there is none or it is another server's. A damaged file is an
// error (losing the record would silence rollback detection).
Result<AckedPoint> ReadAckedPoint(const std::string& state_dir, const std::string& server_id,
                                  Env* env = Env::Default());

}  // namespace blockrep
