// The agent's side of point seals (replicator/point_seal.h): incremental upkeep, and taking a
// base from the staging only when the base's seals vouch for it.
#include <gtest/gtest.h>

#include <random>

#include "point_seal.h"
#include "test_data.h"

namespace blockrep::agent {
namespace {

constexpr uint64_t kVolume = (3u << 20) + 8192;  // four seal regions, the last one short

DataKey TestKey() { return FilledKey(3); }

class PointSealTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_.resize(kVolume);
    std::mt19937_64 rng(11);
    for (auto& b : image_) b = static_cast<uint8_t>(rng());
  }
  // Fingerprints of every block of the image.
  std::vector<uint64_t> Fps() const {
    std::vector<uint64_t> fps;
    for (uint64_t off = 0; off < kVolume; off += 4096)
      fps.push_back(fingerprinter_.Block(off, ByteSpan(image_.data() + off, std::min<uint64_t>(4096, kVolume - off))));
    return fps;
  }
  // What the restore computes from the image.
  std::vector<Digest128> Recount() const {
    RegionDigests d(keys_.get(), kVolume);
    NoteData(fingerprinter_, 0, image_, &d);
    d.Flush();
    return d.regions();
  }
  // Rewrites `blocks` blocks from `first` in the image and tells `seal` (as a read and a record).
  void Write(PointSeal* seal, uint64_t first, uint64_t blocks, uint8_t value) {
    std::fill_n(image_.begin() + static_cast<ptrdiff_t>(first * 4096), blocks * 4096, value);
    std::vector<uint64_t> fps = Fps();
    seal->Note(0, first * 4096, fps.data() + first, blocks);
    seal->Sent(0, first * 4096, blocks * 4096);
  }
  // The image's fingerprints as the staging would send them (one volume).
  std::vector<FingerprintTable> Tables() const {
    std::vector<FingerprintTable> t;
    t.push_back(FingerprintTable::Of(Fps()));
    return t;
  }
  // The state of point 1 (the whole image) in a fresh PointSeal, committed.
  std::vector<VolumeSeal> SealPointOne(PointSeal* seal) {
    EXPECT_TRUE(seal->StartEmpty({kVolume}).ok());
    std::vector<uint64_t> fps = Fps();
    seal->Note(0, 0, fps.data(), fps.size());
    seal->Sent(0, 0, kVolume);
    auto seals = seal->Seals(1, 100, 1);
    seal->Committed(1);
    return seals;
  }

  std::unique_ptr<SealKeys> keys_ = std::move(SealKeys::Create(TestKey(), "web1")).value();
  BlockFingerprinter fingerprinter_ = std::move(BlockFingerprinter::Create(TestKey())).value();
  Bytes image_;
};

// Full point, then an incremental one with rewrites (one to zeros): each seal equals what the
// restore recounts from the image, and names the point that last sent to each region.
TEST_F(PointSealTest, IncrementalSealsMatchTheImage) {
  PointSeal seal(keys_.get());
  auto one = SealPointOne(&seal);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_TRUE(keys_->Authentic(one[0]));
  EXPECT_EQ(one[0].regions, Recount());
  EXPECT_EQ(one[0].region_points, (std::vector<uint64_t>{1, 1, 1, 1}));
  Write(&seal, 300, 4, 0x5a);
  Write(&seal, 301, 1, 0);  // the same block twice in one point: the last read wins
  Write(&seal, 768, 2, 0);  // to zeros, in the last region
  auto two = seal.Seals(2, 200, 0);
  EXPECT_EQ(two[0].regions, Recount());
  EXPECT_EQ(two[0].region_points, (std::vector<uint64_t>{1, 2, 1, 2}));
  EXPECT_TRUE(keys_->Authentic(two[0]));
}

