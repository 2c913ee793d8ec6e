#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <random>

#include "blockrep/base/checksum.h"
#include "blockrep/base/fs.h"
#include "blockrep/store/pending.h"
#include "blockrep/store/store.h"

namespace blockrep::store {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/blockrep-storetest.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + root_).c_str()); }
  PointIndex SampleIndex(uint64_t id) {
    PointIndex idx;
    idx.point_id = id;
    idx.volume_sizes = {1 << 20, 1 << 16};
    idx.entries.push_back({0, 65536, 0, 1, 1000, 16, 0, 0xabc});
    idx.entries.push_back({0, 65536, 131072, 1, 900, 1016, 0, 0xdef});
    idx.entries.push_back({1, 4096, 0, 2, 200, 16, 0, 0x123});
    return idx;
  }
  std::string root_;
};

// Index and manifest encodings round-trip.
TEST_F(StoreTest, IndexAndManifestRoundTrip) {
  PointIndex idx = SampleIndex(3);
  auto back = PointIndex::Decode(idx.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->entries.size(), 3u);
  EXPECT_EQ(back->entries[1].offset, 131072u);
  Manifest m;
  m.server_id = "web1";
  m.key_id = 99;
  m.points.push_back({1, 1000, kPointConsistent, 2, 5000, 77, ""});
  auto mb = Manifest::Decode(m.Encode());
  ASSERT_TRUE(mb.ok());
  EXPECT_EQ(mb->points[0].bytes_added, 5000u);
  EXPECT_TRUE(mb->points[0].consistent());
}

// Labels round-trip through the manifest, its size is known without encoding, a label flag
// without a label (or the reverse) is damage, and a manifest written before labels still loads.
TEST_F(StoreTest, ManifestLabels) {
  Manifest m;
  m.server_id = "web1";
  m.key_id = 99;
  m.points.push_back({1, 1000, kPointConsistent, 2, 5000, 77, ""});
  m.points.push_back({2, 2000, kPointConsistent | kPointLabelled, 2, 10, 78, "before-upgrade"});
  Bytes enc = m.Encode();
  EXPECT_EQ(enc.size(), m.EncodedSize());
  auto back = Manifest::Decode(enc);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->points[0].label, "");
  EXPECT_EQ(back->points[1].label, "before-upgrade");
  Manifest lying = m;
  lying.points[1].flags = kPointConsistent;  // a label but no flag
  EXPECT_EQ(Manifest::Decode(lying.Encode()).status().code(), Code::kDataLoss);
  lying = m;
  lying.points[1].label = "9lives";
  EXPECT_EQ(Manifest::Decode(lying.Encode()).status().code(), Code::kDataLoss);

  // BBRMAN01: 40 bytes per point, no label field.
  Bytes v1;
  ByteWriter w(&v1);
  w.U64(0x31304e414d524242ull);
  w.String("web1");
  w.U64(99);
  w.U64(1);
  for (uint64_t v : {uint64_t{5}, uint64_t{5000}}) w.U64(v);
  w.U32(kPointConsistent);
  w.U32(1);
  w.U64(123);
  w.U64(456);
  w.U64(Checksum64(v1));
  auto old = Manifest::Decode(v1);
  ASSERT_TRUE(old.ok()) << old.status().message();
  ASSERT_EQ(old->points.size(), 1u);
  EXPECT_EQ(old->points[0].id, 5u);
  EXPECT_EQ(old->points[0].index_checksum, 456u);
  EXPECT_TRUE(old->points[0].label.empty());
}

