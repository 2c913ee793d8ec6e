// The scenarios of the deterministic simulation (tests/sim/simulation.cc runs them by seed).
#pragma once

#include <cstdint>
#include <string>

namespace blockrep::sim {

struct SimOutcome {
  bool ok = true;
  std::string why;  // what the oracle found, when !ok
  uint64_t ops = 0;  // I/O operations of the staging's store
};

// The store alone: commits, expiry and compaction under power loss, failures and a full disk.
SimOutcome RunStoreScenario(uint64_t seed, bool verbose);
// Replication: a tracked volume, an agent and a staging, with connection cuts, agent restarts
// and staging power loss.
SimOutcome RunReplicationScenario(uint64_t seed, bool verbose);
// The whole system: the real agent and staging in one process (system_sim.cc).
SimOutcome RunSystemScenario(uint64_t seed, bool verbose);

}  // namespace blockrep::sim
