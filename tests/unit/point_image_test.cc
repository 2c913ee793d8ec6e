// Instant access and failback at the library level: PointImage reads (decrypted, authenticated,
// checked against the seal region by region), the region cache's bound, the overlay's write
// layer, and restore --delta writing only differing blocks and refusing a forged fingerprint.
#include <fcntl.h>
#include <unistd.h>

#include "chain_fixture.h"
#include "delta.h"
#include "overlay.h"
#include "point_image.h"
#include "source.h"
#include "tracked_delta.h"

namespace blockrep {
namespace {

using namespace blockrep::chain_fixture;

class PointImageTest : public ChainTest {
 protected:
  struct Reader {
    std::unique_ptr<recovery::PointSource> source;
    std::unique_ptr<recovery::KeyChain> keys;
    std::unique_ptr<RecordOpener> opener;
    recovery::RegionCache cache{8u << 20};
  };
  std::unique_ptr<Reader> MakeReader(const Chain& chain) {
    auto r = std::make_unique<Reader>();
    r->keys = Must(recovery::KeyChain::Load(chain.key_file(), kServer));
    r->source = Must(recovery::OpenSource({root_, "", {}, kServer, chain.key_file(), {}}, r->keys->keys()));
    r->opener = std::make_unique<RecordOpener>(r->keys->keys(), kServer);
    return r;
  }
  std::unique_ptr<recovery::PointImage> Open(Reader& r, uint64_t id) {
    store::PointInfo info;
    for (const auto& p : Must(r.source->LoadManifest()).points)
      if (p.id == id) info = p;
    recovery::ReadKeys keys{r.keys.get(), r.opener.get()};
    return Must(recovery::PointImage::Open(r.source.get(), kServer, info, keys, &r.cache));
  }
  // A --delta restore of `point` onto a file that holds `image` now.
  recovery::RestoreRequest DeltaOnto(const Chain& chain, uint64_t point, const std::string& target,
                                     const std::vector<uint8_t>& image) {
    EXPECT_TRUE(WriteFileAtomic(target, image).ok());
    recovery::RestoreRequest rq = chain.RestoreRequestFor(point);
    rq.output_dir.clear();
    rq.targets[0] = target;
    rq.delta = true;
    return rq;
  }
  // The tracked delta (restore --delta --agent-state) of point 2 onto `target`, from point 1 as
  // the base, with `written` the blocks the tracker saw written on the target since point 1.
  bool TrackedDelta(const Chain& chain, const std::string& target, std::vector<Extent> written,
                    recovery::RestoreSummary* sum) {
    auto r = MakeReader(chain);
    store::Manifest m = Must(r->source->LoadManifest());
    recovery::TrackedBases base;
    base.point = m.points[0];
    base.index = Must(r->source->OpenPoint(base.point, false));
    base.written[0] = std::move(written);
    store::PointInfo point = m.points[1];
    store::PointIndex idx = Must(r->source->OpenPoint(point, false));
    const auto& derived = r->keys->ForIndex(idx);
    return Must(recovery::RestoreTrackedDelta(*r->source, kServer, point, idx, 0, target, base, *r->opener,
                                              *derived.seal_keys, derived.fingerprinter, sum));
  }
  // Drops the index entry at `offset` from point `id` and fixes every checksum, as a hostile
  // staging could.
  void DropEntry(Chain& chain, uint64_t id, uint64_t offset) {
    std::string manifest_path = chain.store().dir() + "/MANIFEST";
    store::Manifest m = Must(store::Manifest::Decode(Must(ReadFileBytes(manifest_path, store::kMaxManifestBytes))));
    for (store::PointInfo& p : m.points) {
      if (p.id != id) continue;
      store::PointIndex idx = Must(chain.store().LoadIndex(p));
      auto it = std::find_if(idx.entries.begin(), idx.entries.end(), [&](const store::IndexEntry& e) { return e.offset == offset; });
      ASSERT_NE(it, idx.entries.end());
      idx.entries.erase(it);
      Bytes enc = idx.Encode();
      p.index_checksum = Checksum64(enc);
      ASSERT_TRUE(WriteFileAtomic(chain.store().IndexPath(p), enc).ok());
    }
    ASSERT_TRUE(WriteFileAtomic(manifest_path, m.Encode()).ok());
  }
};

// Every point read through PointImage, in odd-sized pieces at odd offsets, equals its image.
TEST_F(PointImageTest, ReadsEqualEveryPointsImage) {
  Chain chain(root_);
  std::vector<std::vector<uint8_t>> images;
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  images.push_back(chain.image());
  for (int p = 2; p <= 4; ++p) {
    chain.AddPoint(p * kMinuteNs, true, chain.RandomWrites());
    images.push_back(chain.image());
  }
  auto r = MakeReader(chain);
  std::mt19937_64 rng(5);
  for (uint64_t id = 1; id <= 4; ++id) {
    auto img = Open(*r, id);
    ASSERT_EQ(img->volume_bytes(0), kVolumeBytes);
    for (int i = 0; i < 40; ++i) {
      uint64_t off = rng() % kVolumeBytes, len = std::min<uint64_t>(1 + rng() % 300000, kVolumeBytes - off);
      std::vector<uint8_t> got(len);
      ASSERT_TRUE(img->Read(0, off, len, got.data()).ok());
      ASSERT_TRUE(std::equal(got.begin(), got.end(), images[id - 1].begin() + static_cast<ptrdiff_t>(off)))
          << "point " << id << " bytes " << off << "+" << len;
    }
  }
  EXPECT_LE(r->cache.bytes(), r->cache.capacity_bytes());
}

// A record dropped from the newest point's index: reads of its 1 MiB seal region fail (DataLoss,
// naming the range), reads of the other region succeed, and older points are untouched.
TEST_F(PointImageTest, DroppedRecordFailsOnlyItsRegion) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  chain.AddPoint(2 * kMinuteNs, true, {{1536u << 10, 64u << 10, false}});
  std::vector<uint8_t> newest = chain.image();
  DropEntry(chain, 2, 1536u << 10);
  auto r = MakeReader(chain);
  auto img = Open(*r, 2);
  std::vector<uint8_t> buf(4096);
  Status bad = img->Read(0, (1u << 20) + 8192, 4096, buf.data());
  EXPECT_EQ(bad.code(), Code::kDataLoss);
  EXPECT_NE(bad.message().find("server 'db1' volume 0 point 2 bytes 1048576..2097152"), std::string::npos) << bad.message();
  ASSERT_TRUE(img->Read(0, 8192, 4096, buf.data()).ok());
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), newest.begin() + 8192));
  auto old = Open(*r, 1);
  EXPECT_TRUE(old->Read(0, (1u << 20) + 8192, 4096, buf.data()).ok());
}

