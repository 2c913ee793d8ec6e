#include "blockrep/store/drill_log.h"

#include <algorithm>

#include "blockrep/base/cli.h"

namespace blockrep::store {
namespace {

constexpr size_t kTailBytes = 64 * 1024;

// `"key": "value"` of one report line; the top-level "result" and "started" are the last of
// their name on the line (nested objects come before them, or do not use those names).
std::string Field(const std::string& line, const std::string& key) {
  std::string pat = "\"" + key + "\": \"";
  size_t at = line.rfind(pat);
  if (at == std::string::npos) return "";
  size_t from = at + pat.size();
  size_t to = line.find('"', from);
  return to == std::string::npos ? "" : line.substr(from, std::min<size_t>(to - from, 64));
}

}  // namespace

std::optional<DrillSummary> LastDrill(Env* env, const std::string& path) {
  auto size = env->FileSize(path);
  if (!size.ok() || *size == 0) return std::nullopt;
  auto file = env->Open(path, OpenMode::kRead);
  if (!file.ok()) return std::nullopt;
  uint64_t from = *size > kTailBytes ? *size - kTailBytes : 0;
  std::string tail(static_cast<size_t>(*size - from), '\0');
  auto got = (*file)->ReadAt(from, reinterpret_cast<uint8_t*>(tail.data()), tail.size());
  if (!got.ok()) return std::nullopt;
  tail.resize(*got);
  while (!tail.empty() && tail.back() == '\n') tail.pop_back();
  size_t nl = tail.rfind('\n');
  std::string line = nl == std::string::npos ? tail : tail.substr(nl + 1);
  auto started = ParseUtc(Field(line, "started"));
  std::string result = Field(line, "result");
  if (!started.ok() || (result != "pass" && result != "fail")) return std::nullopt;
  return DrillSummary{*started, result == "pass"};
}

}  // namespace blockrep::store
