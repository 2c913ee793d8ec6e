// Which change tracker protects the volumes (--tracker auto|ebpf|scan, docs/TRACKING.md): eBPF
// where every volume is a block device and the program loads, otherwise scanning (every point
// reads whole volumes and ships what differs), with a note saying which and why.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "blockrep/tracking/tracker.h"
#include "volume.h"

namespace blockrep::agent {

struct TrackerChoice {
  std::unique_ptr<EbpfTracker> tracker;  // null: scanning
  std::string note;                      // one line for the log and the summary
};

// `mode`: auto | ebpf | scan. With ebpf, a tracker that cannot load is an error.
Result<TrackerChoice> ChooseTracker(const std::string& mode, const std::string& server_id,
                                    const std::vector<std::unique_ptr<Volume>>& volumes);

}  // namespace blockrep::agent
