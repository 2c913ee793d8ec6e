// The staging's cache of a bucket's packs (`blockrep-staging --s3-cache DIR --s3-cache-bytes N`,
// docs/FORMAT.md "The cache's bound"). An Env over the real filesystem in which every pack the
// bucket holds is there to list, size and open, whether or not its bytes are in DIR: the store
// code (numbering new packs, compaction, quotas, serving readers) sees the whole chain. Packs the
// bucket holds whole ("published") are evicted from DIR, least recently used first, when their
// local copies add up to more than N; opening one that is not in DIR fetches it from the bucket
// (whole, beside its name, synced, renamed) first. Packs not yet published (being written by a
// session, or a compaction's new pack before its commit) are never evicted and not counted in N.
// Indexes and manifests always stay in DIR: they are what every commit and rescan reads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "blockrep/base/env.h"
#include "blockrep/base/status.h"

namespace blockrep {

class PackCache final : public Env {
 public:
  // `fetch(path, bytes)` writes the bucket's object for the pack at `path` (below `root`), all
  // `bytes` of it, to `path` (atomically: readers never see part of it). `log` hears what
  // goes wrong in an eviction (the commit that triggered it stands).
  using Fetch = std::function<Status(const std::string& path, uint64_t bytes)>;
  PackCache(Env* base, uint64_t bound_bytes, Fetch fetch, std::function<void(const std::string&)> log);

  // The bucket holds `bytes` of the pack at `path`. A local copy of that size is counted in the
  // bound and may be evicted; without one the pack is listed, sized and fetched on open. A local
  // copy of another size is left alone (not the bucket's: the caller removes it or keeps it).
  void Published(const std::string& path, uint64_t bytes);
  // Evicts published packs, least recently opened (or published) first, until their local copies
  // add up to at most the bound. Called after each commit and each fetch.
  void Trim();

  struct Usage {
    uint64_t bound_bytes = 0;
    uint64_t local_bytes = 0;        // published packs with their bytes in DIR
    uint64_t remote_only_bytes = 0;  // published packs in the bucket only
    uint64_t fetches = 0, evictions = 0;
  };
  Usage usage() const;

  // Env: everything goes to `base`, but for the packs published.
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode) override;
  Status Rename(const std::string& from, const std::string& to) override { return base_->Rename(from, to); }
  Status Remove(const std::string& path) override;
  Status SyncDir(const std::string& dir) override { return base_->SyncDir(dir); }
  Status MakeDirs(const std::string& path, unsigned mode) override { return base_->MakeDirs(path, mode); }
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  bool Exists(const std::string& path) override;
  Result<uint64_t> FileSize(const std::string& path) override;

 private:
  struct Entry {
    uint64_t bytes = 0;     // the object's size in the bucket
    bool local = false;     // its bytes are in DIR
    uint64_t last_use = 0;  // tick of the last open or Published
  };
  void TrimLocked(const std::string& keep);

  Env* base_;
  const uint64_t bound_bytes_;
  Fetch fetch_;
  std::function<void(const std::string&)> log_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> packs_;  // by path
  uint64_t tick_ = 0;
  uint64_t fetches_ = 0, evictions_ = 0;
};

}  // namespace blockrep
