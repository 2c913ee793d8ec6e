// Freeze watchdog tests on a real ext4 loop mount. Needs root; exits 77 (skipped) otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "shell.h"
#include "freeze.h"
#include "point_freeze.h"

namespace blockrep::agent {
namespace {

using testing_util::Shell;

class FreezeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/blockrep-freeze.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(std::system(("truncate -s 64M " + dir_ + "/disk.img").c_str()), 0);
    dev_ = Shell("losetup --find --show " + dir_ + "/disk.img");
    ASSERT_EQ(dev_.rfind("/dev/loop", 0), 0u) << dev_;
    ASSERT_EQ(std::system(("mkfs.ext4 -q -F " + dev_ + " && mkdir " + dir_ + "/mnt && mount " + dev_ + " " + dir_ + "/mnt").c_str()), 0);
    auto info = ReadMountInfo();
    ASSERT_TRUE(info.ok());
    std::vector<std::string> unmounted;
    mounts_ = FindMounts({dev_}, *info, &unmounted);
    ASSERT_EQ(mounts_.size(), 1u);
    EXPECT_TRUE(unmounted.empty());
    EXPECT_EQ(mounts_[0].mountpoint, dir_ + "/mnt");
  }
  void TearDown() override {
    std::system(("umount " + dir_ + "/mnt; losetup -d " + dev_ + "; rm -rf " + dir_).c_str());
  }
  // True when a write + fsync on the filesystem completes within `ms` (false: still frozen).
  bool WritableWithin(int ms) {
    pid_t pid = fork();
    if (pid == 0) {
      int fd = open((dir_ + "/mnt/probe").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      _exit(fd >= 0 && write(fd, "x", 1) == 1 && fsync(fd) == 0 ? 0 : 1);
    }
    for (int waited = 0; waited < ms; waited += 10) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
      usleep(10000);
    }
    // Still blocked: the test thaws below, which lets it finish.
    std::system(("fsfreeze -u " + dir_ + "/mnt 2>/dev/null").c_str());
    waitpid(pid, nullptr, 0);
    return false;
  }
  std::string dir_, dev_;
  std::vector<MountedFs> mounts_;
};

// A freeze blocks writers until Thaw, which reports the frozen time.
TEST_F(FreezeTest, FreezeBlocksWritersUntilThaw) {
  FreezeSet f(mounts_);
  ASSERT_TRUE(f.Freeze(5000000000ull).ok());
  EXPECT_FALSE(WritableWithin(200));
  EXPECT_FALSE(f.Freeze(5000000000ull).ok());  // already frozen
  auto t = f.Thaw();
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_FALSE(t->overran);
  EXPECT_GE(t->frozen_ns, 200000000u);
  EXPECT_TRUE(WritableWithin(1000));
}

// The watchdog lifts a freeze that outlives its limit; Thaw then says it overran.
TEST_F(FreezeTest, WatchdogLiftsAnOverrunningFreeze) {
  FreezeSet f(mounts_);
  ASSERT_TRUE(f.Freeze(300000000ull).ok());
  usleep(600000);
  EXPECT_TRUE(WritableWithin(1000));
  auto t = f.Thaw();
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_TRUE(t->overran);
}

// An agent killed (-9) while frozen leaves nothing frozen: the watchdog thaws at once.
TEST_F(FreezeTest, KilledAgentLeavesNothingFrozen) {
  pid_t pid = fork();
  if (pid == 0) {
    FreezeSet f(mounts_);
    if (!f.Freeze(30000000000ull).ok()) _exit(1);
    raise(SIGKILL);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(WritableWithin(2000));  // long before the 30 s limit
}

// A mount point whose filesystem was unmounted since it was looked up is not frozen: FIFREEZE
// would stop the filesystem the path now leads to (here the one holding /tmp).
TEST_F(FreezeTest, UnmountedMountPointIsNotFrozen) {
  FreezeSet f(mounts_);
  ASSERT_EQ(std::system(("umount " + dir_ + "/mnt").c_str()), 0);
  Status st = f.Freeze(5000000000ull);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("no longer holds the filesystem of " + dev_), std::string::npos) << st.message();
  EXPECT_FALSE(f.frozen());
  EXPECT_TRUE(WritableWithin(1000));  // /tmp's filesystem: the probe lands in the bare directory
}

