#include "tracker_choice.h"

namespace blockrep::agent {

Result<TrackerChoice> ChooseTracker(const std::string& mode, const std::string& server_id,
                                    const std::vector<std::unique_ptr<Volume>>& volumes) {
  TrackerChoice c;
  if (mode == "scan") {
    c.note = "scan (--tracker scan): every point reads whole volumes and ships what differs";
    return c;
  }
  std::vector<TrackedVolume> tracked;
  Status why;
  for (const auto& v : volumes) {
    auto t = DescribeBlockDevice(v->path);
    if (!t.ok()) {
      why = t.status();
      break;
    }
    tracked.push_back(*t);
  }
  if (why.ok()) {
    auto t = EbpfTracker::Open(server_id, tracked);
    if (t.ok()) {
      c.tracker = std::move(t).value();
      c.note = std::string("ebpf (") + (c.tracker->resumed() ? "pinned state reused" : "loaded and pinned") + " in " +
               EbpfTracker::PinDir(server_id) + ")";
      return c;
    }
    why = t.status();
  }
  if (mode == "ebpf") return why.Annotate("--tracker ebpf");
  c.note = "scan: eBPF unavailable (" + why.message() + "); every point reads whole volumes and ships what differs";
  return c;
}

}  // namespace blockrep::agent
