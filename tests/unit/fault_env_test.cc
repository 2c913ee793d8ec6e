// FaultEnv (tests/sim/fault_env.h): what survives a power loss is exactly what was made durable;
// planned failures and a full disk fail one operation and change nothing.
#include <gtest/gtest.h>

#include "fault_env.h"

namespace blockrep::sim {
namespace {

Bytes Text(const std::string& s) { return Bytes(s.begin(), s.end()); }

Result<Bytes> Read(FaultEnv& env, const std::string& path) { return env.ReadFile(path, 1 << 20); }

// A file synced but whose name was never synced into its directory is gone after a power loss.
TEST(FaultEnv, NameNeedsDirectorySync) {
  FaultEnv env(1);
  ASSERT_TRUE(env.MakeDirs("/d", 0700).ok());
  auto f = env.Open("/d/a", OpenMode::kCreateExclusive);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteAt(0, Text("hello")).ok());
  ASSERT_TRUE((*f)->Sync().ok());
  env.Reboot();
  EXPECT_FALSE(env.Exists("/d/a"));
}

// Bytes written after the last sync are gone (without tearing); synced ones stay.
TEST(FaultEnv, UnsyncedBytesAreLost) {
  FaultEnv env(2);
  env.set_tear(false);
  ASSERT_TRUE(env.MakeDirs("/d", 0700).ok());
  ASSERT_TRUE(env.WriteFileAtomic("/d/a", Text("one")).ok());
  auto f = env.Open("/d/a", OpenMode::kReadWrite);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteAt(3, Text("two")).ok());
  EXPECT_EQ(*Read(env, "/d/a"), Text("onetwo"));
  env.Reboot();
  EXPECT_EQ(*Read(env, "/d/a"), Text("one"));
  EXPECT_EQ((*f)->WriteAt(0, Text("x")).code(), Code::kUnavailable) << "a file opened before the power cut is dead";
}

// A rename not yet made durable is undone by a power loss: the old content is back.
TEST(FaultEnv, RenameNeedsDirectorySync) {
  FaultEnv env(3);
  ASSERT_TRUE(env.MakeDirs("/d", 0700).ok());
  ASSERT_TRUE(env.WriteFileAtomic("/d/m", Text("v1")).ok());
  auto tmp = env.Open("/d/m.tmp", OpenMode::kCreateTruncate);
  ASSERT_TRUE(tmp.ok());
  ASSERT_TRUE((*tmp)->WriteAt(0, Text("v2")).ok());
  ASSERT_TRUE((*tmp)->Sync().ok());
  ASSERT_TRUE(env.Rename("/d/m.tmp", "/d/m").ok());
  EXPECT_EQ(*Read(env, "/d/m"), Text("v2"));
  env.Reboot();
  EXPECT_EQ(*Read(env, "/d/m"), Text("v1"));
}

// Torn writes: each block of an unsynced overwrite keeps its old or its new content, nothing else.
TEST(FaultEnv, TornWriteMixesWholeBlocks) {
  FaultEnv env(4);
  ASSERT_TRUE(env.MakeDirs("/d", 0700).ok());
  Bytes old(8 * kBlockBytes, 'o'), fresh(8 * kBlockBytes, 'n');
  ASSERT_TRUE(env.WriteFileAtomic("/d/f", old).ok());
  auto f = env.Open("/d/f", OpenMode::kReadWrite);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteAt(0, fresh).ok());
  env.Reboot();
  Bytes after = *Read(env, "/d/f");
  ASSERT_EQ(after.size(), old.size());
  for (size_t b = 0; b < 8; ++b) {
    uint8_t c = after[b * kBlockBytes];
    EXPECT_TRUE(c == 'o' || c == 'n');
    EXPECT_EQ(std::count(after.begin() + b * kBlockBytes, after.begin() + (b + 1) * kBlockBytes, c),
              static_cast<long>(kBlockBytes));
  }
}

// The Nth operation fails with the code asked for and changes nothing; the next one runs.
TEST(FaultEnv, NthOperationFails) {
  FaultEnv env(5);
  ASSERT_TRUE(env.MakeDirs("/d", 0700).ok());
  env.FailOp(2, Code::kIoError);
  auto f = env.Open("/d/a", OpenMode::kCreateExclusive);  // op 1
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->WriteAt(0, Text("abc")).code(), Code::kIoError);  // op 2
  EXPECT_EQ(*(*f)->Size(), 0u);
  EXPECT_TRUE((*f)->WriteAt(0, Text("abc")).ok());
}

// A full disk refuses the write that would pass its capacity, writing nothing.
TEST(FaultEnv, DiskFull) {
  FaultEnv env(6);
  env.SetCapacity(10);
  ASSERT_TRUE(env.MakeDirs("/d", 0700).ok());
  auto f = env.Open("/d/a", OpenMode::kCreateExclusive);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteAt(0, Text("12345678")).ok());
  EXPECT_EQ((*f)->WriteAt(8, Text("abc")).code(), Code::kNoSpace);
  EXPECT_EQ(*(*f)->Size(), 8u);
}

// Power lost at a planned operation: it and everything after fail until the reboot.
TEST(FaultEnv, PowerLossAtOperation) {
  FaultEnv env(7);
  ASSERT_TRUE(env.MakeDirs("/d", 0700).ok());
  env.PowerLossAtOp(2);
  ASSERT_TRUE(env.Open("/d/a", OpenMode::kCreateExclusive).ok());
  EXPECT_EQ(env.SyncDir("/d").code(), Code::kUnavailable);
  EXPECT_FALSE(env.powered());
  EXPECT_EQ(env.ListDir("/d").status().code(), Code::kUnavailable);
  env.Reboot();
  EXPECT_TRUE(env.ListDir("/d")->empty());
}

}  // namespace
}  // namespace blockrep::sim
