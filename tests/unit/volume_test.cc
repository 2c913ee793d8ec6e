// Volume (replicator/volume.h): the extents a full read covers on an image file with holes.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include "temp_dir.h"
#include "volume.h"

namespace blockrep::agent {
namespace {

// Writes `len` bytes of 0x5a at `offset` of `path`.
void WriteAt(const std::string& path, uint64_t offset, size_t len) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  std::string data(len, 'Z');
  ASSERT_EQ(pwrite(fd.get(), data.data(), len, static_cast<off_t>(offset)), static_cast<ssize_t>(len));
}

// A 64 MiB image with data at 1 MiB (8 KiB) and from 40 MiB + 100 (a few bytes, not block-aligned):
// the data extents are those ranges widened to whole 4 KiB blocks, and together they cover every
// byte of data (what a full read must not miss); the rest is holes (on filesystems that report
// them: tmpfs and ext4 do).
TEST(VolumeTest, DataExtentsSkipHolesAndCoverEveryDataByte) {
  TempDir dir("volume");
  std::string path = dir / "img";
  { UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600)); ASSERT_TRUE(fd.valid()); }
  ASSERT_EQ(truncate(path.c_str(), 64 << 20), 0);
  WriteAt(path, 1 << 20, 8192);
  WriteAt(path, (40 << 20) + 100, 10);
  auto v = Volume::Open(path);
  ASSERT_TRUE(v.ok()) << v.status().message();
  auto extents = (*v)->DataExtents();
  ASSERT_TRUE(extents.ok()) << extents.status().message();
  uint64_t covered = 0;
  auto covers = [&](uint64_t off, uint64_t len) {
    for (const Extent& e : *extents)
      if (e.offset <= off && off + len <= e.offset + e.length) return true;
    return false;
  };
  for (const Extent& e : *extents) {
    EXPECT_EQ(e.offset % 4096, 0u);
    EXPECT_LE(e.offset + e.length, 64u << 20);
    covered += e.length;
  }
  EXPECT_TRUE(covers(1 << 20, 8192));
  EXPECT_TRUE(covers((40 << 20) + 100, 10));
  EXPECT_LT(covered, 8u << 20) << "holes were not skipped (" << extents->size() << " extents)";
}

// An image that is all holes has no data to read; one that is all data is one extent.
TEST(VolumeTest, DataExtentsOfEmptyAndFullImages) {
  TempDir dir("volume");
  std::string path = dir / "img";
  { UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600)); ASSERT_TRUE(fd.valid()); }
  ASSERT_EQ(truncate(path.c_str(), 16 << 20), 0);
  auto v = Volume::Open(path);
  ASSERT_TRUE(v.ok());
  auto none = (*v)->DataExtents();
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  WriteAt(path, 0, 16 << 20);
  auto all = (*v)->DataExtents();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].offset, 0u);
  EXPECT_EQ((*all)[0].length, 16u << 20);
}

}  // namespace
}  // namespace blockrep::agent
