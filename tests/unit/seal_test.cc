// Point seals (blockrep/crypto/seal.h): the region digests and their MAC.
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "blockrep/crypto/seal.h"

#include "test_data.h"

namespace blockrep {
namespace {

struct Fixture {
  std::unique_ptr<SealKeys> keys = std::move(SealKeys::Create(FilledKey(7), "db1")).value();
  BlockFingerprinter fingerprinter = std::move(BlockFingerprinter::Create(FilledKey(7))).value();
};

// Region sizes: at least 1 MiB, powers of two, never more than 32768 regions.
TEST(Seal, RegionSizes) {
  EXPECT_EQ(SealRegionBytes(0), kSealRegionBytesMin);
  EXPECT_EQ(SealRegionCount(0), 0u);
  EXPECT_EQ(SealRegionCount(1), 1u);
  EXPECT_EQ(SealRegionBytes(1ull << 30), 1ull << 20);
  EXPECT_EQ(SealRegionCount(1ull << 30), 1024u);
  EXPECT_EQ(SealRegionBytes(32ull << 30), 1ull << 20);
  EXPECT_EQ(SealRegionCount(32ull << 30), 32768u);
  EXPECT_EQ(SealRegionBytes((32ull << 30) + 1), 2ull << 20);
  EXPECT_EQ(SealRegionCount((32ull << 30) + 1), 16385u);
  EXPECT_EQ(SealRegionBytes(1ull << 40), 32ull << 20);
  EXPECT_EQ(SealRegionBytes(4ull << 40), 128ull << 20);
  EXPECT_LE(SealRegionCount(4ull << 40), kSealRegionsMax);
  // Sizes from the wire can be anything: no overflow, no endless loop (found by fuzz_store).
  EXPECT_EQ(SealRegionBytes(UINT64_MAX), 1ull << 49);
  EXPECT_EQ(SealRegionCount(UINT64_MAX), 32768u);
  EXPECT_EQ(SealRegionCount((1ull << 63) + 1), 16385u);
}

// Updating digests block by block (old term out, new term in) ends where computing them from the
// final image does: what lets the agent seal incrementally.
TEST(Seal, IncrementalUpdatesEqualARecount) {
  Fixture f;
  const uint64_t size = (3u << 20) + 4096 * 5 + 100;  // a short last block, a partial region
  Bytes image = RandomBytes(size, 1);
  std::fill(image.begin() + (1 << 20), image.begin() + (1 << 20) + 65536, 0);  // zero blocks have no term
  RegionDigests running(f.keys.get(), size);
  std::vector<uint64_t> fps((size + 4095) / 4096);
  auto note = [&](uint64_t block) {
    size_t len = std::min<uint64_t>(4096, size - block * 4096);
    uint64_t fp = f.fingerprinter.Block(block * 4096, ByteSpan(image.data() + block * 4096, len));
    running.Note(block, fps[block], true);
    running.Note(block, fp);
    fps[block] = fp;
  };
  for (uint64_t b = 0; b < fps.size(); ++b) note(b);
  std::mt19937_64 rng(2);
  for (int i = 0; i < 5000; ++i) {  // rewrites, some to zeros, some twice
    uint64_t b = rng() % fps.size();
    size_t len = std::min<uint64_t>(4096, size - b * 4096);
    if (rng() % 4 == 0) std::fill_n(image.begin() + static_cast<ptrdiff_t>(b * 4096), len, 0);
    else for (size_t j = 0; j < len; ++j) image[b * 4096 + j] = static_cast<uint8_t>(rng());
    note(b);
  }
  running.Flush();
  RegionDigests recount(f.keys.get(), size);
  NoteData(f.fingerprinter, 0, image, &recount);
  recount.Flush();
  EXPECT_EQ(running.regions(), recount.regions());
  EXPECT_EQ(running.regions().size(), 4u);
}

// A region's digest computed on its own (instant access) equals the whole volume's table entry.
TEST(Seal, DigestOfOneRegionEqualsTheTable) {
  Fixture f;
  const uint64_t size = (3u << 20) + 4096 * 2 + 7;
  Bytes image = RandomBytes(size, 3);
  std::fill(image.begin() + (2 << 20), image.begin() + (2 << 20) + 8192, 0);
  RegionDigests table(f.keys.get(), size);
  NoteData(f.fingerprinter, 0, image, &table);
  table.Flush();
  ASSERT_EQ(table.regions().size(), 4u);
  for (uint64_t r = 0; r < 4; ++r) {
    uint64_t start = r * table.region_bytes();
    uint64_t len = std::min(table.region_bytes(), size - start);
    EXPECT_EQ(DigestOfRegion(*f.keys, f.fingerprinter, start, ByteSpan(image.data() + start, len)), table.regions()[r])
        << "region " << r;
  }
}

// One changed block changes exactly its region's digest; rolling it back restores it.
TEST(Seal, ADifferentBlockChangesOnlyItsRegion) {
  Fixture f;
  const uint64_t size = 4u << 20;
  Bytes image = RandomBytes(size, 3);
  RegionDigests a(f.keys.get(), size);
  NoteData(f.fingerprinter, 0, image, &a);
  a.Flush();
  image[(2u << 20) + 12345] ^= 1;
  RegionDigests b(f.keys.get(), size);
  NoteData(f.fingerprinter, 0, image, &b);
  b.Flush();
  VolumeSeal seal = MakeSeal(*f.keys, 1, 2, 0, 0, 1, &a);
  EXPECT_EQ(MismatchedRegions(seal, b.regions()), std::vector<uint32_t>{2});
  EXPECT_TRUE(MismatchedRegions(seal, a.regions()).empty());
}

// The MAC covers every field, and the server-id; Decode gives back what Encode wrote.
TEST(Seal, MacCoversEveryFieldAndTheServer) {
  Fixture f;
  Bytes image = RandomBytes(3u << 20, 4);
  RegionDigests d(f.keys.get(), image.size());
  NoteData(f.fingerprinter, 0, image, &d);
  VolumeSeal seal = MakeSeal(*f.keys, 9, 1234, 1, 1, 2, &d, {9, 4, 0});
  ASSERT_TRUE(f.keys->Authentic(seal));
  VolumeSeal back = std::move(VolumeSeal::Decode(seal.Encode())).value();
  EXPECT_TRUE(f.keys->Authentic(back));
  EXPECT_EQ(back.Encode(), seal.Encode());
  EXPECT_EQ(seal.Encode().size(), SealEncodedSize(3));
  std::vector<std::function<void(VolumeSeal&)>> edits = {
      [](VolumeSeal& s) { s.point_id++; },     [](VolumeSeal& s) { s.time_ns++; },
      [](VolumeSeal& s) { s.flags ^= 1; },     [](VolumeSeal& s) { s.volume = 0; },
      [](VolumeSeal& s) { s.volume_count++; }, [](VolumeSeal& s) { s.regions[1].lo++; },
      [](VolumeSeal& s) { s.regions[2].hi ^= 1ull << 63; }, [](VolumeSeal& s) { s.region_points[0] = 3; },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    VolumeSeal edited = seal;
    edits[i](edited);
    EXPECT_FALSE(f.keys->Authentic(edited)) << "edit " << i;
  }
  auto other_server = std::move(SealKeys::Create(FilledKey(7), "db2")).value();
  EXPECT_FALSE(other_server->Authentic(seal));
  auto other_key = std::move(SealKeys::Create(FilledKey(8), "db1")).value();
  EXPECT_FALSE(other_key->Authentic(seal));
}

// Decode checks structure: region count and size must fit the volume, no truncation or trailer.
TEST(Seal, DecodeRejectsMalformedSeals) {
  Fixture f;
  RegionDigests d(f.keys.get(), 2u << 20);
  Bytes good = MakeSeal(*f.keys, 1, 1, 0, 0, 1, &d).Encode();
  ASSERT_TRUE(VolumeSeal::Decode(good).ok());
  Bytes truncated(good.begin(), good.end() - 1);
  EXPECT_EQ(VolumeSeal::Decode(truncated).status().code(), Code::kDataLoss);
  Bytes trailing = good;
  trailing.push_back(0);
  EXPECT_EQ(VolumeSeal::Decode(trailing).status().code(), Code::kDataLoss);
  Bytes wrong_size = good;
  wrong_size[24] ^= 0x40;  // volume_bytes: 2 MiB -> no longer two regions
  EXPECT_EQ(VolumeSeal::Decode(wrong_size).status().code(), Code::kDataLoss);
  Bytes bad_volume = good;
  bad_volume[20] = 5;  // volume 5 of 1
  EXPECT_EQ(VolumeSeal::Decode(bad_volume).status().code(), Code::kDataLoss);
}

// A labelled seal carries the label under its MAC: Decode gives it back, and another label, or
// the label flag dropped, no longer verifies (a staging cannot move a label to another point).
TEST(Seal, LabelIsUnderTheMac) {
  Fixture f;
  RegionDigests d(f.keys.get(), 2u << 20);
  VolumeSeal seal = MakeSeal(*f.keys, 4, 99, kSealFlagConsistent | kSealFlagLabelled, 0, 1, &d, {}, {}, "before-upgrade");
  Bytes enc = seal.Encode();
  EXPECT_EQ(enc.size(), SealEncodedSize(2, 14));
  VolumeSeal back = std::move(VolumeSeal::Decode(enc)).value();
  EXPECT_EQ(back.label, "before-upgrade");
  EXPECT_TRUE(f.keys->Authentic(back));
  VolumeSeal relabelled = back;
  relabelled.label = "before-upgradf";
  EXPECT_FALSE(f.keys->Authentic(relabelled));
  VolumeSeal unlabelled = back;
  unlabelled.label.clear();
  unlabelled.flags &= ~kSealFlagLabelled;
  EXPECT_FALSE(f.keys->Authentic(unlabelled));
  Bytes unknown_flag = enc;
  unknown_flag[16] |= 4;  // flags: bit 2 means nothing
  EXPECT_EQ(VolumeSeal::Decode(unknown_flag).status().code(), Code::kDataLoss);
  Bytes bad_char = enc;
  bad_char[21] = '/';  // the label's first character: labels never hold a path separator
  EXPECT_EQ(VolumeSeal::Decode(bad_char).status().code(), Code::kDataLoss);
}

// Labels: a letter first, then letters, digits, '.', '_' or '-', at most 64; never "latest".
TEST(Seal, PointLabelRules) {
  for (const char* good : {"before-upgrade", "a", "Release_2.4-rc1", "x123"}) EXPECT_TRUE(CheckPointLabel(good).ok()) << good;
  for (const char* bad : {"", "1abc", "latest", "-x", "a b", "a/b", "caf\xc3\xa9", "2026-11-27T10:00:00Z"})
    EXPECT_EQ(CheckPointLabel(bad).code(), Code::kInvalidArgument) << bad;
  EXPECT_TRUE(CheckPointLabel(std::string(64, 'a')).ok());
  EXPECT_FALSE(CheckPointLabel(std::string(65, 'a')).ok());
}

}  // namespace
}  // namespace blockrep
