// ReadPipeline (replicator/read_pipeline.h) on an image file through a real io_uring, without
// root: what each ReadMode sends, checked by opening every record it framed.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>

#include "fingerprint_tables.h"
#include "read_pipeline.h"
#include "temp_dir.h"
#include "test_data.h"

namespace blockrep::agent {
namespace {

constexpr uint64_t kVolume = (3u << 20) + 8192;
constexpr uint64_t kZeroAt = 1u << 20, kZeroBytes = 512u << 10;  // an all-zero range

class ReadPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = RandomBytes(kVolume, 9);
    std::fill_n(image_.begin() + kZeroAt, kZeroBytes, 0);
    std::string path = dir_ / "vol.img";
    int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, image_.data(), image_.size(), 0), static_cast<ssize_t>(image_.size()));
    close(fd);
    volumes_.push_back(std::move(Volume::Open(path)).value());
    ring_ = std::move(Ring::Create(64)).value();
    sealer_ = std::move(ParallelSealer::Create(FilledKey(3), "web1")).value();
    MakePipeline({kVolume});
  }
  // A pipeline over volumes_ (of these sizes), with the seal started empty.
  void MakePipeline(const std::vector<uint64_t>& volume_bytes) {
    ASSERT_TRUE(seal_.StartEmpty(volume_bytes).ok());
    pipeline_ = std::make_unique<ReadPipeline>(
        ReadPipeline::Deps{.ring = ring_.get(), .volumes = &volumes_, .fingerprinter = &fingerprinter_,
                           .seal = &seal_, .base = &base_, .bucket = &bucket_, .counters = &counters_,
                           .codec = CodecChoice{}},
        16);
    pipeline_->StartSession(sealer_.get(), &window_);
    pipeline_->set_point(1);
  }
  // Reads everything set (or until nothing more may be issued), returning the frames produced in order.
  Bytes Drain() {
    Bytes frames;
    for (;;) {
      EXPECT_TRUE(pipeline_->Issue([](uint64_t) { return true; }).ok());
      if (pipeline_->idle() || pipeline_->inflight() == 0) return frames;
      auto n = ring_->Reap(
          [&](uint64_t ud, int res, uint32_t) {
            Status st = pipeline_->OnCompletion(UserDataId(ud), res);
            ASSERT_TRUE(st.ok()) << st.ToString();
          },
          true, 1000);
      EXPECT_TRUE(n.ok());
      while (pipeline_->has_ready()) {
        auto out = pipeline_->ProcessReady();
        EXPECT_TRUE(out.ok()) << out.status().ToString();
        if (!out.ok()) return frames;
        frames.insert(frames.end(), out->begin(), out->end());
      }
    }
  }
  // Opens every RECORD in `frames`: the extents they carry, as (offset, plaintext).
  std::vector<std::pair<uint64_t, Bytes>> Open(const Bytes& frames) {
    std::vector<std::pair<uint64_t, Bytes>> out;
    RecordOpener opener(FilledKey(3), "web1");
    ByteSpan rest(frames);
    uint64_t seq = 0;
    while (!rest.empty()) {
      auto f = wire::ParseFrame(rest);
      EXPECT_TRUE(f.ok() && f->has_value());
      if (!f.ok() || !f->has_value()) break;
      EXPECT_EQ((**f).type, wire::MsgType::kRecord);
      auto m = wire::RecordMsg::Decode((**f).payload);
      EXPECT_TRUE(m.ok());
      EXPECT_EQ(m->seq, ++seq) << "numbered in order";
      RecordHeader h;
      Bytes plain;
      EXPECT_TRUE(opener.Open(m->record, &h, &plain).ok());
      if (h.zero()) plain.assign(h.plain_len, 0);
      out.emplace_back(h.offset, std::move(plain));
      rest = rest.subspan((**f).total_size);
    }
    return out;
  }
  std::vector<uint64_t> Fingerprints() const {
    std::vector<uint64_t> fps;
    for (uint64_t off = 0; off < kVolume; off += 4096)
      fps.push_back(fingerprinter_.Block(off, ByteSpan(image_.data() + off, 4096)));
    return fps;
  }

  TempDir dir_{"readpipe"};
  Bytes image_;
  std::vector<std::unique_ptr<Volume>> volumes_;
  std::unique_ptr<Ring> ring_;
  BlockFingerprinter fingerprinter_ = std::move(BlockFingerprinter::Create(FilledKey(3))).value();
  std::unique_ptr<SealKeys> keys_ = std::move(SealKeys::Create(FilledKey(3), "web1")).value();
  PointSeal seal_{keys_.get()};
  BaseInbox base_;
  TokenBucket bucket_;
  ReadCounters counters_;
  std::unique_ptr<ParallelSealer> sealer_;
  AckWindow window_;
  std::unique_ptr<ReadPipeline> pipeline_;
};

