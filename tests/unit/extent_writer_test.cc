// The restore's extent writer (recovery/extent_writer.h): pieces decoded into its buffers land at
// their offsets and in the seal's digests as if written one by one; a failed write stops it.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>

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
      Bytes* buf = w.NextBuffer();
      buf->assign(image.begin() + r * 65536, image.begin() + (r + 1) * 65536);
      // Two pieces with a gap a newer record would fill: here the gap is written by a third.
      w.AddPiece(r * 65536, 0, 8192);
      w.AddPiece(r * 65536 + 12288, 12288, 65536 - 12288);
      w.AddPiece(r * 65536 + 8192, 8192, 4096);
      ASSERT_TRUE(w.EndRecord().ok());
    }
    ASSERT_TRUE(w.Finish().ok());
  }
  written.Flush();
  RegionDigests direct(f.keys.get(), size);
  NoteData(f.fingerprinter, 0, image, &direct);
  direct.Flush();
  EXPECT_TRUE(written.regions() == direct.regions());
  Bytes back(size);
  ASSERT_EQ(pread(fd, back.data(), size, 0), static_cast<ssize_t>(size));
  EXPECT_TRUE(back == image);
  close(fd);
}

// A write that fails (the target is read-only here) is reported, with the target's name, by the
// next hand-over or by Finish, and nothing after it is written.
TEST(ExtentWriter, AFailedWriteIsReported) {
  Fixture f;
  TempDir dir("extent-writer");
  int fd = open((dir / "ro").c_str(), O_RDONLY | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  RegionDigests digests(f.keys.get(), 1 << 20);
  ExtentWriter w(fd, dir / "ro", f.fingerprinter, &digests);
  Bytes* buf = w.NextBuffer();
  buf->assign(65536, 0x5a);
  w.AddPiece(0, 0, 65536);
  Status st = w.EndRecord();
  if (st.ok()) st = w.Finish();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(dir / "ro"), std::string::npos) << st.message();
  close(fd);
}

}  // namespace
}  // namespace blockrep::recovery
