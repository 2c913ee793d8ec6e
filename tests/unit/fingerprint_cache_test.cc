#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "blockrep/fs.h"
#include "fingerprint_cache.h"

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
  ASSERT_TRUE(SaveFingerprintCache(dir_, "web1", 5, sizes_, fps_).ok());
  std::string why;
  auto got = LoadFingerprintCache(dir_, "web1", 5, sizes_, &why);
  ASSERT_TRUE(got.has_value()) << why;
  EXPECT_EQ(*got, fps_);
}

// No file: nothing, and no complaint.
TEST_F(FingerprintCacheTest, MissingFileIsSilent) {
  std::string why = "x";
  EXPECT_FALSE(LoadFingerprintCache(dir_, "web1", 5, sizes_, &why).has_value());
  EXPECT_EQ(why, "");
}

// Another point, another server or other volume sizes: not used, and the reason names it.
TEST_F(FingerprintCacheTest, OtherPointServerOrSizesAreRefused) {
  ASSERT_TRUE(SaveFingerprintCache(dir_, "web1", 5, sizes_, fps_).ok());
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
  ASSERT_TRUE(SaveFingerprintCache(dir_, "web1", 5, sizes_, fps_).ok());
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
