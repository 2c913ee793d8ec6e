// A read-only Env over a store kept in a bucket (`--store s3://BUCKET/PREFIX`): the store's files
// are the objects under PREFIX, named as in a store directory (FORMAT, servers/ID/MANIFEST,
// servers/ID/index/..., servers/ID/packs/...). Reads are ranged GETs; a folder's listing is a
// delimited LIST. Everything that would write (open for writing, rename, remove, mkdir) is
// refused: recovery reads a bucket and never changes it.
//
// Paths given to it start with the address it was opened with ("s3://bucket/prefix/servers/..."),
// the way the store code builds them from its root. Safe to use from several threads (one
// connection, taken in turn).
#pragma once

#include <memory>
#include <future>
#include <mutex>
#include <string>

#include "blockrep/base/env.h"
#include "blockrep/objstore/s3_client.h"

namespace blockrep {

// What the recovery commands take besides --store s3://...: --s3-endpoint, --s3-credentials,
// --s3-ca, --s3-region.
struct S3Flags {
  std::string endpoint;
  std::string credentials_file;  // "": AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
  std::string ca_file;
  std::string region = "us-east-1";
};

// The client settings of --store s3://... with the --s3-* flags.
Result<S3Config> MakeS3Config(const std::string& root_url, const S3Flags& flags);

class S3ReadEnv : public Env {
 public:
  // `root_url` is the --store value (s3://BUCKET[/PREFIX]); makes no request.
  static Result<std::unique_ptr<S3ReadEnv>> Open(const std::string& root_url, const S3Flags& flags);

  // Reaches the bucket once (the store's FORMAT object), so that bad credentials, an untrusted
  // certificate or a missing store are reported as what they are, not as a missing file later.
  Status Probe();

  // The root as the store code should be given it: the address without a trailing '/'.
  const std::string& root() const { return root_; }

  Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status SyncDir(const std::string& dir) override;
  Status MakeDirs(const std::string& path, unsigned mode) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  bool Exists(const std::string& path) override;
  Result<uint64_t> FileSize(const std::string& path) override;

  // The client, taken in turn by every reader (S3Client is one connection).
  struct Locked {
    std::unique_lock<std::mutex> lock;
    S3Client* client;
  };
  Locked Client() { return {std::unique_lock<std::mutex>(mu_), client_.get()}; }
  // The key of `path` (relative to the store's prefix), or kInvalidArgument outside the root.
  Result<std::string> KeyOf(const std::string& path) const;

  // Read-ahead for sequential readers (a restore reads packs front to back in windows of a few
  // MiB): a read that continues the previous one of its file fetches kReadAheadBytes at once and
  // keeps them here. The gateway streams one long range several times faster than many short
  // ones (RGW: about 90 MB/s for 4 MiB ranges, 600 MB/s for a whole object, on this machine).
  // One buffer for the Env; a random reader (mount) never fills it.
  static constexpr uint64_t kReadAheadBytes = 32u << 20;
  static constexpr uint64_t kSequentialGapMax = 128u << 10;  // fingerprints between windows
  // Copies what the read-ahead buffer holds of [offset, offset + len) of `key`, from `offset` on;
  // returns how many bytes (0: it does not hold `offset`).
  size_t ReadAhead(const std::string& key, uint64_t offset, uint8_t* dst, size_t len);
  // Keeps `data` (bytes of `key` from `offset`, `object_bytes` in all) as the read-ahead buffer
  // and starts fetching the window after it on a thread of its own (one window in flight), so
  // that a sequential reader finds it there instead of waiting for the gateway.
  void KeepReadAhead(const std::string& key, uint64_t offset, Bytes data, uint64_t object_bytes);
  // When the window in flight covers [offset, offset + len) of `key`: waits for it, makes it the
  // read-ahead buffer (starting the next), and copies the bytes. False otherwise, or when that
  // fetch failed (the caller's own request then reports what is wrong).
  bool ReadPrefetched(const std::string& key, uint64_t offset, uint8_t* dst, size_t len, uint64_t object_bytes);

 private:
  S3ReadEnv(std::string root, std::unique_ptr<S3Client> client, S3Config config)
      : root_(std::move(root)), client_(std::move(client)), config_(std::move(config)) {}
  Status ReadOnly(const std::string& what) const;
  void StartPrefetchLocked(const std::string& key, uint64_t offset, uint64_t object_bytes);

  std::string root_;
  std::mutex mu_;
  std::unique_ptr<S3Client> client_;
  S3Config config_;
  std::mutex ahead_mu_;
  std::string ahead_key_;  // "" when empty
  uint64_t ahead_offset_ = 0;
  Bytes ahead_;
  // The window being fetched ahead, with a client of its own (declared before the future: the
  // future's destructor waits for the fetch, which uses the client).
  std::unique_ptr<S3Client> prefetch_client_;
  std::string prefetch_key_;  // "" when none
  uint64_t prefetch_offset_ = 0;
  size_t prefetch_bytes_ = 0;
  std::shared_future<Result<Bytes>> prefetch_;
};

}  // namespace blockrep