// PointFreeze looks the mounts up again at each point: unmounted, nothing is frozen and the
// point is not consistent; mounted again elsewhere, that mount is frozen.
TEST_F(FreezeTest, PointFreezeFollowsMountChanges) {
  PointFreeze pf;
  pf.Plan(true, {dev_}, "", "");
  ASSERT_NE(pf.note().find(dir_ + "/mnt frozen"), std::string::npos) << pf.note();
  ASSERT_EQ(std::system(("umount " + dir_ + "/mnt").c_str()), 0);
  pf.Begin(1);
  EXPECT_FALSE(pf.frozen());
  EXPECT_NE(pf.note().find("has no mounted filesystem"), std::string::npos) << pf.note();
  EXPECT_FALSE(pf.Finish(1).consistent);
  ASSERT_EQ(std::system(("mkdir " + dir_ + "/mnt2 && mount " + dev_ + " " + dir_ + "/mnt2").c_str()), 0);
  pf.Begin(2);
  EXPECT_TRUE(pf.frozen());
  EXPECT_NE(pf.note().find(dir_ + "/mnt2 frozen"), std::string::npos) << pf.note();
  EXPECT_TRUE(pf.Finish(2).consistent);
  ASSERT_EQ(std::system(("umount " + dir_ + "/mnt2 && mount " + dev_ + " " + dir_ + "/mnt").c_str()), 0);
}

// PointFreeze runs the pre-hook (with BLOCKREP_POINT_ID), freezes, thaws and runs the post-hook;
// the point is consistent only when the pre-hook succeeded and the freeze held.
TEST_F(FreezeTest, PointFreezeRunsHooksAroundTheFreeze) {
  std::string log = dir_ + "/hooks.log";
  auto hook = [&](const std::string& name, int rc) {
    std::string path = dir_ + "/" + name;
    std::string body = "#!/bin/sh\necho " + name + " $BLOCKREP_POINT_ID >> " + log + "\nexit " + std::to_string(rc) + "\n";
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs(body.c_str(), f);
    std::fclose(f);
    chmod(path.c_str(), 0700);
    return path;
  };
  PointFreeze pf;
  pf.Plan(true, {dev_}, hook("pre", 0), hook("post", 0));
  EXPECT_NE(pf.note().find("frozen"), std::string::npos) << pf.note();
  pf.Begin(7);
  EXPECT_TRUE(pf.frozen());
  EXPECT_FALSE(WritableWithin(100));
  PointFreeze::Result r = pf.Finish(7);
  EXPECT_TRUE(r.consistent);
  ASSERT_TRUE(r.frozen_ms.has_value());
  EXPECT_GE(*r.frozen_ms, 100u);
  EXPECT_FALSE(pf.frozen());
  EXPECT_EQ(testing_util::Shell("cat " + log), "pre 7\npost 7");
  pf.Plan(true, {dev_}, hook("failing-pre", 3), "");
  pf.Begin(8);
  EXPECT_FALSE(pf.Finish(8).consistent) << "applications may not have quiesced";
  pf.Plan(false, {dev_}, "", "");
  EXPECT_NE(pf.note().find("without eBPF tracking"), std::string::npos) << pf.note();
  pf.Begin(9);
  EXPECT_FALSE(pf.frozen());
  EXPECT_FALSE(pf.Finish(9).consistent);
}

}  // namespace
}  // namespace blockrep::agent

int main(int argc, char** argv) {
  if (geteuid() != 0) {
    std::fprintf(stderr, "SKIP: freeze tests need root (loop devices, mount, FIFREEZE); CI runs them as root\n");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