// A full point's sweep sends every non-zero extent, byte-identical, and leaves zero ones out.
TEST_F(ReadPipelineTest, SweepSendsDataAndSkipsZeros) {
  pipeline_->SetWholeVolumes(ReadMode::kSweep);
  EXPECT_EQ(pipeline_->bytes_left(), kVolume);
  auto records = Open(Drain());
  Bytes rebuilt(kVolume, 0);
  for (const auto& [offset, plain] : records) {
    EXPECT_FALSE(offset < kZeroAt + kZeroBytes && offset + plain.size() > kZeroAt) << "a record in the zero range";
    std::copy(plain.begin(), plain.end(), rebuilt.begin() + static_cast<ptrdiff_t>(offset));
  }
  EXPECT_TRUE(rebuilt == image_);
  EXPECT_EQ(counters_.bytes_read, kVolume);
  EXPECT_EQ(counters_.bytes_zero, kZeroBytes);
  EXPECT_EQ(counters_.bytes_zero_sent, 0u);
  EXPECT_EQ(counters_.records, records.size());
  EXPECT_EQ(window_.last_sent(), records.size());
  EXPECT_EQ(pipeline_->shipped_by_volume()[0], kVolume - kZeroBytes);
  EXPECT_EQ(pipeline_->bytes_left(), 0u);
}

// A tracker batch of scattered 4 KiB blocks has more reads in flight than there are large
// buffers: small reads wait on the disk's latency, so their queue depth is their throughput.
TEST_F(ReadPipelineTest, ScatteredBlocksGoManyAtOnce) {
  std::vector<std::vector<Extent>> work(1);
  for (uint64_t off = 0; off + 4096 <= kVolume; off += 32768) work[0].push_back(Extent{off, 4096});
  ASSERT_GT(work[0].size(), ReadPipeline::kReadsMax);
  pipeline_->SetWork(std::move(work), ReadMode::kShip);
  ASSERT_TRUE(pipeline_->Issue([](uint64_t) { return true; }).ok());
  EXPECT_EQ(pipeline_->inflight(), ReadPipeline::kReadsMax) << "every slot, small and large, takes a 4 KiB read";
  EXPECT_GT(pipeline_->inflight(), ReadPipeline::kLargeReadsMax);
  Drain();
}

// A batch mixing long runs and single blocks is sent whole and byte-identical, whichever slots
// its reads took, and a run longer than a small buffer is never given one.
TEST_F(ReadPipelineTest, MixedBatchIsSentWhole) {
  std::vector<std::vector<Extent>> work(1);
  std::vector<Extent> want;
  for (uint64_t off = 0; off + (200u << 10) <= kVolume; off += 256u << 10) {
    const uint64_t len = (off / (256u << 10)) % 3 == 0 ? (200u << 10) : 4096;  // 200 KiB runs among blocks
    work[0].push_back(Extent{off, len});
    want.push_back(Extent{off, len});
  }
  pipeline_->SetWork(std::move(work), ReadMode::kShip);
  auto records = Open(Drain());
  Bytes rebuilt(kVolume, 0), expected(kVolume, 0);
  for (const auto& [offset, plain] : records) std::copy(plain.begin(), plain.end(), rebuilt.begin() + static_cast<ptrdiff_t>(offset));
  uint64_t total = 0;
  for (const Extent& e : want) {
    std::copy_n(image_.begin() + static_cast<ptrdiff_t>(e.offset), e.length, expected.begin() + static_cast<ptrdiff_t>(e.offset));
    total += e.length;
  }
  EXPECT_TRUE(rebuilt == expected);
  EXPECT_EQ(counters_.bytes_read, total);
}

