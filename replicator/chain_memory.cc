#include "chain_memory.h"

#include <algorithm>
#include <cstdlib>

#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"

namespace blockrep::agent {

Status ChainMemory::Load(const std::string& state_dir, const std::string& server_id) {
  if (state_dir.empty()) return Status::Ok();
  BR_ASSIGN_OR_RETURN(known_, ReadAckedPoint(state_dir, server_id, env_));
  return Status::Ok();
}

void ChainMemory::RaiseTo(uint64_t point) {
  if (point <= known_.id) return;
  known_ = AckedPoint{point, 0, {}};
}

std::string ChainMemory::Check(const wire::HelloOk& h) {
  if (known_.id == 0) return "";
  auto when = [](uint64_t t) { return t == 0 ? std::string() : " (" + FormatUtc(t) + ")"; };
  std::string acked = "point " + std::to_string(known_.id) + when(known_.time_ns);
  std::string alarm;
  if (h.last_point_id < known_.id)
    alarm = "the staging's chain ends at " +
            (h.last_point_id == 0 ? std::string("no point") : "point " + std::to_string(h.last_point_id) + when(h.last_time_ns)) +
            ", but it acknowledged " + acked + " to this agent: its store was rolled back or replaced";
  else if (h.last_point_id == known_.id && known_.time_ns != 0 && h.last_time_ns != known_.time_ns)
    alarm = "the staging's point " + std::to_string(h.last_point_id) + " is dated " + FormatUtc(h.last_time_ns) +
            ", but the " + acked + " it acknowledged to this agent is another: its chain forked (store replaced or edited)";
  if (!alarm.empty()) {
    alarm_ = alarm;
    rescan_due_ = true;
  }
  return alarm;
}

SealLink ChainMemory::LinkFor(uint64_t chain_head) const {
  if (known_.id != 0 && known_.id >= chain_head) return SealLink{known_.id, known_.seal_mac};
  return SealLink{chain_head, {}};
}

Status ChainMemory::Acked(const AckedPoint& point, const std::string& state_dir, const std::string& server_id) {
  known_ = point;
  rescan_due_ = false;
  if (state_dir.empty()) return Status::Ok();
  return RecordAckedPoint(state_dir, server_id, point, env_);
}

}  // namespace blockrep::agent
