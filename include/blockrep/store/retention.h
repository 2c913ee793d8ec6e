// Which recovery points a server keeps (docs/FORMAT.md, Retention). Retention is a pure function of the chain
// and of "now", read from a Clock that tests replace to run days of retention in seconds; the
// staging runs the very same function with the system clock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blockrep/base/clock.h"
#include "blockrep/base/status.h"
#include "blockrep/store/store.h"

namespace blockrep {

// "EVERY:FOR": within FOR of now, one point per EVERY-long slot of UTC time (slots are aligned
// to the epoch, so daily slots are UTC days).
struct RetentionTier {
  uint64_t every_ns = 0;
  uint64_t keep_ns = 0;
};

struct RetentionPolicy {
  std::vector<RetentionTier> tiers;
  uint32_t keep_last = 0;  // the newest N points are kept whatever the tiers say
  // No point younger than this expires, whatever the tiers, keep_last or the points' flags say
  // (--min-retention): an agent that turns hostile cannot push genuine points out of the chain
  // by committing forged ones, because a point's time is the staging's (checked at BEGIN_POINT).
  uint64_t min_retention_ns = 0;
  bool keep_all = false;   // "all": nothing expires
  // --keep-labelled: a labelled point (blockrep-agent point --label) is kept this long beyond the
  // longest tier, counted from its time (kKeepForever: never expires by age). At most
  // kLabelledPointsKept of a server's labelled points, the newest, are kept by their label.
  uint64_t keep_labelled_ns = kDefaultKeepLabelledNs;
  static constexpr uint64_t kDefaultKeepLabelledNs = 7ull * 24 * 3600 * 1000000000ull;
  static constexpr uint64_t kKeepForever = UINT64_MAX;
  static constexpr size_t kLabelledPointsKept = 256;
  // How long after its time a labelled point is kept: the longest tier's FOR + keep_labelled_ns.
  uint64_t LabelledKeepNs() const;

  // "10m:1h,1h:24h,1d:7d" (the default), "all", or "none" (only --keep-last and the newest point).
  static Result<RetentionPolicy> Parse(const std::string& text, uint32_t keep_last);
  std::string ToString() const;
};

inline constexpr const char* kDefaultRetention = "10m:1h,1h:24h,1d:7d";

// The ids of `points` (ascending id, as in a manifest) that `policy` no longer keeps at `now_ns`.
// Kept, whatever else: the newest point (the base the agent's next point builds on), the
// newest keep_last points, every point younger than min_retention_ns and every labelled point
// younger than LabelledKeepNs() (the newest kLabelledPointsKept of them). Each tier keeps, in every
// slot that holds a point younger than its FOR, the newest consistent point of the slot, or the
// newest point when none is consistent.
std::vector<uint64_t> PointsToExpire(const std::vector<store::PointInfo>& points, const RetentionPolicy& policy,
                                     uint64_t now_ns);

// What one EnforceRetention call did.
struct RetentionRun {
  std::vector<uint64_t> expired;  // point ids
  uint64_t expired_bytes = 0;     // stored bytes those points had added
  bool compacted = false;         // Compact ran (stats below, summed over its rounds)
  store::ServerStore::CompactionStats compaction;
  uint64_t compaction_ms = 0;
  Status status;  // the first failure; a failure costs space, never a retained point
};

// Compaction runs after an expiry once the points expired since the last compaction had added
// this share of what the retained points added: it reads every retained index, so it should be
// worth a full pass.
inline constexpr double kCompactWhenExpiredShare = 0.125;

// The staging's retention step, run after every committed point and at startup: expires what
// `policy` no longer keeps at `now_ns`, then compacts one round when enough is waiting
// (`*expired_bytes_waiting` carries that estimate between calls) or until done when
// `compact_fully` (startup).
RetentionRun EnforceRetention(store::ServerStore& store, const RetentionPolicy& policy, uint64_t now_ns,
                              const std::vector<uint32_t>& pinned_packs, bool compact_fully,
                              uint64_t* expired_bytes_waiting, bool merge_small_packs = false);

}  // namespace blockrep
