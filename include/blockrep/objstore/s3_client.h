// An S3 client for the object-store backend (docs/FORMAT.md, "The store on an object store"):
// path-style requests over HTTPS with libcurl, signed with AWS Signature V4 by libcurl itself
// (CURLOPT_AWS_SIGV4), TLS verification always on. Every request carries the SHA-256 of its body
// in x-amz-content-sha256, so the gateway refuses a body damaged on the way as well as a forged
// one. Transport failures, timeouts, 5xx and SlowDown are retried with exponential backoff and
// jitter; what retrying cannot fix (bad credentials, a refused certificate, a missing object, a
// full quota) is returned at once with a message that names the fix.
//
// One S3Client is one connection (reused between requests): use it from one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "blockrep/base/bytes.h"
#include "blockrep/base/status.h"

namespace blockrep {

// Limits on what a gateway may make us hold, whatever it sends.
inline constexpr size_t kS3ErrorBodyBytesMax = 64u << 10;   // an error response's XML
inline constexpr size_t kS3ListBodyBytesMax = 8u << 20;     // one ListObjectsV2 page
inline constexpr uint32_t kS3ListPageKeysMax = 1000;        // keys asked for per page (S3's own cap)
inline constexpr size_t kS3KeyBytesMax = 1024;              // S3's own limit on a key

// "s3://BUCKET/PREFIX": the bucket and the prefix every key of the store starts with ("" or
// ending in '/').
struct S3Location {
  std::string bucket;
  std::string prefix;
};
bool IsS3Url(std::string_view text);
Result<S3Location> ParseS3Url(std::string_view text);

struct S3Credentials {
  std::string access_key_id;
  std::string secret_access_key;
};
// From `path` when it is not empty: a file of mode 0600 holding the lines
// "access_key_id = ..." and "secret_access_key = ..." (# starts a comment). Otherwise from the
// environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
Result<S3Credentials> LoadS3Credentials(const std::string& path);

struct S3Config {
  std::string endpoint;        // https://HOST[:PORT], no path
  std::string region = "us-east-1";
  std::string ca_file;         // PEM bundle to trust instead of the system's; "" for the system's
  S3Location location;
  S3Credentials credentials;
  uint32_t attempts_max = 6;   // tries per request, the first one included
  uint32_t backoff_first_ms = 100;
  uint32_t backoff_max_ms = 5000;
  uint32_t connect_timeout_ms = 5000;
  uint32_t stall_timeout_s = 20;  // a transfer moving under 1 KiB/s this long is given up (retried)
  uint32_t list_page_keys = kS3ListPageKeysMax;  // keys asked for per LIST page (1..1000)
};

struct S3Object {
  std::string key;  // without the store's prefix (the s3:// address's PREFIX)
  uint64_t size_bytes = 0;
  std::string etag;  // without quotes; "" when the listing gave none
};

namespace s3_internal {
struct ListPage;
}

class S3Client {
 public:
  // Checks the configuration (the endpoint's scheme, the CA file); makes no request.
  static Result<std::unique_ptr<S3Client>> Open(const S3Config& config);
  ~S3Client();
  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  // Keys are relative to the location's prefix.
  Status Put(std::string_view key, ByteSpan data);
  // Compare-and-swap writes, for a lease object (one writer per server chain): create only when
  // there is no such object (If-None-Match: *), or replace only the version whose ETag is
  // `etag` (If-Match). Both return the new ETag; kConflict when another writer got there first.
  // A kConflict that follows a retried attempt may be this client's own earlier write, whose
  // answer was lost: read the object back to tell (the message says so). An ETag is the MD5 of
  // the content (no multipart here): two writes of the same bytes look alike, so what is written
  // this way must differ every time (a lease carries its owner and a new fencing token).
  Result<std::string> PutIfAbsent(std::string_view key, ByteSpan data);
  Result<std::string> PutIfMatch(std::string_view key, ByteSpan data, std::string_view etag);
  // The whole object; kNotFound when there is none, kDataLoss when it is larger than max_bytes.
  Result<Bytes> Get(std::string_view key, size_t max_bytes);
  // Bytes [offset, offset + len) of the object; fewer only at its end.
  Result<Bytes> GetRange(std::string_view key, uint64_t offset, size_t len);
  // The whole object and its ETag (what a later PutIfMatch names to replace exactly this version).
  struct Versioned {
    Bytes data;
    std::string etag;
  };
  Result<Versioned> GetVersioned(std::string_view key, size_t max_bytes);
  // kNotFound when there is none.
  Result<uint64_t> Size(std::string_view key);
  // Size and ETag; kNotFound when there is none.
  struct Head {
    uint64_t size_bytes = 0;
    std::string etag;  // without quotes
  };
  Result<Head> Stat(std::string_view key);
  // Removing an object that is not there is not an error (S3's own rule).
  Status Delete(std::string_view key);
  // Every object whose key starts with `key_prefix`, in key order; kInvalidArgument beyond
  // `objects_max` (the caller's bound on what it can hold).
  Result<std::vector<S3Object>> List(std::string_view key_prefix, size_t objects_max);
  // The names directly under the folder `folder` ("" or ending in '/'): objects and sub-folders
  // (listed with delimiter '/'), without `folder`, sub-folders without their trailing '/';
  // sorted, bounded like List.
  Result<std::vector<std::string>> ListChildren(std::string_view folder, size_t names_max);
  // Creates the bucket; one that already exists and is ours is fine.
  Status CreateBucket();

  const S3Config& config() const { return config_; }
  // Requests retried since Open, for tests and metrics.
  uint64_t retries() const { return retries_; }

 private:
  struct Request;
  struct Response;
  explicit S3Client(const S3Config& config);
  Status Perform(const Request& request, Response* response);
  Status PerformOnce(const Request& request, Response* response);
  Result<std::string> PutConditional(std::string_view key, ByteSpan data, std::string condition);
  std::string ObjectUrl(std::string_view key) const;
  // One listing, page after page: fn(page) for each.
  Status ListPages(const std::string& full_prefix, bool delimited,
                   const std::function<Status(s3_internal::ListPage&)>& fn);

  S3Config config_;
  void* curl_ = nullptr;  // CURL*, kept for connection reuse
  uint64_t retries_ = 0;
};

namespace s3_internal {
// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters kept, '/' kept when
// `keep_slash`, every other byte %XX.
std::string UriEncode(std::string_view text, bool keep_slash);
// One ListObjectsV2 page.
struct ListPage {
  std::vector<S3Object> objects;  // keys as the gateway sent them (prefix included)
  std::vector<std::string> common_prefixes;  // with a delimiter: the sub-folders, as sent
  bool truncated = false;
  std::string next_token;
};
Result<ListPage> ParseListPage(ByteSpan xml);
// <Error><Code>..</Code><Message>..</Message></Error>; empty strings when the body is not one.
struct ErrorBody {
  std::string code;
  std::string message;
};
ErrorBody ParseErrorBody(ByteSpan xml);
// The Status an HTTP error answer maps to, with what to do about it.
Status StatusForHttp(long http_status, const ErrorBody& error, std::string_view what);
}  // namespace s3_internal

}  // namespace blockrep
