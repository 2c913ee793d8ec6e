// BaseLoad (replicator/base_load.h): the base's fingerprints are adopted only when the base's seals
// vouch for them; a stale cache is replaced by the staging's copy; a bad staging copy is refused.
#include <gtest/gtest.h>

#include <random>

#include "base_load.h"
#include "blockrep/store/store.h"
#include "fingerprint_tables.h"
#include "fingerprint_cache.h"
#include "temp_dir.h"
#include "test_data.h"

namespace blockrep::agent {
namespace {

constexpr uint64_t kVolume = (2u << 20) + 4096;  // 513 blocks

class BaseLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Bytes image = RandomBytes(kVolume, 5);
    for (uint64_t off = 0; off < kVolume; off += 4096)
      fps_.push_back(fingerprinter_.Block(off, ByteSpan(image.data() + off, 4096)));
    // Point 1 as the process that sent it sealed it.
    PointSeal sender(keys_.get());
    ASSERT_TRUE(sender.StartEmpty({kVolume}).ok());
    sender.Note(0, 0, fps_.data(), fps_.size());
    sender.Sent(0, 0, kVolume);
    seals_ = sender.Seals(1, 100, 1);
  }
  // Captures what BaseLoad asks the staging for.
  BaseLoad::SendFn Capture() {
    return [this](wire::MsgType t, const Bytes&) {
      sent_.push_back(t);
      return Status::Ok();
    };
  }
  // The staging's answers: point 1's seal and `fps`.
  void Answer(BaseLoad* load, const std::vector<uint64_t>& fps, bool with_fps = true) {
    wire::BaseSeal s;
    s.volume = 0;
    s.seal = seals_[0];
    ASSERT_TRUE(load->inbox().OnSeal(s).ok());
    if (!with_fps) return;
    wire::Fingerprints m;
    m.volume = 0;
    m.offset = 0;
    m.values = fps;
    ASSERT_TRUE(load->inbox().OnFingerprints(m).ok());
  }
  size_t Sent(wire::MsgType t) const { return static_cast<size_t>(std::count(sent_.begin(), sent_.end(), t)); }
  // A rescan on point 1 with `cached` in the state directory, judged once the seal arrived.
  BaseLoad::Outcome RescanWithCache(BaseLoad* load, const std::vector<uint64_t>& cached, PointSeal* seal, SealLink* link) {
    TempDir dir("baseload");
    EXPECT_TRUE(SaveFingerprintCache(dir.path(), "web1", 1, {kVolume}, TablesOf({cached})).ok());
    EXPECT_TRUE(load->StartRescan(1, {kVolume}, {}, dir.path(), "web1", Capture()).ok());
    EXPECT_EQ(Sent(wire::MsgType::kFingerprintRequest), 0u);
    EXPECT_EQ(Sent(wire::MsgType::kSealRequest), 1u);
    EXPECT_TRUE(load->loading()) << "no block is compared before the seals vouch for the cache";
    Answer(load, fps_, /*with_fps=*/false);
    EXPECT_TRUE(load->ready());
    EXPECT_TRUE(seal->StartEmpty({kVolume}).ok());
    auto outcome = load->Finish(seal, link, Capture());
    EXPECT_TRUE(outcome.ok()) << outcome.status().ToString();
    EXPECT_FALSE(load->loading());
    return outcome.ok() ? *outcome : BaseLoad::Outcome::kUntrusted;
  }

  std::unique_ptr<SealKeys> keys_ = std::move(SealKeys::Create(FilledKey(3), "web1")).value();
  BlockFingerprinter fingerprinter_ = std::move(BlockFingerprinter::Create(FilledKey(3))).value();
  std::vector<uint64_t> fps_;
  std::vector<VolumeSeal> seals_;
  std::vector<wire::MsgType> sent_;
};

// The staging's copy matching the seal is adopted; the link to the base gets the base's MAC.
TEST_F(BaseLoadTest, StagingCopyMatchingTheSealIsAdopted) {
  BaseLoad load;
  ASSERT_TRUE(load.Start(1, {kVolume}, "", "web1", Capture()).ok());
  EXPECT_EQ(Sent(wire::MsgType::kSealRequest), 1u);
  EXPECT_EQ(Sent(wire::MsgType::kFingerprintRequest), 1u);
  EXPECT_FALSE(load.ready());
  Answer(&load, fps_);
  ASSERT_TRUE(load.ready());
  PointSeal seal(keys_.get());
  SealLink link{1, {}};
  auto outcome = load.Finish(&seal, &link, Capture());
  ASSERT_TRUE(outcome.ok()) << outcome.status().ToString();
  EXPECT_EQ(*outcome, BaseLoad::Outcome::kAdopted);
  EXPECT_TRUE(seal.KnowsBase(1, {kVolume}));
  EXPECT_EQ(link.mac, seals_[0].mac);
  EXPECT_FALSE(load.loading());
}

