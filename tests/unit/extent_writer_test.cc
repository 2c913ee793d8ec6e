// The restore's extent writer (recovery/extent_writer.h): pieces decoded into its buffers land at
// their offsets and in the seal's digests as if written one by one, long runs bypassing the page
// cache where the filesystem allows it; a failed write stops it.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <span>

#include "blockrep/base/fs.h"
#include "blockrep/crypto/seal.h"
#include "extent_writer.h"
#include "temp_dir.h"
#include "test_data.h"

namespace blockrep::recovery {
namespace {

struct Fixture {
  std::unique_ptr<SealKeys> keys = std::move(SealKeys::Create(FilledKey(7), "db1")).value();
  BlockFingerprinter fingerprinter = std::move(BlockFingerprinter::Create(FilledKey(7))).value();
};

// The target `fd` holds `image`, and `written` (the writer's digests) equals digests of it noted directly.
void ExpectImage(const Fixture& f, RegionDigests* written, int fd, const Bytes& image) {
  written->Flush();
  RegionDigests direct(f.keys.get(), image.size());
  NoteData(f.fingerprinter, 0, image, &direct);
  direct.Flush();
  EXPECT_TRUE(written->regions() == direct.regions());
  Bytes back(image.size());
  ASSERT_EQ(pread(fd, back.data(), back.size(), 0), static_cast<ssize_t>(back.size()));
  EXPECT_TRUE(back == image);
}

// Records of 64 KiB, split into pieces and written in a shuffled order over many batches, give
// the image and the region digests that writing each piece directly gives.
TEST(ExtentWriter, PiecesLandAtTheirOffsetsAndInTheDigests) {
  Fixture f;
  TempDir dir("extent-writer");
  const size_t records = 300;  // more than one batch (kBatchRecordsMax, kBatchBytes)
  const uint64_t size = records * 65536;
  Bytes image = RandomBytes(size, 3);
  std::fill(image.begin() + 65536 * 7, image.begin() + 65536 * 8, 0);  // a zero record
  int fd = open((dir / "img").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  RegionDigests written(f.keys.get(), size);
  {
    ExtentWriter w(fd, dir / "img", f.fingerprinter, &written);
    for (size_t i = 0; i < records; ++i) {
      const size_t r = (i * 7) % records;  // every record once, out of order
      std::span<uint8_t> room = w.NextBuffer();
      std::copy(image.begin() + r * 65536, image.begin() + (r + 1) * 65536, room.begin());
      // Two pieces with a gap a newer record would fill: here the gap is written by a third.
      w.AddPiece(r * 65536, 0, 8192);
      w.AddPiece(r * 65536 + 12288, 12288, 65536 - 12288);
      w.AddPiece(r * 65536 + 8192, 8192, 4096);
      ASSERT_TRUE(w.EndRecord().ok());
    }
    ASSERT_TRUE(w.Finish().ok());
  }
  ExpectImage(f, &written, fd, image);
  close(fd);
}

// Whether files in `dir` can be opened with O_DIRECT (tmpfs before Linux 6.6 cannot).
bool DirectIoWorks(const TempDir& dir) {
  int fd = open((dir / "probe").c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0600);
  if (fd < 0) return false;
  close(fd);
  return true;
}

// Records written in volume order, 1 MiB each, the last one ending 1000 bytes into a block (a
// volume whose size is not whole blocks): the image is exact, the whole blocks went around the
// page cache where the filesystem allows O_DIRECT, and the unaligned tail through it.
TEST(ExtentWriter, SequentialRunsBypassThePageCache) {
  Fixture f;
  TempDir dir("extent-writer");
  const uint64_t record = 1u << 20;
  const uint64_t size = 9 * record + 4096 * 3 + 1000;
  Bytes image = RandomBytes(size, 5);
  int fd = open((dir / "img").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  RegionDigests written(f.keys.get(), size);
  uint64_t direct = 0;
  {
    ExtentWriter w(fd, dir / "img", f.fingerprinter, &written);
    for (uint64_t at = 0; at < size; at += record) {
      const uint64_t n = std::min(record, size - at);
      std::span<uint8_t> room = w.NextBuffer();
      ASSERT_EQ(reinterpret_cast<uintptr_t>(room.data()) % kBlockBytes, 0u);
      std::copy(image.begin() + at, image.begin() + at + n, room.begin());
      if (n % kBlockBytes != 0) {  // the last record: its whole blocks, then the tail on its own
        w.AddPiece(at, 0, n / kBlockBytes * kBlockBytes);
        w.AddPiece(at + n / kBlockBytes * kBlockBytes, n / kBlockBytes * kBlockBytes, n % kBlockBytes);
      } else {
        w.AddPiece(at, 0, n);
      }
      ASSERT_TRUE(w.EndRecord().ok());
    }
    ASSERT_TRUE(w.Finish().ok());
    direct = w.direct_bytes();
  }
  ExpectImage(f, &written, fd, image);
  close(fd);
  if (DirectIoWorks(dir))
    EXPECT_EQ(direct, size / kBlockBytes * kBlockBytes) << "every whole block of the runs should bypass the cache";
  else
    EXPECT_EQ(direct, 0u);
}

// A write that fails (the target is read-only here) is reported, with the target's name, by the
// next hand-over or by Finish, and nothing after it is written. The run is long enough to go the
// O_DIRECT way: the writer must not reopen a read-only descriptor as a writable one.
TEST(ExtentWriter, AFailedWriteIsReported) {
  Fixture f;
  TempDir dir("extent-writer");
  int fd = open((dir / "ro").c_str(), O_RDONLY | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  RegionDigests digests(f.keys.get(), 8 << 20);
  ExtentWriter w(fd, dir / "ro", f.fingerprinter, &digests);
  Status st;
  for (uint64_t at = 0; at < (8u << 20) && st.ok(); at += 1u << 20) {
    std::span<uint8_t> room = w.NextBuffer();
    std::fill(room.begin(), room.end(), 0x5a);
    w.AddPiece(at, 0, 1u << 20);
    st = w.EndRecord();
  }
  if (st.ok()) st = w.Finish();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(dir / "ro"), std::string::npos) << st.message();
  close(fd);
}

}  // namespace
}  // namespace blockrep::recovery
