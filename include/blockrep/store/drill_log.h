// The newest report of a server's drill log, `servers/<ID>/drills.jsonl` (docs/FORMAT.md): one
// JSON line per drill, appended by blockrep-recover drill (or by the staging, for a drill run
// over the network). Read by the staging's metrics and the fleet view. The line may come from a
// reader over the network, so it is read as untrusted text: only "started" and "result" are taken.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "blockrep/base/env.h"

namespace blockrep::store {

struct DrillSummary {
  uint64_t started_ns = 0;  // UTC
  bool pass = false;
};

// The last complete line of `path`, read from at most its last 64 KiB; nullopt when the file is
// missing, empty, or its last line is not a report with a readable "started" and "result".
std::optional<DrillSummary> LastDrill(Env* env, const std::string& path);

}  // namespace blockrep::store
