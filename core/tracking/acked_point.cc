#include "blockrep/tracking/acked_point.h"

#include <algorithm>
#include <cstdlib>

#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"

namespace blockrep {

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

}  // namespace blockrep
