// The S3 client's parsing and error mapping, without a network: s3:// addresses, credential files,
// SigV4's percent-encoding, ListObjectsV2 pages and error bodies (including hostile ones). The
// requests themselves are tested against a real Ceph RGW (tests/objstore/s3_rgw_test.cc).
#include "blockrep/objstore/s3_client.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

namespace blockrep {
namespace {

using s3_internal::ParseErrorBody;
using s3_internal::ParseListPage;
using s3_internal::StatusForHttp;
using s3_internal::UriEncode;

ByteSpan Span(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

class TempFile {
 public:
  TempFile(const std::string& text, mode_t mode) {
    char tmpl[] = "/tmp/blockrep-s3cred.XXXXXX";
    int fd = mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    close(fd);
    path_ = tmpl;
    std::ofstream(path_) << text;
    EXPECT_EQ(chmod(path_.c_str(), mode), 0);
  }
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A bucket with a prefix keeps the prefix as a folder ending in '/'.
TEST(S3UrlTest, BucketAndPrefix) {
  Result<S3Location> l = ParseS3Url("s3://dr-store/site-a/agents/");
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->bucket, "dr-store");
  EXPECT_EQ(l->prefix, "site-a/agents/");
  Result<S3Location> bare = ParseS3Url("s3://dr-store");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->prefix, "");
}

// Bucket names S3 would refuse, and prefixes with empty parts, are refused with the rule.
TEST(S3UrlTest, BadAddressesAreRefused) {
  for (const char* bad : {"/srv/store", "s3://", "s3://ab", "s3://Upper/x", "s3://-dash/x", "s3://b_k/x",
                          "s3://bucket//x", "s3://bucket/a b"}) {
    Result<S3Location> l = ParseS3Url(bad);
    EXPECT_FALSE(l.ok()) << bad;
    if (!l.ok()) {
      EXPECT_EQ(l.status().code(), Code::kInvalidArgument) << bad;
    }
  }
  EXPECT_FALSE(IsS3Url("/srv/store"));
  EXPECT_TRUE(IsS3Url("s3://bucket"));
}

// A credentials file of mode 0600 with both settings loads; comments and blank lines are fine.
TEST(S3CredentialsTest, FileLoads) {
  TempFile f("# the DR bucket's user\naccess_key_id = AKIAEXAMPLE1\n\nsecret_access_key = s3cr3t/+x=\n", 0600);
  Result<S3Credentials> c = LoadS3Credentials(f.path());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->access_key_id, "AKIAEXAMPLE1");
  EXPECT_EQ(c->secret_access_key, "s3cr3t/+x=");
}

// A credentials file others may read is refused with the chmod that fixes it.
TEST(S3CredentialsTest, LooseModeIsRefused) {
  TempFile f("access_key_id = A\nsecret_access_key = B\n", 0644);
  Result<S3Credentials> c = LoadS3Credentials(f.path());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kPermissionDenied);
  EXPECT_NE(c.status().message().find("chmod 600"), std::string::npos) << c.status().message();
}

// Unknown settings, a missing secret and a key id with a ':' (curl's user:password separator) are
// each one clear error.
TEST(S3CredentialsTest, BadFilesAreRefused) {
  TempFile unknown("access_key_id = A\nsecret_access_key = B\nregion = x\n", 0600);
  EXPECT_NE(LoadS3Credentials(unknown.path()).status().message().find("unknown setting 'region'"),
            std::string::npos);
  TempFile missing("access_key_id = A\n", 0600);
  EXPECT_NE(LoadS3Credentials(missing.path()).status().message().find("needs both"), std::string::npos);
  TempFile colon("access_key_id = A:B\nsecret_access_key = C\n", 0600);
  EXPECT_EQ(LoadS3Credentials(colon.path()).status().code(), Code::kInvalidArgument);
}

// Without a file the environment's AWS variables are used; with neither, the error says both ways.
TEST(S3CredentialsTest, EnvironmentIsTheFallback) {
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  Result<S3Credentials> none = LoadS3Credentials("");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("--s3-credentials"), std::string::npos);
  setenv("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
  setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
  Result<S3Credentials> c = LoadS3Credentials("");
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->access_key_id, "ENVKEY");
}

// SigV4 encoding: unreserved characters stay, '/' stays only in paths, everything else is %XX.
TEST(S3UriEncodeTest, AsSigV4Wants) {
  EXPECT_EQ(UriEncode("a-b_c.d~e/f", true), "a-b_c.d~e/f");
  EXPECT_EQ(UriEncode("a/b", false), "a%2Fb");
  EXPECT_EQ(UriEncode("x+y=z &", true), "x%2By%3Dz%20%26");
  EXPECT_EQ(UriEncode("\xc3\xa9", true), "%C3%A9");
}

// A ListObjectsV2 page: keys (entities decoded), sizes, ETags, truncation and its token.
TEST(S3ListPageTest, ParsesKeysSizesAndToken) {
  std::string xml =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
      "<Name>b</Name><IsTruncated>true</IsTruncated><NextContinuationToken>tok/+=</NextContinuationToken>"
      "<Contents><Key>p/a&amp;b</Key><ETag>&quot;9a0364b9e99bb480dd25e1f0284c8555&quot;</ETag><Size>12</Size></Contents>"
      "<Contents><Key>p/c</Key><ETag>&quot;bad etag&quot;</ETag><Size>0</Size></Contents></ListBucketResult>";
  Result<s3_internal::ListPage> page = ParseListPage(Span(xml));
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, "p/a&b");
  EXPECT_EQ(page->objects[0].size_bytes, 12u);
  EXPECT_EQ(page->objects[0].etag, "9a0364b9e99bb480dd25e1f0284c8555");  // quotes dropped
  EXPECT_EQ(page->objects[1].etag, "");                                  // not an ETag: none
  EXPECT_TRUE(page->truncated);
  EXPECT_EQ(page->next_token, "tok/+=");
}

