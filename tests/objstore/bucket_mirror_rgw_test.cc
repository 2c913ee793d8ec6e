// The staging's commit protocol on a real Ceph RGW (blockrep/objstore/bucket_mirror.h): a commit
// reaches the bucket (packs, index, manifest) before the local directory; a manifest someone else
// changed fences the commit; an empty cache takes the bucket's chain and its garbage goes.
// Linked into blockrep_s3_rgw_tests (tests/rgw/with_rgw.sh skips where no gateway runs).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "blockrep/base/env.h"
#include "blockrep/objstore/bucket_mirror.h"
#include "blockrep/store/store.h"

namespace blockrep {
namespace {

std::string EnvVar(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

class BucketMirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (std::string* dir : {&cache_a_, &cache_b_}) {
      char tmpl[] = "/tmp/blockrep-mirror.XXXXXX";
      ASSERT_NE(mkdtemp(tmpl), nullptr);
      *dir = tmpl;
      ASSERT_TRUE(store::InitStoreRoot(*dir, true).ok());
    }
    config_.endpoint = EnvVar("BLOCKREP_S3_ENDPOINT");
    config_.ca_file = EnvVar("BLOCKREP_S3_CA");
    config_.region = "default";
    config_.location = {"blockrep-test", std::string("m-") + ::testing::UnitTest::GetInstance()->current_test_info()->name() +
                                             "-" + std::to_string(getpid()) + "/"};
    auto cred = LoadS3Credentials(EnvVar("BLOCKREP_S3_CREDENTIALS"));
    ASSERT_TRUE(cred.ok()) << cred.status().ToString();
    config_.credentials = *cred;
    auto c = S3Client::Open(config_);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE((*c)->CreateBucket().ok());
    client_ = std::move(c).value();
  }
  void TearDown() override { std::system(("rm -rf " + cache_a_ + " " + cache_b_).c_str()); }

  // The store of web1 in `cache`, publishing through a mirror pulled from the bucket.
  std::unique_ptr<store::ServerStore> OpenMirrored(const std::string& cache) {
    auto c = S3Client::Open(config_);
    EXPECT_TRUE(c.ok());
    auto mirror = std::make_unique<ServerMirror>(std::move(c).value(), "web1");
    auto pulled = mirror->Pull(cache + "/servers/web1");
    EXPECT_TRUE(pulled.ok()) << pulled.status().ToString();
    auto s = store::ServerStore::Open(cache, "web1", true);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    (*s)->set_publisher(std::move(mirror));
    return std::move(s).value();
  }
  // Commits point `id`: a new pack of `bytes` bytes of records, one index entry naming it.
  Status CommitPoint(store::ServerStore& s, uint64_t id, size_t bytes) {
    uint32_t pack = 0;
    auto file = s.CreatePack(&pack);
    if (!file.ok()) return file.status();
    Bytes records(bytes, static_cast<uint8_t>(id));
    BR_RETURN_IF_ERROR((*file)->WriteAt(store::kPackHeaderSize, records));
    BR_RETURN_IF_ERROR((*file)->Sync());
    store::PointIndex idx;
    idx.point_id = id;
    idx.volume_sizes = {1 << 20};
    idx.entries.push_back({0, 4096, 0, pack, static_cast<uint32_t>(bytes), store::kPackHeaderSize, 0, 0x1234});
    store::PointInfo info{id, 1000 + id, 0, 1, bytes, 0, ""};
    return s.CommitPoint(info, idx, 42);
  }
  Bytes Object(const std::string& key) {
    auto b = client_->Get(key, 64u << 20);
    EXPECT_TRUE(b.ok()) << key << ": " << b.status().ToString();
    return b.ok() ? *b : Bytes();
  }
  Bytes LocalFile(const std::string& path) {
    auto b = Env::Default()->ReadFile(path, 64u << 20);
    EXPECT_TRUE(b.ok()) << path << ": " << b.status().ToString();
    return b.ok() ? *b : Bytes();
  }

  std::string cache_a_, cache_b_;
  S3Config config_;
  std::unique_ptr<S3Client> client_;
};

// A committed point is in the bucket: its pack, its index and the manifest, as in the cache.
TEST_F(BucketMirrorTest, CommitPublishesPackIndexAndManifest) {
  auto s = OpenMirrored(cache_a_);
  ASSERT_TRUE(CommitPoint(*s, 1, 100000).ok());
  const store::PointInfo& p = s->manifest().points.at(0);
  EXPECT_EQ(Object("servers/web1/MANIFEST"), LocalFile(s->dir() + "/MANIFEST"));
  EXPECT_EQ(Object("servers/web1/index/" + store::IndexFileName(p)), LocalFile(s->IndexPath(p)));
  EXPECT_EQ(Object("servers/web1/packs/" + store::PackFileName(1)), LocalFile(s->PackPath(1)));
}

// A manifest changed in the bucket by another writer fences this one: its commit fails with
// kConflict and its cache keeps the old chain.
TEST_F(BucketMirrorTest, ManifestChangedElsewhereFencesTheCommit) {
  auto a = OpenMirrored(cache_a_);
  ASSERT_TRUE(CommitPoint(*a, 1, 5000).ok());
  auto b = OpenMirrored(cache_b_);  // takes point 1 from the bucket
  ASSERT_EQ(b->manifest().last_point_id(), 1u);
  ASSERT_TRUE(CommitPoint(*b, 2, 5000).ok());
  Status st = CommitPoint(*a, 2, 7000);
  EXPECT_EQ(st.code(), Code::kConflict) << st.ToString();
  EXPECT_NE(st.message().find("another staging frontend"), std::string::npos) << st.message();
  EXPECT_EQ(a->manifest().last_point_id(), 1u);
  EXPECT_EQ(Object("servers/web1/MANIFEST"), LocalFile(b->dir() + "/MANIFEST"));
}

// An empty cache takes the bucket's chain (manifest, indexes, packs, byte for byte), and objects
// no manifest reaches are deleted, so a pack number the cache reuses is uploaded anew.
TEST_F(BucketMirrorTest, PullFillsAnEmptyCacheAndDropsGarbage) {
  {
    auto a = OpenMirrored(cache_a_);
    ASSERT_TRUE(CommitPoint(*a, 1, 3000).ok());
    ASSERT_TRUE(CommitPoint(*a, 2, 4000).ok());
  }
  ASSERT_TRUE(client_->Put("servers/web1/packs/" + store::PackFileName(3), Bytes(99999, 7)).ok());
  auto b = OpenMirrored(cache_b_);
  ASSERT_EQ(b->manifest().points.size(), 2u);
  EXPECT_EQ(LocalFile(b->dir() + "/MANIFEST"), LocalFile(cache_a_ + "/servers/web1/MANIFEST"));
  for (uint32_t pack : {1u, 2u}) EXPECT_EQ(LocalFile(b->PackPath(pack)), LocalFile(cache_a_ + "/servers/web1/packs/" + store::PackFileName(pack)));
  EXPECT_EQ(client_->Size("servers/web1/packs/" + store::PackFileName(3)).status().code(), Code::kNotFound);
  ASSERT_TRUE(CommitPoint(*b, 3, 500).ok());  // pack 3 again, this time a real one
  EXPECT_EQ(Object("servers/web1/packs/" + store::PackFileName(3)), LocalFile(b->PackPath(3)));
}

}  // namespace
}  // namespace blockrep
