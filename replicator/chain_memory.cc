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

Status RecordAckedPoint(const std::string& state_dir, const std::string& server_id, const AckedPoint& point,
                        Env* env) {
  std::string text = "server-id " + server_id + "\nlast-acked-point " + std::to_string(point.id) +
                     "\nlast-acked-time " + FormatUtc(point.time_ns) + "\nlast-acked-time-ns " +
                     std::to_string(point.time_ns) + "\nlast-acked-seal-mac " +
                     HexEncode(ByteSpan(point.seal_mac.data(), point.seal_mac.size())) + "\n";
  return env->WriteFileAtomic(state_dir + "/last-point",
                              ByteSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

Result<AckedPoint> ReadAckedPoint(const std::string& state_dir, const std::string& server_id, Env* env) {
  std::string path = state_dir + "/last-point";
  if (!env->Exists(path)) return AckedPoint{};
  BR_ASSIGN_OR_RETURN(Bytes raw, env->ReadFile(path, 4096));
  std::string text(raw.begin(), raw.end());
  std::string id;
  AckedPoint acked;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    std::string line = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    start = nl == std::string::npos ? text.size() : nl + 1;
    size_t sp = line.find(' ');
    std::string key = line.substr(0, sp), value = sp == std::string::npos ? "" : line.substr(sp + 1);
    char* end = nullptr;
    if (key == "server-id") {
      id = value;
    } else if (key == "last-acked-point" || key == "last-acked-time-ns") {
      unsigned long long v = std::strtoull(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0')
        return DataLoss(path + ": '" + Printable(line, 80) + "' is not a number; remove the file (the agent then "
                        "cannot tell a rolled-back staging this once)");
      (key == "last-acked-point" ? acked.id : acked.time_ns) = v;
    } else if (key == "last-acked-seal-mac") {
      Bytes mac;
      if (!HexDecode(value, &mac) || mac.size() != acked.seal_mac.size())
        return DataLoss(path + ": '" + Printable(line, 80) + "' is not a seal MAC (64 hex digits); remove the file (the "
                        "agent then cannot tell a rolled-back staging this once)");
      std::copy(mac.begin(), mac.end(), acked.seal_mac.begin());
    }
  }
  if (id != server_id) return AckedPoint{};
  return acked;
}

}  // namespace blockrep::agent
