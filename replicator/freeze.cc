#include "freeze.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <set>
#include <sstream>

#include "blockrep/base/cli.h"

namespace blockrep::agent {
namespace {

// The watchdog: waits for EOF on the pipe (the agent thawed, or died) until the deadline,
// then thaws whatever is still frozen. Only async-signal-safe calls: it runs after fork().
[[noreturn]] void RunWatchdog(int pipe_fd, const std::vector<int>& fds, uint64_t limit_ns) {
  pollfd p{pipe_fd, POLLIN, 0};
  int timeout_ms = static_cast<int>(limit_ns / 1000000);
  while (poll(&p, 1, timeout_ms) < 0 && errno == EINTR) {
  }
  for (int fd : fds) ioctl(fd, FITHAW, 0);  // EINVAL when the agent thawed already: fine
  _exit(0);
}

}  // namespace

Result<std::string> ReadMountInfo() {
  // /proc files report a size of 0: read to the end.
  UniqueFd fd(open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus("open /proc/self/mountinfo", errno);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("read /proc/self/mountinfo", errno);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (64u << 20)) return InvalidArgument("/proc/self/mountinfo is larger than 64 MiB");
  }
}

std::vector<MountedFs> FindMounts(const std::vector<std::string>& devices, const std::string& mountinfo,
                                  std::vector<std::string>* unmounted) {
  std::vector<MountedFs> out;
  std::set<dev_t> seen;
  for (const std::string& dev : devices) {
    struct stat st{};
    bool found = false;
    if (stat(dev.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
      std::istringstream lines(mountinfo);
      std::string line;
      while (std::getline(lines, line)) {
        // "36 35 98:0 /mnt1 /mnt/x rw,noatime master:1 - ext4 /dev/root rw": field 3 is the
        // filesystem's device, field 5 the mount point (octal escapes for spaces).
        std::istringstream f(line);
        std::string id, parent, majmin, root, mp;
        if (!(f >> id >> parent >> majmin >> root >> mp)) continue;
        unsigned maj = 0, min = 0;
        if (sscanf(majmin.c_str(), "%u:%u", &maj, &min) != 2) continue;
        if (makedev(maj, min) != st.st_rdev) continue;
        found = true;
        if (!seen.insert(st.st_rdev).second) break;  // one freeze per filesystem (bind mounts)
        std::string unescaped;
        for (size_t i = 0; i < mp.size(); ++i) {
          if (mp[i] == '\\' && i + 3 < mp.size()) {
            unescaped += static_cast<char>(std::stoi(mp.substr(i + 1, 3), nullptr, 8));
            i += 3;
          } else {
            unescaped += mp[i];
          }
        }
        out.push_back({unescaped, dev, st.st_rdev});
        break;
      }
    }
    if (!found) unmounted->push_back(dev);
  }
  return out;
}

FreezeSet::~FreezeSet() {
  if (frozen_) Thaw().status().IgnoreError();  // the watchdog covers us if this fails too
}

Status FreezeSet::Freeze(uint64_t limit_ns) {
  if (frozen_) return Internal("filesystems are already frozen");
  fds_.clear();
  for (const MountedFs& m : mounts_) {
    UniqueFd fd(open(m.mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus("open " + m.mountpoint + " to freeze it", errno);
    struct stat st{};
    if (fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + m.mountpoint + " to freeze it", errno);
    if (st.st_dev != m.rdev)
      return NotFound(m.mountpoint + " no longer holds the filesystem of " + m.device +
                                " (unmounted, or another mounted over it): not freezing what is there now");
    fds_.push_back(std::move(fd));
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return ErrnoStatus("pipe for the freeze watchdog", errno);
  std::vector<int> raw;
  for (const UniqueFd& fd : fds_) raw.push_back(fd.get());
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(p[0]);
    close(p[1]);
    return ErrnoStatus("fork the freeze watchdog", err);
  }
  if (pid == 0) {
    close(p[1]);
    RunWatchdog(p[0], raw, limit_ns);
  }
  close(p[0]);
  watchdog_ = pid;
  watchdog_pipe_ = p[1];
  limit_ns_ = limit_ns;
  frozen_at_ns_ = MonotonicNs();
  for (size_t i = 0; i < fds_.size(); ++i) {
    if (ioctl(fds_[i].get(), FIFREEZE, 0) != 0) {
      int err = errno;
      for (size_t j = 0; j < i; ++j) ioctl(fds_[j].get(), FITHAW, 0);
      frozen_ = true;  // lets Thaw() retire the watchdog
      Thaw().status().IgnoreError();  // nothing is frozen now; the freeze error below is the news
      return ErrnoStatus("freeze " + mounts_[i].mountpoint, err);
    }
  }
  frozen_ = true;
  return Status::Ok();
}

Result<FreezeSet::Thawed> FreezeSet::Thaw() {
  if (!frozen_) return Thawed{};
  Thawed t;
  t.frozen_ns = MonotonicNs() - frozen_at_ns_;
  t.overran = t.frozen_ns >= limit_ns_;
  Status first;
  for (size_t i = 0; i < fds_.size(); ++i) {
    // EINVAL: not frozen (the watchdog thawed it, or the freeze of it failed).
    if (ioctl(fds_[i].get(), FITHAW, 0) != 0 && errno != EINVAL && first.ok())
      first = ErrnoStatus("thaw " + mounts_[i].mountpoint, errno);
  }
  frozen_ = false;
  if (watchdog_pipe_ >= 0) {
    // Closing is the signal (EOF). Never write: after an overrun the watchdog has exited, and a
    // write to a pipe without reader would kill us with SIGPIPE.
    close(watchdog_pipe_);
    watchdog_pipe_ = -1;
  }
  if (watchdog_ > 0) {
    while (waitpid(watchdog_, nullptr, 0) < 0 && errno == EINTR) {
    }
    watchdog_ = -1;
  }
  fds_.clear();
  if (!first.ok()) return first;
  return t;
}

}  // namespace blockrep::agent