// The cache never holds more than its bound (but always the region being served).
TEST(RegionCache, StaysWithinItsBound) {
  recovery::RegionCache cache(3u << 20);
  for (uint64_t r = 0; r < 10; ++r) {
    const Bytes* put = cache.Put({1, 0, r}, Bytes(1u << 20, static_cast<uint8_t>(r)));
    EXPECT_EQ((*put)[0], static_cast<uint8_t>(r));
    EXPECT_LE(cache.bytes(), 3u << 20);
  }
  EXPECT_EQ(cache.Get({1, 0, 0}), nullptr);
  EXPECT_NE(cache.Get({1, 0, 9}), nullptr);
  recovery::RegionCache tiny(1);
  tiny.Put({1, 0, 0}, Bytes(4096, 1));
  EXPECT_NE(tiny.Get({1, 0, 0}), nullptr);
}

// Writes of any size and alignment land in the overlay (partial blocks completed from the
// point), read back merged with the point, and survive reopening the overlay file.
TEST_F(PointImageTest, OverlayTakesWritesAndKeepsThem) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  std::vector<uint8_t> want = chain.image();
  auto r = MakeReader(chain);
  auto img = Open(*r, 1);
  std::string path = root_ + "/overlay.img";
  std::mt19937_64 rng(9);
  {
    auto ov = Must(recovery::Overlay::Open(path, kVolumeBytes));
    for (int i = 0; i < 30; ++i) {
      uint64_t off = rng() % kVolumeBytes, len = std::min<uint64_t>(1 + rng() % 20000, kVolumeBytes - off);
      Bytes data(len);
      for (auto& b : data) b = static_cast<uint8_t>(rng());
      ASSERT_TRUE(ov->Write(*img, 0, off, data).ok());
      std::copy(data.begin(), data.end(), want.begin() + static_cast<ptrdiff_t>(off));
    }
    std::vector<uint8_t> got(kVolumeBytes);
    ASSERT_TRUE(ov->Read(*img, 0, 0, kVolumeBytes, got.data()).ok());
    EXPECT_EQ(got, want);
    ASSERT_TRUE(ov->Sync().ok());
  }
  auto again = Must(recovery::Overlay::Open(path, kVolumeBytes));
  EXPECT_GT(again->blocks_written(), 0u);
  std::vector<uint8_t> got(kVolumeBytes);
  ASSERT_TRUE(again->Read(*img, 0, 0, kVolumeBytes, got.data()).ok());
  EXPECT_EQ(got, want);
  EXPECT_FALSE(recovery::Overlay::Open(path, kVolumeBytes + 4096).ok());  // another volume's size
}

