// The simulation's oracle, after the last power cut: the store opens, leftovers are removed as at
// a staging start, every point in `must_be_listed` is listed, and every listed point restores —
// each record read back, its checksum and AES-GCM tag checked — to exactly `expected[id]`. A point
// in `fuzzy` was read across several runs (a full point or rescan resumed from the agent's
// checkpoint, without a tracker: docs/TRACKING.md): each of its blocks holds what the volume held
// there in one of those runs' volumes. Returns "" when all of that holds, else what does not.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/crypto/record.h"
#include "fault_env.h"

namespace blockrep::sim {

// One step of scenario `seed`, on stderr when it runs with --verbose.
void Trace(bool verbose, uint64_t seed, const std::string& line);

std::string CheckStore(FaultEnv* env, const std::string& root, const std::string& server_id, const DataKey& key,
                       uint64_t volume_bytes, const std::map<uint64_t, Bytes>& expected,
                       const std::set<uint64_t>& must_be_listed,
                       const std::map<uint64_t, std::vector<Bytes>>& fuzzy = {});

}  // namespace blockrep::sim