// A manifest written into a bucket under a lease carries the writer's token (BBRMAN03); without
// one it is the BBRMAN02 it always was, byte for byte.
TEST_F(StoreTest, ManifestWriterToken) {
  Manifest m;
  m.server_id = "web1";
  m.key_id = 7;
  m.points.push_back({1, 1000, 0, 1, 50, 77, ""});
  Bytes plain = m.Encode();
  EXPECT_EQ(std::string(plain.begin(), plain.begin() + 8), "BBRMAN02");
  m.writer_token = 12;
  Bytes fenced = m.Encode();
  EXPECT_EQ(std::string(fenced.begin(), fenced.begin() + 8), "BBRMAN03");
  EXPECT_EQ(fenced.size(), m.EncodedSize());
  EXPECT_NE(fenced, plain);  // a fence always changes the bytes, so the ETag
  auto back = Manifest::Decode(fenced);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->writer_token, 12u);
  EXPECT_EQ(back->points.size(), 1u);
  EXPECT_EQ(Manifest::Decode(plain)->writer_token, 0u);
}

// Any single flipped byte or truncation of an index or manifest is detected.
TEST_F(StoreTest, DamageIsDetected) {
  Bytes idx = SampleIndex(3).Encode();
  for (size_t pos = 0; pos < idx.size(); pos += 7) {
    Bytes copy = idx;
    copy[pos] ^= 0x40;
    EXPECT_EQ(PointIndex::Decode(copy).status().code(), Code::kDataLoss) << pos;
  }
  EXPECT_FALSE(PointIndex::Decode(ByteSpan(idx).first(idx.size() - 1)).ok());
  Manifest m;
  m.server_id = "web1";
  Bytes menc = m.Encode();
  menc[3] ^= 1;
  EXPECT_EQ(Manifest::Decode(menc).status().code(), Code::kDataLoss);
}

// Overlapping or out-of-volume extents make an index invalid.
TEST_F(StoreTest, ValidateRejectsOverlapAndOutOfRange) {
  PointIndex idx = SampleIndex(1);
  idx.entries[1].offset = 60000;  // overlaps entry 0
  EXPECT_FALSE(idx.Validate().ok());
  idx = SampleIndex(1);
  idx.entries[2].offset = 65536 - 100;  // past the end of volume 1
  EXPECT_FALSE(idx.Validate().ok());
  idx = SampleIndex(1);
  idx.entries[2].volume = 5;
  EXPECT_FALSE(idx.Validate().ok());
}

// A committed point survives reopening; its index loads back with the manifest's checksum.
TEST_F(StoreTest, CommitThenReopen) {
  ASSERT_TRUE(InitStoreRoot(root_, true).ok());
  {
    auto s = ServerStore::Open(root_, "web1", true);
    ASSERT_TRUE(s.ok()) << s.status().message();
    PointInfo info{1, 111, 0, 2, 2100, 0, ""};
    ASSERT_TRUE((*s)->CommitPoint(info, SampleIndex(1), 42).ok());
    EXPECT_FALSE((*s)->CommitPoint(info, SampleIndex(1), 42).ok());  // ids only grow
  }
  auto s = ServerStore::Open(root_, "web1", false);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ((*s)->manifest().points.size(), 1u);
  EXPECT_EQ((*s)->manifest().key_id, 42u);
  auto idx = (*s)->LoadIndex((*s)->manifest().points[0]);
  ASSERT_TRUE(idx.ok()) << idx.status().message();
  EXPECT_EQ(idx->entries.size(), 3u);
}

