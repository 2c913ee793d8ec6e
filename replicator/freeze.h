// Consistency points (README, Consistent points): the filesystems mounted from the protected block devices are
// frozen (FIFREEZE) while the agent takes and reads the last dirty blocks of a point, then thawed.
//
// A frozen filesystem blocks every writer on the server, so a freeze never outlives its limit:
// a watchdog process, forked at each freeze, thaws the filesystems when the limit passes or the
// moment the agent dies (its end of a pipe closes), even on SIGKILL.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "blockrep/base/fs.h"
#include "blockrep/base/status.h"

namespace blockrep::agent {

struct MountedFs {
  std::string mountpoint;
  std::string device;  // the protected volume it is mounted from
  dev_t rdev = 0;      // that device's number: what the mount point's st_dev must be to freeze it
};

// The text of /proc/self/mountinfo.
Result<std::string> ReadMountInfo();

// The mounts of `devices` (block device paths) listed in `mountinfo` (/proc/self/mountinfo
// format), one per filesystem; `unmounted` receives the devices with no mount.
std::vector<MountedFs> FindMounts(const std::vector<std::string>& devices, const std::string& mountinfo,
                                  std::vector<std::string>* unmounted);

class FreezeSet {
 public:
  explicit FreezeSet(std::vector<MountedFs> mounts) : mounts_(std::move(mounts)) {}
  ~FreezeSet();
  FreezeSet(const FreezeSet&) = delete;
  FreezeSet& operator=(const FreezeSet&) = delete;

  const std::vector<MountedFs>& mounts() const { return mounts_; }
  // Freezes every filesystem, or none (a failure thaws those already frozen). The watchdog
  // thaws them after `limit_ns` or when this process dies. A mount point that no longer holds
  // its device's filesystem (unmounted, or another mounted over it) fails the whole freeze:
  // FIFREEZE on it would stop the writers of whatever filesystem the path now leads to.
  Status Freeze(uint64_t limit_ns);
  bool frozen() const { return frozen_; }
  // Thaws; returns how long the filesystems were frozen, and whether the watchdog had to step in
  // first (the freeze overran its limit: what was read after that is not of one instant).
  struct Thawed {
    uint64_t frozen_ns = 0;
    bool overran = false;
  };
  Result<Thawed> Thaw();

 private:
  std::vector<MountedFs> mounts_;
  std::vector<UniqueFd> fds_;
  bool frozen_ = false;
  uint64_t frozen_at_ns_ = 0;
  uint64_t limit_ns_ = 0;
  pid_t watchdog_ = -1;
  int watchdog_pipe_ = -1;  // our end; closing it tells the watchdog we are done (or dead)
};

}  // namespace blockrep::agent
