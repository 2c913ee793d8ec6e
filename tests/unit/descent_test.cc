// CheckDescent (recovery/descent.h): whether a chain descends from the point an agent saw
// acknowledged, by the links the agent MAC'd into each seal. Chains are built from seals alone.
#include <gtest/gtest.h>

#include <map>

#include "blockrep/crypto/seal.h"
#include "descent.h"
#include "test_data.h"

namespace blockrep::recovery {
namespace {

constexpr uint64_t kVolumeBytes = 1 << 20;

template <typename T>
T Must(Result<T> r) {
  EXPECT_TRUE(r.ok()) << r.status().message();
  return std::move(r).value();
}

class DescentTest : public ::testing::Test {
 protected:
  // Seals point `id`, following `prev` (with its MAC when `with_mac`), and keeps it retained.
  void Add(uint64_t id, uint64_t prev, bool with_mac = true, uint64_t salt = 0) {
    RegionDigests d(chain_->newest().seal_keys.get(), kVolumeBytes);
    d.Note(0, 1 + id + salt * 1000);  // different content, so a fork's point has another MAC
    SealLink link{prev, {}};
    if (with_mac && prev != 0) link.mac = all_.at(prev).mac;
    VolumeSeal s = MakeSeal(*chain_->newest().seal_keys, id, id * 1000, 1, 0, 1, &d, {}, link);
    all_[id] = s;
    store::PointInfo p;
    p.id = id;
    p.time_ns = id * 1000;
    manifest_.points.push_back(p);
  }
  void Expire(uint64_t id) { std::erase_if(manifest_.points, [&](const store::PointInfo& p) { return p.id == id; }); }
  Status Check(uint64_t expect, const std::array<uint8_t, kSealMacBytes>& mac = {}) {
    return CheckDescent(manifest_, SealLink{expect, mac}, *chain_, [&](const store::PointInfo& p) -> Result<VolumeSeal> {
      return all_.at(p.id);
    });
  }

  std::unique_ptr<KeyChain> chain_ = std::move(KeyChain::Create({FilledKey(5)}, "web1")).value();
  std::map<uint64_t, VolumeSeal> all_;  // every seal made, retained or not
  store::Manifest manifest_ = [] {
    store::Manifest m;
    m.server_id = "web1";
    return m;
  }();
};

// A linear chain descends from each of its points; a head older than N is a rollback.
TEST_F(DescentTest, LinearChainDescends) {
  for (uint64_t id = 1; id <= 5; ++id) Add(id, id - 1);
  for (uint64_t n = 1; n <= 5; ++n) EXPECT_TRUE(Check(n).ok()) << n;
  EXPECT_TRUE(Check(3, all_.at(3).mac).ok());
  Status older = Check(6);
  EXPECT_EQ(older.code(), Code::kDataLoss);
  EXPECT_NE(older.message().find("older than point 6"), std::string::npos) << older.message();
}

// Rolled back to point 1, then written again under new ids: point 4 follows 1, so the chain does
// not descend from the acknowledged point 3 although its head (4) is not older.
TEST_F(DescentTest, NewIdsAfterRollbackAreCaught) {
  for (uint64_t id = 1; id <= 3; ++id) Add(id, id - 1);
  Expire(2);
  Expire(3);
  Add(4, 1);
  Status st = Check(3);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("point 4 follows point 1: the chain does not descend from point 3"), std::string::npos)
      << st.message();
}

// Rolled back to point 1, then written again under the same ids (an agent that lost its state):
// the ids line up, the acknowledged point 3's MAC does not.
TEST_F(DescentTest, SameIdsAfterRollbackAreCaughtByTheMac) {
  for (uint64_t id = 1; id <= 3; ++id) Add(id, id - 1);
  std::array<uint8_t, kSealMacBytes> acked = all_.at(3).mac;
  Expire(2);
  Expire(3);
  Add(2, 1, true, /*salt=*/1);
  Add(3, 2, true, /*salt=*/1);
  EXPECT_TRUE(Check(3).ok()) << "by id alone the fork is invisible";
  Status st = Check(3, acked);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("the chain forked"), std::string::npos) << st.message();
}

// Retention expired the point N and those between: a link that names N still proves descent;
// one that stops above N cannot be followed, which is reported rather than passed.
TEST_F(DescentTest, ExpiredPointsOnTheWay) {
  for (uint64_t id = 1; id <= 6; ++id) Add(id, id - 1);
  Expire(5);
  EXPECT_TRUE(Check(5).ok());                   // 6 follows 5
  EXPECT_TRUE(Check(5, all_.at(5).mac).ok());   // and names 5's MAC
  Status st = Check(3);                         // 6 follows 5, which is gone
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("has expired"), std::string::npos) << st.message();
}

// A link whose MAC is not the retained point's: another point under that id (a fork).
TEST_F(DescentTest, LinkMacMismatchIsAFork) {
  Add(1, 0);
  Add(2, 1);
  std::array<uint8_t, kSealMacBytes> genuine = all_.at(2).mac;
  Add(3, 2);  // links to 2's MAC
  all_[2] = all_.at(3);  // a different point 2 stands in the store now
  all_[2].point_id = 2;
  all_[2].prev = SealLink{1, all_.at(1).mac};
  all_[2].time_ns = 2000;
  all_[2].mac = chain_->newest().seal_keys->Mac(all_[2]);
  ASSERT_NE(all_[2].mac, genuine);
  Status st = Check(1);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("forked"), std::string::npos) << st.message();
}

// A seal the key does not authenticate is not followed.
TEST_F(DescentTest, UnauthenticSealIsNotFollowed) {
  Add(1, 0);
  Add(2, 1);
  all_[2].prev.point_id = 0;  // edited without the key
  Status st = Check(1);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("not authentic"), std::string::npos) << st.message();
}

TEST(ParseExpectPoint, IdAndMac) {
  EXPECT_EQ(Must(ParseExpectPoint("7")).point_id, 7u);
  EXPECT_FALSE(Must(ParseExpectPoint("7")).KnowsMac());
  SealLink l = Must(ParseExpectPoint("7:" + std::string(62, '0') + "ab"));
  EXPECT_TRUE(l.KnowsMac());
  EXPECT_EQ(l.mac[31], 0xab);
  for (const char* bad : {"", "0", "-1", "x", "7:", "7:abc", "7:zz"}) EXPECT_FALSE(ParseExpectPoint(bad).ok()) << bad;
}

}  // namespace
}  // namespace blockrep::recovery