// Nothing is committed that a reader would refuse to load: a point whose manifest would pass
// kMaxManifestBytes is refused (no space: retention must expire points), leaving the chain, and
// no orphan index, behind.
TEST_F(StoreTest, ManifestOverTheReadersCapIsNotCommitted) {
  ASSERT_TRUE(InitStoreRoot(root_, true).ok());
  Manifest m;
  m.server_id = "web1";
  m.key_id = 42;
  EXPECT_EQ(m.EncodedSize(), m.Encode().size());
  size_t fit = (kMaxManifestBytes - m.EncodedSize()) / Manifest::kPointBytes;
  m.points.reserve(fit);
  for (uint64_t i = 1; i <= fit; ++i) m.points.push_back(PointInfo{i, i * 1000, 0, 2, 100, 0, ""});
  EXPECT_EQ(m.EncodedSize(), m.Encode().size());
  ASSERT_LE(m.EncodedSize(), kMaxManifestBytes);
  {
    auto s = ServerStore::Open(root_, "web1", true);  // creates the directories
    ASSERT_TRUE(s.ok());
  }
  ASSERT_TRUE(WriteFileAtomic(root_ + "/servers/web1/MANIFEST", m.Encode()).ok());
  auto s = ServerStore::Open(root_, "web1", false);
  ASSERT_TRUE(s.ok()) << s.status().message();
  PointInfo next{fit + 1, (fit + 1) * 1000, 0, 2, 100, 0, ""};
  Status st = (*s)->CommitPoint(next, SampleIndex(fit + 1), 42);
  EXPECT_EQ(st.code(), Code::kNoSpace);
  EXPECT_NE(st.message().find("a reader loads: not committed"), std::string::npos) << st.message();
  EXPECT_EQ((*s)->manifest().points.size(), fit);
  auto orphans = ListDir(root_ + "/servers/web1/index");
  ASSERT_TRUE(orphans.ok());
  EXPECT_TRUE(orphans->empty());
}

// Files the manifest does not reference (a crash between index and manifest) are removed.
TEST_F(StoreTest, OrphansAreRemoved) {
  ASSERT_TRUE(InitStoreRoot(root_, true).ok());
  auto s = ServerStore::Open(root_, "web1", true);
  ASSERT_TRUE(s.ok());
  Bytes orphan = SampleIndex(9).Encode();
  PointInfo orphan_point;
  orphan_point.id = 9;
  orphan_point.index_checksum = Checksum64(orphan);
  ASSERT_TRUE(WriteFileAtomic((*s)->IndexPath(orphan_point), orphan).ok());
  ASSERT_TRUE(WriteFileAtomic((*s)->dir() + "/index/x.idx.tmp", orphan).ok());
  ASSERT_TRUE((*s)->RemoveOrphans().ok());
  EXPECT_FALSE(PathExists((*s)->IndexPath(orphan_point)));
  EXPECT_FALSE(PathExists((*s)->dir() + "/index/x.idx.tmp"));
}

