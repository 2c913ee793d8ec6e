// A store-level test fixture shared by chain_test.cc and tamper_test.cc: a one-volume server whose
// image the test keeps in memory. Points are sealed with a real data key and appended to packs the
// way the staging appends them (records, each followed by its fingerprints), then committed with
// the store's own CommitPoint, carrying the seal an agent would send (computed from the image).
#pragma once

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "blockrep/base/checksum.h"
#include "blockrep/crypto/fingerprint.h"
#include "blockrep/base/fs.h"
#include "blockrep/crypto/keyfile.h"
#include "blockrep/crypto/record.h"
#include "blockrep/store/pack_appender.h"
#include "blockrep/crypto/seal.h"
#include "blockrep/store/store.h"
#include "blockrep/net/uring.h"
#include "restore.h"

namespace blockrep::chain_fixture {

inline constexpr uint64_t kSecondNs = 1000000000ull;
inline constexpr uint64_t kMinuteNs = 60 * kSecondNs;
inline constexpr uint64_t kHourNs = 60 * kMinuteNs;
inline constexpr uint64_t kDayNs = 24 * kHourNs;
inline constexpr uint64_t kVolumeBytes = 2u << 20;
inline constexpr uint64_t kExtentBytes = 64u << 10;
inline constexpr const char* kServer = "db1";

// The value of a Result the test needs to go on.
template <typename T>
inline T Must(Result<T> r) {
  if (!r.ok()) ADD_FAILURE() << r.status().message();
  return std::move(r).value();
}

struct Write {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;
};

// A one-volume server whose image the test keeps in memory, so it knows every point's content.
class Chain {
 public:
  explicit Chain(const std::string& root, std::string server_id = kServer)
      : root_(root), server_id_(std::move(server_id)) {
    EXPECT_TRUE(store::InitStoreRoot(root_, true).ok());
    key_file_ = root_ + "/data-" + server_id_ + ".key";
    EXPECT_TRUE(WriteNewDataKey(key_file_).ok());
    key_ = Must(LoadDataKey(key_file_));
    store_ = std::move(store::ServerStore::Open(root_, server_id_, true)).value();
    sealer_ = std::move(RecordSealer::Create(key_, server_id_)).value();
    fingerprinter_.emplace(Must(BlockFingerprinter::Create(key_)));
    seal_keys_ = Must(SealKeys::Create(key_, server_id_));
    image_.assign(kVolumeBytes, 0);
  }

  store::ServerStore& store() { return *store_; }
  const std::string& key_file() const { return key_file_; }
  uint64_t pack_bytes_written() const { return pack_bytes_written_; }
  uint64_t expected_hash(uint64_t point) const { return hashes_.at(point); }
  const std::vector<uint8_t>& image() const { return image_; }  // as of the newest point

  // Applies `writes` (random bytes, or zeros) to the image and commits them as the next point,
  // in a pack of its own. The first point carries the whole image.
  void AddPoint(uint64_t time_ns, bool consistent, const std::vector<Write>& writes, const std::string& label = {}) {
    uint64_t id = store_->manifest().last_point_id() + 1;
    std::vector<Write> sent = writes;
    for (const Write& w : writes) {
      if (w.zero) std::fill_n(image_.begin() + static_cast<ptrdiff_t>(w.offset), w.length, 0);
      else for (uint64_t i = 0; i < w.length; ++i) image_[w.offset + i] = static_cast<uint8_t>(rng_());
    }
    if (id == 1) {
      sent.clear();
      for (uint64_t off = 0; off < kVolumeBytes; off += kExtentBytes) sent.push_back({off, kExtentBytes, false});
    }
    // The staging's own pack writer (group commit through an io_uring), one commit per point.
    store::PackAppender appender;
    ASSERT_TRUE(appender.Open(*store_).ok());
    const uint32_t pack = appender.pack_id();
    std::vector<store::NewExtent> extents;
    Bytes out, fps;
    for (const Write& w : sent) {
      out.clear();
      fps.clear();
      ByteSpan plain(image_.data() + w.offset, w.length);
      auto hdr = sealer_->Seal(CodecChoice{}, 0, w.offset, id, plain, &out);
      ASSERT_TRUE(hdr.ok());
      store::NewExtent x;
      x.zero = hdr->zero();
      if (!x.zero) fingerprinter_->Append(w.offset, plain, &fps);
      uint64_t at = appender.Append(out, fps, ++seq_);
      x.entry = {0, static_cast<uint32_t>(w.length), w.offset, pack, static_cast<uint32_t>(out.size()), at, 0,
                 Checksum64(out)};
      extents.push_back(x);
    }
    for (auto done = store::PackAppender::Done::kNo; done != store::PackAppender::Done::kDurable;) {
      if (!appender.inflight()) {
        ASSERT_TRUE(appender.StartCommit(*ring_, 1, 2));
      }
      ASSERT_TRUE(ring_->Reap([&](uint64_t ud, int res, uint32_t) {
        done = appender.OnCompletion(ud == 1 ? store::PackAppender::Op::kWrite : store::PackAppender::Op::kFsync, res);
      }, true).ok());
      ASSERT_NE(done, store::PackAppender::Done::kFailed) << std::strerror(appender.error());
    }
    const uint64_t end = appender.durable_end();
    ASSERT_EQ(appender.durable_seq(), seq_);
    pack_bytes_written_ += end;
    std::optional<store::PointIndex> base;
    if (id > 1) base = std::move(store_->LoadIndex(store_->manifest().points.back())).value();
    store::PointIndex idx = store::BuildPointIndex(id, {kVolumeBytes}, base ? &*base : nullptr, extents);
    store::PointInfo info;
    info.id = id;
    info.time_ns = time_ns;
    info.flags = (consistent ? store::kPointConsistent : 0) | (label.empty() ? 0 : store::kPointLabelled);
    info.label = label;
    RegionDigests digests(seal_keys_.get(), kVolumeBytes);
    NoteData(*fingerprinter_, 0, image_, &digests);
    region_points_.resize(SealRegionCount(kVolumeBytes), 0);
    for (const Write& w : sent)
      for (uint64_t r = w.offset / digests.region_bytes(); r <= (w.offset + w.length - 1) / digests.region_bytes(); ++r)
        region_points_[r] = id;
    idx.seals.push_back(MakeSeal(*seal_keys_, id, time_ns, info.flags, 0, 1, &digests, region_points_,
                                 SealLink{id - 1, last_seal_mac_}, label));
    last_seal_mac_ = idx.seals.back().mac;
    ASSERT_TRUE(idx.Validate().ok());
    info.volume_count = 1;
    info.bytes_added = end - store::kPackHeaderSize;
    ASSERT_TRUE(store_->CommitPoint(info, idx, key_.key_id).ok());
    hashes_[id] = Checksum64(image_);
  }

