#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "blockrep/base/checksum.h"
#include "blockrep/base/fs.h"
#include "fingerprint_cache.h"
#include "fingerprint_tables.h"

namespace blockrep::agent {
namespace {

class FingerprintCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/blockrep-fpcache.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    sizes_ = {1u << 20, 10000};  // 256 blocks; 3 blocks (the last one partial)
    fps_ = {std::vector<uint64_t>(256), {7, 8, 9}};
    for (size_t b = 0; b < 256; ++b) fps_[0][b] = b * 1000003;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string dir_;
  std::vector<uint64_t> sizes_;
  std::vector<std::vector<uint64_t>> fps_;
};

// What is saved for a point loads back for that point, server and volume sizes.
TEST_F(FingerprintCacheTest, RoundTrip) {
  ASSERT_TRUE(SaveFingerprintCache(dir_, "web1", 5, sizes_, TablesOf(fps_)).ok());
  std::string why;
  auto got = LoadFingerprintCache(dir_, "web1", 5, sizes_, &why);
  ASSERT_TRUE(got.has_value()) << why;
  EXPECT_EQ(VectorsOf(*got), fps_);
}

// Fingerprints of several chunks' worth (written and read 64 KiB at a time) round-trip too, into
// tables spilled to a file (a volume over 1 GiB).
TEST_F(FingerprintCacheTest, LargeVolumesRoundTrip) {
  std::vector<uint64_t> sizes = {uint64_t{1200} << 20, 4096};  // 307200 + 1 fingerprints
  std::vector<std::vector<uint64_t>> fps = {std::vector<uint64_t>(307200), {42}};
  for (size_t b = 0; b < fps[0].size(); ++b) fps[0][b] = b * 0x9e3779b97f4a7c15ull;
  ASSERT_TRUE(SaveFingerprintCache(dir_, "web1", 9, sizes, TablesOf(fps)).ok());
  std::string why;
  auto got = LoadFingerprintCache(dir_, "web1", 9, sizes, &why, dir_);
  ASSERT_TRUE(got.has_value()) << why;
  EXPECT_TRUE((*got)[0].spilled());
  EXPECT_FALSE((*got)[1].spilled());
  EXPECT_EQ(VectorsOf(*got), fps);
}

// A spilled table that is mostly holes (a sparse volume) saves and loads back whole; the cache
// file keeps the zeros as holes.
TEST_F(FingerprintCacheTest, SparseSpilledTablesRoundTrip) {
  const uint64_t blocks = uint64_t{4} << 20;  // a 16 GiB volume
  std::vector<uint64_t> sizes = {blocks * 4096};
  auto made = MakeTables(sizes, dir_);
  ASSERT_TRUE(made.ok()) << made.status().message();
  std::vector<FingerprintTable> tables = std::move(made).value();
  ASSERT_TRUE(tables[0].spilled());
  for (uint64_t b : {uint64_t{0}, uint64_t{1}, uint64_t{8191}, uint64_t{8192}, uint64_t{1} << 20, blocks - 1})
    tables[0].Set(b, b * 2 + 1);
  ASSERT_TRUE(SaveFingerprintCache(dir_, "web1", 3, sizes, tables).ok());
  struct stat st {};
  ASSERT_EQ(stat((dir_ + "/fingerprints").c_str(), &st), 0);
  EXPECT_LT(uint64_t(st.st_blocks) * 512, uint64_t{4} << 20) << "32 MiB of mostly zeros is mostly holes";
  std::string why;
  auto got = LoadFingerprintCache(dir_, "web1", 3, sizes, &why, dir_);
  ASSERT_TRUE(got.has_value()) << why;
  EXPECT_EQ((*got)[0].ToVector(), tables[0].ToVector());
  // The holes are not read but still checksummed: a byte written into one is damage.
  int fd = open((dir_ + "/fingerprints").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const uint8_t one = 1;
  ASSERT_EQ(pwrite(fd, &one, 1, 3 << 20), 1);
  close(fd);
  EXPECT_FALSE(LoadFingerprintCache(dir_, "web1", 3, sizes, &why, dir_).has_value());
  EXPECT_NE(why.find("damaged"), std::string::npos) << why;
}

// A checksum fed in pieces equals the checksum of the whole.
TEST(Checksum64Stream, PiecesEqualWhole) {
  Bytes data(200000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + i / 977);
  Checksum64Stream sum;
  for (size_t at = 0; at < data.size();) {
    size_t n = std::min<size_t>(data.size() - at, 1 + at % 70001);
    sum.Update(ByteSpan(data.data() + at, n));
    at += n;
  }
  EXPECT_EQ(sum.Digest(), Checksum64(data));
}

// No file: nothing, and no complaint.
TEST_F(FingerprintCacheTest, MissingFileIsSilent) {
  std::string why = "x";
  EXPECT_FALSE(LoadFingerprintCache(dir_, "web1", 5, sizes_, &why).has_value());
  EXPECT_EQ(why, "");
}

// Another point, another server or other volume sizes: not used, and the reason names it.
TEST_F(FingerprintCacheTest, OtherPointServerOrSizesAreRefused) {
  ASSERT_TRUE(SaveFingerprintCache(dir_, "web1", 5, sizes_, TablesOf(fps_)).ok());
  std::string why;
  EXPECT_FALSE(LoadFingerprintCache(dir_, "web1", 6, sizes_, &why).has_value());
  EXPECT_NE(why.find("point 5"), std::string::npos) << why;
  EXPECT_FALSE(LoadFingerprintCache(dir_, "db1", 5, sizes_, &why).has_value());
  EXPECT_NE(why.find("server 'web1'"), std::string::npos) << why;
  std::vector<uint64_t> grown = {2u << 20, 10000};
  EXPECT_FALSE(LoadFingerprintCache(dir_, "web1", 5, grown, &why).has_value());
  EXPECT_NE(why.find("volume sizes"), std::string::npos) << why;
}

// A flipped bit or a cut file is caught by the checksum.
TEST_F(FingerprintCacheTest, DamageIsCaught) {
  ASSERT_TRUE(SaveFingerprintCache(dir_, "web1", 5, sizes_, TablesOf(fps_)).ok());
  auto data = ReadFileBytes(dir_ + "/fingerprints", 1 << 20);
  ASSERT_TRUE(data.ok());
  Bytes flipped = *data;
  flipped[100] ^= 1;
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/fingerprints", flipped).ok());
  std::string why;
  EXPECT_FALSE(LoadFingerprintCache(dir_, "web1", 5, sizes_, &why).has_value());
  EXPECT_NE(why.find("damaged"), std::string::npos) << why;
  Bytes cut(data->begin(), data->begin() + 40);
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/fingerprints", cut).ok());
  EXPECT_FALSE(LoadFingerprintCache(dir_, "web1", 5, sizes_, &why).has_value());
  EXPECT_FALSE(why.empty());
}

}  // namespace
}  // namespace blockrep::agent
