// BaseInbox (replicator/base_inbox.h): the staging's fingerprints and seals of the base point, as
// they arrive; what was not asked for, or comes out of order, is refused.
#include <gtest/gtest.h>

#include "base_inbox.h"
#include "blockrep/store/store.h"

namespace blockrep::agent {
namespace {

wire::Fingerprints Fps(uint16_t volume, uint64_t offset, size_t n, uint64_t value) {
  wire::Fingerprints m;
  m.volume = volume;
  m.offset = offset;
  m.values.assign(n, value);
  return m;
}

// Fingerprints arrive in order per volume; the last block of a volume may be short.
TEST(BaseInbox, FingerprintsArriveInOrder) {
  BaseInbox in;
  ASSERT_TRUE(in.ExpectFingerprints({3 * 4096 + 100, 4096}).ok());
  EXPECT_FALSE(in.FingerprintsComplete());
  EXPECT_EQ(in.Fingerprint(0, 0), store::kFingerprintUnknown);
  ASSERT_TRUE(in.OnFingerprints(Fps(0, 0, 2, 11)).ok());
  EXPECT_EQ(in.known_end(0), 8192u);
  EXPECT_EQ(in.OnFingerprints(Fps(0, 0, 1, 11)).code(), Code::kProtocol) << "a repeat";
  EXPECT_EQ(in.OnFingerprints(Fps(0, 8192, 3, 11)).code(), Code::kProtocol) << "past the volume";
  ASSERT_TRUE(in.OnFingerprints(Fps(0, 8192, 2, 12)).ok());
  EXPECT_EQ(in.known_end(0), 3u * 4096 + 100);
  EXPECT_EQ(in.OnFingerprints(Fps(2, 0, 1, 1)).code(), Code::kProtocol) << "no such volume";
  ASSERT_TRUE(in.OnFingerprints(Fps(1, 0, 1, 13)).ok());
  EXPECT_TRUE(in.FingerprintsComplete());
  in.MarkUnknown(0, 4096, 4096);
  EXPECT_EQ(in.Fingerprint(0, 1), store::kFingerprintUnknown);
  EXPECT_EQ(in.Fingerprint(0, 2), 12u);
  in.ReleaseFingerprints();
  EXPECT_EQ(in.OnFingerprints(Fps(0, 0, 1, 1)).code(), Code::kProtocol) << "released: nothing is asked for";
}

// Seals come one per volume, in volume order.
TEST(BaseInbox, SealsInVolumeOrder) {
  BaseInbox in;
  in.ExpectSeals(2);
  wire::BaseSeal s;
  s.volume = 1;
  EXPECT_EQ(in.OnSeal(s).code(), Code::kProtocol);
  s.volume = 0;
  ASSERT_TRUE(in.OnSeal(s).ok());
  EXPECT_FALSE(in.SealsComplete());
  s.volume = 1;
  ASSERT_TRUE(in.OnSeal(s).ok());
  EXPECT_TRUE(in.SealsComplete());
  EXPECT_EQ(in.OnSeal(s).code(), Code::kProtocol);
}

}  // namespace
}  // namespace blockrep::agent