// restore --delta onto a copy of an older point turns it into the newest, writing only the
// blocks that differ; onto an identical copy it writes nothing.
TEST_F(PointImageTest, DeltaWritesOnlyDifferingBlocks) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  std::vector<uint8_t> first = chain.image();
  chain.AddPoint(2 * kMinuteNs, true, {{65536, 12288, false}, {1u << 20, 8192, true}});
  std::string target = root_ + "/target.img";
  recovery::RestoreRequest rq = DeltaOnto(chain, 2, target, first);
  auto sum = Must(recovery::Restore(rq));
  EXPECT_EQ(sum.blocks_differing, 5u);
  EXPECT_EQ(sum.bytes_written, 5u * 4096);
  EXPECT_EQ(Must(ReadFileBytes(target, kVolumeBytes + 1)), Bytes(chain.image().begin(), chain.image().end()));
  auto again = Must(recovery::Restore(rq));
  EXPECT_EQ(again.bytes_written, 0u);
  EXPECT_EQ(again.bytes_fetched, 0u);
}

// A store that lies about a stored fingerprint (so that a stale block of the target looks
// current) is caught by the seal check after the delta, naming the region.
TEST_F(PointImageTest, DeltaCatchesAForgedFingerprint) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  std::vector<uint8_t> first = chain.image();
  chain.AddPoint(2 * kMinuteNs, true, {{65536, 4096, false}});
  // Point 2's record at 65536 carries one fingerprint: replace it with the target's (point 1's).
  store::PointIndex idx = Must(chain.store().LoadIndex(chain.store().manifest().points[1]));
  auto it = std::find_if(idx.entries.begin(), idx.entries.end(), [](const store::IndexEntry& e) { return e.offset == 65536; });
  ASSERT_NE(it, idx.entries.end());
  BlockFingerprinter fp = Must(BlockFingerprinter::Create(Must(LoadDataKey(chain.key_file()))));
  uint64_t stale = fp.Block(65536, ByteSpan(first.data() + 65536, 4096));
  uint8_t raw[8];
  for (int i = 0; i < 8; ++i) raw[i] = static_cast<uint8_t>(stale >> (8 * i));
  UniqueFd fd(open(chain.store().PackPath(it->pack).c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_EQ(pwrite(fd.get(), raw, 8, static_cast<off_t>(it->pack_offset + it->record_bytes)), 8);
  std::string target = root_ + "/target.img";
  recovery::RestoreRequest rq = DeltaOnto(chain, 2, target, first);
  Status st = recovery::Restore(rq).status();
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find("do not match the point's seal, the first at bytes 0..1048576"), std::string::npos) << st.message();
}

