// FullProgress (replicator/full_progress.h): the checkpoint of an interrupted full point, without
// root: what is saved replays into the same seal state, and a checkpoint of another point, another
// boot or with a damaged log is never used.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include "blockrep/crypto/fingerprint.h"
#include "fingerprint_tables.h"
#include "full_progress.h"
#include "temp_dir.h"
#include "test_data.h"

namespace blockrep::agent {
namespace {

constexpr uint64_t kVol0 = 8u << 20, kVol1 = (1u << 20) + 4096;

class FullProgressTest : public ::testing::Test {
 protected:
  FullPointId Id() const { return FullPointId{"web1", 1, 123456789, 42, 0, {kVol0, kVol1}}; }
  // A seal state as a sweep leaves it: data in vol 0's first 3 MiB and at 6 MiB, vol 1 whole.
  void Sweep(PointSeal* seal) {
    ASSERT_TRUE(seal->StartEmpty({kVol0, kVol1}).ok());
    auto note = [&](size_t v, uint64_t off, uint64_t len) {
      std::vector<uint64_t> fps(len / kFingerprintBlockBytes);
      for (size_t i = 0; i < fps.size(); ++i) fps[i] = (v + 1) * 1000003 + off + i * 7919;
      seal->Note(v, off, fps.data(), fps.size());
      seal->Sent(v, off, len);
    };
    note(0, 0, 3u << 20);
    note(0, 6u << 20, 1u << 20);
    note(1, 0, kVol1);
  }
  std::vector<VolumeSeal> SealsOf(PointSeal* s) { return s->Seals(1, 123456789, 0); }
  void SetUp() override { Sweep(&swept); }

  TempDir dir_{"fullprogress"};
  std::unique_ptr<SealKeys> keys_ = std::move(SealKeys::Create(FilledKey(3), "web1")).value();
  PointSeal swept{keys_.get()};  // the sweep's seal state (SetUp)
};

// Saved up to the end in steps, a checkpoint replays into exactly the sweep's seal state.
TEST_F(FullProgressTest, SavedStepsReplayIntoTheSameSeal) {
  FullProgress p(dir_.path(), "boot-a");
  ASSERT_TRUE(p.Begin(Id(), 1u << 20).ok());
  ASSERT_TRUE(p.Save(2u << 20, 4u << 20, swept).ok());
  ASSERT_TRUE(p.Save((5u << 20) + 100, 9u << 20, swept).ok());  // rounded down to a block
  EXPECT_EQ(p.cursor(), 5u << 20);
  ASSERT_TRUE(p.Save(kVol0 + kVol1, kVol0 + kVol1, swept).ok());

  FullProgress q(dir_.path(), "boot-a");
  std::string why;
  ASSERT_TRUE(q.Load(Id(), &why)) << why;
  EXPECT_EQ(q.cursor(), kVol0 + kVol1);
  PointSeal replayed(keys_.get());
  ASSERT_TRUE(replayed.StartEmpty({kVol0, kVol1}).ok());
  ASSERT_TRUE(q.Restore(&replayed).ok());
  EXPECT_EQ(VectorsOf(replayed.fingerprints()), VectorsOf(swept.fingerprints()));
  auto a = SealsOf(&swept), b = SealsOf(&replayed);
  ASSERT_EQ(a.size(), b.size());
  for (size_t v = 0; v < a.size(); ++v) EXPECT_EQ(a[v].regions, b[v].regions) << "volume " << v;
}

// A cursor part-way replays only the blocks before it: the rest stays zero, to be read again.
TEST_F(FullProgressTest, OnlyBlocksBeforeTheCursorReplay) {
  FullProgress p(dir_.path(), "boot-a");
  ASSERT_TRUE(p.Begin(Id(), 4u << 20).ok());
  ASSERT_TRUE(p.Save(1u << 20, 4u << 20, swept).ok());
  FullProgress q(dir_.path(), "boot-a");
  std::string why;
  ASSERT_TRUE(q.Load(Id(), &why)) << why;
  EXPECT_EQ(q.cursor(), 1u << 20);
  EXPECT_EQ(q.limit(), 4u << 20);
  PointSeal replayed(keys_.get());
  ASSERT_TRUE(replayed.StartEmpty({kVol0, kVol1}).ok());
  ASSERT_TRUE(q.Restore(&replayed).ok());
  const std::vector<uint64_t> got = replayed.fingerprints()[0].ToVector();
  const std::vector<uint64_t> want = swept.fingerprints()[0].ToVector();
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + 256, want.begin()));
  EXPECT_TRUE(std::all_of(got.begin() + 256, got.end(), [](uint64_t fp) { return fp == 0; }));
}

