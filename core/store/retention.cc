#include "blockrep/store/retention.h"

#include <map>
#include <set>

#include "blockrep/base/cli.h"

namespace blockrep {
namespace {

std::string FormatDuration(uint64_t ns) {
  struct Unit {
    uint64_t ns;
    const char* suffix;
  };
  static constexpr Unit kUnits[] = {{86400000000000ull, "d"}, {3600000000000ull, "h"}, {60000000000ull, "m"},
                                    {1000000000ull, "s"},     {1000000ull, "ms"}};
  for (const Unit& u : kUnits)
    if (ns % u.ns == 0) return std::to_string(ns / u.ns) + u.suffix;
  return std::to_string(ns / 1000000ull) + "ms";
}

}  // namespace

Result<RetentionPolicy> RetentionPolicy::Parse(const std::string& text, uint32_t keep_last) {
  RetentionPolicy p;
  p.keep_last = keep_last;
  if (text == "all") {
    p.keep_all = true;
    return p;
  }
  if (text == "none") return p;
  const std::string hint = " (expected EVERY:FOR[,EVERY:FOR...] like " + std::string(kDefaultRetention) +
                           ", or all, or none)";
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    size_t colon = item.find(':');
    if (colon == std::string::npos) return InvalidArgument("--retention " + text + ": '" + item + "' lacks ':'" + hint);
    auto every = ParseDurationNs(item.substr(0, colon), "--retention");
    if (!every.ok()) return InvalidArgument(every.status().message() + hint);
    auto keep = ParseDurationNs(item.substr(colon + 1), "--retention");
    if (!keep.ok()) return InvalidArgument(keep.status().message() + hint);
    if (*keep < *every)
      return InvalidArgument("--retention " + text + ": in '" + item +
                             "' the slot is longer than the time it is kept; write EVERY:FOR with EVERY <= FOR");
    p.tiers.push_back(RetentionTier{*every, *keep});
    if (p.tiers.size() > 16) return InvalidArgument("--retention " + text + ": at most 16 tiers");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return p;
}

std::string RetentionPolicy::ToString() const {
  if (keep_all) return "all";
  std::string s;
  for (const RetentionTier& t : tiers) {
    // Appended piece by piece: GCC 12's -Wrestrict misfires on `"," + std::string&&` at -O3.
    if (!s.empty()) s += ',';
    s += FormatDuration(t.every_ns);
    s += ':';
    s += FormatDuration(t.keep_ns);
  }
  if (s.empty()) s = "none";
  if (keep_last) s += " + keep-last " + std::to_string(keep_last);
  if (min_retention_ns) s += " + min-retention " + FormatDuration(min_retention_ns);
  s += keep_labelled_ns == kKeepForever ? std::string(" + labelled points forever")
                                        : " + labelled points " + FormatDuration(LabelledKeepNs());
  return s;
}

uint64_t RetentionPolicy::LabelledKeepNs() const {
  if (keep_labelled_ns == kKeepForever) return kKeepForever;
  uint64_t longest = 0;
  for (const RetentionTier& t : tiers) longest = std::max(longest, t.keep_ns);
  return longest > kKeepForever - keep_labelled_ns ? kKeepForever : longest + keep_labelled_ns;
}

std::vector<uint64_t> PointsToExpire(const std::vector<store::PointInfo>& points, const RetentionPolicy& policy,
                                     uint64_t now_ns) {
  if (policy.keep_all || points.empty()) return {};
  std::set<size_t> keep;
  for (size_t i = 0; i < points.size() && i < std::max<size_t>(1, policy.keep_last); ++i)
    keep.insert(points.size() - 1 - i);
  for (size_t i = 0; policy.min_retention_ns > 0 && i < points.size(); ++i)
    if (now_ns < points[i].time_ns || now_ns - points[i].time_ns < policy.min_retention_ns) keep.insert(i);
  const uint64_t labelled_ns = policy.LabelledKeepNs();
  size_t labelled = 0;
  for (size_t i = points.size(); i-- > 0 && labelled < RetentionPolicy::kLabelledPointsKept;) {
    const store::PointInfo& p = points[i];
    if (p.label.empty()) continue;
    ++labelled;
    if (now_ns < p.time_ns || now_ns - p.time_ns < labelled_ns) keep.insert(i);
  }
  for (const RetentionTier& tier : policy.tiers) {
    // slot -> index of the point kept for it; points are in ascending id, so later wins.
    std::map<uint64_t, size_t> chosen;
    for (size_t i = 0; i < points.size(); ++i) {
      const store::PointInfo& p = points[i];
      uint64_t age_ns = now_ns > p.time_ns ? now_ns - p.time_ns : 0;
      if (age_ns >= tier.keep_ns) continue;
      uint64_t slot = p.time_ns / tier.every_ns;
      auto it = chosen.find(slot);
      if (it == chosen.end() || p.consistent() || !points[it->second].consistent()) chosen[slot] = i;
    }
    for (const auto& [slot, i] : chosen) keep.insert(i);
  }
  std::vector<uint64_t> expire;
  for (size_t i = 0; i < points.size(); ++i)
    if (keep.count(i) == 0) expire.push_back(points[i].id);
  return expire;
}

RetentionRun EnforceRetention(store::ServerStore& store, const RetentionPolicy& policy, uint64_t now_ns,
                              const std::vector<uint32_t>& pinned_packs, bool compact_fully,
                              uint64_t* expired_bytes_waiting, bool merge_small_packs) {
  RetentionRun run;
  run.expired = PointsToExpire(store.manifest().points, policy, now_ns);
  if (!run.expired.empty()) {
    std::set<uint64_t> ids(run.expired.begin(), run.expired.end());
    for (const store::PointInfo& p : store.manifest().points)
      if (ids.count(p.id) != 0) run.expired_bytes += p.bytes_added;
    run.status = store.ExpirePoints(run.expired);
    if (!run.status.ok()) {
      run.expired.clear();
      return run;
    }
    *expired_bytes_waiting += run.expired_bytes;
  }
  uint64_t retained_bytes = 0;
  for (const store::PointInfo& p : store.manifest().points) retained_bytes += p.bytes_added;
  if (!compact_fully && (*expired_bytes_waiting == 0 || static_cast<double>(*expired_bytes_waiting) <
                                                           kCompactWhenExpiredShare * static_cast<double>(retained_bytes)))
    return run;
  store::ServerStore::CompactionOptions options;
  options.pinned_packs = pinned_packs;
  options.merge_small_packs = merge_small_packs;
  uint64_t start = MonotonicNs();
  run.compacted = true;
  for (;;) {
    auto round = store.Compact(options);
    if (!round.ok()) {
      run.status = round.status();
      break;
    }
    run.compaction.packs_rewritten += round->packs_rewritten;
    run.compaction.packs_deleted += round->packs_deleted;
    run.compaction.records_copied += round->records_copied;
    run.compaction.bytes_copied += round->bytes_copied;
    run.compaction.bytes_reclaimed += round->bytes_reclaimed;
    run.compaction.indexes_rewritten += round->indexes_rewritten;
    run.compaction.more = round->more;
    if (!round->more) {
      *expired_bytes_waiting = 0;
      break;
    }
    if (!compact_fully) break;  // the rest goes on after the next point
  }
  run.compaction_ms = (MonotonicNs() - start) / 1000000;
  return run;
}

}  // namespace blockrep