// A tracked sweep reads nothing past its lease, and its durable position moves only over reads
// whose records are acknowledged, in issue order.
TEST_F(ReadPipelineTest, TrackedSweepStopsAtTheLeaseAndCountsOnlyAcknowledgedReads) {
  // One read at a time (a lease of 1 MiB, then 2), so the sequence numbers are known: reads in
  // flight together complete in any order.
  pipeline_->SetWholeVolumes(ReadMode::kSweep);
  pipeline_->TrackSweep(1u << 20, 0);
  Bytes frames = Drain();
  EXPECT_EQ(counters_.bytes_read, 1u << 20) << "no read ends past the lease";
  EXPECT_EQ(pipeline_->NextPosition(), 1u << 20);
  constexpr uint64_t kPerMiB = (1u << 20) / ReadPipeline::kSweepRecordBytes;
  constexpr uint64_t kPerHalf = (kZeroBytes + ReadPipeline::kSweepRecordBytes - 1) / ReadPipeline::kSweepRecordBytes;
  static_assert(kPerMiB >= 2, "two records per read, so the sealing threads share each read");
  EXPECT_EQ(window_.last_sent(), kPerMiB) << "1 MiB of data in sweep records";
  EXPECT_EQ(pipeline_->DurablePosition(0), 0u) << "nothing acknowledged yet";
  EXPECT_EQ(pipeline_->DurablePosition(kPerMiB - 1), 0u) << "the read's last record is not acknowledged";
  EXPECT_EQ(pipeline_->DurablePosition(kPerMiB), 1u << 20);
  pipeline_->set_issue_limit(2u << 20);
  frames = Drain();
  EXPECT_EQ(window_.last_sent(), kPerMiB + kPerHalf) << "half zeros: records of the other half only";
  EXPECT_EQ(pipeline_->DurablePosition(kPerMiB + kPerHalf - 1), 1u << 20);
  EXPECT_EQ(pipeline_->DurablePosition(kPerMiB + kPerHalf), 2u << 20);
  pipeline_->set_issue_limit(UINT64_MAX);
  Drain();
  EXPECT_EQ(counters_.bytes_read, kVolume);
  EXPECT_EQ(pipeline_->DurablePosition(window_.last_sent()), kVolume);
}

// Reads that completed together are sealed as one batch, framed in completion order, and each
// read's durable position still waits for its own last record, not the batch's.
TEST_F(ReadPipelineTest, ReadsCompletedTogetherAreOneBatchAndEachCountsItsOwnRecords) {
  pipeline_->SetWholeVolumes(ReadMode::kSweep);
  pipeline_->TrackSweep(UINT64_MAX, 0);
  ASSERT_TRUE(pipeline_->Issue([](uint64_t) { return true; }).ok());
  const unsigned reads = pipeline_->inflight();
  ASSERT_EQ(reads, (kVolume + ReadPipeline::kReadBytes - 1) / ReadPipeline::kReadBytes);
  while (pipeline_->inflight() > 0) {
    auto n = ring_->Reap([&](uint64_t ud, int res, uint32_t) { ASSERT_TRUE(pipeline_->OnCompletion(UserDataId(ud), res).ok()); },
                         true, 1000);
    ASSERT_TRUE(n.ok());
  }
  EXPECT_FALSE(pipeline_->idle()) << "completed, not yet processed";
  auto out = pipeline_->ProcessReady();
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_FALSE(pipeline_->has_ready()) << "every read in one batch";
  EXPECT_TRUE(pipeline_->idle());
  const auto records = Open(Bytes(out->begin(), out->end()));
  ASSERT_EQ(records.size(), window_.last_sent());
  // Each read's last record (by sequence number, from 1); 0 for a read with none.
  std::vector<uint64_t> last(reads, 0), order;  // order: the reads as their records come
  for (size_t i = 0; i < records.size(); ++i) {
    const uint64_t read = records[i].first / ReadPipeline::kReadBytes;
    EXPECT_EQ(records[i].second, Bytes(image_.begin() + records[i].first,
                                       image_.begin() + records[i].first + records[i].second.size()));
    if (order.empty() || order.back() != read) order.push_back(read);
    last[read] = i + 1;
  }
  std::vector<uint64_t> distinct = order;
  std::sort(distinct.begin(), distinct.end());
  EXPECT_EQ(std::unique(distinct.begin(), distinct.end()), distinct.end()) << "a read's records are framed together";
  for (uint64_t acked = 0; acked <= window_.last_sent(); ++acked) {
    uint64_t want = 0;  // the end of the longest prefix of reads (issue order) whose records are all acknowledged
    for (unsigned r = 0; r < reads && last[r] <= acked; ++r) want = std::min<uint64_t>(kVolume, (r + 1) * ReadPipeline::kReadBytes);
    EXPECT_EQ(pipeline_->DurablePosition(acked), want) << "acknowledged up to " << acked;
  }
}

