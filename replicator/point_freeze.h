// How a point becomes consistent (README, Consistent points): at its last take the agent runs the
// pre-hook, freezes the filesystems mounted from its volumes (FreezeSet, with its watchdog), reads
// what the take found, thaws and runs the post-hook. A point is consistent only if the freeze held
// within its limit and the pre-hook succeeded. Without eBPF tracking, or with a volume that has no
// mounted filesystem, there is nothing to freeze: points are flagged not consistent, and note()
// says why.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "freeze.h"

namespace blockrep::agent {

class PointFreeze {
 public:
  // A freeze never outlives this (FreezeSet's watchdog thaws then).
  static constexpr uint64_t kLimitNs = 5ull * 1000000000ull;
  static constexpr int kHookLimitMs = 30000;

  // Decides whether points can be frozen: `tracking` is eBPF (the bitmap knows what was written
  // up to the freeze), `volume_paths` the protected volumes. Their mounts are looked up again at
  // every Begin: a filesystem unmounted, mounted or moved since is seen at the next point.
  void Plan(bool tracking, const std::vector<std::string>& volume_paths, std::string pre_hook, std::string post_hook);
  const std::string& note() const { return note_; }
  bool frozen() const { return set_ && set_->frozen(); }

  // The point's last take is next: pre-hook, then freeze (a failure is logged; the point is then
  // not consistent).
  void Begin(uint64_t point_id);
  // Its reads are done: thaw, post-hook. Whether the point is consistent, and how long the
  // filesystems were frozen (nullopt when nothing was frozen).
  struct Result {
    bool consistent = false;
    std::optional<uint64_t> frozen_ms;
  };
  Result Finish(uint64_t point_id);
  // Never leaves writers blocked (session teardown).
  void ThawIfFrozen();

 private:
  // Runs a hook with BLOCKREP_POINT_ID set, killing it after kHookLimitMs; false on failure (logged).
  bool RunHook(const std::string& path, const char* what, uint64_t point_id);

  // Looks the volumes' mounts up (/proc/self/mountinfo) and sets set_ and note_ from them.
  void Resolve();

  bool tracking_ = false;
  std::vector<std::string> volume_paths_;
  std::unique_ptr<FreezeSet> set_;
  std::string note_;
  std::string pre_hook_, post_hook_;
  bool pre_hook_ok_ = true;
};

}  // namespace blockrep::agent