// The tracked delta (restore --delta --agent-state): from a target known to hold point 1 (what the
// original host's tracker vouches for), only the blocks whose extents changed between the points
// are read and written, and the result adds up to point 2's seal.
TEST_F(PointImageTest, TrackedDeltaReadsOnlyTheChangedBlocks) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  std::vector<uint8_t> first = chain.image();
  chain.AddPoint(2 * kMinuteNs, true, {{65536, 12288, false}, {1u << 20, 8192, true}});
  std::string target = root_ + "/target.img";
  ASSERT_TRUE(WriteFileAtomic(target, first).ok());
  recovery::RestoreSummary sum;
  EXPECT_TRUE(TrackedDelta(chain, target, {}, &sum));
  EXPECT_EQ(sum.target_bytes_read, 5u * 4096);
  EXPECT_EQ(sum.bytes_written, 5u * 4096);
  EXPECT_EQ(sum.seal_regions_matched, 2u);
  EXPECT_EQ(Must(ReadFileBytes(target, kVolumeBytes + 1)), Bytes(chain.image().begin(), chain.image().end()));
}

// A staging whose index hides a change (point 2 names point 1's record where the agent wrote new
// data) does not get a stale block through the tracked delta: the region does not add up to the
// seal, and it answers false so that the whole-target delta decides.
TEST_F(PointImageTest, TrackedDeltaRefusesAnIndexThatHidesAChange) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  std::vector<uint8_t> first = chain.image();
  chain.AddPoint(2 * kMinuteNs, true, {{65536, 4096, false}, {1u << 20, 4096, false}});
  // Point 2's entry at 65536 replaced by point 1's entry for the same block (checksums fixed).
  std::string manifest_path = chain.store().dir() + "/MANIFEST";
  store::Manifest m = Must(store::Manifest::Decode(Must(ReadFileBytes(manifest_path, store::kMaxManifestBytes))));
  store::PointIndex one = Must(chain.store().LoadIndex(m.points[0]));
  store::PointIndex two = Must(chain.store().LoadIndex(m.points[1]));
  auto covering = [](store::PointIndex& idx, uint64_t off) {
    return std::find_if(idx.entries.begin(), idx.entries.end(),
                        [&](const store::IndexEntry& e) { return e.offset <= off && off < e.offset + e.length; });
  };
  auto old_entry = covering(one, 65536);
  auto new_entry = covering(two, 65536);
  ASSERT_TRUE(old_entry != one.entries.end() && new_entry != two.entries.end());
  ASSERT_EQ(new_entry->length, 4096u);
  store::IndexEntry stale = *old_entry;
  stale.offset_in_record += static_cast<uint32_t>(65536 - stale.offset);
  stale.offset = 65536;
  stale.length = 4096;
  *new_entry = stale;
  Bytes enc = two.Encode();
  m.points[1].index_checksum = Checksum64(enc);
  ASSERT_TRUE(WriteFileAtomic(chain.store().IndexPath(m.points[1]), enc).ok());
  ASSERT_TRUE(WriteFileAtomic(manifest_path, m.Encode()).ok());

  std::string target = root_ + "/target.img";
  ASSERT_TRUE(WriteFileAtomic(target, first).ok());
  recovery::RestoreSummary sum;
  EXPECT_FALSE(TrackedDelta(chain, target, {}, &sum));
  EXPECT_EQ(sum.seal_regions_matched, 0u);
  EXPECT_EQ(sum.target_bytes_read, 4096u);  // only the block at 1 MiB looked changed
}

// Past a quarter of the volume to read (here: a block written on the host makes its whole 1 MiB
// region, half the volume, be read), the tracked delta declines and writes nothing.
TEST_F(PointImageTest, TrackedDeltaDeclinesWhenMostOfTheVolumeMustBeRead) {
  Chain chain(root_);
  chain.AddPoint(kMinuteNs, true, {{0, kVolumeBytes, false}});
  std::vector<uint8_t> first = chain.image();
  chain.AddPoint(2 * kMinuteNs, true, {{65536, 4096, false}});
  std::string target = root_ + "/target.img";
  ASSERT_TRUE(WriteFileAtomic(target, first).ok());
  recovery::RestoreSummary sum;
  EXPECT_FALSE(TrackedDelta(chain, target, {{1u << 20, 4096}}, &sum));
  EXPECT_EQ(sum.bytes_written, 0u);
  EXPECT_EQ(Must(ReadFileBytes(target, kVolumeBytes + 1)), Bytes(first.begin(), first.end()));
}

}  // namespace
}  // namespace blockrep
