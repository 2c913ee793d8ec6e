// PackCache: the bound on published packs in the staging's cache directory, eviction order, and
// packs that are in the bucket only being listed, sized and fetched on open. The "bucket" here is
// a second directory the fetch copies from (the S3 path is exercised against RGW in e2e_rgw_crash).
#include "blockrep/objstore/pack_cache.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "blockrep/base/fs.h"
#include "temp_dir.h"

namespace blockrep {
namespace {

class PackCacheTest : public ::testing::Test {
 protected:
  PackCacheTest() : dir_("pack-cache") {
    Env* env = Env::Default();
    EXPECT_TRUE(env->MakeDirs(dir_ / "bucket", 0700).ok());
    EXPECT_TRUE(env->MakeDirs(dir_ / "cache/packs", 0700).ok());
  }
  // A pack of `bytes` bytes, in the "bucket" and in the cache.
  std::string Pack(const std::string& name, size_t bytes) {
    Bytes data(bytes, static_cast<uint8_t>(name[0]));
    EXPECT_TRUE(Env::Default()->WriteFileAtomic(dir_ / ("bucket/" + name), data).ok());
    EXPECT_TRUE(Env::Default()->WriteFileAtomic(dir_ / ("cache/packs/" + name), data).ok());
    return dir_ / ("cache/packs/" + name);
  }
  std::unique_ptr<PackCache> Make(uint64_t bound) {
    return std::make_unique<PackCache>(
        Env::Default(), bound,
        [this](const std::string& path, uint64_t bytes) -> Status {
          ++fetched_;
          const std::string name = path.substr(path.rfind('/') + 1);
          BR_ASSIGN_OR_RETURN(Bytes data, Env::Default()->ReadFile(dir_ / ("bucket/" + name), 1 << 20));
          if (data.size() != bytes) return DataLoss("bucket object " + name + " has another size");
          return Env::Default()->WriteFileAtomic(path, data);
        },
        [this](const std::string& line) { logged_.push_back(line); });
  }
  bool Local(const std::string& path) { return PathExists(path); }

  TempDir dir_;
  int fetched_ = 0;
  std::vector<std::string> logged_;
};

// Over the bound, the least recently opened published packs go first; within it nothing goes.
TEST_F(PackCacheTest, TrimEvictsLeastRecentlyOpenedFirst) {
  auto cache = Make(2500);
  std::string a = Pack("00000001.pack", 1000), b = Pack("00000002.pack", 1000), c = Pack("00000003.pack", 1000);
  cache->Published(a, 1000);
  cache->Published(b, 1000);
  cache->Trim();
  EXPECT_TRUE(Local(a) && Local(b));
  ASSERT_TRUE(cache->Open(a, OpenMode::kRead).ok());  // a is now the most recently used
  cache->Published(c, 1000);
  cache->Trim();
  EXPECT_TRUE(Local(a));
  EXPECT_FALSE(Local(b));
  EXPECT_TRUE(Local(c));
  PackCache::Usage u = cache->usage();
  EXPECT_EQ(u.local_bytes, 2000u);
  EXPECT_EQ(u.remote_only_bytes, 1000u);
  EXPECT_EQ(u.evictions, 1u);
}

// An evicted pack is still listed and sized; opening it fetches it, with the same bytes.
TEST_F(PackCacheTest, EvictedPackIsListedSizedAndFetchedOnOpen) {
  auto cache = Make(0);
  std::string a = Pack("00000001.pack", 3000);
  cache->Published(a, 3000);
  cache->Trim();
  ASSERT_FALSE(Local(a));
  auto names = cache->ListDir(dir_ / "cache/packs");
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"00000001.pack"});
  EXPECT_TRUE(cache->Exists(a));
  EXPECT_EQ(*cache->FileSize(a), 3000u);
  auto file = cache->Open(a, OpenMode::kRead);
  ASSERT_TRUE(file.ok()) << file.status().message();
  uint8_t byte = 0;
  ASSERT_TRUE((*file)->ReadExact(2999, &byte, 1).ok());
  EXPECT_EQ(byte, '0');
  EXPECT_EQ(fetched_, 1);
  EXPECT_EQ(cache->usage().fetches, 1u);
}

// Packs not published (being written) are neither counted nor evicted, whatever the bound.
TEST_F(PackCacheTest, UnpublishedPacksStay) {
  auto cache = Make(0);
  std::string a = Pack("00000001.pack", 1000);
  cache->Trim();
  EXPECT_TRUE(Local(a));
  EXPECT_EQ(cache->usage().local_bytes, 0u);
  auto file = cache->Open(a, OpenMode::kRead);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(fetched_, 0);
}

// A local copy of another size than the bucket's is not registered (the caller's to deal with).
TEST_F(PackCacheTest, LocalCopyOfAnotherSizeIsNotTheBuckets) {
  auto cache = Make(0);
  std::string a = Pack("00000001.pack", 1000);
  cache->Published(a, 1200);
  cache->Trim();
  EXPECT_TRUE(Local(a));
  EXPECT_EQ(*cache->FileSize(a), 1000u);
}

// Removing a pack that is in the bucket only succeeds, and it is no longer listed.
TEST_F(PackCacheTest, RemoveOfARemoteOnlyPack) {
  auto cache = Make(0);
  std::string a = Pack("00000001.pack", 1000);
  cache->Published(a, 1000);
  cache->Trim();
  ASSERT_FALSE(Local(a));
  EXPECT_TRUE(cache->Remove(a).ok());
  EXPECT_FALSE(cache->Exists(a));
  EXPECT_EQ(cache->Remove(a).code(), Code::kNotFound);
  auto names = cache->ListDir(dir_ / "cache/packs");
  ASSERT_TRUE(names.ok());
  EXPECT_TRUE(names->empty());
}

}  // namespace
}  // namespace blockrep
