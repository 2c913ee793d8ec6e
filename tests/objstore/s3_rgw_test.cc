// The S3 client against a real Ceph RGW (tests/rgw/start.sh, started by CTest's `rgw` fixture):
// objects in and out, ranges, listings over several pages, refused credentials and certificates,
// and retries through a gateway that stalls or is gone. Run by tests/rgw/with_rgw.sh, which skips
// (77) where no gateway could be started.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "blockrep/objstore/s3_client.h"
#include "blockrep/objstore/s3_env.h"

namespace blockrep {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

S3Config RgwConfig(const std::string& prefix) {
  S3Config c;
  c.endpoint = Env("BLOCKREP_S3_ENDPOINT");
  c.ca_file = Env("BLOCKREP_S3_CA");
  c.region = "default";
  c.location = {"blockrep-test", prefix};
  Result<S3Credentials> cred = LoadS3Credentials(Env("BLOCKREP_S3_CREDENTIALS"));
  EXPECT_TRUE(cred.ok()) << cred.status().ToString();
  if (cred.ok()) c.credentials = *cred;
  return c;
}

std::unique_ptr<S3Client> Client(const S3Config& c) {
  Result<std::unique_ptr<S3Client>> client = S3Client::Open(c);
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  Status st = (*client)->CreateBucket();
  EXPECT_TRUE(st.ok()) << st.ToString();
  return std::move(client).value();
}

Bytes RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

std::string TestPrefix() {
  return std::string("t-") + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "/";
}

// An object written comes back byte for byte; so does an empty one; Size agrees.
TEST(S3RgwTest, PutGetRoundTrip) {
  auto s3 = Client(RgwConfig(TestPrefix()));
  Bytes data = RandomBytes(3 << 20, 1);
  ASSERT_TRUE(s3->Put("packs/0001.pack", data).ok());
  Result<Bytes> back = s3->Get("packs/0001.pack", 4 << 20);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, data);
  Result<uint64_t> size = s3->Size("packs/0001.pack");
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, data.size());
  ASSERT_TRUE(s3->Put("empty", {}).ok());
  Result<Bytes> empty = s3->Get("empty", 10);
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->empty());
}

// An object larger than the caller allows is refused, not truncated.
TEST(S3RgwTest, GetRefusesMoreThanExpected) {
  auto s3 = Client(RgwConfig(TestPrefix()));
  Bytes data = RandomBytes(200 << 10, 2);
  ASSERT_TRUE(s3->Put("big", data).ok());
  Result<Bytes> back = s3->Get("big", 100 << 10);
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.status().code(), Code::kDataLoss);
}

// Byte ranges: inside, across the end (short), and past the end (empty).
TEST(S3RgwTest, RangesReadPartsOfAnObject) {
  auto s3 = Client(RgwConfig(TestPrefix()));
  Bytes data = RandomBytes(1 << 20, 3);
  ASSERT_TRUE(s3->Put("obj", data).ok());
  Result<Bytes> mid = s3->GetRange("obj", 4096, 65536);
  ASSERT_TRUE(mid.ok()) << mid.status().ToString();
  EXPECT_EQ(*mid, Bytes(data.begin() + 4096, data.begin() + 4096 + 65536));
  Result<Bytes> tail = s3->GetRange("obj", data.size() - 100, 4096);
  ASSERT_TRUE(tail.ok()) << tail.status().ToString();
  EXPECT_EQ(*tail, Bytes(data.end() - 100, data.end()));
  Result<Bytes> past = s3->GetRange("obj", data.size() + 10, 4096);
  ASSERT_TRUE(past.ok()) << past.status().ToString();
  EXPECT_TRUE(past->empty());
}

// Missing objects are kNotFound; deleting one that is gone is fine.
TEST(S3RgwTest, MissingObjectsAndDeletes) {
  auto s3 = Client(RgwConfig(TestPrefix()));
  EXPECT_EQ(s3->Get("nothing", 10).status().code(), Code::kNotFound);
  EXPECT_EQ(s3->Size("nothing").status().code(), Code::kNotFound);
  ASSERT_TRUE(s3->Put("gone", RandomBytes(10, 4)).ok());
  ASSERT_TRUE(s3->Delete("gone").ok());
  EXPECT_EQ(s3->Get("gone", 10).status().code(), Code::kNotFound);
  EXPECT_TRUE(s3->Delete("gone").ok());
}

