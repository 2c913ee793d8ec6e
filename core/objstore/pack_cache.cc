#include "blockrep/objstore/pack_cache.h"

#include <algorithm>
#include <set>

#include "blockrep/base/check.h"

namespace blockrep {
namespace {

// Opening a pack races with its eviction by another thread: fetched again, a bounded number of times.
constexpr int kOpenAttemptsMax = 3;

}  // namespace

PackCache::PackCache(Env* base, uint64_t bound_bytes, Fetch fetch, std::function<void(const std::string&)> log)
    : base_(base), bound_bytes_(bound_bytes), fetch_(std::move(fetch)), log_(std::move(log)) {
  BR_CHECK(base_ != nullptr && fetch_ && log_);
}

void PackCache::Published(const std::string& path, uint64_t bytes) {
  auto have = base_->FileSize(path);
  std::lock_guard<std::mutex> lock(mu_);
  if (have.ok() && *have != bytes) {
    packs_.erase(path);  // not the bucket's copy: the caller's to keep or remove
    return;
  }
  Entry& e = packs_[path];
  e.bytes = bytes;
  e.local = have.ok();
  e.last_use = ++tick_;  // just written or found: the newest records are the likeliest to be read
}

void PackCache::Trim() {
  std::lock_guard<std::mutex> lock(mu_);
  TrimLocked("");
}

void PackCache::TrimLocked(const std::string& keep) {
  uint64_t local = 0;
  std::vector<std::pair<uint64_t, const std::string*>> order;  // (last use, path) of local copies
  for (const auto& [path, e] : packs_) {
    if (!e.local) continue;
    local += e.bytes;
    if (path != keep) order.emplace_back(e.last_use, &path);
  }
  if (local <= bound_bytes_) return;
  std::sort(order.begin(), order.end());
  for (const auto& [use, path] : order) {
    if (local <= bound_bytes_) break;
    Status st = base_->Remove(*path);
    if (!st.ok() && st.code() != Code::kNotFound) {
      log_("cache: evicting " + *path + ": " + st.message() + " (kept; the cache is over its --s3-cache-bytes)");
      continue;
    }
    Entry& e = packs_[*path];
    e.local = false;
    local -= e.bytes;
    ++evictions_;
  }
}

PackCache::Usage PackCache::usage() const {
  std::lock_guard<std::mutex> lock(mu_);
  Usage u;
  u.bound_bytes = bound_bytes_;
  for (const auto& [path, e] : packs_) (e.local ? u.local_bytes : u.remote_only_bytes) += e.bytes;
  u.fetches = fetches_;
  u.evictions = evictions_;
  return u;
}

Result<std::unique_ptr<File>> PackCache::Open(const std::string& path, OpenMode mode) {
  if (mode != OpenMode::kRead) return base_->Open(path, mode);
  for (int attempt = 1;; ++attempt) {
    uint64_t bytes = 0;
    bool local = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = packs_.find(path);
      if (it == packs_.end()) return base_->Open(path, mode);
      it->second.last_use = ++tick_;
      bytes = it->second.bytes;
      local = it->second.local;
    }
    if (local) {
      auto file = base_->Open(path, mode);
      // Evicted between the look-up and the open: fetched below.
      if (file.ok() || file.status().code() != Code::kNotFound || attempt >= kOpenAttemptsMax) return file;
    }
    BR_RETURN_IF_ERROR(fetch_(path, bytes).Annotate("fetch the pack " + path + " from the bucket into the cache"));
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = packs_.find(path);
      if (it == packs_.end()) {
        // Removed while it was fetched (a compaction dropped it): so is the copy.
        Status gone = base_->Remove(path);
        if (!gone.ok() && gone.code() != Code::kNotFound) return gone;
        return NotFound(path + ": the pack was removed from the store");
      }
      it->second.local = true;
      it->second.last_use = ++tick_;
      ++fetches_;
      TrimLocked(path);
    }
    auto file = base_->Open(path, mode);
    if (file.ok() || file.status().code() != Code::kNotFound || attempt >= kOpenAttemptsMax) return file;
  }
}

Status PackCache::Remove(const std::string& path) {
  bool remote_only = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = packs_.find(path);
    if (it != packs_.end()) {
      remote_only = !it->second.local;
      packs_.erase(it);
    }
  }
  Status st = base_->Remove(path);
  if (remote_only && st.code() == Code::kNotFound) return Status::Ok();
  return st;
}

Result<std::vector<std::string>> PackCache::ListDir(const std::string& dir) {
  std::set<std::string> names;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [path, e] : packs_)
      if (ParentDir(path) == dir) names.insert(path.substr(dir.size() + 1));
  }
  auto listed = base_->ListDir(dir);
  if (!listed.ok() && !(listed.status().code() == Code::kNotFound && !names.empty())) return listed.status();
  if (listed.ok()) names.insert(listed->begin(), listed->end());
  return std::vector<std::string>(names.begin(), names.end());
}

bool PackCache::Exists(const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (packs_.count(path) != 0) return true;
  }
  return base_->Exists(path);
}

Result<uint64_t> PackCache::FileSize(const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = packs_.find(path);
    if (it != packs_.end()) return it->second.bytes;
  }
  return base_->FileSize(path);
}

}  // namespace blockrep
