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
// At start, the cache is brought up to the bucket: for every server there, the bucket's manifest
// and the indexes it names are fetched where DIR lacks them (the bucket wins over DIR: a staging
// killed between the PUT and the rename left DIR one commit behind); its packs are fetched when
// first read (PackCache: DIR holds at most --s3-cache-bytes of published packs).
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
#include "blockrep/objstore/pack_cache.h"
#include "blockrep/objstore/s3_client.h"
#include "blockrep/objstore/s3_env.h"
#include "blockrep/store/store.h"

namespace blockrep {

// Several staging frontends on one bucket (docs/FORMAT.md, Leases): one at a time writes a
// server's chain, the holder of its lease object (servers/ID/LEASE).
struct LeaseSettings {
  std::string frontend;      // this frontend's name, in the lease and in messages
  uint64_t duration_ms = 0;  // how long a lease lasts unrenewed; 0: no leases (a single writer)
};
inline constexpr size_t kLeaseBytesMax = 1024;

// One server's chain in the bucket, as this staging last wrote or read it. Publishes its store's
// commits (ServerStore::set_publisher). Not thread-safe: a server's commits run one at a time.
class ServerMirror : public store::ManifestPublisher {
 public:
  // Without `cache`, Pull fetches every pack into the cache directory; with it, packs are
  // registered there and fetched when read.
  ServerMirror(std::unique_ptr<S3Client> client, std::string server_id, LeaseSettings lease = {},
               PackCache* cache = nullptr);
  const std::string& server_id() const { return server_id_; }
  bool leased() const { return lease_.duration_ms != 0; }

  // Takes the server's lease, or renews it when this frontend holds it. True when the lease is
  // newly this frontend's (a new token): call TakeOver before committing anything. kUnavailable
  // when another frontend holds a lease that has not run out (the message names it and when).
  Result<bool> AcquireLease();
  // Whether the lease is still this frontend's by its own clock (a margin before it runs out,
  // measured from before the request that took or renewed it).
  bool LeaseHeld() const;
  // Renewal is due: a third of the lease has passed since it was taken or renewed.
  bool LeaseRenewalDue() const;
  uint64_t lease_token() const { return lease_token_; }
  // Gives the lease up (it runs out now): another frontend may take it at once. Best effort.
  void ReleaseLease();
  // Stops counting on the lease (a renewal failed: another frontend may hold it now).
  void ForgetLease() { lease_token_ = 0; }

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
  // `may_write` false (another frontend may be writing): nothing is deleted or published.
  // `trust_local` false (after a takeover: another frontend may have written packs of the same
  // names): local copies of the bucket's packs are dropped, to be fetched when read.
  Result<PullStats> Pull(const std::string& server_dir, bool may_write = true, bool trust_local = true);
  // After AcquireLease returned true: the bucket's chain into the cache (Pull without deleting
  // anything), then the manifest rewritten with this frontend's token by a conditional PUT (the
  // fence: a frontend that held the lease before can no longer match the manifest's ETag), then
  // what that manifest does not reach deleted. The cache's MANIFEST is the fenced one.
  Result<PullStats> TakeOver(const std::string& server_dir);

  Status Publish(const store::ServerStore& store, const store::Manifest& next) override;

 private:
  std::string Key(const std::string& sub) const { return "servers/" + server_id_ + "/" + sub; }
  // Whether the pack at `path` has bytes the bucket lacks (it is not there, or shorter).
  bool NeedsUpload(uint32_t pack, const std::string& path) const;
  // PUTs these packs (id, local path), several at once; records what the bucket holds of each
  // that succeeded, and returns the first failure.
  Status UploadPacks(const std::vector<std::pair<uint32_t, std::string>>& uploads);
  Status PutManifest(const store::Manifest& m);

  // Deletes the packs and indexes the last manifest pulled or written does not reach.
  Status DeleteGarbage(const std::set<std::string>& index_names, uint32_t* deleted);
  // PUT of a pack or index object that must not replace another's: If-None-Match, and if an
  // object is there already (a fenced frontend's upload, or ours whose answer was lost), it is
  // deleted and the PUT made again. Only under this frontend's lease (or with no leases).
  Result<std::string> PutNew(S3Client& client, const std::string& key, ByteSpan data);

  std::unique_ptr<S3Client> client_;
  std::string server_id_;
  LeaseSettings lease_;
  PackCache* cache_;           // nullptr: every pack is kept in the cache directory
  std::string manifest_etag_;  // "": the bucket has no manifest for this server
  Bytes manifest_bytes_;       // what the bucket's manifest held when last pulled or written
  struct PackObject {
    uint64_t size_bytes = 0;
    std::string etag;  // "" when only listed
  };
  std::map<uint32_t, PackObject> packs_;                   // packs in the bucket
  std::map<std::string, std::set<uint32_t>> index_packs_;  // indexes in the bucket -> packs they name
  std::set<std::string> listed_indexes_;                   // index objects the last Pull listed
  uint64_t lease_token_ = 0;      // 0: not held
  std::string lease_etag_;
  uint64_t lease_taken_ms_ = 0;   // wall clock ms before the request that took or renewed it
};

// Fetches object `key` of `size` bytes into `path`: written beside it under a name of its own (two
// threads may fetch one object at once), in bounded ranges, synced, renamed over `path`.
Status FetchObjectToFile(S3Client& client, const std::string& key, uint64_t size, const std::string& path);

// The bucket behind a staging.
class BucketStore {
 public:
  // `cache_bytes`: the bound on published packs kept in the cache directory (PackCache).
  static Result<std::unique_ptr<BucketStore>> Open(const std::string& root_url, const S3Flags& flags,
                                                   LeaseSettings lease = {}, uint64_t cache_bytes = UINT64_MAX);
  const std::string& url() const { return url_; }
  bool leased() const { return lease_.duration_ms != 0; }

  // The FORMAT object (written from the cache's FORMAT when the bucket has none), then every
  // server in the bucket or in the cache pulled (ServerMirror::Pull; with leases, nothing is
  // deleted: another frontend may be between its uploads and its manifest); `log` hears one line
  // per server that needed work.
  Status SyncCache(const std::string& cache_root, const std::function<void(const std::string&)>& log);
  // The mirror of `server_id` (SyncCache made it; a server new to both is made here, empty).
  Result<std::unique_ptr<ServerMirror>> TakeMirror(const std::string& server_id);
  // The Env the staging's stores use, from SyncCache on: the cache directory, every published
  // pack in it whether its bytes are there or in the bucket only.
  PackCache* cache() const { return cache_.get(); }

 private:
  BucketStore(std::string url, S3Config config, LeaseSettings lease, uint64_t cache_bytes)
      : url_(std::move(url)), config_(std::move(config)), lease_(std::move(lease)), cache_bytes_(cache_bytes) {}
  std::string url_;
  S3Config config_;
  LeaseSettings lease_;
  uint64_t cache_bytes_;
  std::unique_ptr<PackCache> cache_;
  std::map<std::string, std::unique_ptr<ServerMirror>> pulled_;
};

}  // namespace blockrep