// A sweep sends neighbouring non-zero extents of a read as one record of up to kSweepRecordBytes
// and leaves all-zero extents out; a tracker batch's records stay at kRecordBytes.
TEST_F(ReadPipelineTest, SweepCoalescesNonZeroExtentsIntoLargerRecords) {
  std::fill_n(image_.begin() + (2u << 20) + (64u << 10), 64u << 10, 0);  // a zero extent mid-read
  int fd = open((dir_ / "vol.img").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, image_.data(), image_.size(), 0), static_cast<ssize_t>(image_.size()));
  close(fd);
  pipeline_->SetWork({{Extent{2u << 20, 1u << 20}}}, ReadMode::kSweep);
  auto records = Open(Drain());
  std::vector<std::pair<uint64_t, size_t>> got;
  for (const auto& [offset, plain] : records) {
    got.emplace_back(offset, plain.size());
    EXPECT_TRUE(std::equal(plain.begin(), plain.end(), image_.begin() + offset)) << offset;
  }
  const uint64_t base = 2u << 20, first_end = base + (64u << 10), rest = base + (128u << 10);
  std::vector<std::pair<uint64_t, size_t>> want = {{base, first_end - base}};
  for (uint64_t at = rest; at < base + (1u << 20); at += ReadPipeline::kSweepRecordBytes)
    want.emplace_back(at, std::min<uint64_t>(ReadPipeline::kSweepRecordBytes, base + (1u << 20) - at));
  EXPECT_EQ(got, want);
  pipeline_->SetWork({{Extent{2u << 20, 1u << 20}}}, ReadMode::kShip);
  const uint64_t before = window_.last_sent();
  Drain();
  EXPECT_EQ(window_.last_sent() - before, (1u << 20) / ReadPipeline::kRecordBytes) << "a tracker batch: 64 KiB records";
}

// Before `send_all_below`, a tracked sweep sends zero extents as zero records (a resumed full
// point's re-read range, where a record kept from the earlier try must not outlive the block).
TEST_F(ReadPipelineTest, TrackedSweepSendsZerosBelowTheMark) {
  pipeline_->SetWork({{Extent{kZeroAt, kZeroBytes}}}, ReadMode::kSweep);
  pipeline_->TrackSweep(UINT64_MAX, kZeroAt + (128u << 10));
  auto records = Open(Drain());
  ASSERT_EQ(records.size(), 2u) << "only the 128 KiB before the mark";
  EXPECT_EQ(records[0].second, Bytes(64u << 10, 0));
  EXPECT_EQ(records[1].first, kZeroAt + (64u << 10));
}

// A tracker batch sends what it names even when it is all zero (the base may hold data there).
TEST_F(ReadPipelineTest, ShipSendsZeroExtentsAsZeroRecords) {
  pipeline_->SetWork({{Extent{kZeroAt, 128u << 10}}}, ReadMode::kShip);
  auto records = Open(Drain());
  ASSERT_EQ(records.size(), 2u);  // two 64 KiB records
  EXPECT_EQ(records[0].first, kZeroAt);
  EXPECT_EQ(records[1].first, kZeroAt + (64u << 10));
  EXPECT_EQ(records[1].second, Bytes(64u << 10, 0));
}

// A rescan sends exactly the blocks whose fingerprint differs from the staging's base.
TEST_F(ReadPipelineTest, RescanSendsOnlyDifferingBlocks) {
  std::vector<uint64_t> theirs = Fingerprints();
  theirs[10] ^= 2;
  theirs[11] ^= 2;
  theirs[700] ^= 2;
  base_.TakeFingerprints(TablesOf({theirs}), {kVolume});
  pipeline_->SetWholeVolumes(ReadMode::kRescan);
  auto records = Open(Drain());
  // Reads complete in any order (several are in flight); each read's records stay in order.
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].first, 10u * 4096);
  EXPECT_EQ(records[0].second.size(), 2u * 4096);
  EXPECT_EQ(records[1].first, 700u * 4096);
  EXPECT_TRUE(std::equal(records[1].second.begin(), records[1].second.end(), image_.begin() + 700 * 4096));
}

