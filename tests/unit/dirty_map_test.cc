// DirtyMap (blockrep/tracking/dirty_map.h): the tracker's bookkeeping on plain memory, no root.
#include <gtest/gtest.h>

#include "blockrep/tracking/dirty_map.h"

namespace blockrep {
namespace {

constexpr uint64_t kWords = 2;                          // 128 blocks
constexpr uint64_t kVolume = 100 * kBlockBytes + 512;  // 101 blocks, the last one short

class DirtyMapTest : public ::testing::Test {
 protected:
  void SetUp() override { map_.Attach(dirty_, inflight_, undurable_, kWords); }
  uint64_t dirty_[kWords] = {}, inflight_[kWords] = {}, undurable_[kWords] = {};
  DirtyMap map_;
};

std::vector<std::pair<uint64_t, uint64_t>> Runs(const std::vector<Extent>& e) {
  std::vector<std::pair<uint64_t, uint64_t>> r;
  for (const Extent& x : e) r.emplace_back(x.offset / kBlockBytes, x.length);
  return r;
}

// Taken bits become runs, leave dirty, and stay in inflight and undurable.
TEST_F(DirtyMapTest, TakeMovesDirtyToInflightAndUndurable) {
  map_.Mark(0, 3, 5);
  map_.Mark(0, 63, 64);  // across a word boundary
  auto runs = map_.Take(0, kWords, kVolume, false);
  EXPECT_EQ(Runs(runs), (std::vector<std::pair<uint64_t, uint64_t>>{{3, 3 * kBlockBytes}, {63, 2 * kBlockBytes}}));
  EXPECT_EQ(dirty_[0] | dirty_[1], 0u);
  EXPECT_TRUE(map_.Take(0, kWords, kVolume, false).empty()) << "nothing new";
  EXPECT_EQ(map_.Take(0, kWords, kVolume, true).size(), 2u) << "with inflight: the point's blocks again";
  EXPECT_EQ(Runs(map_.Undurable(0, kWords, kVolume)), Runs(runs));
}

// What may differ from the last acknowledged point is dirty or inflight; reading it takes nothing.
TEST_F(DirtyMapTest, ChangedIsDirtyOrInflightAndTakesNothing) {
  map_.Mark(0, 3, 5);
  EXPECT_EQ(map_.Take(0, kWords, kVolume, false).size(), 1u);  // 3..5 now inflight
  map_.Mark(0, 6, 6);
  map_.Mark(0, 70, 70);
  auto changed = map_.Changed(0, kWords, kVolume);
  EXPECT_EQ(Runs(changed), (std::vector<std::pair<uint64_t, uint64_t>>{{3, 4 * kBlockBytes}, {70, kBlockBytes}}));
  EXPECT_EQ(Runs(map_.Changed(0, kWords, kVolume)), Runs(changed)) << "nothing was taken";
  EXPECT_EQ(Runs(map_.Take(0, kWords, kVolume, false)), (std::vector<std::pair<uint64_t, uint64_t>>{{6, kBlockBytes}, {70, kBlockBytes}}));
  map_.Synced();
  EXPECT_TRUE(map_.Changed(0, kWords, kVolume).empty());
}

// The last block of the volume is shorter; bits past the end are never returned.
TEST_F(DirtyMapTest, RunsEndAtTheVolume) {
  map_.Mark(0, 99, 127);
  auto runs = map_.Take(0, kWords, kVolume, false);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].offset, 99 * kBlockBytes);
  EXPECT_EQ(runs[0].length, kBlockBytes + 512);
}

// Caught up forgets undurable bits, not inflight ones; a point's acknowledgement forgets both.
TEST_F(DirtyMapTest, CaughtUpThenSynced) {
  map_.Mark(0, 10, 10);
  map_.Take(0, kWords, kVolume, false);
  map_.CaughtUp();
  EXPECT_TRUE(map_.Undurable(0, kWords, kVolume).empty());
  EXPECT_EQ(map_.Take(0, kWords, kVolume, true).size(), 1u);
  map_.Synced();
  EXPECT_TRUE(map_.Take(0, kWords, kVolume, true).empty());
}

// A block written again after its take is undurable again once taken, even after a catch-up.
TEST_F(DirtyMapTest, RewrittenBlockIsUndurableAgain) {
  map_.Mark(0, 7, 7);
  map_.Take(0, kWords, kVolume, false);
  map_.CaughtUp();
  map_.Mark(0, 7, 7);
  map_.Take(0, kWords, kVolume, false);
  EXPECT_EQ(Runs(map_.Undurable(0, kWords, kVolume)).size(), 1u);
}

// A new point reads inflight blocks again: undurable again after an earlier catch-up; a take
// with inflight alone (a resume re-reading for its seal) leaves them as they were.
TEST_F(DirtyMapTest, InflightUndurableAgainForANewPoint) {
  map_.Mark(0, 20, 21);
  map_.Take(0, kWords, kVolume, false);
  map_.CaughtUp();
  map_.Take(0, kWords, kVolume, true);
  EXPECT_TRUE(map_.Undurable(0, kWords, kVolume).empty()) << "a take does not make old blocks undurable";
  map_.InflightUndurable();
  EXPECT_EQ(Runs(map_.Undurable(0, kWords, kVolume)),
            (std::vector<std::pair<uint64_t, uint64_t>>{{20, 2 * kBlockBytes}}));
}

// A new attachment (an agent restarted on the pinned maps) still forgets old undurable bits on
// its first catch-up.
TEST_F(DirtyMapTest, UndurableFromBeforeARestartIsForgottenOnCatchUp) {
  map_.Mark(0, 40, 41);
  map_.Take(0, kWords, kVolume, false);
  DirtyMap again;
  again.Attach(dirty_, inflight_, undurable_, kWords);
  EXPECT_EQ(again.Undurable(0, kWords, kVolume).size(), 1u);
  again.CaughtUp();
  EXPECT_TRUE(again.Undurable(0, kWords, kVolume).empty());
}

// Clear forgets everything, dirty bits too (a full read follows).
TEST_F(DirtyMapTest, ClearForgetsEverything) {
  map_.Mark(0, 1, 2);
  map_.Take(0, kWords, kVolume, false);
  map_.Mark(0, 5, 5);
  map_.Clear();
  EXPECT_TRUE(map_.Take(0, kWords, kVolume, true).empty());
  EXPECT_TRUE(map_.Undurable(0, kWords, kVolume).empty());
}

}  // namespace
}  // namespace blockrep