// A listing longer than one page (here 40 keys a page) comes back whole, in order, without the
// store's prefix; keys with characters SigV4 must encode list and read back too; a delimited
// listing gives the folder's direct children.
TEST(S3RgwTest, ListingsSpanPages) {
  S3Config c = RgwConfig(TestPrefix());
  c.list_page_keys = 40;
  auto s3 = Client(c);
  const int n = 105;
  for (int i = 0; i < n; ++i) {
    char key[32];
    std::snprintf(key, sizeof(key), "idx/%06d", i);
    ASSERT_TRUE(s3->Put(key, RandomBytes(static_cast<size_t>(i % 7), 5)).ok()) << key;
  }
  ASSERT_TRUE(s3->Put("idx/odd key+=&~", RandomBytes(3, 6)).ok());
  ASSERT_TRUE(s3->Put("idx/sub/deeper", RandomBytes(3, 7)).ok());
  ASSERT_TRUE(s3->Put("other/x", RandomBytes(3, 7)).ok());
  Result<std::vector<S3Object>> all = s3->List("idx/", 10000);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), static_cast<size_t>(n + 2));
  EXPECT_EQ((*all)[0].key, "idx/000000");
  EXPECT_EQ((*all)[n - 1].key, "idx/000104");
  EXPECT_EQ((*all)[n - 1].size_bytes, 104u % 7);
  EXPECT_EQ((*all)[n].key, "idx/odd key+=&~");
  EXPECT_EQ((*all)[n + 1].key, "idx/sub/deeper");
  Result<Bytes> odd = s3->Get("idx/odd key+=&~", 10);
  ASSERT_TRUE(odd.ok()) << odd.status().ToString();
  EXPECT_EQ(s3->List("idx/", 100).status().code(), Code::kInvalidArgument);  // the caller's bound
  Result<std::vector<std::string>> children = s3->ListChildren("idx/", 10000);
  ASSERT_TRUE(children.ok()) << children.status().ToString();
  ASSERT_EQ(children->size(), static_cast<size_t>(n + 2));
  EXPECT_EQ(children->back(), "sub");  // the folder, once, without its '/'
}

// A wrong secret is refused at once (no retries) with what to check.
TEST(S3RgwTest, WrongSecretIsPermissionDenied) {
  S3Config c = RgwConfig(TestPrefix());
  c.credentials.secret_access_key = "wrong" + c.credentials.secret_access_key;
  auto s3 = S3Client::Open(c);
  ASSERT_TRUE(s3.ok());
  Status st = (*s3)->Put("x", RandomBytes(10, 8));
  EXPECT_EQ(st.code(), Code::kPermissionDenied) << st.ToString();
  EXPECT_NE(st.message().find("--s3-credentials"), std::string::npos) << st.message();
  EXPECT_EQ((*s3)->retries(), 0u);
}

// The gateway's certificate is checked: without its CA (the system's CAs only) nothing is sent.
TEST(S3RgwTest, UntrustedCertificateIsRefused) {
  S3Config c = RgwConfig(TestPrefix());
  c.ca_file = "";
  auto s3 = S3Client::Open(c);
  ASSERT_TRUE(s3.ok());
  Status st = (*s3)->Put("x", RandomBytes(10, 9));
  EXPECT_EQ(st.code(), Code::kUnauthenticated) << st.ToString();
  EXPECT_NE(st.message().find("--s3-ca"), std::string::npos) << st.message();
}

// A gateway that stalls (SIGSTOP) past the stall timeout is retried, and the request succeeds once
// it resumes. The body is smaller than the stall limit (1 KiB/s) moves in a second, so the stall
// shows at once: a 64 KiB body went into the socket buffer at once, and curl, which averages speed
// over its last seconds, saw it move for up to ~5 s — past the resume, with no retry (a flake).
TEST(S3RgwTest, StalledGatewayIsRetried) {
  std::string pid_file = Env("BLOCKREP_RGW_PID_FILE");
  std::ifstream in(pid_file);
  pid_t pid = 0;
  in >> pid;
  ASSERT_GT(pid, 0) << "no radosgw pid in " << pid_file;
  S3Config c = RgwConfig(TestPrefix());
  c.stall_timeout_s = 1;
  c.backoff_first_ms = 200;
  auto s3 = Client(c);
  Bytes data = RandomBytes(512, 10);
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  std::thread resume([pid] {
    std::this_thread::sleep_for(std::chrono::milliseconds(4000));  // the stall timeout, and 3 s to see it
    kill(pid, SIGCONT);
  });
  Status st = s3->Put("after-stall", data);
  resume.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_GE(s3->retries(), 1u);
  Result<Bytes> back = s3->Get("after-stall", 1 << 20);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, data);
}

// A gateway that is not there at all: retried with backoff, then one kUnavailable that says so.
TEST(S3RgwTest, AbsentGatewayIsUnavailableAfterRetries) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);  // a port that nothing listens on
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  S3Config c = RgwConfig(TestPrefix());
  c.endpoint = "https://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  c.attempts_max = 3;
  c.backoff_first_ms = 10;
  auto s3 = S3Client::Open(c);
  ASSERT_TRUE(s3.ok());
  Status st = (*s3)->Put("x", RandomBytes(10, 11));
  close(fd);
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("gave up after 3 attempts"), std::string::npos) << st.message();
  EXPECT_EQ((*s3)->retries(), 2u);
}