// A rescan does not read the holes of an image file: a hole where the staging's base holds data
// goes as zero records (at most 64 KiB each), one where it holds zeros sends nothing.
TEST_F(ReadPipelineTest, RescanComparesHolesWithoutReadingThem) {
  base_.TakeFingerprints(TablesOf({Fingerprints()}), {kVolume});
  constexpr uint64_t kHoleAt = 2u << 20, kHoleBytes = 256u << 10;
  int fd = open((dir_ / "vol.img").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kHoleAt, kHoleBytes), 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kZeroAt, kZeroBytes), 0);
  close(fd);
  ASSERT_TRUE(pipeline_->SetRescan().ok());
  auto records = Open(Drain());
  EXPECT_EQ(counters_.bytes_holes, kHoleBytes + kZeroBytes);
  EXPECT_EQ(counters_.bytes_read, kVolume - kHoleBytes - kZeroBytes);
  EXPECT_EQ(counters_.bytes_zero_sent, kHoleBytes);  // the hole where the base held data, not the zero one
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  ASSERT_EQ(records.size(), 4u);
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i].first, kHoleAt + i * (64u << 10));
    EXPECT_EQ(records[i].second, Bytes(64u << 10, 0));
  }
}

// A resumed rescan starts at the checkpoint's cursor, and before the mark (the lease of the try
// it resumes) sends every block, data equal to the base's and holes as zero records alike: a
// record kept from that try must not outlive its block. Past the mark it compares as a rescan.
TEST_F(ReadPipelineTest, ResumedRescanStartsAtTheCursorAndSendsAllBelowTheMark) {
  std::vector<uint64_t> theirs = Fingerprints();
  theirs[700] ^= 2;
  base_.TakeFingerprints(TablesOf({theirs}), {kVolume});
  int fd = open((dir_ / "vol.img").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kZeroAt, kZeroBytes), 0);
  close(fd);
  constexpr uint64_t kCursor = 512u << 10, kMark = kZeroAt + (128u << 10);
  ASSERT_TRUE(pipeline_->SetRescan(kCursor).ok());
  pipeline_->TrackSweep(UINT64_MAX, kMark);
  auto records = Open(Drain());
  std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  EXPECT_EQ(counters_.bytes_read, kVolume - kCursor - kZeroBytes) << "nothing before the cursor, no hole read";
  ASSERT_EQ(records.size(), 8u + 2u + 1u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(records[i].first, kCursor + i * (64u << 10)) << "data below the mark, equal to the base's";
    EXPECT_TRUE(std::equal(records[i].second.begin(), records[i].second.end(), image_.begin() + records[i].first));
  }
  EXPECT_EQ(records[8].first, kZeroAt) << "the hole below the mark, zeros in the base too";
  EXPECT_EQ(records[9].second, Bytes(64u << 10, 0));
  EXPECT_EQ(records[10].first, 700u * 4096) << "past the mark: only the block that differs";
  EXPECT_EQ(records[10].second.size(), 4096u);
}

// A rescan's hole is read (compared) no further than the lease, and the lease may stretch to the
// hole's end (HoleEndAhead), so a sparse volume is not walked in lease-sized steps.
TEST_F(ReadPipelineTest, ARescanHoleIsCutAtTheLease) {
  base_.TakeFingerprints(TablesOf({Fingerprints()}), {kVolume});
  int fd = open((dir_ / "vol.img").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kZeroAt, kZeroBytes), 0);
  close(fd);
  ASSERT_TRUE(pipeline_->SetRescan().ok());
  pipeline_->TrackSweep(kZeroAt + (64u << 10), 0);
  EXPECT_TRUE(Open(Drain()).empty()) << "the volume equals the base";
  EXPECT_EQ(pipeline_->NextPosition(), kZeroAt + (64u << 10)) << "the hole is cut at the lease";
  EXPECT_EQ(pipeline_->HoleEndAhead(), kZeroAt + kZeroBytes);
  EXPECT_EQ(pipeline_->DurablePosition(window_.last_sent()), kZeroAt + (64u << 10));
  pipeline_->set_issue_limit(UINT64_MAX);
  Drain();
  EXPECT_EQ(pipeline_->NextPosition(), kVolume);
  EXPECT_EQ(pipeline_->HoleEndAhead(), kVolume) << "no hole ahead";
  EXPECT_EQ(counters_.bytes_holes, kZeroBytes);
}

