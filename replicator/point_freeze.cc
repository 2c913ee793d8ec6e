#include "point_freeze.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "blockrep/base/cli.h"

namespace blockrep::agent {
namespace {

constexpr const char* kProg = "blockrep-agent";

}  // namespace

void PointFreeze::Plan(bool tracking, const std::vector<std::string>& volume_paths, std::string pre_hook,
                       std::string post_hook) {
  pre_hook_ = std::move(pre_hook);
  post_hook_ = std::move(post_hook);
  tracking_ = tracking;
  volume_paths_ = volume_paths;
  Resolve();
}

void PointFreeze::Resolve() {
  set_.reset();
  // A freeze helps only where the bitmap knows what was written up to it: eBPF tracking.
  if (!tracking_) {
    note_ = "points are not consistent: without eBPF tracking there is no freeze";
    return;
  }
  auto mountinfo = ReadMountInfo();
  if (!mountinfo.ok()) {
    note_ = "points are not consistent: " + mountinfo.status().message();
    return;
  }
  std::vector<std::string> unmounted;
  std::vector<MountedFs> mounts = FindMounts(volume_paths_, *mountinfo, &unmounted);
  if (!unmounted.empty()) {
    note_ = "points are not consistent: " + unmounted.front() + " has no mounted filesystem to freeze";
    return;
  }
  std::string where;
  for (const MountedFs& m : mounts) where += (where.empty() ? "" : ", ") + m.mountpoint;
  note_ = "each point ends with " + where + " frozen";
  set_ = std::make_unique<FreezeSet>(std::move(mounts));
}

void PointFreeze::Begin(uint64_t point_id) {
  std::string before = note_;
  Resolve();
  if (note_ != before) Log(kProg, "point " + std::to_string(point_id) + ": the mounts changed: " + note_);
  if (!set_) return;
  pre_hook_ok_ = pre_hook_.empty() || RunHook(pre_hook_, "pre-hook", point_id);
  // Writers stop here; what the last take finds is read before they resume, so the point holds
  // the volumes as of this instant.
  Status fz = set_->Freeze(kLimitNs);
  if (!fz.ok()) Log(kProg, "warning: " + fz.message() + "; point " + std::to_string(point_id) + " will not be consistent");
}

PointFreeze::Result PointFreeze::Finish(uint64_t point_id) {
  Result r;
  if (!frozen()) return r;
  auto t = set_->Thaw();
  if (!t.ok()) {
    Log(kProg, "warning: " + t.status().message() + "; point " + std::to_string(point_id) + " is not consistent");
  } else {
    r.frozen_ms = t->frozen_ns / 1000000;
    if (t->overran) {
      Log(kProg, "warning: the freeze for point " + std::to_string(point_id) + " passed its limit of " +
                     std::to_string(kLimitNs / 1000000) + " ms and was lifted; the point is not consistent");
    } else {
      r.consistent = pre_hook_ok_;  // a failed pre-hook: applications may not have quiesced
      Log(kProg, "point " + std::to_string(point_id) + ": filesystems frozen for " + std::to_string(*r.frozen_ms) + " ms");
    }
  }
  if (!post_hook_.empty()) RunHook(post_hook_, "post-hook", point_id);
  return r;
}

void PointFreeze::ThawIfFrozen() {
  if (frozen()) set_->Thaw().status().IgnoreError();  // never leave writers blocked
}

bool PointFreeze::RunHook(const std::string& path, const char* what, uint64_t point_id) {
  pid_t pid = fork();
  if (pid < 0) {
    Log(kProg, std::string("warning: cannot fork the ") + what + ": " + std::strerror(errno));
    return false;
  }
  if (pid == 0) {
    setenv("BLOCKREP_POINT_ID", std::to_string(point_id).c_str(), 1);
    execl(path.c_str(), path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  for (int waited = 0;; waited += 10) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return false;
    if (waited >= kHookLimitMs) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      Log(kProg, std::string("warning: ") + what + " " + path + " ran over " + std::to_string(kHookLimitMs / 1000) +
                     " s and was killed; point " + std::to_string(point_id) + " is not consistent");
      return false;
    }
    usleep(10000);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  Log(kProg, std::string("warning: ") + what + " " + path + " failed (" +
                 (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status)) : std::string("killed by a signal")) +
                 "); point " + std::to_string(point_id) + " is not consistent");
  return false;
}

}  // namespace blockrep::agent