// What a hostile or broken gateway might send is a protocol error, never a partial listing.
TEST(S3ListPageTest, HostileAnswersAreRefused) {
  const std::string head = "<ListBucketResult>";
  for (const std::string& bad : {
           std::string("not xml at all"),
           std::string("<Error><Code>x</Code></Error>"),
           head + "<IsTruncated>true</IsTruncated></ListBucketResult>",              // no token
           head + "<Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
           head + "<Contents><Key>k</Key></Contents></ListBucketResult>",            // no size
           head + "<Contents><Key></Key><Size>1</Size></Contents></ListBucketResult>",
           head + "<Contents><Key>" + std::string(2000, 'k') + "</Key><Size>1</Size></Contents></ListBucketResult>",
       }) {
    Result<s3_internal::ListPage> page = ParseListPage(Span(bad));
    EXPECT_FALSE(page.ok()) << bad.substr(0, 80);
    if (!page.ok()) {
      EXPECT_EQ(page.status().code(), Code::kProtocol);
    }
  }
  std::string many = head;
  for (uint32_t i = 0; i <= kS3ListPageKeysMax; ++i) many += "<Contents><Key>k</Key><Size>1</Size></Contents>";
  many += "</ListBucketResult>";
  EXPECT_FALSE(ParseListPage(Span(many)).ok());
}

// A document with a DTD is refused whole: no external entity is fetched (XXE) and no internal
// one expanded (billion laughs).
TEST(S3ListPageTest, DocumentsWithADtdAreRefused) {
  for (const std::string& xml : {
           std::string("<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>"
                       "<ListBucketResult><Contents><Key>k&x;</Key><Size>1</Size></Contents></ListBucketResult>"),
           std::string("<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]>"
                       "<ListBucketResult><Contents><Key>&b;</Key><Size>1</Size></Contents></ListBucketResult>"),
       }) {
    Result<s3_internal::ListPage> page = ParseListPage(Span(xml));
    ASSERT_FALSE(page.ok());
    EXPECT_EQ(page.status().code(), Code::kProtocol);
  }
}

// Error bodies give code and message; anything else gives empty strings.
TEST(S3ErrorTest, ParsesErrorBodies) {
  s3_internal::ErrorBody e = ParseErrorBody(Span(std::string(
      "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>gone</Message></Error>")));
  EXPECT_EQ(e.code, "NoSuchKey");
  EXPECT_EQ(e.message, "gone");
  EXPECT_EQ(ParseErrorBody(Span(std::string("<html>bad gateway</html>"))).code, "");
}

// HTTP answers map to what a caller can do: retry, stop for space, fix credentials or clock.
TEST(S3ErrorTest, StatusesNameTheRemedy) {
  EXPECT_EQ(StatusForHttp(503, {"SlowDown", ""}, "PUT k").code(), Code::kUnavailable);
  EXPECT_EQ(StatusForHttp(500, {}, "PUT k").code(), Code::kUnavailable);
  EXPECT_EQ(StatusForHttp(400, {"XAmzContentSHA256Mismatch", ""}, "PUT k").code(), Code::kUnavailable);
  EXPECT_EQ(StatusForHttp(403, {"QuotaExceeded", ""}, "PUT k").code(), Code::kNoSpace);
  Status denied = StatusForHttp(403, {"SignatureDoesNotMatch", ""}, "PUT k");
  EXPECT_EQ(denied.code(), Code::kPermissionDenied);
  EXPECT_NE(denied.message().find("--s3-credentials"), std::string::npos);
  EXPECT_NE(StatusForHttp(403, {"RequestTimeTooSkewed", ""}, "PUT k").message().find("clock"), std::string::npos);
  EXPECT_EQ(StatusForHttp(404, {"NoSuchKey", ""}, "GET k").code(), Code::kNotFound);
  EXPECT_NE(StatusForHttp(404, {"NoSuchBucket", ""}, "GET k").message().find("bucket does not exist"),
            std::string::npos);
  EXPECT_EQ(StatusForHttp(400, {"InvalidArgument", ""}, "GET k").code(), Code::kProtocol);
}

// Open refuses plain http (credentials in clear), paths in the endpoint and a missing CA file.
TEST(S3ClientTest, OpenChecksTheConfiguration) {
  S3Config c;
  c.location = {"bucket", ""};
  c.credentials = {"KEY", "secret"};
  c.endpoint = "http://127.0.0.1:7480";
  EXPECT_EQ(S3Client::Open(c).status().code(), Code::kInvalidArgument);
  c.endpoint = "https://127.0.0.1:7480/path";
  EXPECT_EQ(S3Client::Open(c).status().code(), Code::kInvalidArgument);
  c.endpoint = "https://127.0.0.1:7480";
  c.ca_file = "/nonexistent/ca.crt";
  EXPECT_EQ(S3Client::Open(c).status().code(), Code::kInvalidArgument);
  c.ca_file = "";
  EXPECT_TRUE(S3Client::Open(c).ok());
}

}  // namespace
}  // namespace blockrep