  // 1–2 random writes of 4–32 KiB, sometimes zeros.
  std::vector<Write> RandomWrites() {
    std::vector<Write> w;
    int n = 1 + static_cast<int>(rng_() % 2);
    for (int i = 0; i < n; ++i) {
      uint64_t len = 4096 * (1 + rng_() % 8);
      uint64_t off = 4096 * (rng_() % ((kVolumeBytes - len) / 4096 + 1));
      w.push_back({off, len, rng_() % 10 == 0});
    }
    return w;
  }

  // A restore of `point` into <root>/out/vol-0.img with this server's key.
  recovery::RestoreRequest RestoreRequestFor(uint64_t point) const {
    recovery::RestoreRequest rq;
    rq.store_dir = root_;
    rq.server_id = server_id_;
    rq.key_file = key_file_;
    rq.point_spec = std::to_string(point);
    rq.output_dir = root_ + "/out";
    return rq;
  }

  // Restores `point` through the recovery library and returns the image's hash; `spec` names
  // it instead when given (a label, a time).
  uint64_t RestoreHash(uint64_t point, const std::string& spec = {}) {
    recovery::RestoreRequest rq = RestoreRequestFor(point);
    if (!spec.empty()) rq.point_spec = spec;
    auto sum = recovery::Restore(rq);
    if (sum.ok() && sum->point.id != point) ADD_FAILURE() << spec << " restored point " << sum->point.id;
    EXPECT_TRUE(sum.ok()) << "point " << point << ": " << sum.status().message();
    if (!sum.ok()) return 0;
    auto data = ReadFileBytes(rq.output_dir + "/vol-0.img", kVolumeBytes + 1);
    EXPECT_TRUE(data.ok());
    return data.ok() && data->size() == kVolumeBytes ? Checksum64(*data) : 0;
  }

  uint64_t PackBytesOnDisk() const {
    uint64_t total = 0;
    for (const std::string& n : Must(ListDir(store_->dir() + "/packs"))) {
      struct stat st{};
      if (stat((store_->dir() + "/packs/" + n).c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_size);
    }
    return total;
  }

  // Bytes of the distinct records (with their fingerprints) the retained points name.
  uint64_t LiveRecordBytes() {
    std::set<std::pair<uint32_t, uint64_t>> seen;
    uint64_t total = 0;
    for (const store::PointInfo& p : store_->manifest().points) {
      store::PointIndex idx = Must(store_->LoadIndex(p));
      for (const store::IndexEntry& e : idx.entries)
        if (seen.insert({e.pack, e.pack_offset}).second) total += e.record_bytes + FingerprintCount(e.length) * 8;
    }
    return total;
  }

 private:
  std::string root_, server_id_, key_file_;
  DataKey key_;
  std::unique_ptr<Ring> ring_ = std::move(Ring::Create(8)).value();
  uint64_t seq_ = 0;  // the appender's sequence numbers
  std::array<uint8_t, kSealMacBytes> last_seal_mac_{};  // the previous point's, for the next seal's link
  std::unique_ptr<store::ServerStore> store_;
  std::unique_ptr<RecordSealer> sealer_;
  std::optional<BlockFingerprinter> fingerprinter_;
  std::unique_ptr<SealKeys> seal_keys_;
  std::vector<uint64_t> region_points_;  // per seal region: the newest point that sent a record there
  std::vector<uint8_t> image_;
  std::map<uint64_t, uint64_t> hashes_;
  std::mt19937_64 rng_{20261124};
  uint64_t pack_bytes_written_ = 0;
};

class ChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/blockrep-chaintest.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + root_).c_str()); }
  std::string root_;
};

}  // namespace blockrep::chain_fixture