// A rescan compares an image's holes with a base table large enough to be spilled to a file by
// that file's holes, not block by block, and still sends zero records exactly where the base
// holds data: one block, a run across a page of the table, a page's first block, the last block.
TEST_F(ReadPipelineTest, RescanSkipsTheHolesOfASpilledBaseTable) {
  constexpr uint64_t kBig = 2ull << 30, kBlocks = kBig / 4096;
  static_assert(kBlocks > FingerprintTable::kInMemoryBlocksMax);
  std::string path = dir_ / "big.img";
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(kBig)), 0);  // all hole
  close(fd);
  volumes_.clear();
  volumes_.push_back(std::move(Volume::Open(path)).value());
  MakePipeline({kBig});
  auto table = FingerprintTable::Make(kBlocks, dir_.path());
  ASSERT_TRUE(table.ok() && table->spilled());
  const std::vector<uint64_t> data = {1000, 512 * 7 - 2, 512 * 7 - 1, 512 * 7, 512 * 7 + 1, 512 * 20, kBlocks - 1};
  for (uint64_t b : data) table->Set(b, 12345 + b);
  std::vector<FingerprintTable> tables;
  tables.push_back(std::move(table).value());
  base_.TakeFingerprints(std::move(tables), {kBig});
  ASSERT_TRUE(pipeline_->SetRescan().ok());
  std::vector<uint64_t> sent;
  for (const auto& [offset, plain] : Open(Drain())) {
    EXPECT_TRUE(IsAllZero(plain));
    for (uint64_t at = offset; at < offset + plain.size(); at += 4096) sent.push_back(at / 4096);
  }
  std::sort(sent.begin(), sent.end());
  EXPECT_EQ(sent, data);
  EXPECT_EQ(counters_.bytes_holes, kBig);
  EXPECT_EQ(counters_.bytes_read, 0u);
}

// A rescan reads a range only once the staging's fingerprints for it have arrived.
TEST_F(ReadPipelineTest, RescanWaitsForFingerprints) {
  ASSERT_TRUE(base_.ExpectFingerprints({kVolume}).ok());
  pipeline_->SetWholeVolumes(ReadMode::kRescan);
  ASSERT_TRUE(pipeline_->Issue([](uint64_t) { return true; }).ok());
  EXPECT_EQ(pipeline_->inflight(), 0u);
  EXPECT_FALSE(pipeline_->idle());
}

// Re-reading for the seal sends nothing and counts what it read apart.
TEST_F(ReadPipelineTest, ResealSendsNothing) {
  pipeline_->SetWork({{Extent{0, 1u << 20}}}, ReadMode::kReseal);
  EXPECT_TRUE(Drain().empty());
  EXPECT_EQ(counters_.bytes_reread_to_seal, 1u << 20);
  EXPECT_EQ(counters_.bytes_read, 0u);
  EXPECT_EQ(window_.last_sent(), 0u);
}

// A volume that ends before the work does is data loss, never a silent short point.
TEST_F(ReadPipelineTest, ShrunkVolumeIsDataLoss) {
  ASSERT_EQ(truncate((dir_ / "vol.img").c_str(), 1u << 20), 0);
  pipeline_->SetWork({{Extent{(1u << 20) - 4096, 8192}}}, ReadMode::kShip);
  ASSERT_TRUE(pipeline_->Issue([](uint64_t) { return true; }).ok());
  Status seen;
  while (pipeline_->inflight() > 0) {
    auto n = ring_->Reap(
        [&](uint64_t ud, int res, uint32_t) {
          Status st = pipeline_->OnCompletion(UserDataId(ud), res);
          if (!st.ok()) seen = st;
        },
        true, 1000);
    ASSERT_TRUE(n.ok());
  }
  EXPECT_EQ(seen.code(), Code::kDataLoss) << seen.ToString();
}

}  // namespace
}  // namespace blockrep::agent
