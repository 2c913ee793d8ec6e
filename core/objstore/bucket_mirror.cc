#include "blockrep/objstore/bucket_mirror.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "blockrep/base/check.h"
#include "blockrep/base/cli.h"
#include "blockrep/base/fs.h"

namespace blockrep {
namespace {

// Objects one server's folder may hold in a listing (packs, indexes): far above what retention
// and compaction leave (a pack per session or point, an index per retained point).
constexpr size_t kServerObjectsMax = 1u << 20;
// A pack is fetched in ranges of this size (a bounded buffer whatever the pack's size).
constexpr size_t kFetchRangeBytes = 16u << 20;
constexpr size_t kServersMax = 100000;
// Packs PUT side by side by one commit (each upload is one thread and one connection).
constexpr size_t kUploadsInFlightMax = 4;

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The pack ids an index names.
Result<std::set<uint32_t>> PacksOf(ByteSpan index_bytes, const std::string& what) {
  auto idx = store::PointIndex::Decode(index_bytes);
  if (!idx.ok()) return idx.status().Annotate(what);
  std::set<uint32_t> packs;
  for (const store::IndexEntry& e : idx->entries) packs.insert(e.pack);
  return packs;
}

// A read-only mapping of a whole file: an upload's body without copying it into memory.
class MappedFile {
 public:
  static Result<MappedFile> Open(const std::string& path) {
    MappedFile m;
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus("open " + path, errno);
    struct stat st{};
    if (fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
    m.size_ = static_cast<size_t>(st.st_size);
    if (m.size_ == 0) return m;
    void* p = mmap(nullptr, m.size_, PROT_READ, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return ErrnoStatus("mmap " + path, errno);
    m.data_ = static_cast<uint8_t*>(p);
    return m;
  }
  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr; }
  MappedFile& operator=(MappedFile&&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) munmap(data_, size_);
  }
  ByteSpan bytes() const { return ByteSpan(data_, size_); }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace

ServerMirror::ServerMirror(std::unique_ptr<S3Client> client, std::string server_id, LeaseSettings lease, PackCache* cache)
    : client_(std::move(client)), server_id_(std::move(server_id)), lease_(std::move(lease)), cache_(cache) {}

Status FetchObjectToFile(S3Client& client, const std::string& key, uint64_t size, const std::string& path) {
  static std::atomic<uint64_t> fetches{0};
  Env* env = Env::Default();
  std::string tmp = path + ".fetch" + std::to_string(++fetches);
  Status st = [&]() -> Status {
    BR_ASSIGN_OR_RETURN(auto file, env->Open(tmp, OpenMode::kCreateTruncate));
    for (uint64_t off = 0; off < size;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(kFetchRangeBytes, size - off));
      BR_ASSIGN_OR_RETURN(Bytes part, client.GetRange(key, off, want));
      if (part.size() != want)
        return DataLoss("s3 object " + key + " ended at " + std::to_string(off + part.size()) + " bytes; its listing said " +
                        std::to_string(size));
      BR_RETURN_IF_ERROR(file->WriteAt(off, part));
      off += want;
    }
    BR_RETURN_IF_ERROR(file->Sync());
    BR_RETURN_IF_ERROR(env->Rename(tmp, path));
    return env->SyncDir(ParentDir(path));
  }();
  if (!st.ok()) env->Remove(tmp).IgnoreError();  // the error below says what failed; a leftover goes at the next start
  return st;
}

Status ServerMirror::DeleteGarbage(const std::set<std::string>& index_names, uint32_t* deleted) {
  std::set<uint32_t> live;
  for (const auto& [name, used] : index_packs_) live.insert(used.begin(), used.end());
  for (auto it = packs_.begin(); it != packs_.end();) {
    if (live.count(it->first) != 0) {
      ++it;
      continue;
    }
    BR_RETURN_IF_ERROR(client_->Delete(Key("packs/" + store::PackFileName(it->first))));
    ++*deleted;
    it = packs_.erase(it);
  }
  for (const std::string& name : index_names) {
    if (index_packs_.count(name) != 0) continue;
    BR_RETURN_IF_ERROR(client_->Delete(Key("index/" + name)));
    ++*deleted;
  }
  return Status::Ok();
}

Result<ServerMirror::PullStats> ServerMirror::Pull(const std::string& server_dir, bool may_write, bool trust_local) {
  Env* env = Env::Default();
  PullStats stats;
  // The packs this frontend uploaded, by the ETag the bucket gave it: a local copy is the bucket's
  // object while the listing shows that ETag (another frontend's upload under the name has another).
  std::map<uint32_t, PackObject> uploaded = std::move(packs_);
  std::map<uint32_t, std::string> listed_etag;
  packs_.clear();
  index_packs_.clear();
  listed_indexes_.clear();
  manifest_etag_.clear();
  manifest_bytes_.clear();
  BR_ASSIGN_OR_RETURN(auto packs, client_->List(Key("packs/"), kServerObjectsMax));
  for (const S3Object& o : packs) {
    const uint32_t id = static_cast<uint32_t>(std::strtoul(BaseName(o.key).c_str(), nullptr, 10));
    packs_[id] = {o.size_bytes, ""};
    listed_etag[id] = o.etag;
  }
  BR_ASSIGN_OR_RETURN(auto indexes, client_->List(Key("index/"), kServerObjectsMax));
  for (const S3Object& o : indexes) listed_indexes_.insert(BaseName(o.key));

  const std::string local_path = server_dir + "/MANIFEST";
  auto remote = client_->GetVersioned(Key("MANIFEST"), store::kMaxManifestBytes);
  if (!remote.ok() && remote.status().code() != Code::kNotFound) return remote.status();
  if (!remote.ok()) {
    // No chain in the bucket: a store that was local so far (or a server new to both). Objects
    // without a manifest are a first commit cut short: garbage.
    if (!may_write) return stats;
    BR_RETURN_IF_ERROR(DeleteGarbage(listed_indexes_, &stats.garbage_deleted));
    if (!env->Exists(local_path)) return stats;
    BR_ASSIGN_OR_RETURN(Bytes local, env->ReadFile(local_path, store::kMaxManifestBytes));
    BR_ASSIGN_OR_RETURN(store::Manifest m, store::Manifest::Decode(local));
    BR_ASSIGN_OR_RETURN(auto opened, store::ServerStore::Open(ParentDir(ParentDir(server_dir)), server_id_, false));
    BR_RETURN_IF_ERROR(Publish(*opened, m));
    stats.uploaded = true;
    return stats;
  }
  manifest_etag_ = remote->etag;
  manifest_bytes_ = remote->data;
  BR_ASSIGN_OR_RETURN(store::Manifest m, store::Manifest::Decode(remote->data));
  if (m.server_id != server_id_)
    return DataLoss("s3 object " + Key("MANIFEST") + " is the manifest of server '" + m.server_id + "'");
  BR_RETURN_IF_ERROR(env->MakeDirs(server_dir + "/index", 0700));
  BR_RETURN_IF_ERROR(env->MakeDirs(server_dir + "/packs", 0700));
  {
    // A fetch cut short (a kill) left its copy beside the pack's name.
    BR_ASSIGN_OR_RETURN(auto names, env->ListDir(server_dir + "/packs"));
    for (const std::string& n : names)
      if (n.find(".fetch") != std::string::npos) BR_RETURN_IF_ERROR(env->Remove(server_dir + "/packs/" + n));
  }
  // Indexes, then packs, then the manifest: the cache's own write order.
  for (const store::PointInfo& p : m.points) {
    const std::string name = store::IndexFileName(p);
    const std::string path = server_dir + "/index/" + name;
    Bytes data;
    if (env->Exists(path)) {
      BR_ASSIGN_OR_RETURN(data, env->ReadFile(path, store::kMaxIndexBytes));
    } else {
      auto got = client_->Get(Key("index/" + name), store::kMaxIndexBytes);
      if (!got.ok() && got.status().code() == Code::kNotFound)
        return DataLoss("the bucket's manifest of server '" + server_id_ + "' names index " + name + ", which the bucket lacks");
      if (!got.ok()) return got.status();
      data = std::move(got).value();
      BR_RETURN_IF_ERROR(env->WriteFileAtomic(path, data));
      ++stats.indexes_fetched;
      stats.bytes_fetched += data.size();
    }
    listed_indexes_.insert(name);  // also when written after the listing (by another frontend)
    BR_ASSIGN_OR_RETURN(std::set<uint32_t> used, PacksOf(data, path));
    for (uint32_t pack : used) {
      auto object = packs_.find(pack);
      const std::string pname = store::PackFileName(pack);
      if (object == packs_.end()) {
        // Not listed: written after the listing (the manifest read later names it), or missing.
        auto size = client_->Size(Key("packs/" + pname));
        if (!size.ok() && size.status().code() == Code::kNotFound)
          return DataLoss("index " + name + " of server '" + server_id_ + "' names pack " + pname + ", which the bucket lacks");
        if (!size.ok()) return size.status();
        object = packs_.emplace(pack, PackObject{*size, ""}).first;
      }
      const std::string ppath = server_dir + "/packs/" + pname;
      auto have = env->FileSize(ppath);
      if (cache_ != nullptr) {
        // Fetched when read. A shorter local copy is a fetch or an upload cut short; without
        // `trust_local` only this frontend's own uploads, still the bucket's version, are kept
        // (another frontend may have written that name since).
        auto mine = uploaded.find(pack);
        auto etag = listed_etag.find(pack);
        const bool own = mine != uploaded.end() && !mine->second.etag.empty() && etag != listed_etag.end() &&
                         etag->second == mine->second.etag;
        if (have.ok() && (*have < object->second.size_bytes || (!trust_local && !own))) BR_RETURN_IF_ERROR(env->Remove(ppath));
        if (own) object->second.etag = mine->second.etag;
        cache_->Published(ppath, object->second.size_bytes);
        continue;
      }
      if (have.ok() && *have >= object->second.size_bytes) continue;
      BR_RETURN_IF_ERROR(FetchObjectToFile(*client_, Key("packs/" + pname), object->second.size_bytes, ppath));
      ++stats.packs_fetched;
      stats.bytes_fetched += object->second.size_bytes;
    }
    index_packs_[name] = std::move(used);
  }
  // What the manifest does not reach is garbage (a commit cut short before its manifest PUT, a
  // delete that failed). It goes now when this staging may write: a pack number reused by this
  // cache must never find an older object of that name counted as its upload.
  if (may_write) BR_RETURN_IF_ERROR(DeleteGarbage(listed_indexes_, &stats.garbage_deleted));
  Bytes local;
  if (env->Exists(local_path)) {
    BR_ASSIGN_OR_RETURN(local, env->ReadFile(local_path, store::kMaxManifestBytes));
  }
  if (local != remote->data) {
    BR_RETURN_IF_ERROR(env->WriteFileAtomic(local_path, remote->data));
    stats.manifest_replaced = true;
  }
  return stats;
}

Result<std::string> ServerMirror::PutNew(S3Client& client, const std::string& key, ByteSpan data) {
  Result<std::string> etag = client.PutIfAbsent(key, data);
  if (etag.ok() || etag.status().code() != Code::kConflict) return etag;
  // Someone's object by that name, which no manifest of ours names: a frontend fenced off since
  // (its commit can no longer succeed), or this one's own PUT whose answer was lost.
  BR_RETURN_IF_ERROR(client.Delete(key));
  return client.PutIfAbsent(key, data);
}

bool ServerMirror::NeedsUpload(uint32_t pack, const std::string& path) const {
  auto known = packs_.find(pack);
  if (known == packs_.end()) return true;
  // In the bucket already: whole (its local copy no longer), or evicted from the cache.
  auto have = Env::Default()->FileSize(path);
  if (!have.ok()) return have.status().code() != Code::kNotFound;  // an error: the upload names it
  return *have > known->second.size_bytes;
}

Status ServerMirror::UploadPacks(const std::vector<std::pair<uint32_t, std::string>>& uploads) {
  struct Done {
    Status status = Status::Ok();
    uint64_t size_bytes = 0;
    std::string etag;
  };
  std::vector<Done> done(uploads.size());
  // One upload: the pack's whole file (a pack still being appended is uploaded again, whole,
  // when a later index names its newer records: its earlier bytes never change, so a reader of
  // the older manifest reads the same).
  auto upload = [&](S3Client& client, size_t i) {
    const auto& [pack, path] = uploads[i];
    Result<MappedFile> file = MappedFile::Open(path);
    if (!file.ok()) {
      done[i].status = file.status();
      return;
    }
    const std::string key = Key("packs/" + BaseName(path));
    auto known = packs_.find(pack);  // read-only while uploads run
    Result<std::string> etag = known != packs_.end() && !known->second.etag.empty()
                                   ? client.PutIfMatch(key, file->bytes(), known->second.etag)
                                   : PutNew(client, key, file->bytes());
    if (!etag.ok()) {
      done[i].status = etag.status().Annotate("server '" + server_id_ + "': upload pack " + BaseName(path));
      return;
    }
    done[i].size_bytes = file->bytes().size();
    done[i].etag = std::move(etag).value();
  };
  if (uploads.size() == 1) {
    upload(*client_, 0);
  } else if (!uploads.empty()) {
    // Several packs (a full sync's, a compaction's): PUT side by side, each thread with its own
    // client. A gateway serves parallel PUTs several times faster than one after another.
    std::atomic<size_t> next{0};
    std::vector<std::thread> threads;
    const size_t n = std::min(uploads.size(), kUploadsInFlightMax);
    for (size_t t = 0; t < n; ++t) {
      threads.emplace_back([&]() {
        Result<std::unique_ptr<S3Client>> client = S3Client::Open(client_->config());
        for (size_t i = next++; i < uploads.size(); i = next++) {
          if (client.ok()) upload(**client, i);
          else done[i].status = client.status();
        }
      });
    }
    for (std::thread& t : threads) t.join();
  }
  Status first = Status::Ok();
  for (size_t i = 0; i < uploads.size(); ++i) {
    if (!done[i].status.ok()) {
      if (first.ok()) first = done[i].status;
      continue;
    }
    packs_[uploads[i].first] = {done[i].size_bytes, done[i].etag};
    if (cache_ != nullptr) cache_->Published(uploads[i].second, done[i].size_bytes);
  }
  return first;
}

Status ServerMirror::PutManifest(const store::Manifest& m) {
  Bytes enc = m.Encode();
  Result<std::string> etag = manifest_etag_.empty() ? client_->PutIfAbsent(Key("MANIFEST"), enc)
                                                    : client_->PutIfMatch(Key("MANIFEST"), enc, manifest_etag_);
  if (!etag.ok() && etag.status().code() == Code::kConflict)
    return Conflict("server '" + server_id_ + "': its manifest in the bucket changed since this staging last wrote it " +
                    "(another staging frontend writes this chain now): nothing committed; the agent sends the point again");
  if (!etag.ok()) return etag.status().Annotate("server '" + server_id_ + "': publish the manifest");
  manifest_etag_ = std::move(etag).value();
  manifest_bytes_ = std::move(enc);
  return Status::Ok();
}

Status ServerMirror::Publish(const store::ServerStore& store, const store::Manifest& next) {
  if (leased() && !LeaseHeld())
    return Unavailable("server '" + server_id_ + "': this staging frontend's lease on the chain has run out (not renewed " +
                       "in time, or the process was paused): nothing committed; the agent sends the point again");
  if (leased() && next.writer_token != lease_token_)
    return Internal("server '" + server_id_ + "': a manifest of writer token " + std::to_string(next.writer_token) +
                    " under lease token " + std::to_string(lease_token_));
  Env* env = store.env();
  std::map<std::string, std::set<uint32_t>> named;
  std::vector<std::pair<std::string, Bytes>> new_indexes;  // (name, bytes) the bucket lacks
  std::set<uint32_t> to_upload;
  for (const store::PointInfo& p : next.points) {
    const std::string path = store.IndexPath(p);
    const std::string name = BaseName(path);
    auto known = index_packs_.find(name);
    if (known != index_packs_.end()) {
      named[name] = known->second;
      continue;
    }
    BR_ASSIGN_OR_RETURN(Bytes data, env->ReadFile(path, store::kMaxIndexBytes));
    BR_ASSIGN_OR_RETURN(std::set<uint32_t> used, PacksOf(data, path));
    for (uint32_t pack : used)
      if (NeedsUpload(pack, store.PackPath(pack))) to_upload.insert(pack);
    named[name] = std::move(used);
    new_indexes.emplace_back(name, std::move(data));
  }
  // The packs first, then the indexes naming them: the bucket never names what it lacks.
  std::vector<std::pair<uint32_t, std::string>> uploads;
  for (uint32_t pack : to_upload) uploads.emplace_back(pack, store.PackPath(pack));
  BR_RETURN_IF_ERROR(UploadPacks(uploads));
  for (const auto& [name, data] : new_indexes) {
    // The name carries the index's checksum: an object already there under it holds these bytes.
    Result<std::string> put = client_->PutIfAbsent(Key("index/" + name), data);
    if (!put.ok() && put.status().code() != Code::kConflict) return put.status().Annotate("server '" + server_id_ + "': upload index " + name);
    index_packs_[name] = named[name];
  }
  BR_RETURN_IF_ERROR(PutManifest(next));
  // What the new manifest no longer reaches goes. A failed delete leaves garbage, never damage:
  // the next commit tries again.
  std::set<uint32_t> live;
  for (const auto& [name, packs] : named) live.insert(packs.begin(), packs.end());
  for (auto it = index_packs_.begin(); it != index_packs_.end();) {
    if (named.count(it->first) != 0 || !client_->Delete(Key("index/" + it->first)).ok()) {
      ++it;
      continue;
    }
    it = index_packs_.erase(it);
  }
  for (auto it = packs_.begin(); it != packs_.end();) {
    if (live.count(it->first) != 0 || !client_->Delete(Key("packs/" + store::PackFileName(it->first))).ok()) {
      ++it;
      continue;
    }
    it = packs_.erase(it);
  }
  if (cache_ != nullptr) cache_->Trim();
  return Status::Ok();
}

namespace {

uint64_t NowMs() { return NowUtcNs() / 1000000; }

struct Lease {
  std::string frontend;
  uint64_t token = 0;
  uint64_t expires_ms = 0;
};

Bytes EncodeLease(const Lease& l) {
  std::string text = "blockrep-lease 1\nfrontend " + l.frontend + "\ntoken " + std::to_string(l.token) +
                     "\nexpires_unix_ms " + std::to_string(l.expires_ms) + "\n";
  return Bytes(text.begin(), text.end());
}

// The bucket is not trusted: a malformed lease is an error naming the object, never a guess.
Result<Lease> DecodeLease(ByteSpan data, const std::string& what) {
  std::string text(data.begin(), data.end());
  Lease l;
  char frontend[257] = {0};
  unsigned long long token = 0, expires = 0;
  if (std::sscanf(text.c_str(), "blockrep-lease 1\nfrontend %256s\ntoken %llu\nexpires_unix_ms %llu\n", frontend, &token,
                  &expires) != 3 ||
      token == 0)
    return DataLoss(what + " is not a lease this program wrote; delete it if no staging frontend is running");
  l.frontend = frontend;
  l.token = token;
  l.expires_ms = expires;
  return l;
}

std::string UtcText(uint64_t ms) {
  time_t t = static_cast<time_t>(ms / 1000);
  struct tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

Result<bool> ServerMirror::AcquireLease() {
  BR_CHECK(leased());
  const uint64_t start_ms = NowMs();
  const std::string key = Key("LEASE");
  auto got = client_->GetVersioned(key, kLeaseBytesMax);
  if (!got.ok() && got.status().code() != Code::kNotFound) return got.status().Annotate("server '" + server_id_ + "': read its lease");
  Lease next{lease_.frontend, 0, start_ms + lease_.duration_ms};
  Result<std::string> etag = Internal("no lease written");
  if (!got.ok()) {
    // The first lease: its token passes the one in the manifest (a lease object deleted by hand
    // must not hand out a token a fenced frontend already wrote with).
    uint64_t written = 0;
    auto m = client_->Get(Key("MANIFEST"), store::kMaxManifestBytes);
    if (m.ok()) {
      BR_ASSIGN_OR_RETURN(store::Manifest decoded, store::Manifest::Decode(*m));
      written = decoded.writer_token;
    } else if (m.status().code() != Code::kNotFound) {
      return m.status();
    }
    next.token = written + 1;
    etag = client_->PutIfAbsent(key, EncodeLease(next));
  } else {
    BR_ASSIGN_OR_RETURN(Lease held, DecodeLease(got->data, "s3 object " + key));
    // Ours by name: this frontend's, maybe from before a restart or a renewal that failed (then
    // taken again with a new token, as from anyone). Names must differ between frontends.
    const bool ours = held.frontend == lease_.frontend;
    if (!ours && held.expires_ms > start_ms)
      return Unavailable("server '" + server_id_ + "': its chain is written by staging frontend " + held.frontend +
                         " (lease until " + UtcText(held.expires_ms) + "); connect the agent there, or wait for the lease to run out");
    next.token = ours && held.token == lease_token_ ? held.token : held.token + 1;
    etag = client_->PutIfMatch(key, EncodeLease(next), got->etag);
  }
  if (!etag.ok() && etag.status().code() == Code::kConflict)
    return Unavailable("server '" + server_id_ + "': another staging frontend took its lease at the same moment; retry");
  if (!etag.ok()) return etag.status().Annotate("server '" + server_id_ + "': write its lease");
  const bool newly = next.token != lease_token_;
  lease_token_ = next.token;
  lease_etag_ = std::move(etag).value();
  lease_taken_ms_ = start_ms;
  return newly;
}

bool ServerMirror::LeaseHeld() const {
  if (lease_token_ == 0) return false;
  // A margin of a tenth: commits stop before another frontend may take the lease over.
  return NowMs() < lease_taken_ms_ + lease_.duration_ms - lease_.duration_ms / 10;
}

bool ServerMirror::LeaseRenewalDue() const {
  return lease_token_ != 0 && NowMs() >= lease_taken_ms_ + lease_.duration_ms / 3;
}

void ServerMirror::ReleaseLease() {
  if (lease_token_ == 0) return;
  Lease gone{lease_.frontend, lease_token_, 0};
  client_->PutIfMatch(Key("LEASE"), EncodeLease(gone), lease_etag_).status().IgnoreError();  // it runs out anyway
  lease_token_ = 0;
}

Result<ServerMirror::PullStats> ServerMirror::TakeOver(const std::string& server_dir) {
  BR_CHECK(leased() && lease_token_ != 0);
  for (int attempt = 0;; ++attempt) {
    Result<PullStats> pulled = Pull(server_dir, false, false);
    // The former holder may have been committing (it is fenced only below): read again.
    if (!pulled.ok() && pulled.status().code() == Code::kDataLoss && attempt < 3) continue;
    BR_ASSIGN_OR_RETURN(PullStats stats, std::move(pulled));
    Env* env = Env::Default();
    store::Manifest fenced;
    if (manifest_etag_.empty()) {
      // No chain in the bucket yet: the cache's (a store moved to the bucket), or an empty one.
      BR_ASSIGN_OR_RETURN(auto opened, store::ServerStore::Open(ParentDir(ParentDir(server_dir)), server_id_, true));
      fenced = opened->manifest();
      fenced.writer_token = lease_token_;
      BR_RETURN_IF_ERROR(Publish(*opened, fenced));
      stats.uploaded = !fenced.points.empty();
    } else {
      BR_ASSIGN_OR_RETURN(fenced, store::Manifest::Decode(manifest_bytes_));
      fenced.writer_token = lease_token_;
      Status put = PutManifest(fenced);
      if (put.code() == Code::kConflict && attempt < 3) continue;  // the former holder's last commit: take it too
      BR_RETURN_IF_ERROR(put);
    }
    BR_RETURN_IF_ERROR(env->WriteFileAtomic(server_dir + "/MANIFEST", fenced.Encode()));
    // Fenced: whatever the manifest does not reach is garbage now, whoever wrote it.
    BR_RETURN_IF_ERROR(DeleteGarbage(listed_indexes_, &stats.garbage_deleted));
    return stats;
  }
}

Result<std::unique_ptr<BucketStore>> BucketStore::Open(const std::string& root_url, const S3Flags& flags,
                                                       LeaseSettings lease, uint64_t cache_bytes) {
  BR_ASSIGN_OR_RETURN(S3Config config, MakeS3Config(root_url, flags));
  BR_ASSIGN_OR_RETURN(auto probe, S3Client::Open(config));  // checks the settings now
  if (lease.duration_ms != 0 && (lease.frontend.empty() || lease.frontend.size() > 256 ||
                                 lease.frontend.find_first_of(" \t\n") != std::string::npos))
    return InvalidArgument("the frontend name '" + lease.frontend + "' must be 1..256 characters without spaces (--frontend-name)");
  return std::unique_ptr<BucketStore>(new BucketStore(root_url, std::move(config), std::move(lease), cache_bytes));
}

Status BucketStore::SyncCache(const std::string& cache_root, const std::function<void(const std::string&)>& log) {
  Env* env = Env::Default();
  BR_ASSIGN_OR_RETURN(auto client, S3Client::Open(config_));
  auto format = client->Stat("FORMAT");
  if (!format.ok() && format.status().code() != Code::kNotFound)
    return format.status().Annotate("reach the store " + url_);
  if (!format.ok()) {
    BR_ASSIGN_OR_RETURN(Bytes local, env->ReadFile(cache_root + "/FORMAT", 4096));
    BR_RETURN_IF_ERROR(client->Put("FORMAT", local));
    log("store " + url_ + ": created (FORMAT written)");
  }
  // The packs below cache_root/servers/ID/packs are objects servers/ID/packs/NAME.
  const std::string prefix = cache_root + "/";
  S3Config config = config_;
  cache_ = std::make_unique<PackCache>(
      env, cache_bytes_,
      [config, prefix](const std::string& path, uint64_t bytes) -> Status {
        BR_CHECK(path.starts_with(prefix));
        BR_ASSIGN_OR_RETURN(auto c, S3Client::Open(config));
        return FetchObjectToFile(*c, path.substr(prefix.size()), bytes, path);
      },
      log);
  std::set<std::string> ids;
  BR_ASSIGN_OR_RETURN(auto remote, client->ListChildren("servers/", kServersMax));
  ids.insert(remote.begin(), remote.end());
  BR_ASSIGN_OR_RETURN(auto local, store::ListServers(cache_root, env));
  ids.insert(local.begin(), local.end());
  for (const std::string& id : ids) {
    BR_ASSIGN_OR_RETURN(auto c, S3Client::Open(config_));
    auto mirror = std::make_unique<ServerMirror>(std::move(c), id, lease_, cache_.get());
    const std::string dir = cache_root + "/servers/" + id;
    // Another frontend may be committing meanwhile (leases): a manifest that names what has just
    // been deleted (a compaction) is read again; a server still not readable is left to the lease
    // (TakeOver pulls it again) rather than stopping this frontend.
    Result<ServerMirror::PullStats> pulled = mirror->Pull(dir, lease_.duration_ms == 0);
    for (int attempt = 1; !pulled.ok() && pulled.status().code() == Code::kDataLoss && lease_.duration_ms != 0 && attempt < 3; ++attempt)
      pulled = mirror->Pull(dir, false);
    if (!pulled.ok() && lease_.duration_ms != 0) {
      log("server '" + id + "': not pulled at start (" + pulled.status().message() + "); it is when its lease is taken");
      pulled_[id] = std::move(mirror);
      continue;
    }
    BR_ASSIGN_OR_RETURN(ServerMirror::PullStats s, std::move(pulled));
    if (s.uploaded) log("server '" + id + "': its chain in " + cache_root + " published to " + url_);
    if (s.garbage_deleted != 0)
      log("server '" + id + "': deleted " + std::to_string(s.garbage_deleted) +
          " objects its manifest in the bucket does not reach (a commit cut short, or a failed delete)");
    if (s.manifest_replaced)
      log("server '" + id + "': the cache took the bucket's chain (" + std::to_string(s.indexes_fetched) + " indexes, " +
          std::to_string(s.packs_fetched) + " packs, " + std::to_string(s.bytes_fetched) + " bytes fetched)");
    pulled_[id] = std::move(mirror);
  }
  return Status::Ok();
}

Result<std::unique_ptr<ServerMirror>> BucketStore::TakeMirror(const std::string& server_id) {
  auto it = pulled_.find(server_id);
  if (it != pulled_.end()) {
    std::unique_ptr<ServerMirror> m = std::move(it->second);
    pulled_.erase(it);
    return m;
  }
  BR_ASSIGN_OR_RETURN(auto c, S3Client::Open(config_));
  return std::make_unique<ServerMirror>(std::move(c), server_id, lease_, cache_.get());
}

}  // namespace blockrep