// Opening an unknown server without create is a clear not-found.
// Fingerprints stored after each record are found through the index, also for an entry that
// starts inside its record; holes read as 0.
TEST_F(StoreTest, FingerprintsAreReadThroughTheIndex) {
  ASSERT_TRUE(MakeDirs(root_ + "/packs", 0700).ok());
  // Pack: header, record A (100 bytes, 4 blocks of fingerprints 11..14), record B (50 bytes, 1).
  Bytes pack(16, 0);
  auto put_fps = [&](std::initializer_list<uint64_t> fps) {
    for (uint64_t v : fps)
      for (int i = 0; i < 8; ++i) pack.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  uint64_t a_at = pack.size();
  pack.resize(pack.size() + 100, 0xaa);
  put_fps({11, 13, 15, 17});
  uint64_t b_at = pack.size();
  pack.resize(pack.size() + 50, 0xbb);
  put_fps({21});
  ASSERT_TRUE(WriteFileAtomic(root_ + "/packs/00000001.pack", pack).ok());
  PointIndex idx;
  idx.volume_sizes = {1 << 20};
  // Record A's extent [0, 16 KiB) with its first block overwritten by record B.
  idx.entries.push_back({0, 4096, 0, 1, 50, b_at, 0, 0});
  idx.entries.push_back({0, 12288, 4096, 1, 100, a_at, 4096, 0});
  PackReader reader(root_);
  std::vector<uint64_t> out(6);
  ASSERT_TRUE(reader.ReadFingerprints(idx, 0, 0, &out).ok());
  EXPECT_EQ(out, (std::vector<uint64_t>{21, 13, 15, 17, 0, 0}));
  std::vector<uint64_t> mid(2);
  ASSERT_TRUE(reader.ReadFingerprints(idx, 0, 8192, &mid).ok());
  EXPECT_EQ(mid, (std::vector<uint64_t>{15, 17}));
}

TEST_F(StoreTest, UnknownServerIsNotFound) {
  ASSERT_TRUE(InitStoreRoot(root_, true).ok());
  auto s = ServerStore::Open(root_, "ghost", false);
  EXPECT_EQ(s.status().code(), Code::kNotFound);
  EXPECT_EQ(ServerStore::Open(root_, "../etc", true).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace blockrep::store

namespace blockrep::store {
namespace {

IndexEntry At(uint16_t vol, uint64_t offset, uint32_t length, uint32_t pack) {
  IndexEntry e;
  e.volume = vol;
  e.offset = offset;
  e.length = length;
  e.pack = pack;
  e.record_bytes = length + 80;
  e.pack_offset = kPackHeaderSize;  // Validate holds entries to real record places
  return e;
}

// A kept point of `extents` records, for the PENDING tests.
PendingPoint SamplePending(uint32_t extents) {
  PendingPoint p;
  p.begin.point_id = 7;
  p.begin.base_point = 6;
  p.begin.time_ns = 123456789;
  p.begin.volume_sizes = {1 << 20, 2 << 20};
  for (uint32_t i = 0; i < extents; ++i) {
    NewExtent x;
    x.entry = {static_cast<uint16_t>(i % 2), 4096, i * 65536ull, 2, 200 + i, 16 + i * 200, 0, 0x1234 + i};
    x.zero = i == 1;
    p.extents.push_back(x);
    p.bytes += x.entry.record_bytes;
  }
  return p;
}

// A closed PENDING file round-trips, and any flipped byte or cut end is refused, never half-read.
TEST(Pending, RoundTripAndDamage) {
  PendingPoint p = SamplePending(3);
  Bytes enc = EncodePending(p);
  auto back = DecodePending(enc);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_FALSE(back->live);
  EXPECT_EQ(back->point.begin.Encode(), p.begin.Encode());
  EXPECT_EQ(back->point.bytes, p.bytes);
  ASSERT_EQ(back->point.extents.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back->point.extents[i].zero, p.extents[i].zero);
    EXPECT_EQ(back->point.extents[i].entry.pack_offset, p.extents[i].entry.pack_offset);
    EXPECT_EQ(back->point.extents[i].entry.checksum, p.extents[i].entry.checksum);
  }
  for (size_t at = 0; at < enc.size(); at += 7) {
    Bytes bad = enc;
    bad[at] ^= 0x20;
    EXPECT_EQ(DecodePending(bad).status().code(), Code::kDataLoss) << "byte " << at;
  }
  EXPECT_FALSE(DecodePending(ByteSpan(enc).first(enc.size() - 1)).ok());
  EXPECT_FALSE(DecodePending(ByteSpan()).ok());
}

// A live PENDING file (a header, then a frame per group commit) cut anywhere reads as its whole
// frames: the cut one was the last write, never synced, so none of its records was acknowledged.
// A damaged header is refused.
TEST(Pending, LiveFileReadsItsWholeFramesAndIgnoresATornLastOne) {
  PendingPoint p = SamplePending(6);
  Bytes file = EncodePendingLiveHeader(p.begin);
  const size_t header_bytes = file.size();
  std::vector<size_t> frame_ends;
  for (size_t from : {0, 1, 4}) {  // frames of 1, 3 and 2 extents
    size_t to = from == 0 ? 1 : from == 1 ? 4 : 6;
    Bytes frame = EncodePendingFrame(std::span(p.extents).subspan(from, to - from));
    file.insert(file.end(), frame.begin(), frame.end());
    frame_ends.push_back(file.size());
  }
  auto whole = DecodePending(file);
  ASSERT_TRUE(whole.ok()) << whole.status().message();
  EXPECT_TRUE(whole->live);
  EXPECT_EQ(whole->torn_bytes, 0u);
  ASSERT_EQ(whole->point.extents.size(), 6u);
  EXPECT_EQ(whole->point.bytes, p.bytes);
  EXPECT_EQ(whole->point.extents[5].entry.record_bytes, p.extents[5].entry.record_bytes);
  for (size_t len = header_bytes; len < file.size(); ++len) {
    auto cut = DecodePending(ByteSpan(file).first(len));
    ASSERT_TRUE(cut.ok()) << "cut at " << len << ": " << cut.status().message();
    size_t frames = 0;
    while (frames < frame_ends.size() && frame_ends[frames] <= len) ++frames;
    const size_t want[] = {0, 1, 4, 6};
    EXPECT_EQ(cut->point.extents.size(), want[frames]) << "cut at " << len;
    EXPECT_EQ(cut->torn_bytes, len - (frames == 0 ? header_bytes : frame_ends[frames - 1])) << "cut at " << len;
  }
  // The last write torn as a crash may leave it: its bytes there, but not what they should be.
  Bytes torn = file;
  torn[torn.size() - 3] ^= 0x01;
  auto t = DecodePending(torn);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->point.extents.size(), 4u);
  EXPECT_EQ(t->torn_bytes, file.size() - frame_ends[1]);
  for (size_t at = 0; at < header_bytes; ++at) {
    Bytes bad = file;
    bad[at] ^= 0x20;
    EXPECT_EQ(DecodePending(bad).status().code(), Code::kDataLoss) << "header byte " << at;
  }
  EXPECT_FALSE(DecodePending(ByteSpan(file).first(header_bytes - 1)).ok());
}

// A write inside an older extent splits it; the right part points further into the old record.
TEST(BuildPointIndex, OverwriteSplitsOlderExtent) {
  PointIndex base;
  base.point_id = 1;
  base.volume_sizes = {1 << 20};
  base.entries = {At(0, 0, 65536, 1)};
  PointIndex idx = BuildPointIndex(2, {1 << 20}, &base, {{At(0, 8192, 4096, 2), false}});
  ASSERT_TRUE(idx.Validate().ok());
  ASSERT_EQ(idx.entries.size(), 3u);
  EXPECT_EQ(idx.entries[0].length, 8192u);
  EXPECT_EQ(idx.entries[1].pack, 2u);
  EXPECT_EQ(idx.entries[2].offset, 12288u);
  EXPECT_EQ(idx.entries[2].offset_in_record, 12288u);
  EXPECT_EQ(idx.entries[2].length, 65536u - 12288u);
}

// Within one point the later of two overlapping records wins.
TEST(BuildPointIndex, LaterRecordWins) {
  PointIndex idx = BuildPointIndex(1, {1 << 20}, nullptr,
                                   {{At(0, 0, 8192, 1), false}, {At(0, 4096, 8192, 2), false}});
  ASSERT_TRUE(idx.Validate().ok());
  ASSERT_EQ(idx.entries.size(), 2u);
  EXPECT_EQ(idx.entries[0].length, 4096u);
  EXPECT_EQ(idx.entries[1].pack, 2u);
  EXPECT_EQ(idx.entries[1].length, 8192u);
}

// A zero record punches a hole across several older extents.
TEST(BuildPointIndex, ZeroExtentPunchesHole) {
  PointIndex base;
  base.volume_sizes = {1 << 20};
  base.entries = {At(0, 0, 65536, 1), At(0, 65536, 65536, 1)};
  PointIndex idx = BuildPointIndex(2, {1 << 20}, &base, {{At(0, 32768, 65536, 2), true}});
  ASSERT_TRUE(idx.Validate().ok());
  ASSERT_EQ(idx.entries.size(), 2u);
  EXPECT_EQ(idx.entries[0].length, 32768u);
  EXPECT_EQ(idx.entries[1].offset, 98304u);
  EXPECT_EQ(idx.entries[1].offset_in_record, 32768u);
}

// A volume that shrinks or disappears keeps nothing past its end.
TEST(BuildPointIndex, ShrunkVolumeIsTrimmed) {
  PointIndex base;
  base.volume_sizes = {1 << 20, 1 << 20};
  base.entries = {At(0, 0, 65536, 1), At(0, 983040, 65536, 1), At(1, 0, 4096, 1)};
  PointIndex idx = BuildPointIndex(2, {1000000}, &base, {});
  ASSERT_TRUE(idx.Validate().ok());
  ASSERT_EQ(idx.entries.size(), 2u);
  EXPECT_EQ(idx.entries[1].offset + idx.entries[1].length, 1000000u);
}

}  // namespace
}  // namespace blockrep::store

namespace blockrep::store {
namespace {

// Seeded simulation: random overlapping writes and zeroings over many incremental points, each
// index built from the previous one, must materialise exactly what a byte-level model holds.
TEST(BuildPointIndex, RandomChainsMatchModel) {
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed() + 20261123u;
  std::mt19937_64 rng(seed);
  constexpr uint64_t kVol = 1 << 20;     // 1 MiB volume, 4 KiB blocks
  constexpr uint64_t kBlock = 4096;
  for (int chain = 0; chain < 20; ++chain) {
    // model[b] = (record id, block offset inside that record) or 0 for zero.
    std::vector<std::pair<uint32_t, uint32_t>> model(kVol / kBlock, {0, 0});
    std::optional<PointIndex> prev;
    uint32_t next_record = 1;
    for (uint64_t point = 1; point <= 12; ++point) {
      std::vector<NewExtent> xs;
      int writes = 1 + static_cast<int>(rng() % 30);
      for (int w = 0; w < writes; ++w) {
        uint64_t first = rng() % (kVol / kBlock);
        uint64_t blocks = 1 + rng() % std::min<uint64_t>(16, kVol / kBlock - first);
        bool zero = rng() % 5 == 0;
        IndexEntry e;
        e.volume = 0;
        e.offset = first * kBlock;
        e.length = static_cast<uint32_t>(blocks * kBlock);
        e.pack = next_record++;  // stands for "which record"
        e.record_bytes = e.length + 80;
        e.pack_offset = kPackHeaderSize;
        xs.push_back({e, zero});
        for (uint64_t b = 0; b < blocks; ++b)
          model[first + b] = zero ? std::pair<uint32_t, uint32_t>{0, 0}
                                  : std::pair<uint32_t, uint32_t>{e.pack, static_cast<uint32_t>(b)};
      }
      PointIndex idx = BuildPointIndex(point, {kVol}, prev ? &*prev : nullptr, xs);
      ASSERT_TRUE(idx.Validate().ok()) << "seed " << seed;
      // Round-trip through the encoding as the store does.
      auto decoded = PointIndex::Decode(idx.Encode());
      ASSERT_TRUE(decoded.ok()) << "seed " << seed;
      std::vector<std::pair<uint32_t, uint32_t>> got(kVol / kBlock, {0, 0});
      for (const IndexEntry& e : decoded->entries) {
        ASSERT_EQ(e.offset % kBlock, 0u);
        ASSERT_EQ(e.offset_in_record % kBlock, 0u);
        for (uint64_t b = 0; b < e.length / kBlock; ++b)
          got[e.offset / kBlock + b] = {e.pack, static_cast<uint32_t>(e.offset_in_record / kBlock + b)};
      }
      ASSERT_EQ(got, model) << "chain " << chain << " point " << point << " seed " << seed;
      prev = std::move(decoded).value();
    }
  }
}

}  // namespace
}  // namespace blockrep::store