// Another boot (the page cache it lived in is gone), another point (or another base: a rescan's
// checkpoint is not a full point's), or no state directory: no checkpoint.
TEST_F(FullProgressTest, AnotherBootOrPointIsNotUsed) {
  FullProgress p(dir_.path(), "boot-a");
  ASSERT_TRUE(p.Begin(Id(), 4u << 20).ok());
  ASSERT_TRUE(p.Save(2u << 20, 4u << 20, swept).ok());
  std::string why;
  EXPECT_FALSE(FullProgress(dir_.path(), "boot-b").Load(Id(), &why));
  EXPECT_EQ(why, "it was written before a reboot");
  FullPointId other = Id();
  other.time_ns += 1;
  EXPECT_FALSE(FullProgress(dir_.path(), "boot-a").Load(other, &why));
  EXPECT_NE(why.find("not the staging's"), std::string::npos) << why;
  other = Id();
  other.base_point = 7;  // the staging's interrupted point is a rescan on point 7, ours a full one
  EXPECT_FALSE(FullProgress(dir_.path(), "boot-a").Load(other, &why));
  EXPECT_NE(why.find("not the staging's"), std::string::npos) << why;
  FullProgress none("", "boot-a");
  ASSERT_TRUE(none.Begin(Id(), 4u << 20).ok());
  EXPECT_FALSE(none.active());
  ASSERT_TRUE(p.Drop().ok());
  EXPECT_FALSE(FullProgress(dir_.path(), "boot-a").Load(Id(), &why));
  EXPECT_TRUE(why.empty()) << "no file is not an error: " << why;
}

// A damaged log fails the replay with the chunk named (the agent then reads everything again).
TEST_F(FullProgressTest, DamagedLogIsDataLoss) {
  FullProgress p(dir_.path(), "boot-a");
  ASSERT_TRUE(p.Begin(Id(), 4u << 20).ok());
  ASSERT_TRUE(p.Save(2u << 20, 4u << 20, swept).ok());
  int fd = open((dir_ / "full-point.fps").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  uint8_t junk = 0x5a;
  ASSERT_EQ(pwrite(fd, &junk, 1, 100), 1);
  close(fd);
  FullProgress q(dir_.path(), "boot-a");
  std::string why;
  ASSERT_TRUE(q.Load(Id(), &why)) << why;
  PointSeal replayed(keys_.get());
  ASSERT_TRUE(replayed.StartEmpty({kVol0, kVol1}).ok());
  Status st = q.Restore(&replayed);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("checksum"), std::string::npos) << st.message();
}

// Positions never move back, and the limit never falls below the cursor.
TEST_F(FullProgressTest, PositionsOnlyMoveForward) {
  FullProgress p(dir_.path(), "boot-a");
  ASSERT_TRUE(p.Begin(Id(), 4u << 20).ok());
  ASSERT_TRUE(p.Save(3u << 20, 6u << 20, swept).ok());
  ASSERT_TRUE(p.Save(1u << 20, 2u << 20, swept).ok());
  EXPECT_EQ(p.cursor(), 3u << 20);
  EXPECT_EQ(p.limit(), 6u << 20);
}

// A cursor past the lease (the rest of a sparse image was holes, skipped) carries the lease with
// it: the sync is done up to there (CI once aborted here on a failed check).
TEST_F(FullProgressTest, CursorPastTheLeaseOverHolesCarriesTheLease) {
  FullProgress p(dir_.path(), "boot-a");
  ASSERT_TRUE(p.Begin(Id(), 4u << 20).ok());
  ASSERT_TRUE(p.Save(kVol0 + kVol1, 4u << 20, swept).ok());
  EXPECT_EQ(p.cursor(), kVol0 + kVol1);
  EXPECT_EQ(p.limit(), kVol0 + kVol1);
}

}  // namespace
}  // namespace blockrep::agent