// Compare-and-swap for a lease: create-if-absent wins once; replace-if-match wins only with the
// current ETag, and a writer holding an older one is refused (kConflict), whatever it writes.
TEST(S3RgwTest, ConditionalPutsAreCompareAndSwap) {
  auto s3 = Client(RgwConfig(TestPrefix()));
  Bytes first = RandomBytes(100, 13), second = RandomBytes(100, 14), third = RandomBytes(100, 15);
  Result<std::string> created = s3->PutIfAbsent("LEASE", first);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  Result<std::string> again = s3->PutIfAbsent("LEASE", second);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kConflict) << again.status().ToString();
  Result<S3Client::Head> head = s3->Stat("LEASE");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->etag, *created);
  Result<std::string> replaced = s3->PutIfMatch("LEASE", second, *created);
  ASSERT_TRUE(replaced.ok()) << replaced.status().ToString();
  EXPECT_NE(*replaced, *created);
  Result<std::string> stale = s3->PutIfMatch("LEASE", third, *created);  // the writer that lost
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), Code::kConflict) << stale.status().ToString();
  Result<Bytes> now = s3->Get("LEASE", 1000);
  ASSERT_TRUE(now.ok()) << now.status().ToString();
  EXPECT_EQ(*now, second);
}

// The read-only Env over a bucket: reads of any size come back whole, sequential ones through
// the read-ahead too, reads at the end short; folders list their children; nothing writes.
TEST(S3RgwTest, ReadEnvReadsListsAndRefusesWrites) {
  const std::string prefix = TestPrefix();
  auto s3 = Client(RgwConfig(prefix));
  Bytes data = RandomBytes((5 << 20) + 123, 16);
  ASSERT_TRUE(s3->Put("store/servers/a/packs/00000001.pack", data).ok());
  S3Flags flags;
  flags.endpoint = Env("BLOCKREP_S3_ENDPOINT");
  flags.ca_file = Env("BLOCKREP_S3_CA");
  flags.credentials_file = Env("BLOCKREP_S3_CREDENTIALS");
  flags.region = "default";
  Result<std::unique_ptr<S3ReadEnv>> env = S3ReadEnv::Open("s3://blockrep-test/" + prefix + "store", flags);
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  const std::string root = (*env)->root();
  Result<std::unique_ptr<File>> f = (*env)->Open(root + "/servers/a/packs/00000001.pack", OpenMode::kRead);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  for (auto [offset, len] : {std::pair<uint64_t, size_t>{1000, (4 << 20) + 77}, {0, 1}, {4096, 600 << 10}}) {
    Bytes got(len);
    Result<size_t> n = (*f)->ReadAt(offset, got.data(), len);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    ASSERT_EQ(*n, len);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + static_cast<long>(offset))) << offset << "+" << len;
  }
  // A sequential reader: the second read continues the first (past a small gap) and is served
  // from the read-ahead the first one started; a read inside that range too.
  for (auto [offset, len] : {std::pair<uint64_t, size_t>{16, 1 << 20}, {(1 << 20) + 116, 3 << 20}, {(2 << 20) + 5, 1000}}) {
    Bytes got(len);
    Result<size_t> n = (*f)->ReadAt(offset, got.data(), len);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    ASSERT_EQ(*n, len);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + static_cast<long>(offset))) << offset << "+" << len;
  }
  Bytes tail(2 << 20);
  Result<size_t> n = (*f)->ReadAt(data.size() - 1000, tail.data(), tail.size());
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1000u);
  EXPECT_TRUE(std::equal(tail.begin(), tail.begin() + 1000, data.end() - 1000));
  Result<std::vector<std::string>> names = (*env)->ListDir(root + "/servers");
  ASSERT_TRUE(names.ok()) << names.status().ToString();
  EXPECT_EQ(*names, std::vector<std::string>{"a"});
  EXPECT_EQ((*env)->Open(root + "/x", OpenMode::kCreateTruncate).status().code(), Code::kPermissionDenied);
  EXPECT_EQ((*env)->Remove(root + "/servers/a/packs/00000001.pack").code(), Code::kPermissionDenied);
}

// A bucket that does not exist is named as such.
TEST(S3RgwTest, MissingBucketIsNamed) {
  S3Config c = RgwConfig("");
  c.location.bucket = "no-such-bucket-here";
  auto s3 = S3Client::Open(c);
  ASSERT_TRUE(s3.ok());
  Status st = (*s3)->Put("x", RandomBytes(10, 12));
  EXPECT_EQ(st.code(), Code::kNotFound) << st.ToString();
  EXPECT_NE(st.message().find("bucket does not exist"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace blockrep
