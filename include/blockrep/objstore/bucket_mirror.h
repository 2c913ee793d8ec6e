// The staging's store in a bucket (`blockrep-staging --store s3://BUCKET/PREFIX --s3-cache DIR`,
// docs/FORMAT.md "A store in a bucket"). The staging keeps working on a store directory, DIR (its
// packs take the agents' records with fsync and group commit, as on a local store); the bucket is
// the store of record. Every manifest commit (a point, an expiry, a compaction) is first
// published: the packs and indexes the new manifest names that the bucket lacks are uploaded
// whole, then the manifest is written with a conditional PUT on the ETag this staging last wrote
// (or read). Only then is it renamed into place in DIR and the point acknowledged. A staging that
// finds the bucket's manifest changed behind its back (another frontend wrote the chain) commits
// nothing.
//
// At start, the cache is brought up to the bucket: for every server there, the bucket's manifest,
// the indexes it names and the packs those name are fetched where DIR lacks them (the bucket wins
// over DIR: a staging killed between the PUT and the rename left DIR one commit behind).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "blockrep/base/env.h"
#include "blockrep/base/status.h"
#include "blockrep/objstore/s3_client.h"
#include "blockrep/objstore/s3_env.h"
#include "blockrep/store/store.h"

namespace blockrep {

// One server's chain in the bucket, as this staging last wrote or read it. Publishes its store's
// commits (ServerStore::set_publisher). Not thread-safe: a server's commits run one at a time.
class ServerMirror : public store::ManifestPublisher {
 public:
  ServerMirror(std::unique_ptr<S3Client> client, std::string server_id);

  // Makes the server's directory in the cache (`server_dir`) hold the bucket's chain, fetching
  // what it lacks; or, when the bucket has no chain for it yet and the cache has one, uploads
  // the cache's. Learns what the bucket holds (its packs' sizes, its indexes).
  struct PullStats {
    uint32_t indexes_fetched = 0, packs_fetched = 0;
    uint64_t bytes_fetched = 0;
    bool manifest_replaced = false;  // the cache's manifest was behind the bucket's
    bool uploaded = false;           // the bucket had no chain: the cache's was published
    uint32_t garbage_deleted = 0;    // objects the bucket's manifest does not reach, deleted
  };
  Result<PullStats> Pull(const std::string& server_dir);

  Status Publish(const store::ServerStore& store, const store::Manifest& next) override;

 private:
  std::string Key(const std::string& sub) const { return "servers/" + server_id_ + "/" + sub; }
  // Uploads the pack from `path` unless the bucket already holds at least its current size.
  Status EnsurePack(uint32_t pack, const std::string& path);
  // Fetches object `key` into `path` (written beside it, synced, renamed) in ranges.
  Status FetchToFile(const std::string& key, uint64_t size, const std::string& path);
  Status PutManifest(const store::Manifest& m);

  std::unique_ptr<S3Client> client_;
  std::string server_id_;
  std::string manifest_etag_;  // "": the bucket has no manifest for this server
  std::map<uint32_t, uint64_t> pack_sizes_;                 // packs in the bucket, by size
  std::map<std::string, std::set<uint32_t>> index_packs_;  // indexes in the bucket -> packs they name
};

// The bucket behind a staging.
class BucketStore {
 public:
  static Result<std::unique_ptr<BucketStore>> Open(const std::string& root_url, const S3Flags& flags);
  const std::string& url() const { return url_; }

  // The FORMAT object (written from the cache's FORMAT when the bucket has none), then every
  // server in the bucket or in the cache pulled (ServerMirror::Pull); `log` hears one line per
  // server that needed work.
  Status SyncCache(const std::string& cache_root, const std::function<void(const std::string&)>& log);
  // The mirror of `server_id` (SyncCache made it; a server new to both is made here, empty).
  Result<std::unique_ptr<ServerMirror>> TakeMirror(const std::string& server_id);

 private:
  BucketStore(std::string url, S3Config config) : url_(std::move(url)), config_(std::move(config)) {}
  std::string url_;
  S3Config config_;
  std::map<std::string, std::unique_ptr<ServerMirror>> pulled_;
};

}  // namespace blockrep