// A process that did not send point 1 takes the staging's fingerprints of it when they add up
// to point 1's seals, and then seals point 2 exactly as the process that sent point 1 would.
TEST_F(PointSealTest, AdoptsAMatchingBase) {
  PointSeal sender(keys_.get());
  auto one = SealPointOne(&sender);
  PointSeal restarted(keys_.get());
  EXPECT_FALSE(restarted.KnowsBase(1, {kVolume}));
  std::vector<FingerprintTable> fps = Tables();
  EXPECT_EQ(restarted.AdoptBase(1, {kVolume}, &fps, {one[0]}), "");
  EXPECT_TRUE(restarted.KnowsBase(1, {kVolume}));
  EXPECT_TRUE(fps.empty());  // taken, not copied
  Bytes before = image_;
  Write(&sender, 10, 3, 7);
  image_ = before;
  Write(&restarted, 10, 3, 7);
  EXPECT_EQ(sender.Seals(2, 5, 0)[0].Encode(), restarted.Seals(2, 5, 0)[0].Encode());
}

// One wrong fingerprint from the staging (damage, or a lie that would hide a rollback), a seal of
// another point, a seal not MAC'd with our key, no seal: refused with the reason, nothing taken.
TEST_F(PointSealTest, RefusesABaseItsSealDoesNotVouchFor) {
  PointSeal sender(keys_.get());
  auto one = SealPointOne(&sender);
  PointSeal restarted(keys_.get());
  std::vector<FingerprintTable> fps = Tables();
  fps[0].Set(300, fps[0][300] ^ 2);  // block 300 lies in region 1 (bytes 1 MiB .. 2 MiB)
  std::string why = restarted.AdoptBase(1, {kVolume}, &fps, {one[0]});
  EXPECT_NE(why.find("do not add up to the seal, first bytes 1048576..2097152"), std::string::npos) << why;
  EXPECT_EQ(fps.size(), 1u);  // left for the rescan to compare with
  EXPECT_FALSE(restarted.KnowsBase(1, {kVolume}));
  fps[0].Set(300, fps[0][300] ^ 2);
  EXPECT_NE(restarted.AdoptBase(2, {kVolume}, &fps, {one[0]}).find("the seal is point 1's"), std::string::npos);
  auto other = std::move(SealKeys::Create(TestKey(), "web2")).value();
  VolumeSeal forged = one[0];
  forged.mac = other->Mac(forged);
  EXPECT_NE(restarted.AdoptBase(1, {kVolume}, &fps, {forged}).find("MAC does not verify"), std::string::npos);
  EXPECT_NE(restarted.AdoptBase(1, {kVolume}, &fps, {std::nullopt}).find("has no seal"), std::string::npos);
  EXPECT_NE(restarted.AdoptBase(1, {kVolume + 4096}, &fps, {one[0]}).find("now"), std::string::npos);
  EXPECT_FALSE(restarted.KnowsBase(1, {kVolume}));
  EXPECT_EQ(restarted.AdoptBase(1, {kVolume}, &fps, {one[0]}), "");
}

// The point just committed hands its fingerprints over (a rescan compares with them), but only
// while the state is exactly that point's: not another point's, not after a read since.
TEST_F(PointSealTest, TakesTheBaseOnlyWhileItIsExactlyThePoints) {
  PointSeal seal(keys_.get());
  SealPointOne(&seal);
  EXPECT_TRUE(seal.TakeBase(2, {kVolume}).empty());
  EXPECT_TRUE(seal.TakeBase(1, {kVolume + 4096}).empty());
  EXPECT_TRUE(seal.KnowsBase(1, {kVolume})) << "a refused take keeps the state";
  std::vector<FingerprintTable> fps = seal.TakeBase(1, {kVolume});
  ASSERT_EQ(fps.size(), 1u);
  std::vector<uint64_t> want = Fps();
  for (uint64_t b = 0; b < want.size(); ++b) ASSERT_EQ(fps[0][b], want[b]) << "block " << b;
  EXPECT_FALSE(seal.KnowsBase(1, {kVolume}));
  EXPECT_TRUE(seal.TakeBase(1, {kVolume}).empty());

  PointSeal reading(keys_.get());
  SealPointOne(&reading);
  Write(&reading, 5, 1, 9);  // point 2's first read
  EXPECT_TRUE(reading.TakeBase(1, {kVolume}).empty());
  reading.Committed(2);
  EXPECT_EQ(reading.TakeBase(2, {kVolume}).size(), 1u);
}

}  // namespace
}  // namespace blockrep::agent