// One block's fingerprint differing from what the seal covers: not trusted, nothing adopted.
TEST_F(BaseLoadTest, StagingCopyNotMatchingIsUntrusted) {
  BaseLoad load;
  ASSERT_TRUE(load.Start(1, {kVolume}, "", "web1", Capture()).ok());
  std::vector<uint64_t> forged = fps_;
  forged[200] ^= 2;
  Answer(&load, forged);
  PointSeal seal(keys_.get());
  SealLink link{1, {}};
  auto outcome = load.Finish(&seal, &link, Capture());
  ASSERT_TRUE(outcome.ok());
  EXPECT_EQ(*outcome, BaseLoad::Outcome::kUntrusted);
  EXPECT_FALSE(seal.KnowsBase(1, {kVolume}));
  EXPECT_FALSE(link.KnowsMac());
  EXPECT_EQ(load.inbox().Fingerprint(0, 200), forged[200]) << "the staging's fingerprints stay for the rescan";
}

// A cache in the state directory is used instead of fetching; a stale one is replaced by a fetch.
TEST_F(BaseLoadTest, StaleCacheIsReplacedByTheStagingsCopy) {
  TempDir dir("baseload");
  std::vector<uint64_t> stale = fps_;
  stale[0] ^= 2;
  ASSERT_TRUE(SaveFingerprintCache(dir.path(), "web1", 1, {kVolume}, TablesOf({stale})).ok());
  BaseLoad load;
  ASSERT_TRUE(load.Start(1, {kVolume}, dir.path(), "web1", Capture()).ok());
  EXPECT_EQ(Sent(wire::MsgType::kFingerprintRequest), 0u) << "the cache was used";
  Answer(&load, fps_, /*with_fps=*/false);
  ASSERT_TRUE(load.ready());
  PointSeal seal(keys_.get());
  SealLink link{1, {}};
  auto outcome = load.Finish(&seal, &link, Capture());
  ASSERT_TRUE(outcome.ok());
  EXPECT_EQ(*outcome, BaseLoad::Outcome::kRefetching);
  EXPECT_EQ(Sent(wire::MsgType::kFingerprintRequest), 1u);
  EXPECT_FALSE(load.ready());
  wire::Fingerprints m;
  m.values = fps_;
  ASSERT_TRUE(load.inbox().OnFingerprints(m).ok());
  ASSERT_TRUE(load.ready());
  outcome = load.Finish(&seal, &link, Capture());
  ASSERT_TRUE(outcome.ok());
  EXPECT_EQ(*outcome, BaseLoad::Outcome::kAdopted);
  EXPECT_TRUE(seal.KnowsBase(1, {kVolume}));
}

// A rescan takes a cache its base's seals vouch for: the staging is asked for the seals only.
TEST_F(BaseLoadTest, RescanComparesWithAMatchingCache) {
  BaseLoad load;
  PointSeal seal(keys_.get());
  SealLink link{1, {}};
  EXPECT_EQ(RescanWithCache(&load, fps_, &seal, &link), BaseLoad::Outcome::kCompare);
  EXPECT_EQ(Sent(wire::MsgType::kFingerprintRequest), 0u);
  EXPECT_EQ(load.inbox().known_end(0), kVolume);
  EXPECT_EQ(load.inbox().Fingerprint(0, 200), fps_[200]);
  EXPECT_TRUE(seal.KnowsBase(0, {kVolume})) << "the rescan's seal still starts empty";
  EXPECT_EQ(link.mac, seals_[0].mac);
}

// A cache the seals refuse is dropped, and the rescan compares with the staging's copy instead.
TEST_F(BaseLoadTest, RescanWithAStaleCacheAsksTheStaging) {
  std::vector<uint64_t> stale = fps_;
  stale[300] ^= 2;
  BaseLoad load;
  PointSeal seal(keys_.get());
  SealLink link{1, {}};
  EXPECT_EQ(RescanWithCache(&load, stale, &seal, &link), BaseLoad::Outcome::kCompare);
  EXPECT_EQ(Sent(wire::MsgType::kFingerprintRequest), 1u);
  EXPECT_EQ(load.inbox().known_end(0), 0u) << "nothing of the stale cache is compared with";
  EXPECT_EQ(load.inbox().Fingerprint(0, 300), store::kFingerprintUnknown);
  wire::Fingerprints m;
  m.values = fps_;
  ASSERT_TRUE(load.inbox().OnFingerprints(m).ok());
  EXPECT_EQ(load.inbox().Fingerprint(0, 300), fps_[300]);
}

// The fingerprints of the point this process just sent are compared with as they are: nothing is
// asked of the staging, nothing waited for.
TEST_F(BaseLoadTest, RescanComparesWithTheFingerprintsItSent) {
  BaseLoad load;
  ASSERT_TRUE(load.StartRescan(1, {kVolume}, TablesOf({fps_}), "", "web1", Capture()).ok());
  EXPECT_TRUE(sent_.empty());
  EXPECT_FALSE(load.loading());
  EXPECT_EQ(load.inbox().known_end(0), kVolume);
  EXPECT_EQ(load.inbox().Fingerprint(0, 512), fps_[512]);
}

// Without a cache a rescan asks the staging for the fingerprints and waits for nothing else.
TEST_F(BaseLoadTest, RescanWithoutACacheAsksTheStaging) {
  BaseLoad load;
  ASSERT_TRUE(load.StartRescan(1, {kVolume}, {}, "", "web1", Capture()).ok());
  EXPECT_EQ(Sent(wire::MsgType::kFingerprintRequest), 1u);
  EXPECT_EQ(Sent(wire::MsgType::kSealRequest), 0u);
  EXPECT_FALSE(load.loading());
}

}  // namespace
}  // namespace blockrep::agent
